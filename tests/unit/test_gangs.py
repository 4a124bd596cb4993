"""Gangs without a scheduler: the declaration (pods/gang.py), the Slurm gang script and its
submit command, and the service core holding members until their gang is complete (with the
named test doubles of tests/doubles.py; the real Slurm runs them in
tests/integration/test_gangs.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from interlink_provider.pods import annotations as an
from interlink_provider.pods.gang import GangSpec, gang_of, rank_order
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.pods.translate import pod_to_jobspec
from interlink_provider.pods.validate import PodRejected
from interlink_provider.pods.wire import RetrievedPodData
from interlink_provider.runtimes import make_runtime
from sidecars.core.domain.gangs import gang_job_name
from sidecars.core.domain.principal import Principal
from sidecars.core.domain.reconciler import Reconciler
from sidecars.core.domain.records import Stage
from sidecars.core.domain.service import SiteService
from sidecars.core.domain.settings import ServiceSettings
from sidecars.core.domain.store import Store
from sidecars.core.kits.backend import SubmitError
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.script import RenderOptions
from sidecars.slurm.backend import SlurmBackend, SlurmConfig
from tests.doubles import InMemoryBackend, InMemoryFiles, InMemoryGangBackend
from tests.podkit import SANDBOX, pod, render
from tests.unit.test_backend_contract import FakeTransport
from tests.unit.test_slurmrestd import restd_backend

ALICE = Principal("alice@idp", account="alice")
OURS = {an.GANG: "train", an.GANG_SIZE: "2"}


# ------------------------------------------------------------------ the declaration


def test_a_gang_is_declared_with_our_annotations_or_as_a_kueue_pod_group():
    assert gang_of({}, {}) is None
    assert gang_of(OURS, {}) == GangSpec("train", 2, None)
    kueue = gang_of({an.KUEUE_GROUP_COUNT: "4", an.COMPLETION_INDEX: "3"}, {an.KUEUE_GROUP_LABEL: "job-x.1"})
    assert kueue == GangSpec("job-x.1", 4, 3)
    assert gang_of({**OURS, an.COMPLETION_INDEX: "0"}, {an.KUEUE_GROUP_LABEL: "other"}) == GangSpec("train", 2, 0)


@pytest.mark.parametrize(
    ("annotations", "labels", "field"),
    [
        ({an.GANG: "train"}, {}, an.GANG_SIZE),  # half a declaration
        ({an.GANG_SIZE: "2"}, {}, an.GANG),
        ({**OURS, an.GANG_SIZE: "0"}, {}, an.GANG_SIZE),
        ({**OURS, an.GANG_SIZE: "257"}, {}, an.GANG_SIZE),
        ({**OURS, an.GANG_SIZE: "two"}, {}, an.GANG_SIZE),
        ({**OURS, an.GANG: "a b"}, {}, an.GANG),
        ({**OURS, an.GANG: "-x"}, {}, an.GANG),
        ({**OURS, an.COMPLETION_INDEX: "first"}, {}, an.COMPLETION_INDEX),
        ({}, {an.KUEUE_GROUP_LABEL: "g"}, an.KUEUE_GROUP_COUNT),
    ],
)
def test_a_wrong_declaration_is_refused_naming_its_field(annotations, labels, field):
    with pytest.raises(PodRejected) as refused:
        gang_of(annotations, labels)
    assert field in refused.value.field


def test_members_rank_by_completion_index_then_by_name():
    members = [(None, "b"), (1, "z"), (None, "a"), (0, "y")]
    assert sorted(members, key=lambda m: rank_order(*m)) == [(0, "y"), (1, "z"), (None, "a"), (None, "b")]


def test_a_gang_s_job_name_is_its_members_whatever_their_order():
    assert gang_job_name("ilp-", ["b", "a"]) == gang_job_name("ilp-", ["a", "b"]) != gang_job_name("ilp-", ["a", "c"])
    assert gang_job_name("ilp-", ["a", "b"]).startswith("ilp-gang-")


def test_a_member_s_own_rendezvous_variables_give_way_to_the_site_s():
    env = [{"name": "MASTER_ADDR", "value": "pytorchjob-master-0"}, {"name": "RANK", "value": "7"}]
    env.append({"name": "EPOCHS", "value": "3"})
    containers = [{"name": "c", "image": "python", "command": ["true"], "env": env}]
    member_pod, lone_pod = pod(containers, annotations=OURS), pod(containers)
    policy = TranslationPolicy()
    spec = pod_to_jobspec(RetrievedPodData.model_validate({"pod": member_pod}), policy)
    assert dict(spec.containers[0].env)["EPOCHS"] == "3"
    assert not {"MASTER_ADDR", "RANK"} & set(dict(spec.containers[0].env))
    assert "container c: the site's gang rendezvous replaces MASTER_ADDR, RANK" in spec.warnings
    lone = pod_to_jobspec(RetrievedPodData.model_validate({"pod": lone_pod}), policy)
    assert dict(lone.containers[0].env)["MASTER_ADDR"] == "pytorchjob-master-0" and not lone.warnings


# ------------------------------------------------------------------ the Slurm gang script


def gang_pod(**resources) -> dict:
    container = {"name": "c", "image": "python", "command": ["python3", "-c", "pass"], **resources}
    return pod([container], annotations=OURS)


def prepared(pod_json: dict, tmp_path, backend: SlurmBackend | None = None):
    spec = pod_to_jobspec(RetrievedPodData.model_validate({"pod": pod_json}), TranslationPolicy())
    paths = PodPaths.for_pod(str(tmp_path), spec.namespace, spec.uid)
    backend = backend or SlurmBackend(SlurmConfig(partition="all"), TranslationPolicy())
    return spec, paths, backend.prepare(spec, paths, make_runtime("sandbox", SANDBOX), RenderOptions(), "ilp-x")


def test_every_member_gets_a_gang_script_of_one_node_each_with_its_own_resources(tmp_path):
    _, paths, submission = prepared(gang_pod(resources={"limits": {"cpu": "2", "memory": "1Gi"}}), tmp_path)
    gang = submission.files["gang.sh"]
    directives = [line for line in gang.splitlines() if line.startswith("#SBATCH")]
    for wanted in ("--partition=all", "--cpus-per-task=2", "--mem=1024M", "--nodes=2", "--ntasks-per-node=1"):
        assert f"#SBATCH {wanted}" in directives
    assert f"#SBATCH --chdir={paths.pod_dir}" in directives and "#SBATCH --no-requeue" in directives
    assert "--job-name" not in gang  # given by submit_gang: it names the gang's members
    # The members see the rendezvous; a lone pod neither has a gang script nor those variables.
    assert "MASTER_ADDR" in submission.script.split("ILP_PASS_NAMES=", 1)[1].splitlines()[0]
    _, _, lone = render(pod([{"name": "c", "image": "python", "command": ["true"]}]), str(tmp_path))
    assert "MASTER_ADDR" not in lone


def test_a_site_that_submits_through_slurmrestd_refuses_a_gang(tmp_path):
    with pytest.raises(PodRejected, match="gang train: this site submits through slurmrestd"):
        prepared(gang_pod(), tmp_path, restd_backend())


async def test_a_gang_is_submitted_with_its_members_directories_in_rank_order():
    transport = FakeTransport((0, "42\n", ""))
    backend = SlurmBackend(SlurmConfig(sbatch="/usr/bin/sbatch"), TranslationPolicy(), transport)
    members = [PodPaths("/pods", "/pods/a/ns/u0"), PodPaths("/pods", "/pods/a/ns/u1")]
    assert await backend.submit_gang(members, "ilp-gang-1", "alice") == "42"
    assert transport.calls == [
        (
            "alice",
            [
                "/usr/bin/sbatch",
                "--parsable",
                "--job-name=ilp-gang-1",
                "/pods/a/ns/u0/gang.sh",
                "/pods/a/ns/u0",
                "/pods/a/ns/u1",
            ],
        )
    ]


# ------------------------------------------------------------------ the service core holds members


def member(index: int, gang: str = "train", size: int = 2, name: str | None = None) -> RetrievedPodData:
    annotations = {an.GANG: gang, an.GANG_SIZE: str(size), an.COMPLETION_INDEX: str(index)}
    spec = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}
    metadata = {
        "name": name or f"{gang}-{index}",
        "namespace": "ns",
        "uid": str(uuid.uuid4()),
        "annotations": annotations,
    }
    return RetrievedPodData.model_validate({"pod": {"metadata": metadata, "spec": spec}, "container": []})


async def service_with(tmp_path, backend) -> SiteService:
    settings = ServiceSettings(
        state_dir=str(tmp_path / "state"),
        pods_root=str(tmp_path / "pods"),
        runtime={"default": "sandbox"},
        create_wait_seconds=2,
    )
    service = SiteService(settings, backend, Store(tmp_path / "state" / "db.sqlite"), files=InMemoryFiles())
    await service.load()
    return service


@pytest.fixture
async def gangs(tmp_path) -> AsyncIterator[tuple[SiteService, InMemoryGangBackend]]:
    backend = InMemoryGangBackend()
    service = await service_with(tmp_path, backend)
    yield service, backend
    await service.stop()
    await service.book.store.close()


def waiting_of(service: SiteService, uid: str) -> dict:
    record = service.record(uid)
    assert record is not None
    return record.status.apps[0]["state"]["waiting"]


async def test_members_are_held_until_the_gang_is_complete_then_submitted_once_in_rank_order(gangs):
    service, backend = gangs
    holds_before = _holds()
    second = await service.create(member(1), ALICE)  # rank 1 first: ranks are not arrival order
    assert second.job_id == "" and backend.called("submit_gang") == []
    assert waiting_of(service, second.uid) == {
        "reason": "GangWaiting",
        "message": "gang train: 1 of 2 members are ready",
    }
    other = await service.create(member(0, gang="other"), ALICE)  # another gang does not count
    assert other.job_id == ""
    first = await service.create(member(0), ALICE)
    assert first.job_id != "" and service.record(second.uid).job_id == first.job_id
    [(name, dirs, account)] = backend.called("submit_gang")
    assert dirs == (service.record(first.uid).pod_dir, service.record(second.uid).pod_dir) and account == "alice"
    assert name == gang_job_name("ilp-", [first.uid, second.uid]) == service.record(second.uid).job_name
    assert backend.called("submit") == []
    assert {service.record(u).stage for u in (first.uid, second.uid)} == {Stage.SUBMITTED}
    assert _holds() == holds_before + 1  # ilp_gang_wait_seconds observed the gang's hold


def _holds() -> float:
    return REGISTRY.get_sample_value("ilp_gang_wait_seconds_count") or 0.0


async def test_a_member_deleted_while_waiting_leaves_its_gang_waiting_for_a_newcomer(gangs):
    service, backend = gangs
    left = await service.create(member(0), ALICE)
    assert await service.delete(left.uid, ALICE) == "deleted before submission"
    stays = await service.create(member(1), ALICE)
    assert "1 of 2" in waiting_of(service, stays.uid)["message"] and backend.called("submit_gang") == []
    newcomer = await service.create(member(0, name="train-0-again"), ALICE)
    assert newcomer.job_id and service.record(stays.uid).job_id == newcomer.job_id


async def test_a_transient_refusal_retries_the_whole_gang_and_a_permanent_one_fails_every_member(gangs):
    service, backend = gangs
    backend.submit_error = SubmitError("slurmctld busy", permanent=False)
    await service.create(member(0), ALICE)
    await service.create(member(1), ALICE)
    records = service.book.all()
    assert {(r.stage, r.submit_attempts) for r in records} == {(Stage.ACCEPTED, 1)}
    await service.submissions.resubmit(records[0])  # what the status cycle does once the back-off is over
    assert {r.stage for r in service.book.all()} == {Stage.SUBMITTED}
    assert len({r.job_id for r in service.book.all()}) == 1 and len(backend.called("submit_gang")) == 2

    backend.submit_error = SubmitError("Requested node configuration is not available", permanent=True)
    refused = [await service.create(member(i, gang="big"), ALICE) for i in (0, 1)]
    for created in refused:
        record = service.record(created.uid)
        assert record is not None and (record.stage, record.phase) == (Stage.FINISHED, "Failed")
        assert record.status.apps[0]["state"]["terminated"]["reason"] == "SchedulerRejected"


async def test_a_scheduler_without_gangs_refuses_a_gang_when_it_is_created(tmp_path):
    service = await service_with(tmp_path, InMemoryBackend())
    try:
        with pytest.raises(PodRejected, match="gang train: Memory at this site does not run gangs"):
            await service.create(member(0), ALICE)
        assert service.book.all() == []
    finally:
        await service.stop()
        await service.book.store.close()


# ------------------------------------------------------------------ crash recovery


async def restarted(tmp_path, backend: InMemoryGangBackend, service: SiteService) -> SiteService:
    """A new service over the same store, its start-up recovery done (the sidecar restarted)."""
    await service.stop()
    await service.book.store.close()
    again = await service_with(tmp_path, backend)
    await Reconciler(again.config, again.book, backend, again.files, again.submissions, again.staging).recover()
    return again


async def test_a_gang_interrupted_after_its_sbatch_adopts_its_job_after_a_restart(tmp_path):
    backend = InMemoryGangBackend()
    service = await service_with(tmp_path, backend)
    members = [await service.create(member(i), ALICE) for i in (0, 1)]
    job_id = members[1].job_id
    for created in members:  # as if the sidecar died before the job id was saved
        await service.book.save(created.uid, stage=Stage.SUBMITTING, job_id="")
    service = await restarted(tmp_path, backend, service)
    try:
        assert [(service.record(m.uid).stage, service.record(m.uid).job_id) for m in members] == [
            (Stage.SUBMITTED, job_id)
        ] * 2
        assert len(backend.called("submit_gang")) == 1  # the one before the crash
    finally:
        await service.stop()
        await service.book.store.close()


async def test_a_gang_interrupted_half_way_to_submitting_is_submitted_once_after_a_restart(tmp_path):
    backend = InMemoryGangBackend()
    service = await service_with(tmp_path, backend)
    first = await service.create(member(0), ALICE)
    second = await service.create(member(1), ALICE)
    backend.jobs.clear()  # its sbatch never ran: one member was saved SUBMITTING, the other not yet
    name = gang_job_name("ilp-", [first.uid, second.uid])
    await service.book.save(first.uid, stage=Stage.SUBMITTING, job_id="", job_name=name)
    await service.book.save(second.uid, stage=Stage.ACCEPTED, job_id="")
    backend.calls.clear()
    service = await restarted(tmp_path, backend, service)
    try:
        await asyncio.sleep(0.1)  # the re-queued member's submitter runs: it finds its gang submitted
        [(job_name, _, _)] = backend.called("submit_gang")
        assert job_name == name
        job_ids = {service.record(u).job_id for u in (first.uid, second.uid)}
        assert len(job_ids) == 1 and "" not in job_ids
    finally:
        await service.stop()
        await service.book.store.close()
