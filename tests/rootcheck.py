"""No interlink-provider daemon of the suite runs as root, unless on purpose.

A background thread samples /proc every second while a test process (a pytest-xdist worker, or
pytest itself) runs its tests, and records every interlink-provider daemon or agent (`sidecar`,
`site agent`, `gateway`, `devidp`, started as `python -m interlink_provider.cli.main ...` or
`interlink-provider ...`; not the clients: `pod`, `token`, `stage`, `doctor`, `gateway --health`)
that this process started, directly or not: a descendant of it, or a process carrying this
process's mark in its environment (daemons that scripts start detached, like
deploy/local/federation.sh's). One running as uid 0 is a violation, unless its environment says
why it must (tests/helpers.py ROOT_BY_DESIGN, one of ROOT_REASONS); the wrappers that change the
account (sudo, runuser, setpriv) are root by nature and are not daemons. A daemon that lives less
than a second (a configuration refused at start) may go unseen. Other test processes on the
machine (other workers, other checkouts' suites) are not this one's business.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.helpers import ROOT_BY_DESIGN, ROOT_REASONS

MARK = "ILP_ROOT_CHECK"  # in the environment of everything this test process starts
WRAPPERS = {"sudo", "runuser", "su", "setpriv", "setsid", "env", "timeout", "nohup"}
DAEMONS = {"sidecar", "gateway", "devidp"}
CHECKED = {"sidecar", "site agent", "gateway", "devidp"}  # all of them: none may run as root


def daemon_kind(argv: list[str]) -> str | None:
    """`sidecar`, `site agent`, `gateway` or `devidp` when argv runs that interlink-provider daemon."""
    program = os.path.basename(argv[0]) if argv else ""
    if program != "interlink-provider" and not program.startswith(("python", "sh", "bash")):
        return None  # a wrapper (sudo, runuser, setpriv), or any other program naming one
    rest: list[str] | None = None
    for i, arg in enumerate(
        argv[:4]
    ):  # [interpreter [flags]] (-m interlink_provider.cli.main | .../interlink-provider)
        if arg == "-m" and argv[i + 1 : i + 2] == ["interlink_provider.cli.main"]:
            rest = argv[i + 2 :]
            break
        if os.path.basename(arg) == "interlink-provider":
            rest = argv[i + 1 :]
            break
    if not rest:
        return None
    if rest[:2] == ["site", "agent"]:
        return "site agent"
    if "--health" in rest:
        return None  # `gateway --health`: a probe that asks the running gateway, and exits
    return rest[0] if rest[0] in DAEMONS else None


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def _uids(pid: str) -> tuple[int, int]:
    for line in _read(f"/proc/{pid}/status").decode(errors="replace").splitlines():
        if line.startswith("Uid:"):
            real, effective = line.split()[1:3]
            return int(real), int(effective)
    return -1, -1


def _parent(pid: str) -> str:
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    return stat.rsplit(")", 1)[-1].split()[1] if ")" in stat else "0"


def _environment(pid: str) -> dict[str, str]:
    pairs = (item.partition(b"=") for item in _read(f"/proc/{pid}/environ").split(b"\0") if item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, _, value in pairs}


@dataclass
class Seen:
    kind: str
    uid: int
    argv: str
    reason: str = ""  # ROOT_BY_DESIGN's, for a root one that says why


@dataclass
class RootCheck:
    """The sampler of one test process."""

    worker: str
    interval: float = 1.0
    me: str = field(default_factory=lambda: str(os.getpid()))
    seen: dict[str, Seen] = field(default_factory=dict)  # by "pid:start time"
    samples: int = 0
    error: str = ""

    def __post_init__(self) -> None:
        self.mark = f"{self.worker}:{self.me}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ilp-root-check", daemon=True)

    def start(self) -> RootCheck:
        os.environ[MARK] = self.mark  # inherited by every process started from now on
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sample()  # and once more: what runs at the end

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as exc:  # a broken sampler must fail the check, not pass it silently
                self.error = f"{type(exc).__name__}: {exc}"
                return

    def ours(self, pid: str, environment: dict[str, str]) -> bool:
        if environment.get(MARK) == self.mark:
            return True
        for _ in range(64):  # up the parents (sudo strips the environment: an agent is found so)
            pid = _parent(pid)
            if pid == self.me:
                return True
            if pid in ("0", "1", ""):
                return False
        return False

    def sample(self) -> None:
        self.samples += 1
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == self.me:
                continue
            raw = _read(f"/proc/{pid}/cmdline")
            if b"interlink" not in raw:
                continue
            argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
            kind = daemon_kind(argv)
            if kind is None:
                continue
            environment = _environment(pid)
            if not self.ours(pid, environment):
                continue
            started = _read(f"/proc/{pid}/stat").rsplit(b")", 1)[-1].split()[19:20]  # start time, in ticks
            key = f"{pid}:{started[0].decode() if started else '?'}"
            real, effective = _uids(pid)
            if key in self.seen or real < 0:
                continue
            uid = 0 if 0 in (real, effective) else effective
            self.seen[key] = Seen(kind, uid, " ".join(argv)[:300], environment.get(ROOT_BY_DESIGN, ""))

    def violations(self) -> list[Seen]:
        return [s for s in self.seen.values() if s.uid == 0 and s.kind in CHECKED and s.reason not in ROOT_REASONS]

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for s in self.seen.values():
            who = "root" if s.uid == 0 else "unprivileged"
            why = s.reason if s.reason in ROOT_REASONS else "not checked" if s.kind not in CHECKED else ""
            name = f"{s.kind} as {who}" + (f" ({why})" if s.uid == 0 and why else "")
            counts[name] = counts.get(name, 0) + 1
        return {
            "worker": self.worker,
            "samples": self.samples,
            "seen": dict(sorted(counts.items())),
            "violations": [f"{s.kind} as uid 0: {s.argv}" for s in self.violations()],
            "error": self.error,
        }


def describe(summary: dict[str, Any]) -> str:
    seen = ", ".join(f"{n} {name}" for name, n in summary["seen"].items()) or "no daemon"
    verdict = "FAILED" if summary["violations"] or summary["error"] else "ok"
    line = f"root check {summary['worker']}: {verdict}, {summary['samples']} samples; {seen}"
    for violation in summary["violations"]:
        line += f"\n  {violation}"
    if summary["error"]:
        line += f"\n  the sampler broke: {summary['error']}"
    return line


def wait_a_sample(check: RootCheck) -> None:
    """For tests of the check itself: until the sampler has looked once more."""
    before = check.samples
    deadline = time.monotonic() + 10 * check.interval
    while check.samples == before and time.monotonic() < deadline:
        time.sleep(0.05)
