"""The per-account agent over its real wire (a real `interlink-provider site agent` process on
pipes, as the sidecar's own account, so no sudo): what it does for a pod, what it refuses, and how
the pool lives with agents that die or go idle. Real accounts through sudo:
tests/integration/test_isolation.py."""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interlink_provider.pods.jobspec import ContainerSpec, FileItem, JobSpec, Resources, VolumeSpec
from sidecars.core.kits import agentwire as wire
from sidecars.core.kits.agents import AgentFiles, AgentGone, AgentPool, AgentTransport
from sidecars.core.kits.logs import READ_LIMIT
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.transport import LocalTransport, TransportError
from sidecars.core.kits.workdir import DirectoryTaken, WorkdirError, plan_directory
from tests.helpers import SERVICE_ACCOUNT, account_prefix, account_workdir

# The agents run as the local site's service account (as the sidecar's own agent would: no
# sudo), not as the test's root: no interlink-provider daemon of the suite runs as root.
ME = SERVICE_ACCOUNT
AGENT = [sys.executable, "-m", "interlink_provider.cli.main", "site", "agent"]


def spec(uid: str = "uid-1") -> JobSpec:
    container = ContainerSpec(name="c", image="busybox", command=("true",), args=(), env=())
    secret = VolumeSpec("token", "secret", files=(FileItem("key", b"s3cret", 0o600),), sensitive=True)
    return JobSpec(
        uid=uid,
        name="p",
        namespace="ns",
        hostname="p",
        init_containers=(),
        containers=(container,),
        volumes=(secret, VolumeSpec("data", "emptyDir")),
        resources=Resources(cpus=1, memory_mib=64),
        flavor="default",
        restart_policy="Never",
        grace_seconds=30,
        deadline_seconds=None,
    )


@pytest.fixture
async def pool(service_account, tmp_path):
    pods_root = account_workdir(ME, tmp_path) / "pods"  # the account's, outside pytest's 0700 tree
    pods_root.mkdir()
    os.chown(pods_root, pwd.getpwnam(ME).pw_uid, -1)
    launch = lambda account: [*account_prefix(account), *AGENT]  # noqa: E731
    agents = AgentPool(launch, {"pods_root": str(pods_root), "environment": {}}, idle_seconds=2)
    yield agents, pods_root
    await agents.close()


async def test_an_agent_writes_reads_and_removes_a_pod_of_its_own_account(pool):
    agents, pods_root = pool
    files = AgentFiles(agents, ME)
    paths = PodPaths.for_pod(str(pods_root), "ns", "uid-1", ME)
    await files.materialize(paths, plan_directory(spec(), "#!/bin/bash\necho hi\n"))
    pod = Path(paths.pod_dir)
    assert (pod / "job.sh").read_text() == "#!/bin/bash\necho hi\n" and (
        pod / "volumes/token/key"
    ).read_bytes() == b"s3cret"
    assert oct((pod / "volumes/token/key").stat().st_mode & 0o777) == "0o600"
    (pod / "containers/c/exit_code").write_text("3\n")
    (pod / "containers/c/log").write_bytes(b"2026-01-01T00:00:00.000000000Z one\n")
    found = await files.read_pod(paths, ["c"])
    assert found["c"].exit_code == 3
    data, offset, identity = await files.read_tail(paths.log_file("c"), 0)
    assert (data, offset) == (b"2026-01-01T00:00:00.000000000Z one\n", 0) and identity is not None
    await files.scrub(paths, ["token"])
    assert not (pod / "volumes/token").exists()
    await files.remove(paths)
    assert not pod.exists() and agents.starts == 1


async def test_exported_outputs_in_subdirectories_are_reachable_by_the_sidecar(pool):
    """The agent's umask is 077: the directories it makes in the export area must still let the
    sidecar (another account) through to the files, which it reads by path."""
    agents, pods_root = pool
    files = AgentFiles(agents, ME)
    paths = PodPaths.for_pod(str(pods_root), "ns", "uid-2", ME)
    await files.materialize(paths, plan_directory(spec("uid-2"), "#!/bin/bash\n"))
    nested = Path(paths.pod_dir) / "volumes" / "data" / "sub" / "deeper"
    nested.mkdir(parents=True)
    (nested / "out.txt").write_text("out\n")
    destination = pods_root.parent / "export"  # the sidecar made it and let the account write (here: its own)
    destination.mkdir(mode=0o700)
    os.chown(destination, pwd.getpwnam(ME).pw_uid, -1)
    exported = dict(await files.export_outputs(paths, "data", destination))
    assert exported == {"sub/deeper/out.txt": destination / "sub" / "deeper" / "out.txt"}
    for directory in (destination / "sub", destination / "sub" / "deeper"):
        assert directory.stat().st_mode & 0o777 == 0o711
    assert exported["sub/deeper/out.txt"].stat().st_mode & 0o777 == 0o644


async def test_an_agent_never_acts_outside_its_accounts_part_of_the_pods_root(pool, tmp_path):
    agents, pods_root = pool
    files = AgentFiles(agents, ME)
    for escape in (
        PodPaths(str(pods_root), str(pods_root / "someone-else" / "ns" / "uid")),
        PodPaths(str(pods_root), str(tmp_path / "outside")),
        PodPaths(str(tmp_path), str(tmp_path / ME / "ns" / "uid")),  # another pods root
    ):
        with pytest.raises(AgentGone, match="not below"):
            await files.remove(escape)
    with pytest.raises(AgentGone, match="not below"):
        await files.read_tail("/etc/shadow", 0)


async def test_links_planted_in_a_pod_are_refused_not_followed(pool, tmp_path):
    agents, pods_root = pool
    files = AgentFiles(agents, ME)
    paths = PodPaths.for_pod(str(pods_root), "ns", "uid-1", ME)
    await files.materialize(paths, plan_directory(spec(), "#!/bin/bash\n"))
    secret = tmp_path / "secret"
    secret.write_text("root only\n")
    container = Path(paths.container_dir("c"))
    (container / "log").symlink_to(secret)
    (container / "reason").symlink_to(secret)
    with pytest.raises(WorkdirError, match="is a link"):
        await files.read_tail(paths.log_file("c"), 0)
    assert (await files.read_pod(paths, ["c"]))["c"].reason is None  # a linked state file is not read
    (container / "log").unlink()
    os.mkfifo(container / "log")  # a special file: never opened for reading (it would block)
    with pytest.raises(WorkdirError, match="not a regular file"):
        await files.read_tail(paths.log_file("c"), 0)
    (container / "log").unlink()
    container.rename(container.with_name("real"))
    container.symlink_to(tmp_path)  # the whole container directory swapped for a link
    with pytest.raises(WorkdirError, match="not a directory of the pod"):
        await files.read_tail(paths.log_file("c"), 0)


async def test_reads_are_bounded_whatever_the_file(pool):
    agents, pods_root = pool
    files = AgentFiles(agents, ME)
    paths = PodPaths.for_pod(str(pods_root), "ns", "uid-1", ME)
    await files.materialize(paths, plan_directory(spec(), "#!/bin/bash\n"))
    big = Path(paths.log_file("c"))
    big.write_bytes(b"x" * (3 * READ_LIMIT))
    data, offset, _ = await files.read_tail(str(big), 0)
    assert len(data) == READ_LIMIT and offset == 0
    data, offset, _ = await files.read_from(str(big), 2 * READ_LIMIT + 10, None)
    assert len(data) == READ_LIMIT - 10 and offset == 2 * READ_LIMIT + 10


async def test_a_directory_that_is_not_the_pods_own_is_never_reused(pool):
    agents, pods_root = pool
    files = AgentFiles(agents, ME)
    paths = PodPaths.for_pod(str(pods_root), "ns", "uid-1", ME)
    Path(paths.pod_dir).mkdir(parents=True)
    (Path(paths.pod_dir) / "theirs").write_text("keep me")
    subprocess.run(["chown", "-R", ME, str(pods_root / ME)], check=True)  # made by the account itself
    with pytest.raises(DirectoryTaken, match="belongs to no record of this pod"):
        await files.materialize(paths, plan_directory(spec(), "#!/bin/bash\n"))
    assert (Path(paths.pod_dir) / "theirs").read_text() == "keep me"
    # A leftover of an interrupted create of this same pod (its marker says so) is started afresh.
    await files.remove(paths)
    await files.materialize(paths, plan_directory(spec(), "#!/bin/bash\nfirst\n"))
    await files.materialize(paths, plan_directory(spec(), "#!/bin/bash\nsecond\n"))
    assert (Path(paths.pod_dir) / "job.sh").read_text().endswith("second\n")


async def test_commands_run_by_the_agent_as_its_account(pool):
    agents, _ = pool
    transport = AgentTransport(LocalTransport(), agents, ME)
    result = await transport.run(["sh", "-c", "id -un; echo oops >&2; exit 3"])
    assert (result.returncode, result.stdout.strip(), result.stderr.strip()) == (3, ME, "oops")
    with pytest.raises(TransportError, match="cannot run sbatch"):  # the transport's error, as locally
        await transport.run(["/nonexistent/sbatch"])


async def test_a_dead_agent_fails_what_it_had_in_flight_and_a_new_one_takes_the_next(pool):
    agents, _ = pool
    transport = AgentTransport(LocalTransport(), agents, ME)
    slow = asyncio.create_task(transport.run(["sleep", "30"], timeout=60))
    deadline = time.monotonic() + 30  # the agent starts in 0.3 s, much longer on a busy host
    while ME not in agents.agents and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # and is handed the command
    agents.agents[ME].process.kill()
    with pytest.raises(AgentGone, match="exited"):
        await slow
    result = await transport.run(["true"])
    assert result.returncode == 0 and agents.starts == 2


async def test_idle_agents_are_let_go(pool):
    agents, _ = pool
    await AgentTransport(LocalTransport(), agents, ME).run(["true"])
    process = agents.agents[ME].process
    deadline = time.monotonic() + 15
    while process.returncode is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert process.returncode == 0 and ME not in agents.agents


def test_the_wire_refuses_what_is_not_a_message():
    with pytest.raises(wire.WireError):
        wire.parse_request(b"[1, 2]\n")
    with pytest.raises(wire.WireError):
        wire.parse_answer(b'{"id": "x"}\n')
    line = wire.request_line(wire.Request(7, "read_tail", {"path": "/p", "lines": 1}))
    assert wire.parse_request(line) == wire.Request(7, "read_tail", {"path": "/p", "lines": 1})


def test_the_agent_refuses_anything_but_pipes(service_account):
    """Started by hand (a terminal, /dev/null) it says what it is for and exits 2, instead of hanging.
    As the service account, as every agent of the suite (the root check may sample it)."""
    import subprocess

    done = subprocess.run(
        [*account_prefix(ME), *AGENT], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "pipes on stdin and stdout" in done.stderr


def test_daemons_start_without_the_user_commands():
    """The sidecar and each agent start through the same command line; the user commands (and the
    HTTP client, auth and staging stacks they import) are loaded only when named, or for help."""
    import subprocess

    probe = (
        "import sys\n"
        "from interlink_provider.cli.main import build_parser\n"
        "names = set(build_parser('site')._subparsers._group_actions[0].choices)\n"
        "print(sorted(names), 'aiohttp' in sys.modules)\n"
        "print(sorted(build_parser()._subparsers._group_actions[0].choices))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "['devidp', 'gateway', 'sidecar', 'site'] False"
    assert lines[1] == "['devidp', 'doctor', 'gateway', 'pod', 'sidecar', 'site', 'stage', 'token']"
