"""Container statuses from what the scheduler and the pod runner say (pure functions).

Kubernetes' `v1.ContainerStatus` JSON is produced here, with the quirks the
upstream Virtual Kubelet relies on: it calls a pod Failed only when *every*
container in the status is terminated, so containers that will never run (an
init container failed, the job was cancelled while pending) are reported
terminated with a reason saying why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from interlink_provider.pods.phase import FAILED, PENDING, RUNNING, SUCCEEDED, UNKNOWN, vk_phase
from sidecars.core.domain.records import ContainerInfo, JsonObject, PodStatuses
from sidecars.core.kits import backend as b
from sidecars.core.kits.backend import JobInfo
from sidecars.core.kits.workdir import ContainerFiles

__all__ = ["FAILED", "PENDING", "RUNNING", "SUCCEEDED", "UNKNOWN", "ContainerInfo", "vk_phase"]


@dataclass(frozen=True)
class PodView:
    """Everything status computation looks at, gathered by the reconciler."""

    containers: Sequence[ContainerInfo]
    job: JobInfo | None  # None: not submitted yet, or left the queue without a trace
    files: dict[str, ContainerFiles]
    terminating: bool = False
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    lost: bool = False  # the job vanished from the scheduler without finishing its containers
    scheduler: str = "Slurm"  # the batch system's name in messages


def _second(timestamp: str | None) -> str | None:
    """metav1.Time has seconds precision: 2026-01-02T03:04:05.123456789Z -> ...:05Z."""
    if not timestamp:
        return None
    return timestamp.split(".", 1)[0].rstrip("Z") + "Z"


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    state: dict[str, Any] = {"reason": reason}
    if message:
        state["message"] = message
    return {"waiting": state}


def running(started_at: str | None) -> dict[str, Any]:
    return {"running": {"startedAt": _second(started_at)}}


def terminated(
    exit_code: int,
    reason: str,
    message: str = "",
    started_at: str | None = None,
    finished_at: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": exit_code, "reason": reason}
    if message:
        state["message"] = message
    if started_at:
        state["startedAt"] = _second(started_at)
    if finished_at:
        state["finishedAt"] = _second(finished_at)
    return {"terminated": state}


def container_status(info: ContainerInfo, state: dict[str, Any], files: ContainerFiles) -> dict[str, Any]:
    last: dict[str, Any] = {}
    if files.last_state:
        code, started, finished = files.last_state
        last = terminated(code, "Completed" if code == 0 else "Error", "", started, finished)
    is_running = "running" in state
    return {
        "name": info.name,
        "state": state,
        "lastState": last,
        "ready": bool(is_running and files.ready),
        "restartCount": files.restarts,
        "image": info.image,
        "imageID": info.image_id,
        "started": is_running,
    }


def ended_by_runner(job_id: str, files: dict[str, ContainerFiles]) -> JobInfo:
    """A job the scheduler no longer knows, ended as its runner recorded: failed if any container
    exited non-zero (a container not run counts as 0)."""
    worst = max((f.exit_code or 0 for f in files.values()), default=0)
    return JobInfo(job_id, b.COMPLETED if worst == 0 else b.FAILED, raw_state="ENDED")


def reason_word(text: str, default: str) -> str:
    """The scheduler's reason as a Kubernetes reason (one CamelCase word): 'Held: disk full'
    -> 'Held', 'Resources' -> 'Resources'; free text -> `default`."""
    word = text.split(":", 1)[0].strip()
    return word if word and word.isascii() and word.replace("_", "").isalnum() else default


def _job_end(job: JobInfo | None, lost: bool, scheduler: str) -> tuple[int, str, str]:
    """Exit code, reason and message for a container the job ended without recording."""
    if lost or job is None:
        return 1, "JobLost", "the job left the scheduler without recording this container's exit"
    name = f"{scheduler} job {job.job_id}"
    known = {
        b.TIMEOUT: (143, "DeadlineExceeded", f"{name} reached its time limit"),
        b.OUT_OF_MEMORY: (137, "OOMKilled", f"{name} ran out of memory"),
        b.CANCELLED: (143, "Cancelled", f"{name} was cancelled"),
        b.NODE_FAIL: (1, "NodeFailure", f"the node of {name} failed"),
    }.get(job.state)
    if known is not None:
        code, reason, message = known
        return code, reason, f"{message}: {job.reason}" if job.reason else message
    if job.reason:  # the scheduler said why (e.g. HoldTimeout: held for 600s: ...)
        return 1, reason_word(job.reason, "Error"), f"{name} ended: {job.reason}"
    return 1, "Error", f"{name} ended {job.raw_state or job.state}"


def _restarting(info: ContainerInfo, files: ContainerFiles, job_alive: bool, terminating: bool) -> bool:
    if not job_alive or terminating or files.exit_code is None:
        return False
    return info.restart_policy == "Always" or (info.restart_policy == "OnFailure" and files.exit_code != 0)


def container_state(info: ContainerInfo, view: PodView, init_running: bool) -> dict[str, Any]:
    files = view.files.get(info.name, ContainerFiles())
    job = view.job
    job_ended = view.lost or (job is not None and job.terminal)
    job_alive = job is not None and not job.terminal and not view.lost
    if files.skipped:
        return terminated(1, "InitContainerFailed", f"not started: {files.skipped}")
    if files.exit_code is not None:
        code = files.exit_code
        if _restarting(info, files, job_alive, view.terminating):
            return waiting("CrashLoopBackOff", f"back-off restarting container (exit code {code})")
        reason = files.reason or ("Completed" if code == 0 else "Error")
        if job is not None and job.state == b.OUT_OF_MEMORY and code in (137, 9):
            reason = "OOMKilled"
        elif job is not None and job.state == b.TIMEOUT and code != 0 and not files.reason:
            reason = "DeadlineExceeded"  # the time limit's TERM/KILL ended it
        return terminated(code, reason, "", files.started_at, files.finished_at)
    if job_ended:
        code, reason, message = _job_end(job, view.lost, view.scheduler)
        return terminated(code, reason, message, files.started_at, None)
    if files.started_at and job_alive and job is not None and job.state == b.RUNNING:
        return running(files.started_at)
    if job is not None and job.state == b.PENDING:
        said = job.reason or "Pending"
        return waiting(reason_word(said, "Pending"), f"{view.scheduler} job {job.job_id} is pending: {said}")
    if not info.is_init and init_running:
        return waiting("PodInitializing")
    return waiting(view.waiting_reason, view.waiting_message)


def pod_statuses(view: PodView) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(initContainers, containers) as lists of v1.ContainerStatus JSON."""
    init_infos = [c for c in view.containers if c.is_init]
    init_done = all(view.files.get(c.name, ContainerFiles()).exit_code == 0 for c in init_infos)
    init_states = [
        container_status(c, container_state(c, view, False), view.files.get(c.name, ContainerFiles()))
        for c in init_infos
    ]
    app_states = [
        container_status(c, container_state(c, view, not init_done), view.files.get(c.name, ContainerFiles()))
        for c in view.containers
        if not c.is_init
    ]
    return init_states, app_states


def statuses_of(view: PodView) -> PodStatuses:
    init, apps = pod_statuses(view)
    return PodStatuses(tuple(init), tuple(apps))


def uniform_statuses(containers: Sequence[ContainerInfo], state: JsonObject) -> PodStatuses:
    """Every container in the same state (before the job runs, or when it was refused)."""
    empty = ContainerFiles()
    return PodStatuses(
        init=tuple(container_status(c, state, empty) for c in containers if c.is_init),
        apps=tuple(container_status(c, state, empty) for c in containers if not c.is_init),
    )


def phase_of(statuses: PodStatuses) -> str:
    """The phase the Virtual Kubelet will derive from these statuses."""
    return vk_phase(list(statuses.init), list(statuses.apps))
