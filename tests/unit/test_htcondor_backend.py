"""The HTCondor backend's commands, against a fake transport: what runs, and what it makes of
the answers (the real CLI is exercised by the integration tests with the condor emulator)."""

from __future__ import annotations

import asyncio
import json

import pytest

from interlink_provider.pods.policy import TranslationPolicy
from sidecars.core.kits import backend as b
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.ratelimit import TokenBucket
from sidecars.core.kits.transport import CommandResult, TransportError
from sidecars.htcondor.backend import HTCondorBackend, HTCondorConfig, StaticCapacity


class FakeTransport:
    def __init__(self, answers=None, account=None, calls=None):
        self.answers = answers if answers is not None else {}
        self.account = account
        self.calls = calls if calls is not None else []

    def as_account(self, account):
        return FakeTransport(self.answers, account, self.calls)

    async def run(self, argv, *, timeout=30.0):
        self.calls.append((self.account, list(argv)))
        answer = self.answers.get(argv[0], (0, "", ""))
        if callable(answer):
            answer = answer(argv)
        if isinstance(answer, Exception):
            raise answer
        code, out, err = answer
        return CommandResult(tuple(argv), code, out, err)


def backend(answers=None, **config) -> tuple[HTCondorBackend, FakeTransport]:
    transport = FakeTransport(answers)
    config.setdefault("cancel_batch_seconds", 0.01)
    return HTCondorBackend(HTCondorConfig(**config), TranslationPolicy(), transport), transport


def ads(*items) -> str:
    return "[\n" + "\n,\n".join(json.dumps(i, indent=2) for i in items) + "\n]\n" if items else ""


def job(cluster, status, **attrs):
    return {"ClusterId": cluster, "ProcId": 0, "JobStatus": status, "InterLinkJobName": f"ilp-{cluster}", **attrs}


PATHS = PodPaths.for_pod("/scratch/pods", "ns", "uid-1")


def test_rate_limit_and_environment():
    config = HTCondorConfig(
        commands_per_second=3,
        command_burst=7,
        environment={"CONDOR_CONFIG": "/etc/c"},
        token_directory="/run/tokens.d",
        scitoken_file="/run/scitoken",
        authentication_methods=["IDTOKENS", "FS"],
    )
    bucket = HTCondorBackend.rate_limit(config)
    assert isinstance(bucket, TokenBucket) and (bucket.rate, bucket.burst) == (3, 7)
    assert HTCondorBackend.command_environment(config) == {
        "CONDOR_CONFIG": "/etc/c",
        "_CONDOR_SEC_TOKEN_DIRECTORY": "/run/tokens.d",
        "_CONDOR_SCITOKENS_FILE": "/run/scitoken",
        "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS,FS",
    }
    assert HTCondorBackend(config, TranslationPolicy()).transport.extra_env["_CONDOR_SCITOKENS_FILE"] == "/run/scitoken"


async def test_submit_as_the_account_to_the_configured_schedd():
    be, t = backend({"condor_submit": (0, "123.0 - 123.0\n", "")}, pool="cm.example.org", schedd="ap1")
    assert await be.submit(PATHS, "ilp-uid-1", "alice") == "123.0"
    assert t.calls == [
        (
            "alice",
            ["condor_submit", "-terse", "-pool", "cm.example.org", "-name", "ap1", "/scratch/pods/ns/uid-1/job.sub"],
        )
    ]


@pytest.mark.parametrize(
    "answer, permanent",
    [
        (
            (1, "", "\nERROR: Failed to connect to local queue manager\nSECMAN:2007:Failed to end classad message.\n"),
            False,
        ),
        ((1, "", "\nERROR: on Line 3 of submit file: \nERROR: Parse error in expression\n"), True),
        ((0, "", ""), False),  # no id printed
        (TransportError("condor_submit did not answer within 60s"), False),
    ],
)
async def test_submit_errors(answer, permanent):
    be, _ = backend({"condor_submit": answer})
    with pytest.raises(b.SubmitError) as info:
        await be.submit(PATHS, "ilp-uid-1")
    assert info.value.permanent is permanent


async def test_query_is_one_condor_q_for_all_jobs():
    out = ads(job(1, 2), job(2, 1), job(3, 4, ExitCode=0), job(99, 2))
    be, t = backend({"condor_q": (0, out, "")})
    jobs = await be.query(["1.0", "2.0", "3.0", "4.0"])
    assert {k: v.state for k, v in jobs.items()} == {"1.0": b.RUNNING, "2.0": b.PENDING, "3.0": b.COMPLETED}
    assert len(t.calls) == 1
    argv = t.calls[0][1]
    assert argv[:3] == ["condor_q", "-allusers", "-json"]
    assert argv[argv.index("-constraint") + 1] == "InterLinkJobName =!= undefined"
    assert "JobStatus" in argv[argv.index("-attributes") + 1].split(",")
    assert await be.query([]) == {} and len(t.calls) == 1


async def test_query_with_no_jobs_in_the_queue():
    be, _ = backend({"condor_q": (0, "", "")})
    assert await be.query(["1.0"]) == {}


async def test_query_failures_are_poll_errors():
    be, _ = backend({"condor_q": (1, "", "-- Failed to fetch ads from: <10.0.0.1:9618>\n")})
    with pytest.raises(b.PollError):
        await be.query(["1.0"])
    be, _ = backend({"condor_q": TransportError("timeout")})
    with pytest.raises(b.PollError):
        await be.query(["1.0"])
    be, _ = backend({"condor_q": (0, "garbage", "")})
    with pytest.raises(b.PollError):
        await be.query(["1.0"])


async def test_jobs_held_too_long_fail_and_are_removed():
    old = 1_000  # held since 1970: long past the timeout
    out = ads(job(5, 5, HoldReason="Failed to transfer files", EnteredCurrentStatus=old), job(6, 2))
    be, t = backend(
        {"condor_q": (0, out, ""), "condor_rm": (0, "Job 5.0 marked for removal\n", "")}, hold_timeout_seconds=60
    )
    jobs = await be.query(["5.0", "6.0"])
    assert jobs["5.0"].state == b.FAILED and jobs["5.0"].reason.startswith("HoldTimeout: held for")
    rm = [argv for _, argv in t.calls if argv[0] == "condor_rm"]
    assert len(rm) == 1 and rm[0][-1] == "5.0" and "-reason" in rm[0]


async def test_completed_asks_history_for_just_those_jobs():
    out = ads(job(7, 4, ExitCode=0), job(8, 4, ExitBySignal=True, ExitSignal=9))
    be, t = backend({"condor_history": (0, out, "")}, schedd="ap1")
    jobs = await be.completed(["7.0", "8.0"])
    assert jobs["7.0"].state == b.COMPLETED and jobs["8.0"].reason == "killed by signal 9"
    argv = t.calls[0][1]
    assert argv[0] == "condor_history" and ["-name", "ap1"] == argv[1:3]
    assert argv[argv.index("-match") + 1] == str(2 + 10)
    assert "member(ClusterId, {7, 8})" in argv[argv.index("-constraint") + 1]
    # History unavailable: not an error, the runner's files decide.
    be, _ = backend({"condor_history": (1, "", "boom")})
    assert await be.completed(["7.0"]) == {}
    be, t = backend(use_history=False)
    assert await be.completed(["7.0"]) == {} and t.calls == []


async def test_find_by_name_prefers_the_queue_and_the_newest():
    history = ads(job(10, 3, InterLinkJobName="ilp-a"), job(11, 4, ExitCode=0, InterLinkJobName="ilp-b"))
    queue = ads(job(12, 2, InterLinkJobName="ilp-a"), job(13, 1, InterLinkJobName="ilp-other"))
    be, t = backend({"condor_history": (0, history, ""), "condor_q": (0, queue, "")})
    found = await be.find_by_name(["ilp-a", "ilp-b", "ilp-c"])
    assert {k: v.job_id for k, v in found.items()} == {"ilp-a": "12.0", "ilp-b": "11.0"}
    assert [argv[0] for _, argv in t.calls] == ["condor_history", "condor_q"]


async def test_list_own_is_the_sidecars_own_queue():
    queue = ads(job(1, 2, InterLinkJobName="ilp-x"), job(2, 2, InterLinkJobName="other-y"))
    be, t = backend({"condor_q": (0, queue, "")})
    assert [j.job_id for j in await be.list_own("ilp-")] == ["1.0"]
    assert "-allusers" not in t.calls[0][1]


async def test_cancels_share_one_condor_rm_and_are_idempotent():
    be, t = backend(
        {"condor_rm": (1, "Job 1.0 marked for removal\n", "Job 2.0 not found\nJob 10.0 already marked for removal\n")}
    )
    await asyncio.gather(be.cancel(["10.0"], "alice"), be.cancel(["2.0", "1.0"], "alice"), be.cancel(["3.0"], "bob"))
    rm = sorted((account, argv[argv.index("-reason") + 2 :]) for account, argv in t.calls)
    assert rm == [("alice", ["1.0", "2.0", "10.0"]), ("bob", ["3.0"])]


async def test_cancel_failures_are_poll_errors():
    be, _ = backend({"condor_rm": (1, "", "Permission denied to remove job 1.0\n")})
    with pytest.raises(b.PollError, match="Permission denied"):
        await be.cancel(["1.0"])
    be, _ = backend({"condor_rm": (1, "", "")})
    with pytest.raises(b.PollError):
        await be.cancel(["1.0"])


async def test_graceful_stop_is_a_condor_rm():
    be, t = backend({"condor_rm": (0, "Job 4.0 marked for removal\n", "")})
    await be.signal("4.0", "USR1", "alice")
    assert t.calls[0][0] == "alice" and t.calls[0][1][0] == "condor_rm" and t.calls[0][1][-1] == "4.0"
    with pytest.raises(b.PollError):
        await be.signal("4.0", "USR2")


async def test_capacity_from_the_pool_or_the_configuration():
    slots = ads(
        {
            "Name": "slot1@wn",
            "Machine": "wn",
            "State": "Unclaimed",
            "Cpus": 8,
            "Memory": 16000,
            "PartitionableSlot": True,
        }
    )
    be, t = backend({"condor_status": (0, slots, "")}, pool="cm")
    assert (await be.capacity()).cpus == 8
    assert t.calls[0][1][:3] == ["condor_status", "-pool", "cm"] and "-name" not in t.calls[0][1]
    static = StaticCapacity(cpus=100, memory_mib=1000, gpus=2)
    be, _ = backend({"condor_status": (1, "", "CEDAR:6001:Failed to connect")}, static_capacity=static)
    assert (await be.capacity()).cpus == 100
    be, _ = backend({"condor_status": (1, "", "CEDAR:6001:Failed to connect")})
    with pytest.raises(b.PollError):
        await be.capacity()
    be, t = backend(query_capacity=False, static_capacity=static)
    assert (await be.capacity()).gpus_total == 2 and t.calls == []
    with pytest.raises(ValueError):
        HTCondorConfig(query_capacity=False)
