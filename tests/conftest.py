"""Session fixtures: the embedded local site (real munge, slurmctld, slurmd), and the check that
no interlink-provider daemon of the suite ran as root (tests/rootcheck.py)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import SERVICE_ACCOUNT, SITE_SCRIPT, Sidecar, ensure_site_accounts, site_dir
from tests.idp import IdP
from tests.rootcheck import RootCheck, describe

ROOT_CHECK_KEY = "ilp_root_check"
_root_checks: dict[str, dict] = {}  # the workers' summaries, on the controller (or this process)


@pytest.fixture(scope="session", autouse=True)
def root_check(request):
    """Samples this test process's daemons every second while its tests run; at the end, fails
    (an error at the teardown of this process's last test) if any ran as root without a reason."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    check = RootCheck(worker).start()
    yield check
    check.stop()
    summary = check.summary()
    _root_checks[worker] = summary
    workeroutput = getattr(request.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller prints it
        workeroutput[ROOT_CHECK_KEY] = json.dumps(summary)
    if summary["violations"] or summary["error"]:
        pytest.fail(describe(summary), pytrace=False)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist's controller: a worker is done; keep what its root check found."""
    found = getattr(node, "workeroutput", {}).get(ROOT_CHECK_KEY)
    if found:
        summary = json.loads(found)
        _root_checks[summary["worker"]] = summary


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if getattr(config, "workeroutput", None) is not None:
        return  # a worker: its controller reports
    for worker in sorted(_root_checks):
        terminalreporter.write_line(describe(_root_checks[worker]))
    workers = getattr(config.option, "numprocesses", None)
    if str(workers).isdigit() and _root_checks and len(_root_checks) < int(workers):
        terminalreporter.write_line(f"root check: only {len(_root_checks)} of {workers} workers reported")


TEST_ACCOUNTS = ("ilp-alice", "ilp-bob")


def _site(command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ILP_SITE_DIR": str(site_dir())}
    return subprocess.run(["bash", str(SITE_SCRIPT), command], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def local_site():
    """Start the local Slurm site for the session (idempotent); stop it after if we started it."""
    status = _site("status")
    already = "slurmctld running" in status.stdout and "slurmd running" in status.stdout
    started = _site("start")
    if started.returncode != 0:
        pytest.fail(f"the local site did not start:\n{started.stderr}")
    os.environ["ILP_SITE_DIR"] = str(site_dir())
    os.environ["SLURM_CONF"] = str(site_dir() / "slurm" / "slurm.conf")
    yield site_dir()
    if not already and not os.environ.get("ILP_KEEP_SITE"):
        _site("stop")


@pytest.fixture
def sidecar(local_site, tmp_path):
    """A running sidecar with its own state; stopped after the test."""
    instance = Sidecar(tmp_path / "sidecar").start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def unix_accounts():
    """Two real local accounts, for jobs of two identities (created once, idempotently)."""
    for name in TEST_ACCOUNTS:
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            made = subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], capture_output=True)
            # another test worker may have made it at the same moment
            if made.returncode != 0 and subprocess.run(["id", name], capture_output=True).returncode != 0:
                pytest.fail(f"cannot create the test account {name}: {made.stderr.decode()}")
    return TEST_ACCOUNTS


@pytest.fixture(scope="session")
def service_account(unix_accounts) -> str:
    """The multi-account mode's accounts, as deploy/local/site.sh makes them: the sidecar's service
    account, the pod accounts in ilp-users, and the one sudoers rule (made once, under a lock:
    test workers run in parallel)."""
    ensure_site_accounts()
    return SERVICE_ACCOUNT


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    """A real devidp over HTTPS with its local CA."""
    instance = IdP(tmp_path_factory.mktemp("devidp"), tls=True).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def catalog(local_site, tmp_path_factory):
    """A Rucio client on the local site's server (userpass, as the sidecar of deploy/local)."""
    from interlink_provider.staging.catalog import RucioCatalog
    from interlink_provider.staging.config import RucioConfig

    state = tmp_path_factory.mktemp("rucio-client")
    password = state / "password"
    password.write_text("secret\n")
    password.chmod(0o600)
    config = RucioConfig(host="http://127.0.0.1:18081", username="ddmlab", password_file=str(password))
    return RucioCatalog(config, state, "LOCAL")
