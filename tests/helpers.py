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
    """A site config's HTCondor backend, talking to the emulator (tests/emulators/htcondor).

    Its queue is a directory every account may use (the sidecar's service account and the pods'
    accounts run its commands, as they would run HTCondor's); a root schedd loop beside the
    sidecar (`Sidecar.start`, `CondorSchedd`) starts each job as its Owner, as HTCondor's schedd
    does. `workdir` is unused: the queue cannot live in pytest's private tree."""
    del workdir
    environment = {
        "ILP_CONDOR_EMULATOR_DIR": str(condor_queue_dir()),
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
    }


def condor_queue_dir() -> Path:
    """A fresh emulator queue that every account may write (0777: a test host's, like /var/tmp),
    removed when the test process exits."""
    path = Path(tempfile.mkdtemp(prefix="ilp-condor-", dir="/var/tmp"))
    path.chmod(0o777)
    if not _CONDOR_QUEUES:
        atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _CONDOR_QUEUES])
    _CONDOR_QUEUES.append(path)
    return path


_CONDOR_QUEUES: list[Path] = []


class CondorSchedd:
    """The emulator's schedd loop for one queue, as root: HTCondor's schedd is root and starts
    each job as its Owner; the sidecar's commands, run as accounts, only queue and query."""

    def __init__(self, environment: dict[str, str]) -> None:
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        emulator = CONDOR_BIN.parent / "emulator.py"
        queue = self.environment["ILP_CONDOR_EMULATOR_DIR"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.environment}
        self.process = subprocess.Popen(
            [sys.executable, str(emulator), "_schedd", queue],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        atexit.register(self.stop)  # a test that only killed its sidecar leaves no root loop behind

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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


# Test sidecars of the Slurm backend run as the local site's service account with per-account
# agents (the multi-account mode, docs/admin-guide.md "Site isolation"), as deploy/local does.
# Those that run as root on purpose carry this marker in their environment, which the suite's
# root check (tests/conftest.py) reads from /proc/<pid>/environ; each reason is one of these:
SERVICE_ACCOUNT = "ilp"
ROOT_BY_DESIGN = "ILP_ROOT_BY_DESIGN"
ROOT_REASONS = {
    # `auth.allow_jobs_as_root` tests: a job as root needs a root sidecar (no agent is root).
    "jobs-as-root",
    # Tests of the root sidecar that hands pod directories over (still supported, for sites
    # moving over): they need that sidecar.
    "root-sidecar-mode",
    # The command line's bad-input table (tests/unit/test_cli_bad_input.py) runs each daemon as a
    # user would type it; every one is refused at its arguments or configuration and never serves.
    "refused-at-start",
}
_DEFAULT = "service account"  # Sidecar(user=...) not given
# The local site's devidp and gateway run as accounts of their own (deploy/local/site.sh), and so
# do the suite's.
IDP_ACCOUNT = "ilp-idpd"
GATEWAY_ACCOUNT = "ilp-gatewayd"
_ACCOUNTS_MADE: list[bool] = []


def ensure_site_accounts() -> None:
    """The local site's accounts and sudoers rule (`deploy/local/site.sh accounts`), made once per
    test process, under a lock (test workers run in parallel)."""
    if _ACCOUNTS_MADE:
        return
    import fcntl

    with open("/run/lock/ilp-test-accounts.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["bash", str(SITE_SCRIPT), "accounts"], check=True, capture_output=True, timeout=120)
    _ACCOUNTS_MADE.append(True)


# The sidecar's own places (it writes them), as opposed to files it reads; its pods root and
# socket are seen to apart.
_PLACES = frozenset({("state_dir",), ("staging", "cache_dir")})
_APART = frozenset({("pods_root",), ("listen", "socket")})
_ACCOUNT_DIRS: dict[tuple[str, Path], Path] = {}


def account_workdir(user: str, requested: Path) -> Path:
    """The working directory of a sidecar running as `user`: one that account owns, outside
    pytest's (0700) tree, the same one each time for the same `requested` directory (a sidecar
    restarted on its workdir finds its store again); removed when the test process exits."""
    key = (user, requested.resolve())
    if key not in _ACCOUNT_DIRS:
        path = Path(tempfile.mkdtemp(prefix=f"ilp-{user}-", dir="/var/tmp"))
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o711)  # the pods' accounts traverse it to their pods and staged files
        if not _ACCOUNT_DIRS:
            atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _ACCOUNT_DIRS.values()])
        _ACCOUNT_DIRS[key] = path
    return _ACCOUNT_DIRS[key]


def write_private(path: Path, text: str, user: str) -> None:
    """A file only `user` (and root) may read: a config with secrets in it."""
    path.write_text(text)
    path.chmod(0o600)
    os.chown(path, pwd.getpwnam(user).pw_uid, -1)


def account_prefix(user: str) -> list[str]:
    """The argv prefix that runs a command as `user` (its groups too): setpriv, which becomes the
    command (runuser stays as a root parent and SIGKILLs its child 2 s after passing a SIGTERM
    on, which cuts a sidecar's graceful stop short). Capabilities go with the uid."""
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--"]


def account_environment(user: str) -> dict[str, str]:
    """What a login sets that setpriv does not: the account's home and names."""
    entry = pwd.getpwnam(user)
    return {"HOME": entry.pw_dir, "USER": user, "LOGNAME": user}


_ACCESS = """
import json, os, sys
def ok(path, write):
    if write:  # a place: writable, or creatable in the nearest existing parent
        while not os.path.lexists(path):
            path = os.path.dirname(path)
        return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)
    return os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0))
print(json.dumps([ok(p, w == "w") for w, p in zip(sys.argv[1::2], sys.argv[2::2])]))
"""


def account_can(user: str, checks: list[tuple[str, str]]) -> list[bool]:
    """For each (`r` or `w`, path): whether `user` can read that file (or list that directory), or
    write in that place (creating it). Asked of the account itself (modes, ACLs, every parent)."""
    if not checks:
        return []
    argv = [a for mode, path in checks for a in (mode, path)]
    done = subprocess.run(
        ["runuser", "-u", user, "--", sys.executable, "-c", _ACCESS, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [bool(x) for x in json.loads(done.stdout)]


def _paths(node: Any, at: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], str]]:
    """(key path, value) of every absolute path the config names that exists."""
    if isinstance(node, dict):
        return [found for key, value in node.items() for found in _paths(value, (*at, key))]
    if isinstance(node, list):
        return [found for i, value in enumerate(node) for found in _paths(value, (*at, i))]
    if isinstance(node, str):
        path = _expand(node)
        if path.startswith("/") and os.path.exists(path):
            return [(at, path)]
    return []


def _expand(value: str) -> str:
    """A config value as the sidecar reads it ($ILP_SITE_DIR and friends expanded)."""
    if "$" not in value:
        return value
    return os.path.expandvars(value.replace("$ILP_SITE_DIR", str(site_dir())))


def _set(config: dict[str, Any], at: tuple[str | int, ...], value: str) -> None:
    node: Any = config
    for key in at[:-1]:
        node = node[key]
    node[at[-1]] = value


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    if path.is_dir() and not path.is_symlink():
        for child in path.rglob("*"):
            os.chown(child, uid, gid, follow_symlinks=False)


def account_copy(source: Path, user: str, workdir: Path) -> Path:
    """A copy of `source` (a file, or a directory of them) in `workdir/files`, the account's,
    modes kept; made again each time (the test may have changed the original)."""
    entry = pwd.getpwnam(user)
    files = workdir / "files"
    files.mkdir(mode=0o700, exist_ok=True)
    os.chown(files, entry.pw_uid, entry.pw_gid)
    target = files / f"{abs(hash(str(source))) % 10**8}-{source.name}"
    if source.is_dir():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target)
    _chown_tree(target, entry.pw_uid, entry.pw_gid)
    return target


def environment_for_account(environment: dict[str, str], user: str, workdir: Path) -> dict[str, str]:
    """`environment` with the files it names that `user` cannot read (a variable the test set to
    a CA file, say OTEL_EXPORTER_OTLP_CERTIFICATE) replaced by the account's copies."""
    named = {
        key: value
        for key, value in environment.items()
        if os.environ.get(key) != value and value.startswith("/") and os.path.isfile(value)
    }
    readable = account_can(user, [("r", value) for value in named.values()])
    copies = {
        key: str(account_copy(Path(value), user, workdir))
        for (key, value), ok in zip(named.items(), readable, strict=True)
        if not ok
    }
    return {**environment, **copies}


def readable_config(
    config: dict[str, Any],
    user: str,
    workdir: Path,
    places: frozenset[tuple[str, ...]],
    apart: frozenset[tuple[str, ...]] = frozenset(),
) -> dict[str, Any]:
    """`config` as a daemon running as `user` can use it: every file it names that the account
    cannot read (CA files, TLS certificates and keys, password and secret files, SSH keys and
    known_hosts, token files; directories of them such as an X509 certificate directory) is
    copied into `workdir/files` (owned by the account, modes kept) and named there; the `places`
    it writes (directories, or files for keys ending in `_file`) are moved into `workdir` if the
    account cannot write them where they are, or they are the local site's (shared by its own
    daemons); the test's path then links to them. Keys `apart`
    name places the caller sees to itself."""
    config = copy.deepcopy(config)
    entry = pwd.getpwnam(user)
    skip = places | apart
    reads = [(at, path) for at, path in _paths(config) if tuple(k for k in at if isinstance(k, str)) not in skip]
    written: list[tuple[tuple[str | int, ...], str]] = []
    for at in sorted(places):
        node: Any = config
        for key in at:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str) and not Path(_expand(node)).is_relative_to(workdir):
            written.append((at, _expand(node)))
    verdicts = account_can(user, [("r", p) for _, p in reads] + [("w", p) for _, p in written])
    for (at, path), readable in zip(reads, verdicts[: len(reads)], strict=True):
        source = Path(path)
        if readable or not (source.is_file() or str(at[-1]).endswith(("_dir", "directory"))):
            continue  # readable, or a directory that is no bundle of files (e.g. host_path_allow)
        _set(config, at, str(account_copy(source, user, workdir)))
    for (at, path), writable in zip(written, verdicts[len(reads) :], strict=True):
        if writable and not Path(path).is_relative_to(site_dir()):
            continue  # the test's own place, and the account can write it (never the shared site's)
        moved = workdir / "_".join(str(k) for k in at)
        original = Path(path)
        if str(at[-1]).endswith("_file"):  # a file it writes: the account makes it
            if original.is_file() and not moved.exists():
                shutil.copy2(original, moved)
                os.chown(moved, entry.pw_uid, entry.pw_gid)
                original.unlink()
        else:
            moved.mkdir(exist_ok=True)
            os.chown(moved, entry.pw_uid, entry.pw_gid)
            moved.chmod(0o711 if at[-1] == "cache_dir" else 0o700)  # the accounts' agents reach staged files
        if original.is_symlink() and not original.exists():
            original.unlink()  # an earlier test's, into its workdir, gone since
        if not original.exists():
            original.parent.mkdir(parents=True, exist_ok=True)
            original.symlink_to(moved)  # where the test looks
        _set(config, at, str(moved))
    return config


def for_account(config: dict[str, Any], user: str, workdir: Path) -> dict[str, Any]:
    """A sidecar's `config` for `user` (`readable_config`: its store and staging cache are the
    places it writes); a pods root outside `workdir` is made the account's, in place (mode 1733
    with agents: each pod account makes its own directory)."""
    config = readable_config(config, user, workdir, _PLACES, _APART)
    entry = pwd.getpwnam(user)
    pods_root = Path(_expand(config["pods_root"]))
    if (config.get("transport") or {}).get("kind") != "ssh" and not pods_root.is_relative_to(workdir):
        pods_root.mkdir(parents=True, exist_ok=True)  # the parents stay as they are (root's, traversable)
        os.chown(pods_root, entry.pw_uid, entry.pw_gid)
        pods_root.chmod(0o1733 if config.get("agents") is not None else 0o711)
    return config


class Sidecar:
    """A real `interlink-provider sidecar` process with its own state, pods root and socket.

    It runs as the local site's service account (`ilp`) with per-account agents, unless it cannot:
    an HTCondor (emulator) sidecar, or one whose jobs may run as root, runs as root, marked
    (ROOT_REASONS); over SSH it runs as the service account without agents (the login node's
    account does the work). `user=None` asks for a root sidecar that hands pod directories over
    (the older mode, still supported)."""

    def __init__(
        self,
        workdir: Path,
        overrides: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        user: str | None = _DEFAULT,
    ):
        """`user`: run the sidecar as that local account; its working directory is then one that
        account owns, outside pytest's (0700) tree (see `account_workdir`), and the files its
        config names are made readable to it (see `for_account`)."""
        overrides = overrides or {}
        config = deep_merge(yaml.safe_load(LOCAL_CONFIG.read_text()), overrides)
        self.root_reason: str | None = None
        if user == _DEFAULT:
            if (config.get("auth") or {}).get("allow_jobs_as_root"):
                user, self.root_reason = None, "jobs-as-root"
            else:
                user = SERVICE_ACCOUNT
        elif user is None:
            self.root_reason = "root-sidecar-mode"
        if user is not None:
            ensure_site_accounts()
        over_ssh = (config.get("transport") or {}).get("kind") == "ssh"
        if "agents" not in overrides:
            # agents (deploy/local's `agents: {}`) are for a service-account sidecar on this
            # machine: a root one acts itself, and over SSH the login node's account does
            local_account = user is not None and not over_ssh
            overrides = {**overrides, "agents": (config.get("agents") or {}) if local_account else None}
        self.user = user
        if user is not None:
            workdir = account_workdir(user, workdir)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = yaml.safe_load(LOCAL_CONFIG.read_text())
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
        self.config = deep_merge(config, overrides)
        self.config_path = workdir / "sidecar.yaml"
        self.write_config()
        self.env = {**slurm_env(), **(account_environment(user) if user else {}), **(env or {})}
        if self.root_reason is not None:
            self.env[ROOT_BY_DESIGN] = self.root_reason
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "sidecar.log"
        condor = self.config.get("htcondor") or {}
        over_ssh = (self.config.get("transport") or {}).get("kind") == "ssh"
        self.schedd = CondorSchedd(condor["environment"]) if self.htcondor and not over_ssh else None

    def write_config(self) -> None:
        """The config file the process reads: `self.config`, for its account (`for_account`).
        Written again at each start (a test may change `self.config` in between)."""
        config = self.config if self.user is None else for_account(self.config, self.user, self.workdir)
        self.config_path.write_text(yaml.safe_dump(config))

    def command(self) -> list[str]:
        """The argv that runs this sidecar as its account."""
        as_user = account_prefix(self.user) if self.user else []
        return [
            *as_user,
            sys.executable,
            "-m",
            "interlink_provider.cli.main",
            "sidecar",
            "--config",
            str(self.config_path),
        ]

    def run_once(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the sidecar in the foreground until it exits (for configurations it refuses)."""
        self.write_config()
        environment = self.env if self.user is None else environment_for_account(self.env, self.user, self.workdir)
        return subprocess.run(self.command(), env=environment, capture_output=True, text=True, timeout=timeout)

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
        self.write_config()
        environment = {**self.env, **(env or {})}
        if self.user is not None:
            environment = environment_for_account(environment, self.user, self.workdir)
        if self.schedd is not None:
            self.schedd.start()
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), env=environment, stdout=log, stderr=subprocess.STDOUT)
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
        if self.schedd is not None:
            self.schedd.stop()
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


def held_strays(prefix: str, users: list[str | None], tag: str) -> list[str]:
    """One held job per user (None: root) named like a pod's job that no pod owns: strays."""
    job_ids = []
    for index, user in enumerate(users):
        name = prefix + f"00000000-0000-0000-0000-0000000{tag}{index}"
        as_user = account_prefix(user) if user else []
        sbatch = ["sbatch", "--parsable", "--hold", f"--job-name={name}", "--output=/dev/null", "--chdir=/tmp"]
        job_ids.append(slurm(*as_user, *sbatch, "--wrap=true").strip())
    return job_ids


async def wait_cancelled(job_ids: list[str], what: str) -> None:
    """Until every one of the jobs is CANCELLED (squeue keeps ended jobs a while)."""
    states = ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%T"]

    async def cancelled():
        return slurm(*states).split() == ["CANCELLED"] * len(job_ids)

    await wait_for(cancelled, 30, what=what)


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
