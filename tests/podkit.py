"""Building pods and rendering their job scripts in tests."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.pods.translate import pod_to_jobspec
from interlink_provider.pods.wire import RetrievedPodData
from interlink_provider.runtimes import ImageDefaults, RuntimeConfig, make_runtime
from interlink_provider.runtimes.sandbox import SandboxConfig
from sidecars.core.kits import workdir
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.script import RenderOptions
from sidecars.slurm.backend import SlurmBackend, SlurmConfig

SANDBOX = RuntimeConfig(
    default="sandbox",
    sandbox=SandboxConfig(image_defaults=[ImageDefaults(image="busybox*", cmd=["sh"])]),
)


def pod(
    containers: list[dict[str, Any]],
    *,
    init: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    name: str = "p",
    restart: str = "Never",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": str(uuid.uuid4()), "annotations": annotations or {}},
        "spec": {
            "restartPolicy": restart,
            "containers": containers,
            "initContainers": init or [],
            "volumes": volumes or [],
            **spec,
        },
    }


def render(
    pod_json: dict[str, Any],
    pods_root: str,
    runtime: str = "sandbox",
    retrieved: list[dict[str, Any]] | None = None,
    runtime_config: RuntimeConfig | None = None,
    options: RenderOptions | None = None,
    policy: TranslationPolicy | None = None,
):
    """(spec, paths, script) for a pod, as the sidecar would render it."""
    data = RetrievedPodData.model_validate({"pod": copy.deepcopy(pod_json), "container": retrieved or []})
    policy = policy or TranslationPolicy()
    spec = pod_to_jobspec(data, policy)
    rt = make_runtime(runtime, runtime_config or SANDBOX)  # type: ignore[arg-type]
    paths = PodPaths.for_pod(pods_root, spec.namespace, spec.uid)
    backend = SlurmBackend(SlurmConfig(), policy)
    submission = backend.prepare(spec, paths, rt, options or RenderOptions(), f"ilp-{spec.uid}")
    return spec, paths, submission.script


def materialize(pod_json: dict[str, Any], pods_root: Path, **kwargs):
    spec, paths, script = render(pod_json, str(pods_root), **kwargs)
    workdir.materialize(paths, spec, script)
    return spec, paths


def container_file(paths: PodPaths, container: str, name: str) -> str | None:
    path = Path(paths.container_dir(container)) / name
    return path.read_text().strip() if path.exists() else None


def log_lines(paths: PodPaths, container: str) -> list[str]:
    """The container's output without the runner's timestamps."""
    path = Path(paths.container_dir(container)) / "log"
    if not path.exists():
        return []
    return [line.split(" ", 1)[1] if " " in line else "" for line in path.read_text().splitlines()]
