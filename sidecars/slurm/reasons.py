"""Slurm's pending-reason codes in words a pod's owner can act on.

squeue (%r) and slurmrestd (state_reason) give a code such as `Resources` or
`QOSMaxJobsPerUserLimit`; the pod shows it as its Waiting reason, and the message
says what it means and what, if anything, to do. Codes: Slurm's squeue(1), JOB REASON CODES.
"""

from __future__ import annotations

EXPLAINED = {
    "Resources": "waiting for nodes with the requested CPUs, memory and GPUs to free up",
    "Priority": "jobs of higher priority are ahead of it in the queue",
    "Dependency": "waiting for the jobs it depends on",
    "BeginTime": "its start time has not come yet",
    "ReqNodeNotAvail": "a node it needs is down, drained or reserved: ask the site's admins if this lasts",
    "PartitionTimeLimit": "its time limit (the pod's activeDeadlineSeconds) exceeds the partition's: lower it",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "PartitionDown": "the partition is down: ask the site's admins",
    "PartitionInactive": "the partition is inactive: ask the site's admins",
    "NodeDown": "a node it needs is down",
    "BadConstraints": "no node has the requested features: fix the constraint (slurm-job.vk.io/flags)",
    "JobHeldUser": "held by its owner: release it, or delete the pod",
    "JobHeldAdmin": "held by the site's admins",
    "Reservation": "waiting for its advanced reservation",
    "Licenses": "waiting for licenses",
    "InvalidAccount": "the Slurm account is invalid: ask the site's admins to map you to a valid one",
    "InvalidQOS": "the QOS is invalid for this account",
    "launch failed requeued held": "its start failed on the node and it was held: ask the site's admins",
}
LIMIT_PREFIXES = ("QOS", "Assoc", "MaxCpu", "MaxMem")  # QOSMaxJobsPerUserLimit, AssocGrpCpuLimit, ...


def explain(code: str) -> str:
    """`Resources` -> `Resources: waiting for nodes ...`; unknown codes stay as they are."""
    if code in EXPLAINED:
        return f"{code}: {EXPLAINED[code]}"
    if code.startswith(LIMIT_PREFIXES) and code.endswith("Limit"):
        return (
            f"{code}: a limit of your account or QOS is reached (running jobs, CPUs, memory or GPUs); "
            "it starts when your other jobs end"
        )
    return code
