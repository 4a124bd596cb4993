"""Parsing condor_q / condor_history / condor_status / condor_submit / condor_rm output."""

from __future__ import annotations

import json

import classad2
import pytest

from sidecars.core.kits import backend as b
from sidecars.htcondor import parse

NOW = 1_760_000_000

# As `condor_q -json -attributes ...` prints it (HTCondor 23+): an array, ",\n" between ads.
CONDOR_Q = """[
{
  "ClusterId": 41,
  "EnteredCurrentStatus": 1759999900,
  "InterLinkJobName": "ilp-0d9f7a52-0f6a-4a55-a2d7-6bd1d5b6f0c1",
  "JobBatchName": "ilp-0d9f7a52-0f6a-4a55-a2d7-6bd1d5b6f0c1",
  "JobStatus": 1,
  "LastRejMatchReason": "no match found ",
  "NumJobStarts": 0,
  "ProcId": 0,
  "ServerTime": 1760000000
}
,
{
  "ClusterId": 42,
  "EnteredCurrentStatus": 1759999950,
  "InterLinkJobName": "ilp-5b1c9c55-1d7e-4a43-9d56-31b0c0b0c7aa",
  "JobBatchName": "ilp-5b1c9c55-1d7e-4a43-9d56-31b0c0b0c7aa",
  "JobMaxVacateTime": 35,
  "JobStatus": 2,
  "NumJobStarts": 1,
  "ProcId": 0,
  "RemoteHost": "slot1_1@wn01.example.org",
  "ServerTime": 1760000000
}
,
{
  "ClusterId": 43,
  "EnteredCurrentStatus": 1759999000,
  "HoldReason": "Error from slot1@wn02: Failed to transfer files: \\"volumes\\" not found",
  "HoldReasonCode": 13,
  "HoldReasonSubCode": 2,
  "InterLinkJobName": "ilp-77e0b2e1-92a4-4d43-8a57-0b0e1ee1b3a2",
  "JobStatus": 5,
  "NumJobStarts": 0,
  "ProcId": 0,
  "ServerTime": 1760000000
}
]
"""


def condor_json(ads: list[dict]) -> str:
    """Output shaped like condor_q/condor_history -json."""
    if not ads:
        return ""
    return "[\n" + "\n,\n".join(json.dumps(ad, indent=2, sort_keys=True) for ad in ads) + "\n]\n"


def ad(cluster=1, status=2, **attrs) -> dict:
    return {
        "ClusterId": cluster,
        "ProcId": 0,
        "JobStatus": status,
        "InterLinkJobName": f"ilp-{cluster}",
        "EnteredCurrentStatus": NOW - 10,
        **attrs,
    }


def one(a: dict, *, now=NOW, hold_timeout=600.0, in_queue=True) -> b.JobInfo:
    return parse.parse_jobs(condor_json([a]), now=now, hold_timeout=hold_timeout, in_queue=in_queue)["1.0"]


def test_condor_q_sample():
    jobs = parse.parse_jobs(CONDOR_Q, now=0, hold_timeout=600)
    assert set(jobs) == {"41.0", "42.0", "43.0"}
    idle, running, held = jobs["41.0"], jobs["42.0"], jobs["43.0"]
    assert (idle.state, idle.raw_state) == (b.PENDING, "IDLE")
    assert idle.reason == "Idle: waiting for a matching slot (no match found)"
    assert idle.name == "ilp-0d9f7a52-0f6a-4a55-a2d7-6bd1d5b6f0c1"
    assert (running.state, running.reason) == (b.RUNNING, "")
    # ServerTime (the schedd's clock) counts, not ours: held 1000 s, over the 600 s timeout.
    assert held.state == b.FAILED and held.terminal
    assert held.reason == (
        'HoldTimeout: held for 1000s: Error from slot1@wn02: Failed to transfer files: "volumes" not found'
    )


@pytest.mark.parametrize(
    "attrs, state, reason, raw",
    [
        ({"JobStatus": 1}, b.PENDING, "Idle: waiting for a matching slot", "IDLE"),
        ({"JobStatus": 1, "NumJobStarts": 1}, b.FAILED, "Evicted:", "IDLE"),
        ({"JobStatus": 2}, b.RUNNING, "", "RUNNING"),
        (
            {"JobStatus": 3, "RemoveReason": "via condor_rm (by user ilp)"},
            b.CANCELLED,
            "via condor_rm (by user ilp)",
            "REMOVED",
        ),
        (
            {"JobStatus": 3, "RemoteHost": "slot1@wn", "JobMaxVacateTime": 35},
            b.RUNNING,
            "Removing: the job is being stopped",
            "REMOVED",
        ),
        (
            {"JobStatus": 3, "RemoteHost": "slot1@wn", "JobMaxVacateTime": 35, "EnteredCurrentStatus": NOW - 200},
            b.CANCELLED,
            "removed",
            "REMOVED",
        ),  # removal stuck longer than vacate time + margin
        (
            {
                "JobStatus": 3,
                "RemoveReason": "The job attribute PeriodicRemove expression '(JobStatus == 1 && "
                "NumJobStarts > 0)' evaluated to TRUE",
            },
            b.FAILED,
            "Removed: The job attribute PeriodicRemove",
            "REMOVED",
        ),
        ({"JobStatus": 4, "ExitCode": 0, "ExitBySignal": False}, b.COMPLETED, "exit code 0", "COMPLETED"),
        ({"JobStatus": 4, "ExitCode": 3, "ExitBySignal": False}, b.FAILED, "exit code 3", "COMPLETED"),
        ({"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9}, b.FAILED, "killed by signal 9", "COMPLETED"),
        (
            {"JobStatus": 5, "HoldReason": "via condor_hold (by user admin)", "HoldReasonCode": 1},
            b.PENDING,
            "Held: via condor_hold (by user admin)",
            "HELD",
        ),
        (
            {"JobStatus": 5, "HoldReason": "via condor_hold", "EnteredCurrentStatus": NOW - 601},
            b.FAILED,
            "HoldTimeout: held for 601s: via condor_hold",
            "HELD",
        ),
        (
            {
                "JobStatus": 5,
                "HoldReason": "Job has gone over memory limit of 2048 megabytes. Peak usage: 2300 megabytes.",
                "HoldReasonCode": 34,
                "HoldReasonSubCode": 102,
                "NumJobStarts": 1,
            },
            b.OUT_OF_MEMORY,
            "Held: Job has gone over memory limit",
            "HELD",
        ),
        (
            {"JobStatus": 5, "HoldReason": "Error from slot1@wn: starter lost", "NumJobStarts": 1},
            b.FAILED,
            "Held: held after it had started, it is not run again: Error from slot1@wn",
            "HELD",
        ),
        ({"JobStatus": 6}, b.RUNNING, "", "TRANSFERRING_OUTPUT"),
        ({"JobStatus": 7}, b.RUNNING, "Suspended", "SUSPENDED"),
        ({"JobStatus": 9}, b.RUNNING, "unknown JobStatus 9", "STATUS_9"),
    ],
)
def test_status_table(attrs, state, reason, raw):
    job = one(ad(**attrs))
    assert (job.state, job.raw_state) == (state, raw)
    assert job.reason.startswith(reason)
    assert job.job_id == "1.0" and job.name == "ilp-1"


def test_held_is_pending_then_failed_after_the_timeout():
    held = ad(status=5, HoldReason="SUBMIT_REQUIREMENT", EnteredCurrentStatus=NOW)
    assert one(held, now=NOW + 59, hold_timeout=60).state == b.PENDING
    assert one(held, now=NOW + 60, hold_timeout=60).state == b.PENDING
    late = one(held, now=NOW + 61, hold_timeout=60)
    assert late.state == b.FAILED and late.reason == "HoldTimeout: held for 61s: SUBMIT_REQUIREMENT"
    assert parse.needs_removal(late) and not parse.needs_removal(one(held, now=NOW, hold_timeout=60))


def test_a_hold_ended_by_the_periodic_remove_backstop_is_a_hold_timeout():
    removed = ad(
        status=3,
        LastJobStatus=5,
        HoldReason="site maintenance",
        NumJobStarts=0,
        RemoveReason="The job attribute PeriodicRemove expression '(JobStatus == 5)' evaluated to TRUE",
    )
    job = one(removed)
    assert (job.state, job.reason) == (b.FAILED, "HoldTimeout: held too long: site maintenance")
    cancelled = one(ad(status=3, LastJobStatus=5, RemoveReason="via condor_rm (by user alice)"))
    assert cancelled.state == b.CANCELLED  # a person removed it: not a timeout


def test_history_records_are_final():
    removed = ad(status=3, RemoteHost="slot1@wn", RemoveReason="via condor_rm")
    assert one(removed, in_queue=False).state == b.CANCELLED  # gone from the queue: really ended
    text = condor_json([ad(status=4, ExitCode=0), ad(status=4, ExitCode=1)])  # newest first: the first wins
    assert parse.parse_jobs(text, in_queue=False)["1.0"].state == b.COMPLETED


def test_empty_and_broken_output():
    assert parse.parse_jobs("") == {}
    assert parse.parse_jobs("\n") == {}
    assert parse.parse_jobs("[\n]\n") == {}
    assert parse.parse_jobs(condor_json([{"JobStatus": 2}])) == {}  # no id: skipped
    for bad in ("-- Failed to fetch ads from: <1.2.3.4:9618>", "[{", '{"a": 1', "[1, 2]"):
        with pytest.raises(parse.ParseError):
            parse.parse_jobs(bad)


def test_values_of_other_types():
    job = one(
        ad(
            status=4,
            ExitCode="2",
            ExitBySignal="false",
            JobBatchName="fallback",
            InterLinkJobName=None,
            LastRejMatchReason="/Expr(x)/",
        )
    )
    assert (job.state, job.reason, job.name) == (b.FAILED, "exit code 2", "fallback")


# ---- constraints, evaluated with the ClassAd library against job ads


def matches(constraint: str, attrs: dict) -> bool:
    job = classad2.ClassAd()
    for key, value in attrs.items():
        job[key] = value
    return classad2.ExprTree(constraint).eval(job) is True


def test_ids_constraint():
    constraint = parse.ids_constraint(["12.0", "7.0", "12.0", "9.3", "junk"])
    assert matches(constraint, {"ClusterId": 7, "ProcId": 0})
    assert matches(constraint, {"ClusterId": 9, "ProcId": 3})
    assert not matches(constraint, {"ClusterId": 9, "ProcId": 0})
    assert not matches(constraint, {"ClusterId": 8, "ProcId": 0})
    assert parse.ids_constraint(["junk"]) == "false"


def test_name_constraints():
    names = parse.names_constraint(["ilp-a", "ilp-b"])
    assert matches(names, {"InterLinkJobName": "ilp-b"})
    assert not matches(names, {"InterLinkJobName": "ilp-c"})
    assert not matches(names, {})
    prefix = parse.prefix_constraint("ilp-")
    assert matches(prefix, {"InterLinkJobName": "ilp-x"})
    assert not matches(prefix, {"InterLinkJobName": "ILP-x"})
    assert not matches(prefix, {"JobBatchName": "ilp-x"})
    with pytest.raises(ValueError):
        parse.names_constraint(['x", "y'])


# ---- condor_submit, condor_rm


def test_parse_submit():
    assert parse.parse_submit("123.0 - 123.0\n") == "123.0"
    assert parse.parse_submit("WARNING: something\n77.0 - 77.0\n") == "77.0"
    assert parse.parse_submit("Submitting job(s).\n1 job(s) submitted to cluster 5.\n") is None
    assert parse.parse_submit("") is None


@pytest.mark.parametrize(
    "stderr, transient",
    [
        (
            "\nERROR: Failed to connect to local queue manager\nAUTHENTICATE:1003:Failed to authenticate with any method\n",
            True,
        ),
        ("\nERROR: Can't find address of local schedd\n", True),
        ("\nERROR: Failed to create cluster\nNumber of submitted jobs would exceed MAX_JOBS_PER_OWNER\n", True),
        (
            "\nERROR: Failed to commit job submission into the queue.\nERROR: SUBMIT_REQUIREMENT NotTooBig "
            "evaluated to false\n",
            False,
        ),
        ("\nERROR: on Line 7 of submit file: \nERROR: Parse error in expression: \n\t(Foo &&\n", False),
        ("\nERROR: Executable file /p/job.sh does not exist\n", False),
        ("something nobody expected", False),
    ],
)
def test_submit_errors(stderr, transient):
    assert parse.submit_error_is_transient(stderr) is transient
    assert "ERROR" not in parse.submit_error_message(stderr)


def test_rm_problems():
    stderr = "Job 5.0 not found\nJob 6.0 already marked for removal\n"
    assert parse.rm_problems(stderr) == []
    assert parse.rm_problems("Job 7.0 not found\nPermission denied to remove job 8.0\n") == [
        "Permission denied to remove job 8.0"
    ]
    assert parse.rm_problems("Can't find address of local schedd\n") == ["Can't find address of local schedd"]


# ---- condor_status


def test_parse_status():
    slots = condor_json(
        [
            # a partitionable slot: 40 of 64 cores, 100 of 256 GB and 3 of 4 GPUs not handed out
            {
                "Name": "slot1@wn01",
                "Machine": "wn01",
                "State": "Unclaimed",
                "Activity": "Idle",
                "Cpus": 40,
                "Memory": 102400,
                "GPUs": 3,
                "TotalSlotGPUs": 4,
                "PartitionableSlot": True,
            },
            # its dynamic slot (in use): not counted again
            {
                "Name": "slot1_1@wn01",
                "Machine": "wn01",
                "State": "Claimed",
                "Cpus": 24,
                "Memory": 160000,
                "GPUs": 1,
                "DynamicSlot": True,
            },
            # a static slot, busy
            {
                "Name": "slot1@wn02",
                "Machine": "wn02",
                "State": "Claimed",
                "Activity": "Busy",
                "Cpus": 8,
                "Memory": 16000,
                "GPUs": 1,
            },
            # a static slot, free
            {
                "Name": "slot2@wn02",
                "Machine": "wn02",
                "State": "Unclaimed",
                "Activity": "Idle",
                "Cpus": 8,
                "Memory": 16000,
            },
            # a drained machine counts for nothing
            {
                "Name": "slot1@wn03",
                "Machine": "wn03",
                "State": "Drained",
                "Cpus": 64,
                "Memory": 256000,
                "PartitionableSlot": True,
                "TotalSlotGPUs": 8,
            },
        ]
    )
    capacity = parse.parse_status(slots)
    assert (capacity.cpus, capacity.memory_mib) == (48, 118400)
    assert (capacity.gpus, capacity.gpus_total, capacity.nodes) == (3, 5, 2)
    assert parse.parse_status("") == b.Capacity(cpus=0, memory_mib=0, gpus=0, gpus_total=0, nodes=0)
