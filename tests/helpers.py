"""Starting real sidecars (subprocesses) against the embedded local site, and talking to them."""

from __future__ import annotations

import asyncio
import atexit
import copy
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SITE_SCRIPT = REPO / "deploy" / "local" / "site.sh"
LOCAL_CONFIG = REPO / "deploy" / "local" / "sidecar.yaml"
# The HTCondor CLI EMULATOR (no HTCondor daemons can run here): tests/emulators/htcondor.
CONDOR_BIN = REPO / "tests" / "emulators" / "htcondor" / "bin"
CONDOR_COMMANDS = ("condor_submit", "condor_q", "condor_history", "condor_rm", "condor_status")


def site_dir() -> Path:
    return Path(os.environ.get("ILP_SITE_DIR", REPO / ".site"))


def slurm_env() -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(site_dir() / "slurm" / "slurm.conf"), "ILP_SITE_DIR": str(site_dir())}


def slurm(*argv: str, check: bool = True) -> str:
    result = subprocess.run(list(argv), env=slurm_env(), capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise RuntimeError(f"{argv}: {result.stderr}")
    return result.stdout


_SCRATCH: dict[Path, Path] = {}


def traversable_dir(owner: Path, prefix: str = "ilp-pods-") -> Path:
    """A directory the job accounts can pass through (pytest's own are 0700), one per `owner`
    (a sidecar restarted on the same workdir finds its pods again), removed when the test
    process exits. The local site's pods run as an unprivileged account (ilp-local)."""
    if owner not in _SCRATCH:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        path.chmod(0o711)
        if not _SCRATCH:
            atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _SCRATCH.values()])
        _SCRATCH[owner] = path
    return _SCRATCH[owner]


def htcondor_overrides(workdir: Path, slots: int = 16) -> dict[str, Any]:
    """A site config's HTCondor backend, talking to the emulator whose queue lives in `workdir`.

    The emulator keeps its queue in `workdir` (pytest's, private to root) and puts jobs in
    root's memory cgroups: its tokenless pods run as root, which the site must opt into."""
    environment = {
        "ILP_CONDOR_EMULATOR_DIR": str(workdir / "condor-queue"),
        "ILP_CONDOR_EMULATOR_SLOTS": str(slots),
        "ILP_EMULATOR_PYTHON": sys.executable,
    }
    commands = {name: str(CONDOR_BIN / name) for name in CONDOR_COMMANDS}
    return {
        "backend": "htcondor",
        "htcondor": {
            **commands,
            "environment": environment,
            "commands_per_second": 25,
            "command_burst": 25,
            "cancel_batch_seconds": 0.2,
        },
        "auth": {"unix_socket_account": "root", "allow_jobs_as_root": True},
    }


def condor_jobs(sidecar: Sidecar, command: str = "condor_q", constraint: str = "true") -> list[dict[str, Any]]:
    """The emulator's job ads (condor_q: in the queue; condor_history: left it) for a sidecar."""
    environment = {**os.environ, **sidecar.config["htcondor"]["environment"]}
    argv = [str(CONDOR_BIN / command), "-json", "-constraint", constraint]
    result = subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout) if result.stdout.strip() else []


def pod_dir(pods_root: Path | str, namespace: str, uid: str) -> Path:
    """A pod's directory: `pods_root/<account>/<namespace>/<uid>` (whichever account it runs as)."""
    found = list(Path(pods_root).glob(f"*/{namespace}/{uid}"))
    assert len(found) == 1, f"pod {namespace}/{uid}: {found or 'no directory'} under {pods_root}"
    return found[0]


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class Sidecar:
    """A real `interlink-provider sidecar` process with its own state, pods root and socket."""

    def __init__(
        self,
        workdir: Path,
        overrides: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        user: str | None = None,
    ):
        """`user`: run the sidecar as that local account (the service account of the multi-account
        mode); its working directory is then one that account owns, outside pytest's (0700) tree."""
        self.user = user
        if user is not None:
            workdir = Path(tempfile.mkdtemp(prefix=f"ilp-{user}-", dir="/var/tmp"))
            entry = pwd.getpwnam(user)
            os.chown(workdir, entry.pw_uid, entry.pw_gid)
            workdir.chmod(0o711)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = yaml.safe_load(LOCAL_CONFIG.read_text())
        overrides = overrides or {}
        # Short socket paths: unix sockets are limited to 107 bytes.
        self.socket = f"/tmp/ilp-{os.getpid()}-{abs(hash(str(workdir))) % 10**8}.sock"
        config = deep_merge(
            config,
            {
                # the local site's TCP port (and its TLS) belong to deploy/local/federation.sh
                "listen": {"socket": self.socket, "host": None, "port": None, "tls_cert": None, "tls_key": None},
                "grpc": None,  # the local site's gRPC port belongs to deploy/local/federation.sh
                "state_dir": str(workdir / "state"),
                # pods run as the local site's job account: their directory must be reachable
                # (a service-account sidecar makes its own pods root in its own directory)
                "pods_root": overrides.get("pods_root")
                or str((workdir if user else traversable_dir(workdir.resolve())) / "pods"),
                "job_name_prefix": f"ilpt{abs(hash(str(workdir))) % 10**6}-",
            },
        )
        self.config = deep_merge(config, overrides or {})
        self.config_path = workdir / "sidecar.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.env = {**slurm_env(), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "sidecar.log"

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pods_root(self) -> Path:
        return Path(self.config["pods_root"])

    @property
    def prefix(self) -> str:
        return self.config["job_name_prefix"]

    def start(self, env: dict[str, str] | None = None, wait: bool = True) -> Sidecar:
        if os.path.exists(self.socket):
            os.unlink(self.socket)  # left by a killed process: readiness must mean a live listener
        log = open(self.log_path, "ab")
        as_user = ["runuser", "-u", self.user, "--"] if self.user else []  # keeps the environment
        self.process = subprocess.Popen(
            [
                *as_user,
                sys.executable,
                "-m",
                "interlink_provider.cli.main",
                "sidecar",
                "--config",
                str(self.config_path),
            ],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()
        return self

    def listeners(self) -> list[tuple[int, Any]]:
        """(address family, address) of every listener the config opens: ready means all accept."""
        found: list[tuple[int, Any]] = [(socket.AF_UNIX, self.socket)]
        listen = self.config.get("listen") or {}
        if listen.get("host") and listen.get("port"):
            found.append((socket.AF_INET, (listen["host"], int(listen["port"]))))
        grpc = self.config.get("grpc") or {}
        if grpc.get("host") and grpc.get("port"):
            found.append((socket.AF_INET, (grpc["host"], int(grpc["port"]))))
        return found

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        waiting = self.listeners()
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self.process.returncode}:\n{self.log()}")
            waiting = [listener for listener in waiting if not _accepts(*listener)]
            if not waiting:
                return
            time.sleep(0.05)
        raise RuntimeError(f"sidecar did not start (no listener on {waiting}):\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    @property
    def htcondor(self) -> bool:
        return self.config.get("backend") == "htcondor"

    def live_jobs(self) -> list[str]:
        """This sidecar's jobs that have not ended (Slurm: pending, running, completing; HTCondor:
        still in the queue, including removed jobs whose processes are still stopping)."""
        if self.htcondor:
            return [
                f"{ad['ClusterId']}.{ad['ProcId']}"
                for ad in condor_jobs(self)
                if str(ad.get("InterLinkJobName", "")).startswith(self.prefix)
            ]
        out = slurm("squeue", "-h", "-o", "%i %j")
        return [
            line.split()[0]
            for line in out.splitlines()
            if line.split()[1:2] and line.split()[1].startswith(self.prefix)
        ]

    def wait_jobs_gone(self, timeout: float = 120) -> None:
        """Until every job of this sidecar has left Slurm (a deleted pod's processes are gone)."""
        deadline = time.monotonic() + timeout
        while self.live_jobs() and time.monotonic() < deadline:
            time.sleep(0.5)

    def jobs_named(self, name: str) -> list[str]:
        """Jobs (in any state) carrying exactly this name."""
        if self.htcondor:
            constraint = f'InterLinkJobName == "{name}"'
            ads = condor_jobs(self, "condor_q", constraint) + condor_jobs(self, "condor_history", constraint)
            return sorted({f"{ad['ClusterId']}.{ad['ProcId']}" for ad in ads})
        out = slurm("squeue", "-h", "--states=all", f"--name={name}", "-o", "%i")
        return [line.strip() for line in out.splitlines() if line.strip()]


def _accepts(family: int, address: Any) -> bool:
    """Whether something accepts connections at this address now."""
    if family == socket.AF_UNIX and not os.path.exists(address):
        return False
    probe = socket.socket(family)
    try:
        probe.connect(address)
        return True
    except OSError:
        return False
    finally:
        probe.close()


async def wait_for(predicate, timeout: float, interval: float = 0.3, what: str = "condition"):
    """Poll an async predicate until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
