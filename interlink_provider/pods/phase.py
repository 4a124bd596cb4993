"""A pod's phase from its container statuses, as the upstream Virtual Kubelet decides it.

The VK (`checkPodsStatus` in interLink's pkg/virtualkubelet/execute.go) calls a
pod Failed or Succeeded only when every app container is terminated, Failed if
any container (init or app) exited non-zero; Running when an app container runs
after all init containers ended; Pending otherwise. Our sidecar, CLI and test
harness use this one function so that what we test is what Kubernetes shows.
"""

from __future__ import annotations

from typing import Any

PENDING, RUNNING, SUCCEEDED, FAILED, UNKNOWN = "Pending", "Running", "Succeeded", "Failed", "Unknown"


def _terminated(status: dict[str, Any]) -> dict[str, Any] | None:
    return (status.get("state") or {}).get("terminated")


def _running(status: dict[str, Any]) -> bool:
    return "running" in (status.get("state") or {})


def vk_phase(init: list[dict[str, Any]], apps: list[dict[str, Any]]) -> str:
    init_done = [t for s in init if (t := _terminated(s)) is not None]
    init_failed = any(t.get("exitCode", 0) != 0 for t in init_done)
    app_done = [t for s in apps if (t := _terminated(s)) is not None]
    if apps and len(app_done) == len(apps):
        failed = init_failed or any(t.get("exitCode", 0) != 0 for t in app_done)
        return FAILED if failed else SUCCEEDED
    if init and len(init_done) < len(init):
        return PENDING
    if any(_running(s) for s in apps):
        return RUNNING
    return PENDING


def phase_of(pod_status: dict[str, Any]) -> str:
    """Phase of one element of a plugin /status answer."""
    return vk_phase(pod_status.get("initContainers") or [], pod_status.get("containers") or [])
