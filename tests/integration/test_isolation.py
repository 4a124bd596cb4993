"""Site isolation against the real local Slurm, real accounts and real sudo: the sidecar runs as its
service account, each pod account's agent (started through the one sudoers rule of
deploy/local/site.sh) does everything that touches that account's pods, and what an account
plants in its own pod directories (links to files it may not read) leaks nothing, whichever
mode the sidecar runs in."""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from interlink_provider.cli.client import SidecarClient, SidecarError, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import SUCCEEDED, phase_of
from interlink_provider.pods.staging import StagingSpec
from sidecars.core.kits import acl
from tests.datalake import put_dataset
from tests.helpers import Sidecar, pod_dir, wait_for
from tests.idp import free_port, token_auth
from tests.integration.test_site_auth import token_for

pytestmark = pytest.mark.slurm


def pod(name: str, script: str, namespace: str = "team", uid: str | None = None, mount: bool = False) -> dict:
    body = {
        "metadata": {"name": name, **({"uid": uid} if uid else {})},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "token", "mountPath": "/secret"}] if mount else [],
                }
            ],
            "volumes": [{"name": "token", "secret": {"secretName": "s"}}],
        },
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": namespace},
        "data": {"key": base64.b64encode(f"secret-of-{namespace}".encode()).decode()},
    }
    objects = manifest.Manifests(secrets={(namespace, "s"): secret})
    return manifest.create_request(body, objects, namespace=namespace)


@pytest.fixture(scope="module")
def agents_site(local_site, service_account, idp, tmp_path_factory):
    """A sidecar running as the service account, with per-account agents, over TCP with tokens."""
    port = free_port()
    sidecar = Sidecar(
        tmp_path_factory.mktemp("unused"),
        {
            "listen": {"host": "127.0.0.1", "port": port},
            "agents": {"idle_seconds": 30},
            "staging": None,
            "auth": token_auth(idp, [{"sub": "alice", "account": "ilp-alice"}, {"sub": "bob", "account": "ilp-bob"}]),
        },
        user=service_account,
    )
    ca = sidecar.workdir / "idp-ca.pem"  # the service account cannot read pytest's (0700) directories
    shutil.copy(idp.ca_file, ca)
    sidecar.config["auth"]["token"]["issuers"][0]["ca_file"] = str(ca)
    sidecar.config_path.write_text(__import__("yaml").safe_dump(sidecar.config))
    sidecar.start()
    sidecar.http = f"http://127.0.0.1:{port}"
    yield sidecar
    sidecar.stop()
    shutil.rmtree(sidecar.workdir, ignore_errors=True)


async def final(client: SidecarClient, uid: str, seconds: float = 120) -> dict:
    async def done():
        [status] = await client.status([pod_ref(uid)]) or [None]
        return status if status and phase_of(status) in (SUCCEEDED, "Failed") else None

    return await wait_for(done, seconds, what="the pod to end")


async def logs_of(client: SidecarClient, uid: str, namespace: str = "team") -> str:
    return await client.logs_text({"PodUID": uid, "Namespace": namespace, "ContainerName": "c", "Opts": {}})


def owner(path: str) -> str:
    return pwd.getpwuid(os.lstat(path).st_uid).pw_name


def descendants(pid: int) -> list[tuple[str, str]]:
    """(user, command line) of `pid` and of every process it started, directly or not."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,ppid=,user:32=,args="], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split(None, 3) for line in out.splitlines() if len(line.split(None, 3)) == 4]
    children: dict[int, list[list[str]]] = {}
    for row in rows:
        children.setdefault(int(row[1]), []).append(row)
    found = [(row[2], row[3]) for row in rows if int(row[0]) == pid]
    todo = [pid]
    while todo:
        for row in children.get(todo.pop(), []):
            found.append((row[2], row[3]))
            todo.append(int(row[0]))
    return found


async def test_pods_of_two_identities_run_through_their_own_agents_and_nothing_of_ours_runs_as_root(agents_site, idp):
    site = agents_site
    async with (
        SidecarClient(site.http, token=await token_for(idp, "alice")) as alice,
        SidecarClient(site.http, token=await token_for(idp, "bob")) as bob,
    ):
        a = await alice.create(pod("a", "id -un; sleep 3"))
        b = await bob.create(pod("b", "id -un; sleep 3"))
        assert site.process is not None
        ours = descendants(site.process.pid)  # the sidecar (setpriv became it) and all it started
        agents = {
            user for user, args in ours if args.startswith("/") and args.endswith("interlink-provider site agent")
        }
        assert {"ilp-alice", "ilp-bob"} <= agents, ours
        # Only sudo itself (it waits for the agent it started) is root; nothing of ours is.
        assert not [args for user, args in ours if user == "root" and not args.startswith("sudo ")], ours
        assert "ilp" in {user for user, args in ours if "interlink_provider.cli.main sidecar" in args}
        for client, answer, account in ((alice, a, "ilp-alice"), (bob, b, "ilp-bob")):
            status = await final(client, answer["PodUID"])
            assert phase_of(status) == SUCCEEDED, status
            assert (await logs_of(client, answer["PodUID"])).split() == [account]
            [pod_dir] = site.pods_root.glob(f"*/team/{answer['PodUID']}")
            assert pod_dir.parent.parent.name == account and owner(str(pod_dir)) == account
            assert owner(str(pod_dir / "job.sh")) == account  # born the account's: nothing was chown-ed
        root = site.pods_root.stat()
        assert stat.S_IMODE(root.st_mode) == 0o1733 and pwd.getpwuid(root.st_uid).pw_name == "ilp"
        with pytest.raises(SidecarError) as refused:
            await logs_of(bob, a["PodUID"])
        assert refused.value.status == 403


def plant_links(pod_dir: Path, account: str, targets: dict[str, str]) -> None:
    """As the pod's own account would from a login shell: its log and reason files become links."""
    for name, target in targets.items():
        path = pod_dir / "containers" / "c" / name
        subprocess.run(["runuser", "-u", account, "--", "ln", "-sfn", target, str(path)], check=True)


async def test_links_an_account_plants_in_its_pod_leak_nothing(agents_site, idp, tmp_path):
    site = agents_site
    secret = Path("/var/tmp") / f"ilp-root-only-{uuid.uuid4().hex[:8]}"
    secret.write_text("ROOT-ONLY-LINE\nmore\n")
    secret.chmod(0o600)
    try:
        async with SidecarClient(site.http, token=await token_for(idp, "alice")) as alice:
            answer = await alice.create(pod("planter", "echo honest line"))
            uid = answer["PodUID"]
            await final(alice, uid)
            [pod_dir] = site.pods_root.glob(f"*/team/{uid}")
            database = site.workdir / "state" / "sidecar.db"
            plant_links(pod_dir, "ilp-alice", {"log": str(secret), "reason": str(secret)})
            try:
                logs = await logs_of(alice, uid)
            except SidecarError as exc:
                logs = exc.message
            assert "ROOT-ONLY" not in logs
            [status] = await alice.status([pod_ref(uid)])
            assert "ROOT-ONLY" not in str(status)
            plant_links(pod_dir, "ilp-alice", {"log": str(database)})  # the service account's own files
            try:
                logs = await logs_of(alice, uid)
            except SidecarError as exc:
                logs = exc.message
            assert "SQLite" not in logs and "pods" not in logs
    finally:
        secret.unlink()


@pytest.fixture
def root_sidecar(local_site, tmp_path):
    """A sidecar that runs as root and hands pod directories over (the older mode, still supported:
    marked root-sidecar-mode for the suite's root check)."""
    instance = Sidecar(tmp_path / "root-sidecar", user=None).start()
    yield instance
    instance.stop()


async def test_a_root_sidecar_does_not_follow_links_planted_in_a_pod_either(root_sidecar):
    """The same links against a sidecar that runs as root and hands directories over: it reads a
    pod's files itself, but never through a link."""
    sidecar = root_sidecar
    secret = Path("/var/tmp") / f"ilp-root-only-{uuid.uuid4().hex[:8]}"
    secret.write_text("ROOT-ONLY-LINE\nmore\n")
    secret.chmod(0o600)
    try:
        async with SidecarClient(sidecar.address) as client:
            answer = await client.create(pod("planter", "echo honest line"))
            uid = answer["PodUID"]
            await final(client, uid)
            found = pod_dir(sidecar.pods_root, "team", uid)
            plant_links(found, owner(str(found)), {"log": str(secret), "reason": str(secret)})
            try:
                logs = await logs_of(client, uid)
            except SidecarError as exc:
                logs = exc.message
            [status] = await client.status([pod_ref(uid)])
            assert "ROOT-ONLY" not in logs and "ROOT-ONLY" not in str(status)
    finally:
        secret.unlink()


async def test_namespace_and_uid_pairs_that_used_to_share_a_directory_get_one_each(sidecar):
    """(team, x-1111…) and (team-x, 1111…) were both `team-x-1111…`: the second create reused the
    first's directory (and its secrets), and deleting either removed both."""
    tail = str(uuid.uuid4())
    first = pod("one", "cat /secret/key; sleep 2", namespace="team", uid=f"x-{tail}", mount=True)
    second = pod("two", "cat /secret/key", namespace="team-x", uid=tail, mount=True)
    async with SidecarClient(sidecar.address) as client:
        a, b = await client.create(first), await client.create(second)
        dirs = {p for uid in (a["PodUID"], b["PodUID"]) for p in sidecar.pods_root.glob(f"*/*/{uid}")}
        assert len(dirs) == 2
        await client.delete(first["pod"])
        status = await final(client, b["PodUID"])
        assert (
            phase_of(status) == SUCCEEDED
            and (await logs_of(client, b["PodUID"], "team-x")).strip() == "secret-of-team-x"
        )


# ---------------------------------------------------------------------- staging with agents


@pytest.fixture(scope="module")
def staging_agents_site(local_site, service_account, tmp_path_factory):
    """A service-account sidecar with agents that stages data (the local Rucio and XRootD); the
    interLink API server's pods (the tokenless socket) run as ilp-alice."""
    sidecar = Sidecar(
        tmp_path_factory.mktemp("unused"),
        {"agents": {"idle_seconds": 30}, "auth": {"unix_socket_account": "ilp-alice"}},
        user=service_account,
    )
    password = sidecar.workdir / "rucio-password"  # the site's own is root's alone
    shutil.copy(local_site / "rucio" / "password", password)
    os.chown(password, pwd.getpwnam(service_account).pw_uid, -1)
    sidecar.config["staging"].update(
        cache_dir=str(sidecar.workdir / "cache"),
        rucio={**sidecar.config["staging"]["rucio"], "password_file": str(password)},
    )
    sidecar.config_path.write_text(__import__("yaml").safe_dump(sidecar.config))
    sidecar.start()
    yield sidecar
    sidecar.stop()
    shutil.rmtree(sidecar.workdir, ignore_errors=True)


def staging_pod(name: str, did: str, script: str) -> dict:
    annotations = {
        "datalake.interlink/inputs": f"- {{did: '{did}', mount: /data/in}}",
        "datalake.interlink/outputs": "- {mount: /data/out, scope: user}",
    }
    body = {
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
        },
    }
    return manifest.create_request(body, manifest.Manifests(), namespace="data")


async def test_data_is_staged_in_and_out_through_the_pods_agent(staging_agents_site, catalog):
    site = staging_agents_site
    did, _ = put_dataset(catalog, {"a.dat": b"alpha\n", "b.dat": b"beta\n"})
    script = "id -un; cat /data/in/a.dat /data/in/b.dat; echo out > /data/out/result.txt"
    async with SidecarClient(site.address) as client:
        answer = await client.create(staging_pod("stager", did, script))
        uid = answer["PodUID"]
        status = await final(client, uid)
        assert phase_of(status) == SUCCEEDED, status
        assert (await logs_of(client, uid, "data")).split() == ["ilp-alice", "alpha", "beta"]
        [listed] = [p for p in await client.pods() if p["uid"] == uid]
    assert f"outputs registered in user:data.stager.{uid[:8]}" in listed["message"]
    cached = [p for p in (site.workdir / "cache").rglob("*.dat") if ".partial" not in p.parts]
    assert len(cached) == 2
    for path in cached:  # the sidecar's alone, and the account that staged it
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0 and acl.allowed(path, "ilp-alice") == acl.READ
        assert acl.allowed(path, "ilp-bob") == 0
        denied = subprocess.run(["runuser", "-u", "ilp-bob", "--", "cat", str(path)], capture_output=True)
        assert denied.returncode != 0
    exports = site.workdir / "cache" / ".exports"
    assert not exports.exists() or not list(exports.iterdir())  # the copies for stage-out are gone


async def test_an_output_volume_swapped_for_a_link_is_not_staged_out(staging_agents_site, catalog):
    site = staging_agents_site
    did, _ = put_dataset(catalog, {"in.dat": b"x\n"})
    secret_dir = Path("/var/tmp") / f"ilp-root-dir-{uuid.uuid4().hex[:8]}"
    secret_dir.mkdir(mode=0o700)
    (secret_dir / "secret.txt").write_text("ROOT-ONLY\n")
    try:
        async with SidecarClient(site.address) as client:
            answer = await client.create(staging_pod("swapper", did, "echo out > /data/out/ok.txt; sleep 8"))
            uid = answer["PodUID"]

            async def running():
                return [p for p in await client.pods() if p["uid"] == uid and p["stage"] == "submitted"]

            await wait_for(running, 60, what="the job to run")
            out = pod_dir(site.pods_root, "data", uid) / "volumes" / StagingSpec.output_volume(0)
            # As the account would from a login shell, while its job runs:
            subprocess.run(["runuser", "-u", "ilp-alice", "--", "mv", str(out), f"{out}.moved"], check=True)
            subprocess.run(["runuser", "-u", "ilp-alice", "--", "ln", "-s", str(secret_dir), str(out)], check=True)
            status = await final(client, uid)
        assert phase_of(status) == "Failed"
        message = status["containers"][0]["state"]["terminated"]["message"]
        assert "stage-out failed" in message and "ROOT-ONLY" not in message
        assert not [r for r in catalog.replicas("user", f"data.swapper.{uid[:8]}") if "secret" in r["name"]]
    finally:
        shutil.rmtree(secret_dir)
