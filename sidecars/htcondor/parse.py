"""Parsing condor_q / condor_history / condor_status / condor_submit / condor_rm output
(pure functions).

`-json` output is a JSON array of ClassAds, one object per ad (`[\\n{...}\\n,\\n{...}\\n]\\n`),
and nothing at all when no ad matches. Integers and booleans are JSON numbers and
true/false, an undefined attribute is null or absent, and an expression that is not a
literal is a string "/Expr(...)/". Job ids are "ClusterId.ProcId" ("123.0"): one job per
cluster, as condor_submit -terse prints it and condor_rm takes it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any

from sidecars.core.kits import backend as b
from sidecars.core.kits.backend import Capacity, JobInfo
from sidecars.htcondor.submitlang import classad_string

# The attribute the submit description sets on every job of ours (its job name).
NAME_ATTR = "InterLinkJobName"

JOB_ATTRIBUTES = (
    "ClusterId",
    "ProcId",
    "JobStatus",
    NAME_ATTR,
    "JobBatchName",
    "EnteredCurrentStatus",
    "HoldReason",
    "HoldReasonCode",
    "HoldReasonSubCode",
    "LastRejMatchReason",
    "NumJobStarts",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "RemoveReason",
    "RemoteHost",
    "JobMaxVacateTime",
    "ServerTime",
    "LastJobStatus",
    "LastHoldReason",
    "Owner",
    "Iwd",
)
SLOT_ATTRIBUTES = (
    "Name",
    "Machine",
    "State",
    "Activity",
    "Cpus",
    "Memory",
    "GPUs",
    "TotalSlotGPUs",
    "PartitionableSlot",
    "DynamicSlot",
)

IDLE, RUNNING, REMOVED, COMPLETED, HELD, TRANSFERRING_OUTPUT, SUSPENDED = 1, 2, 3, 4, 5, 6, 7
RAW_STATES = {
    IDLE: "IDLE",
    RUNNING: "RUNNING",
    REMOVED: "REMOVED",
    COMPLETED: "COMPLETED",
    HELD: "HELD",
    TRANSFERRING_OUTPUT: "TRANSFERRING_OUTPUT",
    SUSPENDED: "SUSPENDED",
}
# HoldReasonCode 34 (JobOutOfResources) with subcode 102: memory use exceeded request_memory.
OUT_OF_RESOURCES, MEMORY_SUBCODE = 34, 102
# A removed job still in the queue is being stopped (kill_sig, then SIGKILL after its
# JobMaxVacateTime); past that and this margin it is taken as gone.
REMOVAL_MARGIN_SECONDS = 120
DEFAULT_VACATE_SECONDS = 600


class ParseError(ValueError):
    """Output that is not what the command prints."""


def parse_ads(text: str) -> list[dict[str, Any]]:
    """The ClassAds of a `-json` listing; empty output is no ads."""
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc}") from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(ad, dict) for ad in data):
        raise ParseError("not a JSON array of ClassAds")
    return data


def _int(ad: dict[str, Any], name: str) -> int | None:
    value = ad.get(name)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _str(ad: dict[str, Any], name: str) -> str:
    value = ad.get(name)
    return value.strip() if isinstance(value, str) and not value.startswith("/Expr(") else ""


def _true(ad: dict[str, Any], name: str) -> bool:
    value = ad.get(name)
    return value is True or (isinstance(value, str) and value.lower() == "true")


def job_id(ad: dict[str, Any]) -> str | None:
    cluster, proc = _int(ad, "ClusterId"), _int(ad, "ProcId")
    if cluster is None or proc is None:
        return None
    return f"{cluster}.{proc}"


def job_name(ad: dict[str, Any]) -> str:
    return _str(ad, NAME_ATTR) or _str(ad, "JobBatchName")


def _ended(ad: dict[str, Any]) -> tuple[str, str]:
    """State and reason of a job that exited (JobStatus 4)."""
    if _true(ad, "ExitBySignal"):
        signal = _int(ad, "ExitSignal")
        return b.FAILED, f"killed by signal {signal}" if signal is not None else "killed by a signal"
    code = _int(ad, "ExitCode")
    if code is None:
        return b.COMPLETED, "completed"
    return (b.COMPLETED if code == 0 else b.FAILED), f"exit code {code}"


def _removed_by_policy(reason: str) -> bool:
    """Removed by the job's own periodic_remove (hold timeout, eviction, deadline backstop) or
    the pool's SYSTEM_PERIODIC_REMOVE: a failure, not a cancellation."""
    return "PeriodicRemove" in reason or "SYSTEM_PERIODIC_REMOVE" in reason


def job_info(ad: dict[str, Any], *, now: float, hold_timeout: float, in_queue: bool = True) -> JobInfo | None:
    """One job ad of condor_q (in_queue) or condor_history -> normalised state and reason.

    Held jobs wait (Pending, "Held: <HoldReason>") so that an admin can release them, until
    `hold_timeout` seconds after they were held; then they fail ("HoldTimeout: ..."). A job
    held or back to idle after it had started has lost its run (the pod's containers were
    stopped): it fails at once, as HTCondor would not run it again (see the requirements
    of the submit description).
    """
    jid = job_id(ad)
    status = _int(ad, "JobStatus")
    if jid is None or status is None:
        return None
    name = job_name(ad)
    raw = RAW_STATES.get(status, f"STATUS_{status}")
    now = float(_int(ad, "ServerTime") or now)
    started = (_int(ad, "NumJobStarts") or 0) > 0
    entered = _int(ad, "EnteredCurrentStatus")
    since = max(0, int(now - entered)) if entered is not None else 0

    def info(state: str, reason: str = "") -> JobInfo:
        return JobInfo(
            job_id=jid,
            state=state,
            reason=reason,
            name=name,
            raw_state=raw,
            user=_str(ad, "Owner"),
            work_dir=_str(ad, "Iwd"),
        )

    if status == IDLE:
        if started:
            return info(b.FAILED, "Evicted: the job lost its execute slot after it had started and is not run again")
        why = _str(ad, "LastRejMatchReason")
        return info(b.PENDING, "Idle: waiting for a matching slot" + (f" ({why})" if why else ""))
    if status == RUNNING or status == TRANSFERRING_OUTPUT:
        return info(b.RUNNING)
    if status == SUSPENDED:
        return info(b.RUNNING, "Suspended")
    if status == COMPLETED:
        return info(*_ended(ad))
    if status == REMOVED:
        reason = _str(ad, "RemoveReason")
        vacate = _int(ad, "JobMaxVacateTime") or DEFAULT_VACATE_SECONDS
        if in_queue and _str(ad, "RemoteHost") and since <= vacate + REMOVAL_MARGIN_SECONDS:
            # condor_rm sent it kill_sig: the pod runner stops the containers (preStop, grace).
            return info(b.RUNNING, "Removing: the job is being stopped")
        if _removed_by_policy(reason) and _int(ad, "LastJobStatus") == HELD and not started:
            # The submit description's own backstop ended a hold that lasted too long.
            held = _str(ad, "HoldReason") or _str(ad, "LastHoldReason") or "no reason given"
            return info(b.FAILED, f"HoldTimeout: held too long: {held}")
        if _removed_by_policy(reason):
            return info(b.FAILED, f"Removed: {reason}")
        return info(b.CANCELLED, reason or "removed")
    if status == HELD:
        reason = _str(ad, "HoldReason") or "no reason given"
        code, subcode = _int(ad, "HoldReasonCode"), _int(ad, "HoldReasonSubCode")
        if code == OUT_OF_RESOURCES and (subcode == MEMORY_SUBCODE or "memory" in reason.lower()):
            return info(b.OUT_OF_MEMORY, f"Held: {reason}")
        if started:
            return info(b.FAILED, f"Held: held after it had started, it is not run again: {reason}")
        if since > hold_timeout:
            return info(b.FAILED, f"HoldTimeout: held for {since}s: {reason}")
        return info(b.PENDING, f"Held: {reason}")
    return info(b.RUNNING, f"unknown JobStatus {status}")  # never terminal on a guess


def parse_jobs(
    text: str, *, now: float | None = None, hold_timeout: float = float("inf"), in_queue: bool = True
) -> dict[str, JobInfo]:
    """condor_q / condor_history -json -> job id -> JobInfo. History lists newest first: the
    first record of a job wins."""
    now = time.time() if now is None else now
    jobs: dict[str, JobInfo] = {}
    for ad in parse_ads(text):
        info = job_info(ad, now=now, hold_timeout=hold_timeout, in_queue=in_queue)
        if info is not None and info.job_id not in jobs:
            jobs[info.job_id] = info
    return jobs


def needs_removal(job: JobInfo) -> bool:
    """Jobs `job_info` failed while HTCondor still holds them in the queue."""
    return job.terminal and job.raw_state in ("HELD", "IDLE")


# ---------------------------------------------------------------- constraints

_JOB_ID = re.compile(r"^(\d+)\.(\d+)$")


def split_id(jid: str) -> tuple[int, int] | None:
    match = _JOB_ID.match(jid.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def ids_constraint(job_ids: Iterable[str]) -> str:
    """A constraint matching exactly these jobs (one cluster per pod: proc 0, kept compact)."""
    pairs = sorted({p for p in (split_id(j) for j in job_ids) if p is not None})
    if not pairs:
        return "false"
    clusters = [c for c, p in pairs if p == 0]
    parts = []
    if clusters:
        parts.append(f"(ProcId == 0 && member(ClusterId, {{{', '.join(map(str, clusters))}}}))")
    parts += [f"(ClusterId == {c} && ProcId == {p})" for c, p in pairs if p != 0]
    return " || ".join(parts)


# Job names are the configured prefix and a pod UID: nothing to quote in a constraint.
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _name_literal(name: str, what: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not made of letters, digits, '_', '.' and '-'")
    return classad_string(name, what)


def names_constraint(names: Iterable[str]) -> str:
    quoted = ", ".join(_name_literal(n, "job name") for n in sorted(set(names)))
    return f"{NAME_ATTR} =!= undefined && member({NAME_ATTR}, {{{quoted}}})"


def prefix_constraint(prefix: str) -> str:
    literal = _name_literal(prefix, "job name prefix")
    return f"{NAME_ATTR} =!= undefined && strcmp(substr({NAME_ATTR}, 0, {len(prefix)}), {literal}) == 0"


# ---------------------------------------------------------------- condor_submit

_SUBMITTED = re.compile(r"^(\d+)\.(\d+)\s*-\s*(\d+)\.(\d+)\s*$")


def parse_submit(stdout: str) -> str | None:
    """`condor_submit -terse` prints 'FIRST - LAST' per cluster ('123.0 - 123.0')."""
    for line in stdout.splitlines():
        match = _SUBMITTED.match(line.strip())
        if match:
            return f"{match.group(1)}.{match.group(2)}"
    return None


# Errors a submit description cannot fix: checked first, they win over transient matches
# (e.g. "Failed to commit job submission" followed by a failed SUBMIT_REQUIREMENT).
_PERMANENT = re.compile(
    r"requirement|Parse error|syntax error|on Line \d+|not allowed|is disabled|User is disabled|"
    r"doesn't contain any \"queue\"|Invalid|unknown command|does not exist",
    re.IGNORECASE,
)
# Errors worth retrying: the schedd is busy, unreachable or cannot authenticate us yet, or
# a limit on queued jobs that frees up as jobs finish.
_TRANSIENT = re.compile(
    r"Failed to connect|Can't find address|Connection refused|timed out|timeout|"
    r"AUTHENTICATE:|SECMAN:|temporarily|MAX_JOBS_SUBMITTED|MAX_JOBS_PER_OWNER|"
    r"Failed to commit|Failed to create cluster|communicat|Unable to (?:contact|connect)",
    re.IGNORECASE,
)


def submit_error_is_transient(stderr: str) -> bool:
    if _PERMANENT.search(stderr):
        return False
    return bool(_TRANSIENT.search(stderr))


def submit_error_message(stderr: str) -> str:
    """HTCondor's own words, without blank lines and 'ERROR:' noise."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    cleaned = [re.sub(r"^ERROR:\s*", "", line) for line in lines if not line.startswith("WARNING")]
    return "; ".join(cleaned) or "condor_submit failed without a message"


# ---------------------------------------------------------------- condor_rm

# Per job, condor_rm prints "Job 1.0 marked for removal" (stdout) or its failure (stderr).
_RM_HARMLESS = re.compile(r"^Job \d+\.\d+ (?:not found|already marked for removal)$")


def rm_problems(stderr: str) -> list[str]:
    """The lines of condor_rm's stderr that are real failures: a job that is gone or already
    being removed is what an idempotent cancel wants."""
    return [line.strip() for line in stderr.splitlines() if line.strip() and not _RM_HARMLESS.match(line.strip())]


# ---------------------------------------------------------------- condor_status


def parse_status(text: str) -> Capacity:
    """Free resources over the pool's slots (condor_status -json).

    A partitionable slot's Cpus/Memory/GPUs are what it has not handed to dynamic slots yet;
    a static slot is free while Unclaimed. Dynamic slots are in use (their resources are
    already taken from their partitionable slot). Slots whose machine is in use by its owner
    or drained count for nothing.
    """
    cpus = memory = gpus_free = gpus_total = 0
    machines: set[str] = set()
    seen: set[str] = set()
    for ad in parse_ads(text):
        key = _str(ad, "Name") or json.dumps(ad, sort_keys=True)
        if key in seen or _true(ad, "DynamicSlot"):
            continue
        seen.add(key)
        state = _str(ad, "State")
        if state in ("Owner", "Drained", "Preempting") or _true(ad, "Absent"):
            continue
        machines.add(_str(ad, "Machine") or key)
        partitionable = _true(ad, "PartitionableSlot")
        slot_gpus = _int(ad, "GPUs") or 0
        gpus_total += (_int(ad, "TotalSlotGPUs") or slot_gpus) if partitionable else slot_gpus
        if state == "Unclaimed":
            cpus += max(0, _int(ad, "Cpus") or 0)
            memory += max(0, _int(ad, "Memory") or 0)
            gpus_free += max(0, slot_gpus)
    return Capacity(cpus=cpus, memory_mib=memory, gpus=gpus_free, gpus_total=gpus_total, nodes=len(machines))
