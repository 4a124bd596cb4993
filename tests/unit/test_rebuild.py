"""Records rebuilt from the scheduler's jobs (sidecars.core.domain.rebuild): which jobs get one,
with what, and who may claim it. The whole command against real Slurm is in
tests/integration/test_crash.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from interlink_provider.pods.k8s import Pod
from interlink_provider.pods.policy import TranslationPolicy
from sidecars.core.domain import claims, rebuild
from sidecars.core.domain.principal import Principal
from sidecars.core.domain.records import Stage
from sidecars.core.kits import backend as b
from sidecars.core.kits.backend import JobInfo

PREFIX, ROOT, UID = "ilp-", "/pods", "0b6e6c5e-2c1d-4a51-9b0f-1f2e3d4c5b6a"


def job(job_id="7", name=f"ilp-{UID}", user="ilp-bob", work_dir=f"/pods/ilp-bob/team/{UID}", state=b.RUNNING):
    return JobInfo(job_id, state, name=name, raw_state="RUNNING", user=user, work_dir=work_dir)


SITE = TranslationPolicy()


def pod(namespace="team", uid=UID, init=False, policy="Never", grace=None):
    spec = {"restartPolicy": policy, "containers": [{"name": "main", "image": "busybox"}]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    if init:
        spec["initContainers"] = [{"name": "setup", "image": "busybox"}]
    return Pod.model_validate({"metadata": {"name": "p", "namespace": namespace, "uid": uid}, "spec": spec})


def test_a_live_job_becomes_a_followed_record_of_its_account_and_directory():
    record = rebuild.record_of(job(), PREFIX, ROOT, own_account="ilp")
    assert (record.uid, record.namespace, record.account, record.job_id) == (UID, "team", "ilp-bob", "7")
    assert record.pod_dir == f"/pods/ilp-bob/team/{UID}" and record.stage == Stage.SUBMITTED
    assert record.owner == rebuild.REBUILT_OWNER and record.stage.followed
    assert "claims it" in record.message


def test_a_job_of_the_sidecars_own_account_is_recorded_without_one():
    record = rebuild.record_of(job(user="ilp", work_dir=f"/pods/team/{UID}"), PREFIX, ROOT, own_account="ilp")
    assert record.account == "" and record.pod_dir == f"/pods/team/{UID}"


@pytest.mark.parametrize(
    "changes, why",
    [
        ({"name": "ilp-../../etc"}, "does not end in a pod UID"),
        ({"name": f"ilp-{UID}\n"}, "does not end in a pod UID"),
        ({"work_dir": ""}, "not in a pod directory"),
        ({"work_dir": "/tmp"}, "not in a pod directory"),
        ({"work_dir": f"/pods/ilp-alice/team/{UID}"}, "pod directory of its account"),  # another account's
        ({"work_dir": f"/elsewhere/ilp-bob/team/{UID}"}, "pod directory of its account"),
        ({"work_dir": f"/pods/ilp-bob/Team_X/{UID}"}, "not in a pod directory"),
    ],
)
def test_a_job_whose_name_or_directory_is_not_a_pods_gets_no_record(changes, why):
    with pytest.raises(rebuild.NotRebuilt, match=why):
        rebuild.record_of(job(**changes), PREFIX, ROOT, own_account="ilp")


def test_known_ended_and_ambiguous_jobs_are_left_out():
    other = "11111111-2222-4333-8444-555555555555"
    jobs = [
        job("1"),
        job("2", name=f"ilp-{other}", work_dir=f"/pods/ilp-bob/team/{other}"),
        job("3", name="ilp-done", state=b.COMPLETED),
        job("4", name="ilp-twice", work_dir="/pods/ilp-bob/team/twice"),
        job("5", name="ilp-twice", work_dir="/pods/ilp-bob/team/twice"),
    ]
    report = rebuild.rebuild(jobs, {other}, PREFIX, ROOT, "ilp")
    assert [r.job_id for r in report.rebuilt] == ["1"]
    assert report.known == ["2"] and report.ended == ["3"]
    assert set(report.skipped) == {"4", "5"} and "2 live jobs" in report.skipped["4"]


def test_only_a_caller_of_the_jobs_account_and_namespace_claims_it():
    record = rebuild.record_of(job(), PREFIX, ROOT, own_account="ilp")
    bob, alice = Principal("bob@idp", account="ilp-bob"), Principal("alice@idp", account="ilp-alice")
    assert claims.claimable(record, bob, pod()) and claims.claimable(record, bob)  # the UID alone: gRPC
    assert not claims.claimable(record, alice, pod()) and not claims.claimable(record, alice)
    assert not claims.claimable(record, bob, pod(namespace="other"))
    assert not claims.claimable(replace(record, owner="bob@idp"), bob)  # claimed once, then it is bob's
    admin = Principal("root@idp", site_admin=True)
    assert not claims.claimable(replace(record, account=""), admin)  # admins read, they do not act


def test_a_claim_brings_the_pods_containers():
    record = rebuild.record_of(job(), PREFIX, ROOT, own_account="ilp")
    summary = rebuild.claimed_summary(record, pod(init=True, policy="OnFailure"), SITE)
    assert [(c.name, c.is_init, c.restart_policy) for c in summary.containers] == [
        ("setup", True, "OnFailure"),
        ("main", False, "OnFailure"),
    ]


def test_a_claim_takes_the_grace_period_as_a_create_would():
    """0 is a grace period (not "none given"), and the site's maximum holds."""
    record = rebuild.record_of(job(), PREFIX, ROOT, own_account="ilp")
    assert rebuild.claimed_summary(record, pod(grace=0), SITE).grace == 0
    assert rebuild.claimed_summary(record, pod(), SITE).grace == SITE.default_grace_seconds
    assert rebuild.claimed_summary(record, pod(grace=10**6), SITE).grace == SITE.max_grace_seconds
