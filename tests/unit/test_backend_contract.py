"""The backend contract: the command base class turns failures into PollError in one place,
and the service discovers optional capabilities (a backend without `Signals` has its deleted
pods cancelled at once; one without `ReportsCapacity` leaves the node's capacity to the
Virtual Kubelet; one without `ListsOwnJobs` leaves strays alone)."""

from __future__ import annotations

import time

import pytest

from sidecars.core.domain.principal import LOCAL
from sidecars.core.domain.reconciler import Reconciler
from sidecars.core.domain.records import PodRecord, PodSummary, Stage
from sidecars.core.domain.service import SiteService
from sidecars.core.domain.settings import ServiceSettings
from sidecars.core.domain.store import Store
from sidecars.core.kits import backend as b
from sidecars.core.kits.transport import CommandResult, TransportError
from sidecars.htcondor.backend import HTCondorBackend
from sidecars.slurm.backend import SlurmBackend
from sidecars.slurm.restd import SlurmRestBackend


class FakeTransport:
    def __init__(self, answer, calls=None, account=None):
        self.answer = answer
        self.calls = calls if calls is not None else []
        self.account = account

    def as_account(self, account):
        return FakeTransport(self.answer, self.calls, account)

    async def run(self, argv, *, timeout=30.0):
        self.calls.append((self.account, list(argv)))
        if isinstance(self.answer, Exception):
            raise self.answer
        code, out, err = self.answer
        return CommandResult(tuple(argv), code, out, err)


class Minimal(b.CommandBackend):
    """A scheduler that only builds commands and parses their output."""

    name = display_name = "Minimal"
    submit_answers = b.SubmitCommand(lambda out: out.strip() or None, str.strip, lambda err: "busy" in err)

    def __init__(self, answer) -> None:
        super().__init__(FakeTransport(answer), command_timeout=5, batch_seconds=0.01)

    def prepare(self, spec, paths, runtime, options, job_name):
        raise NotImplementedError

    def submit_command(self, paths, job_name, options):
        return ["qsub", job_name]

    def cancel_command(self):
        return ("qdel",)

    async def query(self, job_ids):
        return await self.ask(b.Command(["qstat", *job_ids], lambda out: dict.fromkeys(out.split(), "x")))

    async def find_by_name(self, job_names):
        return {}


async def test_a_failed_command_is_one_poll_error_naming_it():
    with pytest.raises(b.PollError, match=r"^qstat failed: no such queue$"):
        await Minimal((1, "", "no such queue\n")).query(["1"])
    with pytest.raises(b.PollError, match=r"^qstat failed: 3$"):  # no words: the exit code
        await Minimal((3, "", "")).query(["1"])
    with pytest.raises(b.PollError, match="did not answer"):
        await Minimal(TransportError("qstat did not answer within 5s")).query(["1"])
    assert await Minimal((0, "1 2\n", "")).query(["1"]) == {"1": "x", "2": "x"}


async def test_harmless_failures_fallbacks_and_unreadable_answers():
    backend = Minimal((1, "7\n", "job 8 is gone"))
    gone = b.Command(["qstat"], str.split, harmless=lambda err: "is gone" in err)
    assert await backend.ask(gone) == ["7"]
    optional = b.Command(["qacct"], str.split, fallback=lambda result: [])
    assert await backend.ask(optional) == []
    with pytest.raises(b.PollError):  # a fallback covers a failed command, not one that could not run
        await Minimal(TransportError("lost")).ask(optional)

    def unreadable(_out: str) -> None:
        raise ValueError("not JSON")

    with pytest.raises(b.PollError, match=r"^qstat: not JSON$"):
        await Minimal((0, "{", "")).ask(b.Command(["/opt/bin/qstat"], unreadable))


async def test_submit_and_cancel_come_from_the_base_class():
    backend = Minimal((0, "42\n", ""))
    assert await backend.submit(None, "ilp-a", "alice") == "42"
    await backend.cancel(["1", "2"], "alice")
    assert backend.transport.calls == [("alice", ["qsub", "ilp-a"]), ("alice", ["qdel", "1", "2"])]
    with pytest.raises(b.SubmitError) as refused:
        await Minimal((1, "", "busy")).submit(None, "ilp-a")
    assert not refused.value.permanent
    with pytest.raises(b.PollError, match="qdel failed: denied"):
        await Minimal((1, "", "denied")).cancel(["1"])


def test_capabilities_are_discovered():
    assert b.supports(Minimal((0, "", ""))) == []
    for backend in (SlurmBackend, HTCondorBackend, SlurmRestBackend):
        assert issubclass(backend, (b.Signals, b.ReportsCapacity, b.ListsOwnJobs))
    with pytest.raises(TypeError, match="JSON"):
        b.Submission(script="#!/bin/sh\n", options={"when": time})


class Recorder(b.Backend):
    """Only what every backend must offer: no signal, no capacity, no listing."""

    name = display_name = "Recorder"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def prepare(self, spec, paths, runtime, options, job_name):
        raise NotImplementedError

    async def submit(self, paths, job_name, account=None, options=None):
        raise NotImplementedError

    async def query(self, job_ids):
        return {}

    async def find_by_name(self, job_names):
        return {}

    async def cancel(self, job_ids, account=None):
        self.calls.append(("cancel", list(job_ids), account))


class Signalling(Recorder, b.Signals):
    async def signal(self, job_id, signal, account=None):
        self.calls.append(("signal", job_id, signal, account))


async def service_with(backend: b.Backend, tmp_path) -> SiteService:
    settings = ServiceSettings(state_dir=str(tmp_path), pods_root=str(tmp_path / "pods"))
    service = SiteService(settings, backend, Store(tmp_path / "db.sqlite"))
    await service.load()
    record = PodRecord(
        uid="u1",
        namespace="ns",
        name="p",
        pod_dir=str(tmp_path / "pods" / "ns-u1"),
        job_name="ilp-u1",
        owner=LOCAL.key,
        stage=Stage.SUBMITTED,
        job_id="42",
        account="alice",
        summary=PodSummary(containers=(), grace=30),
    )
    await service.book.insert(record)
    service.book.scheduler.jobs["u1"] = b.JobInfo("42", b.RUNNING)
    return service


async def test_without_signals_graceful_deletion_falls_back_to_cancel(tmp_path):
    backend = Recorder()
    service = await service_with(backend, tmp_path)
    before = time.time()
    assert await service.delete("u1") == "deleting"
    record = service.book.get("u1")
    assert record.stage == Stage.DELETING and record.hard_cancel_at <= time.time()
    assert backend.calls == [("cancel", ["42"], "alice")]
    await service.book.store.close()
    # With the capability: the batch script is signalled, the hard cancel waits for the grace period.
    backend = Signalling()
    service = await service_with(backend, tmp_path / "graceful")
    assert await service.delete("u1") == "deleting"
    assert backend.calls == [("signal", "42", "USR1", "alice")]
    assert service.book.get("u1").hard_cancel_at >= before + 30
    await service.book.store.close()


async def test_without_capacity_or_listing_the_service_does_without(tmp_path):
    service = await service_with(Recorder(), tmp_path)
    ping = await service.ping()
    assert ping.status == "ok" and ping.resources.cpu is None and ping.resources.memory is None
    assert ping.resources.pods == str(service.config.max_pods - 1)
    reconciler = Reconciler(
        service.config, service.book, service.backend, service.files, service.submissions, service.staging
    )
    await reconciler.recover()  # no list_own to call: strays are left alone
    assert service.backend.calls == []
    await service.book.store.close()


async def test_slurm_beyond_the_jobs_argument_lists_every_account():
    """Above MAX_JOBS_ARGUMENT ids, one squeue of the whole queue (not --me, which left out the
    mapped accounts' jobs when the sidecar submits through agents), filtered to the ids asked."""
    from interlink_provider.pods.policy import TranslationPolicy
    from sidecars.slurm.backend import MAX_JOBS_ARGUMENT, SlurmConfig

    ids = [str(n) for n in range(1, MAX_JOBS_ARGUMENT + 2)]
    answer = "".join(f"{n}|RUNNING|None|ilp-x{n}\n" for n in [1, 2, MAX_JOBS_ARGUMENT + 1, 99999])
    transport = FakeTransport((0, answer, ""))
    backend = SlurmBackend(SlurmConfig(), TranslationPolicy(), transport)
    jobs = await backend.query(ids)
    assert sorted(jobs, key=int) == ["1", "2", str(MAX_JOBS_ARGUMENT + 1)]  # 99999: not ours
    [(_, argv)] = transport.calls
    assert not any(arg.startswith(("--me", "--jobs", "--user")) for arg in argv)
    few = FakeTransport((0, answer, ""))
    await SlurmBackend(SlurmConfig(), TranslationPolicy(), few).query(["1", "2"])
    assert "--jobs=1,2" in few.calls[0][1]
