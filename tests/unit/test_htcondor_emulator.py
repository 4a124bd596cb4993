"""The HTCondor emulator (tests/emulators/htcondor): real processes, real queue, HTCondor's formats.

The executables from bin/ are run as subprocesses, as a backend runs them, for every behaviour
checked (exit codes, output formats, concurrency, the interpreter choice); the many polls in
between call the same `main()` in-process, since every Python started costs ~70 ms. The parser,
evaluator, JSON printer and user log are also checked against the real HTCondor libraries from the
htcondor wheel (htcondor2.Submit, classad2, htcondor2.JobEventLog) where they are importable.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.htcondor import emulator as emu

BIN = Path(emu.__file__).resolve().parent / "bin"

try:
    import classad2
    import htcondor2
except ImportError:  # the emulator itself never needs them
    classad2 = None
    htcondor2 = None

needs_htcondor = pytest.mark.skipif(
    classad2 is None, reason="the htcondor wheel (classad2, htcondor2) is not installed"
)


def _pids_using(marker: str) -> list[int]:
    """Processes whose environment mentions the state dir: supervisors and jobs of one test."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if stat[0] != "Z":
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


class Condor:
    """Runs the emulator's executables against one private state directory."""

    def __init__(self, tmp_path: Path):
        self.state = tmp_path / "condor-state"
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "ILP_CONDOR_EMULATOR_DIR": str(self.state),
            "ILP_EMULATOR_PYTHON": sys.executable,
            "ILP_CONDOR_EMULATOR_MAX_VACATE_TIME": "1",
        }

    def run(self, *argv: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        """The real executable from bin/, as a backend runs it."""
        return subprocess.run(
            list(argv),
            cwd=self.work,
            env={**self.env, **env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def call(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        """The same command in-process (emulator.main): for the many polls, as each Python costs ~70 ms."""
        settings = {k: v for k, v in {**self.env, **env}.items() if k.startswith("ILP_CONDOR_EMULATOR_")}
        saved = {k: os.environ.get(k) for k in settings}
        out, err, cwd = io.StringIO(), io.StringIO(), os.getcwd()
        os.environ.update(settings)
        os.chdir(self.work)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = emu.main(list(argv))
        finally:
            os.chdir(cwd)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())

    def submit(self, text: str, *flags: str, name: str = "job.sub", real: bool = False, **env: str) -> int:
        (self.work / name).write_text(text)
        result = (self.run if real else self.call)("condor_submit", "-terse", *flags, name, **env)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.split(".")[0])

    def q(self, *argv: str, real: bool = False, **env: str) -> list[dict[str, Any]]:
        result = (self.run if real else self.call)("condor_q", "-json", *argv, **env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if result.stdout else []

    def history(self, *argv: str, real: bool = False) -> list[dict[str, Any]]:
        result = (self.run if real else self.call)("condor_history", "-json", *argv)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def wait(self, probe: Callable[[], Any], timeout: float = 8.0, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError("condition not reached in time")

    def finished(self, cluster: int, timeout: float = 8.0, real: bool = False) -> list[dict[str, Any]]:
        """Wait for the job to reach the history (supervisors finalise jobs without any command), then
        read it with condor_history."""
        self.wait(lambda: any(a["ClusterId"] == cluster for a in emu.read_history(self.state)), timeout)
        return self.history(str(cluster), real=real)

    def job_pid(self, cluster: int) -> int:
        record = self.wait(lambda: emu.read_json(self.state / "jobs" / f"{cluster}.0" / "run1" / "job.json"))
        return int(record["pid"])

    def cleanup(self) -> list[int]:
        """condor_rm whatever still runs and wait for it to go; kill and return anything that stays."""
        if _pids_using(str(self.state)):
            self.call("condor_rm", "-all")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _pids_using(str(self.state)):
                time.sleep(0.05)
        leftovers = _pids_using(str(self.state))
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        return leftovers


@pytest.fixture
def condor(tmp_path):
    instance = Condor(tmp_path)
    yield instance
    assert instance.cleanup() == [], "the emulator left processes behind"


ECHO_EXIT_3 = """\
executable = /bin/sh
arguments = "-c 'echo hello from $1; exit 3' sh 'the job'"
output = out.$(Cluster).$(Process)
error = err.$(ClusterId)
log = job.log
request_memory = 512M
queue
"""


def sleeper(uid: str, extra: str = "") -> str:
    return f'executable = /bin/sleep\narguments = 300\n+InterLinkUID = "{uid}"\n{extra}queue\n'


def test_job_runs_then_leaves_the_queue_for_the_history(condor):
    cluster = condor.submit(ECHO_EXIT_3, real=True, ILP_CONDOR_EMULATOR_SLOTS="0")
    idle = condor.q(real=True, ILP_CONDOR_EMULATOR_SLOTS="0")
    assert [(a["ClusterId"], a["JobStatus"], a["RequestMemory"]) for a in idle] == [(cluster, emu.IDLE, 512)]
    running = condor.q()  # this command's schedd pass starts it
    assert running[0]["JobStatus"] == emu.RUNNING and running[0]["NumJobStarts"] == 1

    done = condor.finished(cluster, real=True)
    ad = done[0]
    assert (ad["JobStatus"], ad["ExitCode"], ad["ExitBySignal"]) == (emu.COMPLETED, 3, False)
    assert ad["CompletionDate"] >= ad["JobStartDate"] >= ad["QDate"] and ad["LastJobStatus"] == emu.RUNNING
    assert ad["Out"] == f"out.{cluster}.0" and ad["Err"] == f"err.{cluster}"
    assert (condor.work / f"out.{cluster}.0").read_text() == "hello from the job\n"
    assert condor.run("condor_q", "-json").stdout == ""  # like condor_q: nothing at all for no jobs
    assert condor.run("condor_q", "-af", "ClusterId").stdout == ""


def test_submit_output_like_condor_submit(condor):
    (condor.work / "three.sub").write_text("executable = /bin/true\nhold = true\nqueue 3\n")
    plain = condor.run("condor_submit", "three.sub")
    assert plain.returncode == 0
    assert plain.stdout == "Submitting job(s)...\n3 job(s) submitted to cluster 1.\n"
    terse = condor.run("condor_submit", "-terse", "-batch-name", "b1", "three.sub")
    assert terse.stdout == "2.0 - 2.2\n"
    ads = condor.q("2")
    assert [a["ProcId"] for a in ads] == [0, 1, 2] and {a["JobBatchName"] for a in ads} == {"b1"}
    assert condor.run("condor_history", "-json").stdout == "[\n]\n"  # condor_history always prints brackets

    # -append lines precede the queue statement; -spool is accepted; unknown commands are no error
    (condor.work / "more.sub").write_text("executable = /bin/true\nmy_own_setting = 42\nqueue\n")
    spooled = condor.call("condor_submit", "-terse", "-spool", "-append", "+Extra = 7", "-a", "hold = true", "more.sub")
    assert spooled.returncode == 1 and "Cannot set hold to 'true' when using -remote or -spool" in spooled.stderr
    appended = condor.call("condor_submit", "-terse", "-append", "+Extra = 7", "-a", "hold = true", "more.sub")
    assert appended.stdout == "3.0 - 3.0\n" and condor.q("3.0")[0]["Extra"] == 7

    # jobs leave the queue newest last: condor_history lists them newest first
    assert condor.call("condor_rm", "1").stdout == "All jobs in cluster 1 have been marked for removal\n"
    newest = condor.history("-limit", "2")
    assert [(a["ClusterId"], a["ProcId"], a["JobStatus"]) for a in newest] == [(1, 2, emu.REMOVED), (1, 1, emu.REMOVED)]


def test_finished_jobs_can_linger_in_the_queue(condor):
    linger = {"ILP_CONDOR_EMULATOR_LEAVE_QUEUE_SECONDS": "60"}
    cluster = condor.submit("executable = /bin/true\nqueue\n", **linger)
    condor.call("condor_q", **linger)  # starts it
    condor.wait(lambda: [a for a in condor.q(**linger) if a["JobStatus"] == emu.COMPLETED])
    assert condor.call("condor_history", "-json", **linger).stdout == "[\n]\n"
    assert condor.q(**linger)[0]["ExitCode"] == 0
    left = condor.history()[0]  # with the default (0 s) it leaves the queue at this pass
    assert (left["ClusterId"], left["JobStatus"]) == (cluster, emu.COMPLETED)


def _lines(ad_text: str) -> list[str]:
    return sorted(line.rstrip(",") for line in ad_text.splitlines())


@needs_htcondor
def test_json_output_is_what_the_classad_library_prints(condor):
    condor.submit(
        sleeper(
            "abc",
            "periodic_remove = (JobStatus == 5) && (time() - EnteredCurrentStatus > 600)\n"
            'hold = true\n+Ratio = 0.25\n+Flag = true\n+Quoted = "say \\"hi\\"\\n"\n',
        )
    )
    text = condor.run("condor_q", "-json").stdout
    assert text.startswith("[\n{\n") and text.endswith("\n}\n]\n")
    body = text[2:-2]
    ads = list(classad2.parseAds(body.replace("\n}\n,\n{\n", "\n}\n{\n"), classad2.ParserType.JSON))
    assert len(ads) == 1
    # Same attribute lines (values, escapes, expression form) as the ClassAd library prints, and
    # condor_q's order: sorted without regard to case (the library itself prints in hash order).
    assert _lines(ads[0].printJson() + "\n") == _lines(body)
    names = [json.loads("{" + line.rstrip(",") + "}").popitem()[0] for line in body.splitlines()[1:-1]]
    assert names == sorted(names, key=str.lower)
    assert ads[0].eval("PeriodicRemove") is False and ads[0]["InterLinkUID"] == "abc"
    assert json.loads(text)[0]["PeriodicRemove"].startswith("/Expr(")


def test_hold_true_starts_held_and_release_runs_it(condor):
    cluster = condor.submit("executable = /bin/true\nhold = true\nqueue\n")
    ad = condor.q()[0]
    assert (ad["JobStatus"], ad["HoldReasonCode"]) == (emu.HELD, 15)
    assert ad["HoldReason"] == "submitted on hold at user's request"
    released = condor.run("condor_release", f"{cluster}.0")
    assert (released.returncode, released.stdout) == (0, f"Job {cluster}.0 released\n")
    done = condor.finished(cluster)
    assert done[0]["JobStatus"] == emu.COMPLETED and done[0]["LastHoldReasonCode"] == 15
    assert "HoldReason" not in done[0] and done[0]["ReleaseReason"].startswith("via condor_release (by user ")


def test_condor_rm_of_a_running_job_kills_it(condor):
    cluster = condor.submit(sleeper("rm-me"))
    condor.wait(lambda: condor.q()[0]["JobStatus"] == emu.RUNNING)
    pid = condor.job_pid(cluster)
    result = condor.run("condor_rm", str(cluster))
    assert (result.returncode, result.stdout) == (0, f"All jobs in cluster {cluster} have been marked for removal\n")
    ad = condor.finished(cluster)[0]
    assert ad["JobStatus"] == emu.REMOVED and ad["CompletionDate"] == 0
    assert ad["RemoveReason"] == f"via condor_rm (by user {emu.current_user()})"
    assert not emu.process_alive(pid, None)


def _shell_job(script: str, extra: str = "") -> str:
    """A /bin/sh -c job; `script` must not contain double quotes (new-syntax arguments)."""
    quoted = script.replace("'", "''")
    return f"executable = /bin/sh\narguments = \"-c '{quoted}'\"\n{extra}queue\n"


def test_kill_sig_reaches_the_job(condor):
    job = _shell_job("trap 'echo INT > got; exit 0' INT; touch ready; while :; do sleep 0.1; done", "kill_sig = 2\n")
    cluster = condor.submit(job)
    assert condor.q()[0]["KillSig"] == "SIGINT"
    condor.wait(lambda: (condor.work / "ready").exists())
    condor.call("condor_rm", str(cluster))
    condor.finished(cluster)
    assert (condor.work / "got").read_text() == "INT\n"  # trapped: the supervisor un-ignores SIGINT for jobs


def test_a_job_ignoring_sigterm_is_killed_after_the_vacate_time(condor):
    cluster = condor.submit(_shell_job("trap '' TERM; touch ready; sleep 300", "job_max_vacate_time = 1\n"))
    condor.wait(lambda: condor.q()[0]["JobStatus"] == emu.RUNNING)
    condor.wait(lambda: (condor.work / "ready").exists())  # the trap is in place
    assert (
        condor.run("condor_rm", f"{cluster}.0", "-reason", "enough").stdout == f"Job {cluster}.0 marked for removal\n"
    )
    lingering = condor.q()  # still in the queue, status X, while the job survives SIGTERM
    assert [(a["JobStatus"], a["RemoveReason"]) for a in lingering] == [
        (emu.REMOVED, f"enough (by user {emu.current_user()})")
    ]
    gone = condor.finished(cluster, timeout=6)
    assert gone[0]["JobStatus"] == emu.REMOVED


def test_exit_by_signal_and_exec_failure(condor):
    killed = condor.submit("executable = /bin/sh\narguments = \"-c 'kill -9 $$'\"\nqueue\n")
    (condor.work / "not-executable").write_text("#!/bin/sh\n")
    broken = condor.submit("executable = not-executable\nqueue\n", name="broken.sub")
    condor.q()
    ad = condor.finished(killed)[0]
    assert (ad["JobStatus"], ad["ExitBySignal"], ad["ExitSignal"]) == (emu.COMPLETED, True, 9) and "ExitCode" not in ad
    held = condor.wait(lambda: [a for a in condor.q(str(broken)) if a["JobStatus"] == emu.HELD])[0]
    assert held["HoldReasonCode"] == 6 and held["HoldReasonSubCode"] == 13
    assert "Failed to execute" in held["HoldReason"] and held["HoldReason"].startswith("Error from slot1@")


def test_constraints_select_by_custom_attribute(condor):
    real = condor.run("condor_submit", "-constraint-is-not-an-option")  # no file: reads stdin, which is empty
    assert real.returncode == 1 and 'ERROR: "(stdin)" doesn\'t contain any "queue" commands' in real.stderr
    for uid in ("abc", "def"):
        condor.submit(sleeper(uid, "hold = true\n"), name=f"{uid}.sub")
    for evaluator in ("classad2", "builtin"):
        if evaluator == "classad2" and classad2 is None:
            continue
        picked = condor.q("-constraint", 'InterLinkUID == "abc"', ILP_CONDOR_EMULATOR_EVALUATOR=evaluator)
        assert [a["InterLinkUID"] for a in picked] == ["abc"]
        neither = condor.q("-constraint", 'InterLinkUID =?= "ABC"', ILP_CONDOR_EMULATOR_EVALUATOR=evaluator)
        assert neither == []
    af = condor.run("condor_q", "2", "-af", "ClusterId", "InterLinkUID", "RequestCpus")
    assert af.stdout == "2 def 1\n"
    projected = condor.q("-attributes", "ClusterId,InterLinkUID", "1")
    assert projected == [{"ClusterId": 1, "InterLinkUID": "abc"}]
    removed = condor.run("condor_rm", "-constraint", 'InterLinkUID == "def"')
    assert removed.stdout == 'All jobs matching constraint (InterLinkUID == "def") have been marked for removal\n'


def test_concurrent_submissions_get_distinct_cluster_ids(condor):
    (condor.work / "held.sub").write_text("executable = /bin/true\nhold = true\nqueue\n")

    def submit(_: int) -> str:
        result = condor.run("condor_submit", "-terse", "held.sub")
        assert result.returncode == 0, result.stderr
        return result.stdout

    with ThreadPoolExecutor(max_workers=20) as pool:
        outputs = list(pool.map(submit, range(20)))
    clusters = sorted(int(o.split(".")[0]) for o in outputs)
    assert clusters == list(range(1, 21))
    assert sorted(a["ClusterId"] for a in condor.q()) == clusters
    assert condor.submit("executable = /bin/true\nhold = true\nqueue\n") == 21  # the counter persists


def test_bad_submit_files_fail_like_condor_submit(condor):
    cases = {
        "executable = /bin/true\nthis is not valid\nqueue\n": "ERROR: on Line 2 of bad.sub",
        "executable = /bin/true\n": 'ERROR: "bad.sub" doesn\'t contain any "queue" commands',
        "executable = /no/such/program\nqueue\n": "ERROR: Can't access executable file /no/such/program",
        'executable = /bin/true\narguments = "unterminated\nqueue\n': "ERROR: Unterminated double-quote.",
        "executable = /bin/true\nuniverse = docker\nqueue\n": "ERROR: the HTCondor emulator runs only vanilla",
        "executable = /bin/true\nperiodic_remove = (JobStatus ==\nqueue\n": "ERROR: Parse error in expression",
    }
    for text, message in cases.items():
        (condor.work / "bad.sub").write_text(text)
        result = condor.call("condor_submit", "bad.sub")
        assert result.returncode == 1 and message in result.stderr, (text, result.stderr)
    (condor.work / "held.sub").write_text("executable = /bin/true\nhold = true\nqueue\n")
    spooled = condor.run("condor_submit", "-spool", "held.sub")
    assert spooled.returncode == 1 and "Cannot set hold to 'true' when using -remote or -spool" in spooled.stderr
    assert condor.q() == []


def test_rm_of_unknown_jobs(condor):
    empty = condor.run("condor_rm", "7")
    assert (empty.returncode, empty.stderr) == (0, "condor_rm:0:There are no jobs in the queue\n")
    condor.submit("executable = /bin/true\nhold = true\nqueue\n")
    missing = condor.call("condor_rm", "99")
    assert (missing.returncode, missing.stderr) == (1, "\nCouldn't find/remove all jobs in cluster 99\n")
    proc = condor.call("condor_rm", "1.5")
    assert (proc.returncode, proc.stderr) == (1, "Job 1.5 not found\n")
    held = condor.call("condor_hold", "1.0")  # submitted on hold (code 15) is not a user hold: it is re-held
    assert (held.returncode, held.stdout) == (0, "Job 1.0 held\n") and condor.q()[0]["HoldReasonCode"] == 1
    again = condor.call("condor_hold", "1.0")
    assert (again.returncode, again.stderr) == (1, "Job 1.0 already held\n")


def test_periodic_remove_with_time_and_entered_current_status(condor):
    cluster = condor.submit(
        sleeper("slow", "periodic_remove = (JobStatus == 2) && (time() - EnteredCurrentStatus > 0)\n")
    )
    # policies are evaluated by each command's schedd pass: poll with condor_q until it fires
    condor.wait(lambda: condor.call("condor_q", "-af", "JobStatus").stdout in ("", "3\n"), timeout=6, interval=0.1)
    ad = condor.finished(cluster)[0]
    assert ad["JobStatus"] == emu.REMOVED
    assert ad["RemoveReason"].startswith("The job attribute PeriodicRemove expression '(JobStatus == 2)")


def test_missing_state_dir_is_a_clear_error(condor):
    env = {k: v for k, v in condor.env.items() if k != "ILP_CONDOR_EMULATOR_DIR"}
    result = subprocess.run(["condor_q"], env=env, capture_output=True, text=True, cwd=condor.work, check=False)
    assert result.returncode == 1 and "ILP_CONDOR_EMULATOR_DIR is not set" in result.stderr


def test_runs_with_a_plain_python_without_classad2(condor):
    """The wrappers' default interpreter (python3) may lack the htcondor wheel: stdlib only."""
    bare = Path(sys.base_prefix) / "bin" / "python3"  # the venv's base interpreter
    if (
        not bare.exists()
        or subprocess.run([str(bare), "-c", "import classad2"], capture_output=True, check=False).returncode == 0
    ):
        pytest.skip("no base interpreter without the htcondor wheel")
    env = {"ILP_EMULATOR_PYTHON": str(bare)}  # the evaluator falls back to the built-in one by itself
    cluster = condor.submit(ECHO_EXIT_3, **env)
    query = ("condor_history", "-af", "ExitCode", "-constraint", f"ClusterId == {cluster}")
    picked = condor.wait(lambda: condor.run(*query, **env).stdout)
    assert picked == "3\n"


@needs_htcondor
def test_user_log_is_readable_by_htcondor2(condor):
    cluster = condor.submit(ECHO_EXIT_3)
    condor.q()
    condor.finished(cluster)
    events = list(htcondor2.JobEventLog(str(condor.work / "job.log")).events(0))
    kinds = [e.type for e in events]
    assert kinds == [
        htcondor2.JobEventType.SUBMIT,
        htcondor2.JobEventType.EXECUTE,
        htcondor2.JobEventType.JOB_TERMINATED,
    ]
    assert events[-1]["ReturnValue"] == 3 and events[-1].cluster == cluster


# ---- in-process: the parser, the evaluator and the printer against HTCondor's own libraries ----

SUBMIT_SAMPLES = [
    (  # the examples of the condor_submit manual
        "executable = /bin/echo\narguments = \"one \"\"two\"\" 'spacey ''quoted'' argument'\"\n"
        "environment = \"one=1 two=\"\"2\"\" three='spacey ''quoted'' value'\"\nqueue\n"
    ),
    "Executable = run.sh\nArguments = a b   c\nEnvironment = A=1;B=two words\nqueue 2\n",
    'executable = x\narguments = "3 simple arguments"\n+InterLinkUID = "abc"\nrequest_memory = 2G\nqueue\n',
    "executable = x\n# a comment\narguments = \\\n  one two\nqueue\n",
]


def test_arguments_and_environment_follow_htcondor_rules():
    first = emu.parse_submit(SUBMIT_SAMPLES[0], "s", [])[0].commands
    assert emu.parse_arguments(first["arguments"][1])[2] == ["one", '"two"', "spacey 'quoted' argument"]
    assert emu.parse_environment(first["environment"][1]) == {
        "one": "1",
        "two": '"2"',
        "three": "spacey 'quoted' value",
    }
    assert emu.parse_arguments('"3 simple arguments"') == (
        "Arguments",
        "3 simple arguments",
        ["3", "simple", "arguments"],
    )
    assert emu.parse_arguments("a b   c") == ("Args", "a b c", ["a", "b", "c"])
    quote = "'"
    # as append_arg() writes it: a quote inside a quoted section is doubled, an empty argument is ''
    assert emu.join_args_v2(["a b", "it's", ""]) == f"a{quote} {quote}b it{quote * 4}s {quote * 2}"
    assert emu.split_args_v2(emu.join_args_v2(["a b", "it's", "", "x"])) == ["a b", "it's", "", "x"]
    assert emu.parse_environment("A=1;B=two words") == {"A": "1", "B": "two words"}
    assert emu.environment_v2_raw({"B": "x y", "A": "1"}) == "A=1 B=x' 'y"
    assert emu.parse_quantity("512M", 1024**2) == 512 and emu.parse_quantity("2G", 1024**2) == 2048
    assert emu.parse_quantity("1000", 1024**2) == 1000 and emu.parse_quantity("1.5K", 1024) == 2
    with pytest.raises(ValueError, match="Unterminated"):
        emu.parse_arguments('"oops')


@needs_htcondor
@pytest.mark.parametrize("text", SUBMIT_SAMPLES)
def test_submit_parser_agrees_with_htcondor2_submit(text):
    ours = emu.parse_submit(text, "sample.sub", [])[-1].commands
    theirs = htcondor2.Submit(text)
    for key in ("executable", "arguments", "environment", "request_memory"):
        if key in ours:
            assert theirs[key] == ours[key][1], key
    assert theirs.get("MY.InterLinkUID") == (ours["my.interlinkuid"][1] if "my.interlinkuid" in ours else None)


@needs_htcondor
def test_submit_parser_rejects_what_htcondor2_rejects():
    bad = "executable = /bin/echo\nthis is bad\nqueue\n"
    with pytest.raises(ValueError):
        htcondor2.Submit(bad)
    with pytest.raises(emu.SubmitError):
        emu.parse_submit(bad, "bad.sub", [])


EXPRESSIONS = [
    'Name == "ABC"',
    'Name =?= "ABC"',
    'Name =!= "abc"',
    "Missing == 1",
    "Missing =?= undefined",
    "Missing is undefined",
    "Count > 2 && Count < 10",
    "Missing && false",
    "Missing || true",
    "Missing && true",
    "!(Count == 5)",
    "Count / 2",
    "-Count % 3",
    "Count * 1.5",
    "Ratio > 0.2",
    'stringListMember("b", "a,b,c")',
    "ifThenElse(Count > 1, 10, 20)",
    'Count > 3 ? "big" : "small"',
    "isUndefined(Missing)",
    "time() > 0",
    "MY.Count + 1",
    "TARGET.Count",
    "Flag && Count >= 5",
    "(JobStatus == 2) && (time() - EnteredCurrentStatus > 100)",
    "Expr1 + 1",
    'strcat(Name, "-", Count)',
    "Name == 3",
    "max({1, Count, 3})",
    'toLower(Name) == "abc"',
    "Count == 5.0",
    "Count =?= 5.0",
    "true == 1",
    "max({1024, 1.25})",
    emu.DEFAULT_REQUEST_DISK,
    "min(3, 2.5)",
    "max({})",
    "min({2, undefined})",
    'strcat("x", 1.5)',
    "string(Ratio)",
    'stringListIMember("B", "a, b")',
    'stringListMember("b", Missing)',
    "int(-3.7)",
    'real("x")',
    "-7 / 2",
    "7 % -3",
    "1 / 0",
    '"a" < "B"',
    "undefined == undefined",
    "!Missing",
    "Count && 2",
    "size(Name)",
    'regexp("^A", Name, "i")',
    "member(5, {1, Count})",
    "isError(1 / 0)",
]
AD = {
    "Name": "abc",
    "Count": 5,
    "Ratio": 0.25,
    "Flag": True,
    "JobStatus": 2,
    "EnteredCurrentStatus": 1,
    "Expr1": emu.Expr("Count * 2"),
    "TransferInputSizeMB": 0,
}


@needs_htcondor
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_builtin_evaluator_agrees_with_classad2(expression, monkeypatch):
    monkeypatch.setenv("ILP_CONDOR_EMULATOR_EVALUATOR", "classad2")
    real = emu.evaluate(expression, AD)
    ours = emu.builtin_eval(expression, AD)
    assert ours is real or (type(ours), ours) == (type(real), real), (expression, ours, real)


@needs_htcondor
def test_json_printer_matches_classad2_print_json():
    ad = {
        "b": 1,
        "A": -2,
        "s": 'q"uote\\back\nline\ttab',
        "R": 0.1,
        "Big": 1e20,
        "Zero": 0.0,
        "Whole": 3.0,
        "T": True,
        "L": [1, "x", 2.5],
        "E": emu.Expr('(JobStatus == 2) && Name =?= "x" || -Count > 1.5'),
        "D": emu.Expr(emu.DEFAULT_REQUEST_DISK),
        "U": None,
    }
    real = classad2.ClassAd()
    for key, value in ad.items():
        if isinstance(value, emu.Expr) or value is None:
            value = classad2.ExprTree(value.text if value is not None else "undefined")
        real[key] = value
    # the library prints in hash order; condor_q sorts (ignoring case): compare the lines
    assert _lines(emu.ad_to_json(ad)) == _lines(real.printJson())


# ------------------------------------------------------------------ several accounts, one root schedd


@pytest.mark.skipif(os.geteuid() != 0, reason="runs commands as other accounts")
def test_jobs_of_an_account_start_as_it_from_a_root_pass_and_never_from_another_accounts(tmp_path):
    """As HTCondor's root schedd: a pass run as root starts each job as its Owner (its output and
    user log are the Owner's files); a command run by another account queues and queries only,
    it starts nothing of others; the job's own account would start it too."""
    import pwd
    import shutil
    import tempfile

    from tests.helpers import ensure_site_accounts

    ensure_site_accounts()
    queue = Path(tempfile.mkdtemp(prefix="ilp-condor-unit-", dir="/var/tmp"))
    queue.chmod(0o777)
    work = Path(tempfile.mkdtemp(prefix="ilp-condor-work-", dir="/var/tmp"))
    bob = pwd.getpwnam("ilp-bob")
    os.chown(work, bob.pw_uid, bob.pw_gid)
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "ILP_CONDOR_EMULATOR_DIR": str(queue),
        "ILP_EMULATOR_PYTHON": sys.executable,
    }

    def as_account(user: str | None, *argv: str) -> subprocess.CompletedProcess[str]:
        prefix = ["/usr/sbin/runuser", "-u", user, "--"] if user else []
        return subprocess.run([*prefix, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=30)

    try:
        (work / "job.sub").write_text(
            "executable = /bin/sh\narguments = \"-c 'id -un; pwd'\"\noutput = out\nerror = err\nlog = user.log\nqueue\n"
        )
        os.chown(work / "job.sub", bob.pw_uid, bob.pw_gid)
        submitted = as_account("ilp-bob", "condor_submit", "-terse", "job.sub")
        assert submitted.returncode == 0, submitted.stderr
        for _ in range(3):  # another account's passes leave bob's job alone
            assert as_account("ilp-alice", "condor_q", "-json").returncode == 0
        [ad] = json.loads(as_account(None, "cat", str(queue / "queue.json")).stdout)["jobs"]
        assert ad["ad"]["Owner"] == "ilp-bob" and ad["ad"]["JobStatus"] == emu.IDLE
        as_account(None, "condor_q")  # root's pass: started as its Owner
        deadline = time.monotonic() + 15
        while not (work / "out").exists() or not (work / "out").read_text().strip():
            assert time.monotonic() < deadline, "bob's job did not run"
            time.sleep(0.1)
        assert (work / "out").read_text().split()[0] == "ilp-bob"
        assert (work / "out").stat().st_uid == bob.pw_uid and (work / "user.log").stat().st_uid == bob.pw_uid
        # With no root pass, bob's own next command starts bob's next job (jobs/ is shared, as /tmp)
        (work / "job.sub").write_text((work / "job.sub").read_text().replace("output = out", "output = out2"))
        assert as_account("ilp-bob", "condor_submit", "-terse", "job.sub").returncode == 0
        started = as_account("ilp-bob", "condor_q", "-json")
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 15
        while not (work / "out2").exists() or not (work / "out2").read_text().strip():
            assert time.monotonic() < deadline, "bob's second job did not run"
            time.sleep(0.1)
        assert (work / "out2").read_text().split()[0] == "ilp-bob"
    finally:
        shutil.rmtree(queue, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
