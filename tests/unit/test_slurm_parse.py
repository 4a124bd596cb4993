"""Parsing of real squeue / sacct / sinfo / sbatch output (captured from Slurm 22.05)."""

from __future__ import annotations

from sidecars.core.domain.status import reason_word
from sidecars.core.kits import backend as b
from sidecars.slurm import parse
from sidecars.slurm.reasons import explain


def test_squeue_states_and_reasons():
    text = (
        "1|COMPLETED|None|ilp-aaa\n"
        "3|FAILED|NonZeroExitCode|ilp-ccc\n"
        "2|PENDING|JobHeldUser|ilp-bbb\n"
        "7|RUNNING|None|name|with|pipes\n"
        "8|OUT_OF_MEMORY|OutOfMemory|ilp-oom\n"
        "9|COMPLETING|None|ilp-x\n"
        "garbage line\n"
    )
    jobs = parse.parse_squeue(text)
    assert jobs["1"].state == b.COMPLETED and jobs["1"].reason == ""
    assert (
        jobs["2"].state == b.PENDING
        and jobs["2"].reason == "JobHeldUser: held by its owner: release it, or delete the pod"
    )
    assert jobs["3"].state == b.FAILED and jobs["3"].terminal
    assert jobs["7"].name == "name|with|pipes"
    assert jobs["8"].state == b.OUT_OF_MEMORY
    assert jobs["9"].state == b.RUNNING and not jobs["9"].terminal
    assert len(jobs) == 6


def test_unknown_states_are_never_terminal():
    assert parse.normalise_state("SOMETHING_NEW") == b.RUNNING
    assert parse.normalise_state("CANCELLED by 0") == b.CANCELLED
    assert parse.normalise_state("TIMEOUT") == b.TIMEOUT


def test_sacct_skips_steps_and_keeps_the_job_record():
    text = "3|FAILED|3:0|ilp-ccc\n3.batch|FAILED|3:0|batch\n1|COMPLETED|0:0|ilp-aaa\n"
    jobs = parse.parse_sacct(text)
    assert set(jobs) == {"1", "3"}
    assert jobs["3"].state == b.FAILED and jobs["3"].reason == "exit code 3:0"


def test_sbatch_output_and_errors():
    assert parse.parse_sbatch("123\n") == "123"
    assert parse.parse_sbatch("456;cluster\n") == "456"
    assert parse.parse_sbatch("Submitted batch job 1\n") is None
    refused = "sbatch: error: Batch job submission failed: Requested node configuration is not available\n"
    assert not parse.sbatch_error_is_transient(refused)
    assert (
        parse.sbatch_error_message(refused)
        == "Batch job submission failed: Requested node configuration is not available"
    )
    busy = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
    assert parse.sbatch_error_is_transient(busy)
    assert parse.sbatch_error_is_transient("sbatch: error: Unable to contact slurm controller (connect failure)")


def test_sinfo_capacity_counts_usable_nodes_once():
    text = (
        "localhost|1/3/0/4|8000|1024|gpu:2|gpu:1(IDX:0)|mix|\n"
        "localhost|1/3/0/4|8000|1024|gpu:2|gpu:1(IDX:0)|mix|\n"  # same node, other partition
        "node2|0/8/0/8|16000|0|gpu:a100:4(S:0-1)|gpu:a100:0(IDX:N/A)|idle|\n"
        "node3|0/8/0/8|16000|0|(null)|gpu:0|drain|\n"
    )
    cap = parse.parse_sinfo(text)
    assert cap.nodes == 2
    assert cap.cpus == 3 + 8
    assert cap.memory_mib == (8000 - 1024) + 16000
    assert cap.gpus_total == 6 and cap.gpus == 1 + 4


def test_pending_reasons_are_explained_and_unknown_codes_kept():
    assert explain("Resources").startswith("Resources: waiting for nodes")
    assert "lower it" in explain("PartitionTimeLimit")
    assert explain("QOSMaxJobsPerUserLimit").startswith("QOSMaxJobsPerUserLimit: a limit of your account or QOS")
    assert explain("SomethingNew") == "SomethingNew"
    assert reason_word(explain("AssocGrpCpuLimit"), "Pending") == "AssocGrpCpuLimit"  # still the pod's reason


def test_owned_jobs_carry_the_account_they_run_as_and_their_directory():
    text = "ilp-bob|/p/ilp-bob/ns/x-1|41|PENDING|JobHeldUser|ilp-x-1\nilp|/p/ns/x-2|42|RUNNING|None|ilp-x-2\n"
    jobs = parse.parse_owned(text)
    assert [(j.user, j.work_dir, j.job_id, j.state, j.name) for j in jobs] == [
        ("ilp-bob", "/p/ilp-bob/ns/x-1", "41", b.PENDING, "ilp-x-1"),
        ("ilp", "/p/ns/x-2", "42", b.RUNNING, "ilp-x-2"),
    ]
