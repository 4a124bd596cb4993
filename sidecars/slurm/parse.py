"""Parsing squeue / sacct / sinfo / sbatch output (pure functions, tested on real output)."""

from __future__ import annotations

import re
from dataclasses import replace

from sidecars.core.kits import backend as b
from sidecars.core.kits.backend import Capacity, JobInfo
from sidecars.slurm.reasons import explain

SQUEUE_FORMAT = "%i|%T|%r|%j"
OWNED_FORMAT = "%u|%Z|" + SQUEUE_FORMAT  # who runs each job and where, then what SQUEUE_FORMAT says
SACCT_FORMAT = "JobID,State,ExitCode,JobName"
SINFO_FIELDS = "NodeHost:|,CPUsState:|,Memory:|,AllocMem:|,Gres:|,GresUsed:|,StateCompact:|"

_STATES = {
    "PENDING": b.PENDING,
    "CONFIGURING": b.PENDING,
    "REQUEUED": b.PENDING,
    "REQUEUE_FED": b.PENDING,
    "REQUEUE_HOLD": b.PENDING,
    "RESV_DEL_HOLD": b.PENDING,
    "RUNNING": b.RUNNING,
    "COMPLETING": b.RUNNING,
    "SIGNALING": b.RUNNING,
    "STAGE_OUT": b.RUNNING,
    "RESIZING": b.RUNNING,
    "SUSPENDED": b.RUNNING,
    "STOPPED": b.RUNNING,
    "COMPLETED": b.COMPLETED,
    "FAILED": b.FAILED,
    "BOOT_FAIL": b.FAILED,
    "SPECIAL_EXIT": b.FAILED,
    "PREEMPTED": b.FAILED,
    "DEADLINE": b.TIMEOUT,
    "TIMEOUT": b.TIMEOUT,
    "CANCELLED": b.CANCELLED,
    "REVOKED": b.CANCELLED,
    "OUT_OF_MEMORY": b.OUT_OF_MEMORY,
    "NODE_FAIL": b.NODE_FAIL,
}


def normalise_state(raw: str) -> str:
    """'CANCELLED by 0' -> CANCELLED; unknown states count as running (never terminal)."""
    word = raw.strip().split(" ", 1)[0].rstrip("+")
    return _STATES.get(word, b.RUNNING)


def parse_owned(text: str) -> list[JobInfo]:
    """Lines of OWNED_FORMAT: each job with the account it runs as and its working directory
    (a pod directory: its names are checked, so it holds no `|`)."""
    jobs = []
    for line in text.splitlines():
        user, _, rest = line.strip().partition("|")
        work_dir, _, rest = rest.partition("|")
        jobs += [replace(job, user=user, work_dir=work_dir) for job in parse_squeue(rest).values()]
    return jobs


def parse_squeue(text: str) -> dict[str, JobInfo]:
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) != 4 or not parts[0]:
            continue
        job_id, state, reason, name = parts
        jobs[job_id] = JobInfo(
            job_id=job_id,
            state=normalise_state(state),
            reason="" if reason in ("None", "(null)") else explain(reason),
            name=name,
            raw_state=state,
        )
    return jobs


def parse_sacct(text: str) -> dict[str, JobInfo]:
    """sacct -P -n lines; job steps (123.batch) are skipped, the last record of a job wins."""
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) != 4 or not parts[0] or "." in parts[0]:
            continue
        job_id, state, exit_code, name = parts
        jobs[job_id] = JobInfo(
            job_id=job_id,
            state=normalise_state(state),
            reason=f"exit code {exit_code}",
            name=name,
            raw_state=state,
        )
    return jobs


_SUBMITTED = re.compile(r"^(\d+)(?:;\S+)?\s*$")


def parse_sbatch(stdout: str) -> str | None:
    """`sbatch --parsable` prints 'JOBID' or 'JOBID;CLUSTER'."""
    for line in stdout.splitlines():
        match = _SUBMITTED.match(line.strip())
        if match:
            return match.group(1)
    return None


# sbatch errors worth retrying: the controller is busy or unreachable, or a limit on
# queued jobs that frees up as jobs finish. Anything else is the pod's fault.
_TRANSIENT = re.compile(
    r"Socket timed out|Unable to contact slurm controller|Connection refused|"
    r"temporarily unavailable|Slurm temporarily unable|Zero Bytes were transmitted|"
    r"Communication connection failure|Resource temporarily unavailable|"
    r"MaxSubmitJobs|AssocMaxSubmitJobLimit|QOSMaxSubmitJobPerUserLimit|"
    r"Job submit/allocate failed: Transient|Slurm controller not responding",
    re.IGNORECASE,
)


def sbatch_error_is_transient(stderr: str) -> bool:
    return bool(_TRANSIENT.search(stderr))


def sbatch_error_message(stderr: str) -> str:
    """The scheduler's own words, without the 'sbatch: error:' noise."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    cleaned = [re.sub(r"^sbatch: error: ", "", line) for line in lines]
    return "; ".join(cleaned) or "sbatch failed without a message"


def gpu_count(gres: str) -> int:
    total = 0
    for entry in gres.split(","):
        entry = entry.split("(", 1)[0]
        if not entry.startswith("gpu"):
            continue
        last = entry.rsplit(":", 1)[-1]
        if last.isdigit():
            total += int(last)
    return total


def parse_sinfo(text: str) -> Capacity:
    """Free CPUs/memory/GPUs over the usable nodes (down or drained nodes count for nothing)."""
    seen: set[str] = set()
    cpus = memory = gpus_free = gpus_total = nodes = 0
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 7 or parts[0] in seen:
            continue
        host, cpu_state, mem, alloc_mem, gres, gres_used, state = parts[:7]
        seen.add(host)
        if any(bad in state.lower() for bad in ("down", "drain", "fail", "maint", "unk")):
            continue
        nodes += 1
        try:
            _alloc, idle, _other, _total = (int(x) for x in cpu_state.split("/"))
            cpus += idle
            memory += max(0, int(mem) - int(alloc_mem or 0))
        except ValueError:
            continue
        node_gpus = gpu_count(gres)
        gpus_total += node_gpus
        gpus_free += max(0, node_gpus - gpu_count(gres_used))
    return Capacity(cpus=cpus, memory_mib=memory, gpus=gpus_free, gpus_total=gpus_total, nodes=nodes)
