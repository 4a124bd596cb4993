"""Records of live jobs rebuilt from the scheduler, for a sidecar whose state database was lost.

Without its records a sidecar knows none of its pods: the Virtual Kubelet's status calls go
unanswered, deletes find nothing to cancel and, with `cancel_unknown_jobs`, every live job
would be cancelled as a stray at the next start. `interlink-provider site rebuild-state`
asks the scheduler for the jobs named with the sidecar's prefix and writes one record per
live job: its UID (the job name), its job id, its account (the user the scheduler runs it
as) and its directory (where it runs, which must be that account's pod directory for that
UID under the pods root).

What only the pod knew is not in the scheduler: its name, its containers and the identity
that created it. A rebuilt record is owned by no one (`REBUILT_OWNER`) until a caller whose
identity maps to the job's account asks about that UID in that namespace (a create or a
status call, which carry the whole pod): the caller claims it and the pod's name and
containers fill the record. Nothing a job can write decides whom its record serves: the
account and the directory come from the scheduler, the owner from an authenticated caller.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass, field, replace

from interlink_provider.pods.k8s import Pod
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.pods.translate import container_restart_policy, grace_seconds
from interlink_provider.pods.validate import PodRejected, dns_label, pod_uid
from sidecars.core.domain.records import ContainerInfo, PodRecord, PodSummary, Stage
from sidecars.core.kits.backend import JobInfo
from sidecars.core.kits.podpaths import PodPaths

# The owner of a rebuilt record until it is claimed: no identity key has this form (sub@iss).
REBUILT_OWNER = "(rebuilt)"


class NotRebuilt(Exception):
    """This job gets no record; the message says why (printed by `site rebuild-state`)."""


@dataclass
class RebuildReport:
    """What `rebuild` did with each job the scheduler listed."""

    rebuilt: list[PodRecord] = field(default_factory=list)
    known: list[str] = field(default_factory=list)  # job ids whose pods the database already holds
    ended: list[str] = field(default_factory=list)  # job ids no longer running: nothing to follow
    skipped: dict[str, str] = field(default_factory=dict)  # job id -> why not


def record_of(job: JobInfo, prefix: str, pods_root: str, own_account: str) -> PodRecord:
    """The record of one live job of ours, from what the scheduler says about it (NotRebuilt)."""
    uid = job.name.removeprefix(prefix)
    try:
        pod_uid(uid, "job name")
    except PodRejected as exc:
        raise NotRebuilt(f"its name {job.name!r} does not end in a pod UID") from exc
    account = "" if job.user in ("", own_account) else job.user
    namespace = posixpath.basename(posixpath.dirname(posixpath.normpath(job.work_dir or "/")))
    try:
        dns_label(namespace, "namespace")
    except PodRejected as exc:
        raise NotRebuilt(f"it runs in {job.work_dir or 'an unknown directory'}, not in a pod directory") from exc
    paths = PodPaths.for_pod(pods_root, namespace, uid, account)
    if posixpath.normpath(job.work_dir) != paths.pod_dir:
        raise NotRebuilt(f"it runs in {job.work_dir}, not in {paths.pod_dir} (the pod directory of its account)")
    now = time.time()
    return PodRecord(
        uid=uid,
        namespace=namespace,
        name="",
        pod_dir=paths.pod_dir,
        job_name=job.name,
        stage=Stage.SUBMITTED,
        summary=PodSummary(containers=()),
        owner=REBUILT_OWNER,
        account=account,
        job_id=job.job_id,
        job_state=job.raw_state,
        message=f"rebuilt from job {job.job_id}: its owner's next create or status call claims it",
        created_at=now,
        updated_at=now,
        submitted_at=now,
    )


def rebuild(jobs: list[JobInfo], known_uids: set[str], prefix: str, pods_root: str, own_account: str) -> RebuildReport:
    """Records for the live jobs whose pods `known_uids` lacks; two jobs of one UID get none."""
    report = RebuildReport()
    by_uid: dict[str, list[JobInfo]] = {}
    for job in jobs:
        if job.terminal:
            report.ended.append(job.job_id)
        elif job.name.removeprefix(prefix) in known_uids:
            report.known.append(job.job_id)
        else:
            by_uid.setdefault(job.name.removeprefix(prefix), []).append(job)
    for uid, same in by_uid.items():
        if len(same) > 1:
            for job in same:
                report.skipped[job.job_id] = f"{len(same)} live jobs are named for pod {uid}: which one is the pod's?"
            continue
        try:
            report.rebuilt.append(record_of(same[0], prefix, pods_root, own_account))
        except NotRebuilt as exc:
            report.skipped[same[0].job_id] = str(exc)
    return report


def claimed_summary(record: PodRecord, pod: Pod, site: TranslationPolicy) -> PodSummary:
    """The record's summary with the pod's containers and grace period, as a create would set them."""
    policy = pod.spec.restart_policy or "Always"
    containers = tuple(
        ContainerInfo(c.name, c.image or "", is_init, container_restart_policy(policy, is_init))
        for is_init, group in ((True, pod.spec.init_containers), (False, pod.spec.containers))
        for c in group
    )
    return replace(record.summary, containers=containers, grace=grace_seconds(pod, site))
