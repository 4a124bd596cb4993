"""The suite's root check (tests/rootcheck.py): what it counts as a daemon, and that it catches a
root one, lets one marked root by design pass, and leaves other test processes' alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT_BY_DESIGN
from tests.rootcheck import MARK, RootCheck, daemon_kind, wait_a_sample


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        ("/venv/bin/python -m interlink_provider.cli.main sidecar --config s.yaml", "sidecar"),
        ("/venv/bin/python3 /venv/bin/interlink-provider site agent", "site agent"),
        ("/venv/bin/interlink-provider gateway --config g.yaml", "gateway"),
        ("python -u -m interlink_provider.cli.main devidp --config d.yaml", "devidp"),
        ("sudo -n -u ilp-alice -- /venv/bin/interlink-provider site agent", None),  # the wrapper
        ("runuser -u ilp -- python -m interlink_provider.cli.main sidecar", None),
        ("python -m interlink_provider.cli.main pod list", None),  # a client, not a daemon
        ("python -m interlink_provider.cli.main gateway --config g.yaml --health", None),  # a probe
        ("python -m interlink_provider.cli.main site", None),
        ("less /var/log/interlink-provider sidecar", None),  # an argument, not the program
        ("python -m pytest tests -k sidecar", None),
    ],
)
def test_daemons_are_told_from_wrappers_and_clients(argv, kind):
    assert daemon_kind(argv.split()) == kind


def fake_daemon(mark: str, *, root_reason: str = "", account: str = "") -> int:
    """A detached process whose command line is `sh .../interlink-provider sidecar` (a script that
    waits), started as `account` (else root); its pid."""
    home = Path(tempfile.mkdtemp(prefix="ilp-rootcheck-"))
    home.chmod(0o755)  # readable by `account`
    script = home / "interlink-provider"
    # sh stays, named so, and never forks: a child between fork and exec carries the same command
    # line and environment, and the sampler counted it as a second daemon (it blocks reading a
    # FIFO it holds open itself, where `sleep` would fork)
    script.write_text('#!/bin/sh\nexec 3<>"$FIFO"\necho $$ > "$PID_FILE"\nread _ <&3\n')
    script.chmod(0o755)
    fifo = home / "fifo"
    os.mkfifo(fifo, 0o666)
    fifo.chmod(0o666)
    pid_file = home / "pid"
    home.joinpath("pid").touch(mode=0o666)
    pid_file.chmod(0o666)
    env = {"PATH": "/usr/bin:/bin", MARK: mark, "PID_FILE": str(pid_file), "FIFO": str(fifo)}
    if root_reason:
        env[ROOT_BY_DESIGN] = root_reason
    prefix = ["setpriv", f"--reuid={account}", "--regid=nogroup", "--clear-groups", "--"] if account else []
    # setsid -f: not our child, so only the mark in its environment makes it ours
    subprocess.run(["setsid", "-f", *prefix, "/bin/sh", str(script), "sidecar"], env=env, check=True)
    deadline = time.monotonic() + 10
    while not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the fake daemon did not start"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    pid_file.unlink()
    shutil.rmtree(home)  # sh has read it
    return pid


@pytest.mark.skipif(os.geteuid() != 0, reason="starts processes as other accounts")
def test_a_root_daemon_is_caught_unless_marked_and_others_are_left_alone():
    check = RootCheck("unit-test", interval=0.1, me="not-a-pid")
    check.mark = "unit-test:mine"  # what this check's processes carry
    check._thread.start()  # without start(): this process's environment stays as it is
    pids = [
        fake_daemon("unit-test:mine"),
        fake_daemon("unit-test:mine", root_reason="jobs-as-root"),
        fake_daemon("unit-test:mine", root_reason="no such reason"),
        fake_daemon("unit-test:mine", account="nobody"),
        fake_daemon("someone-else:123"),  # another test process's
    ]
    try:
        wait_a_sample(check)
        wait_a_sample(check)
    finally:
        for pid in pids:
            os.killpg(pid, signal.SIGKILL)  # the session setsid made
        check.stop()
    summary = check.summary()
    assert summary["seen"] == {
        "sidecar as root": 2,
        "sidecar as root (jobs-as-root)": 1,
        "sidecar as unprivileged": 1,
    }, summary
    assert len(summary["violations"]) == 2 and not summary["error"]
    assert all("interlink-provider sidecar" in v for v in summary["violations"])
