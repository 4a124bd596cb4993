"""A sidecar that demands tokens: identities, ownership, and jobs under two real Unix accounts."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from interlink_provider.auth.exchange import OAuthClient
from interlink_provider.cli.client import SidecarClient, SidecarError, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import SUCCEEDED, phase_of
from tests.helpers import REPO, Sidecar, pod_dir, slurm, wait_for
from tests.idp import SITE_AUDIENCE, free_port, token_auth

pytestmark = pytest.mark.slurm
USER_SCOPES = "compute.create compute.read compute.cancel wlcg.groups"


@pytest.fixture(scope="module")
def site(local_site, unix_accounts, idp, tmp_path_factory):
    port = free_port()
    # The job accounts must traverse every directory above their pods (pytest's are 0700).
    pods_root = Path(tempfile.mkdtemp(prefix="ilp-authsite-"))
    pods_root.chmod(0o711)
    sidecar = Sidecar(
        tmp_path_factory.mktemp("authsite"),
        {
            "pods_root": str(pods_root / "pods"),
            "listen": {"host": "127.0.0.1", "port": port},
            "auth": token_auth(
                idp,
                [
                    {"sub": "alice", "account": "ilp-alice"},
                    {"groups": ["/vo/bob-team"], "account": "ilp-bob"},
                    {"sub": "mallory", "account": "ilp-bob"},
                ],
            ),
        },
    ).start()
    sidecar.http = f"http://127.0.0.1:{port}"
    yield sidecar
    sidecar.stop()
    shutil.rmtree(pods_root, ignore_errors=True)


async def token_for(idp, name: str, scope: str = USER_SCOPES, audience: str | None = SITE_AUDIENCE) -> str:
    client = OAuthClient(idp.issuer, name, f"{name}-secret", ca_file=idp.ca_file)
    try:
        return (await client.client_credentials(scope, audience)).access_token
    finally:
        await client.close()


def whoami_pod(name: str) -> dict:
    pod = {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "id -un; touch /tmp/mine"]}],
        },
    }
    return manifest.create_request(pod, manifest.Manifests(), namespace="team")


async def refused(client: SidecarClient, status: int, text: str, call) -> None:
    with pytest.raises(SidecarError) as info:
        await call(client)
    assert info.value.status == status and text in info.value.message, (info.value.status, info.value.message)


async def test_requests_without_a_valid_token_are_refused(site, idp):
    async with SidecarClient(site.http) as anonymous:
        await refused(anonymous, 401, "missing_token", lambda c: c.pods())
    async with SidecarClient(site.address) as on_socket:  # tokenless unix socket not enabled here
        await refused(on_socket, 401, "missing_token", lambda c: c.ping())
    async with SidecarClient(site.http, token="not-a-jwt") as garbage:
        await refused(garbage, 401, "malformed_token", lambda c: c.pods())
    elsewhere = await token_for(idp, "alice", audience="https://elsewhere.test")
    async with SidecarClient(site.http, token=elsewhere) as wrong:
        await refused(wrong, 401, "wrong_audience", lambda c: c.pods())
    mallory = await token_for(idp, "mallory", "compute.read")
    async with SidecarClient(site.http, token=mallory) as reader:
        await reader.pods()  # compute.read is enough to list
        await refused(reader, 403, "missing_scope", lambda c: c.create(whoami_pod("m")))
    unmapped = await token_for(idp, "gateway", USER_SCOPES)
    async with SidecarClient(site.http, token=unmapped) as stranger:
        await refused(stranger, 403, "no_account", lambda c: c.pods())
    assert (await _healthz(site)) == 200  # public
    assert (await _get(site.http + "/metrics")) == 401  # on TCP: behind the token, as every other path
    assert (await _get(site.http + "/metrics", mallory)).startswith("# HELP")  # any reader
    async with SidecarClient(site.address) as on_socket:  # the socket: guarded by its mode
        assert "ilp_pods" in await on_socket.call("GET", "/metrics")


async def _get(url: str, token: str | None = None) -> int | str:
    """The body of a 200, else the status."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as response:
            return await response.text() if response.status == 200 else response.status


async def _healthz(site) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(site.http + "/healthz") as response:
            return response.status


async def test_two_identities_run_as_two_accounts_and_cannot_touch_each_other(site, idp):
    alice_token, bob_token = await token_for(idp, "alice"), await token_for(idp, "bob")
    async with SidecarClient(site.http, token=alice_token) as alice, SidecarClient(site.http, token=bob_token) as bob:
        a_req, b_req = whoami_pod("alice-pod"), whoami_pod("bob-pod")
        a = await alice.create(a_req)
        b = await bob.create(b_req)
        for c, answer in ((alice, a), (bob, b)):

            async def done(c=c, answer=answer):
                return phase_of((await c.status([pod_ref(answer["PodUID"])]))[0]) == SUCCEEDED

            await wait_for(done, 90, what="the pod to succeed")
        log = lambda r: {"PodUID": r["pod"]["metadata"]["uid"], "ContainerName": "c", "Opts": {}}  # noqa: E731
        assert await alice.logs_text(log(a_req)) == "ilp-alice\n"
        assert await bob.logs_text(log(b_req)) == "ilp-bob\n"
        assert slurm("squeue", "-h", "-t", "all", "-j", a["PodJID"], "-o", "%u").strip() == "ilp-alice"
        assert slurm("squeue", "-h", "-t", "all", "-j", b["PodJID"], "-o", "%u").strip() == "ilp-bob"
        rootfs = pod_dir(site.pods_root, "team", a["PodUID"]) / "containers" / "c" / "rootfs" / "tmp" / "mine"
        assert rootfs.owner() == "ilp-alice"
        # Bob cannot read, follow or delete Alice's pod; each lists only their own.
        await refused(bob, 403, "belongs to another identity", lambda c: c.status([pod_ref(a["PodUID"])]))
        await refused(bob, 403, "belongs to another identity", lambda c: c.logs_text(log(a_req)))
        await refused(bob, 403, "belongs to another identity", lambda c: c.delete(a_req["pod"]))
        await refused(bob, 403, "belongs to another identity", lambda c: c.create(a_req))
        with pytest.raises(SidecarError) as guessed:  # nothing of the pod but the UID bob gave
            await bob.status([pod_ref(a["PodUID"])])
        assert guessed.value.message == f"pod {a['PodUID']} belongs to another identity"
        # Each refusal logged once at INFO, naming who was refused and why.
        lines = [line for line in site.log().splitlines() if a["PodUID"] in line and "refused" in line]
        assert len(lines) == 5 and all("belongs to another identity" in line for line in lines), lines
        assert all('"level": "INFO"' in line for line in lines), lines
        assert {p["name"] for p in await alice.pods()} == {"alice-pod"}
        assert {p["name"] for p in await bob.pods()} == {"bob-pod"}
        # Succeeded can be seen while Slurm still completes the job: either answer is right.
        assert re.search(r"alice-pod: (finished before deletion|deleting)", await alice.delete(a_req["pod"]))


async def test_an_exchanged_token_acts_for_its_user(site, idp):
    user = await token_for(idp, "alice", audience=None)  # aud: any; not for this site as such
    async with SidecarClient(site.http, token=user) as direct:
        await refused(direct, 401, "wrong_audience", lambda c: c.pods())
    gateway = OAuthClient(idp.issuer, "gateway", "gateway-secret", ca_file=idp.ca_file)
    try:
        exchanged = (await gateway.exchange(user, SITE_AUDIENCE, USER_SCOPES)).access_token
    finally:
        await gateway.close()
    async with SidecarClient(site.http, token=exchanged) as via_gateway:
        me = await via_gateway.whoami()
        assert me["subject"] == "alice" and me["actor"] == "gateway" and me["account"] == "ilp-alice"
        assert me["allowed"] == {"create": True, "read": True, "cancel": True}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interlink_provider.cli.main", "token", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


async def test_token_cli(site, idp, tmp_path):
    alice = await token_for(idp, "alice")
    token_file = tmp_path / "bt"
    token_file.write_text(alice + "\n")
    env = {"BEARER_TOKEN_FILE": str(token_file)}
    found = cli("discover", env=env)
    assert found.returncode == 0 and f"$BEARER_TOKEN_FILE ({token_file})" in found.stdout and alice not in found.stdout
    inspected = cli("inspect", env=env)
    assert inspected.returncode == 0 and '"sub": "alice"' in inspected.stdout and "expires in" in inspected.stdout
    verify = ["verify", "--issuer", idp.issuer, "--ca-file", idp.ca_file, "--development"]
    ok = cli(*verify, "--audience", SITE_AUDIENCE, "--scope", "compute.create", env=env)
    assert ok.returncode == 0 and "VALID" in ok.stdout
    wrong = cli(*verify, "--audience", "https://other.test", env=env)
    assert wrong.returncode == 1 and "wrong_audience" in wrong.stderr
    scope = cli(*verify, "--audience", SITE_AUDIENCE, "--scope", "storage.modify:/", env=env)
    assert scope.returncode == 1 and "missing_scope" in scope.stderr
    expired = cli(*verify, "--audience", SITE_AUDIENCE, idp.forge(exp=1, iat=0, nbf=0))
    assert expired.returncode == 1 and "expired" in expired.stderr
    unknown = cli("verify", "--issuer", "https://not-trusted.example/", alice)
    assert unknown.returncode == 1 and "unknown_issuer" in unknown.stderr
    nowhere = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    down = cli("verify", "--issuer", nowhere, idp.forge(iss=nowhere))
    assert down.returncode == 3 and "cannot" in down.stderr
    output = tmp_path / "exchanged"
    exchanged = cli(
        "exchange",
        "--issuer",
        idp.issuer,
        "--ca-file",
        idp.ca_file,
        "--client-id",
        "gateway",
        "--audience",
        SITE_AUDIENCE,
        "--scope",
        "compute.read",
        "--output",
        str(output),
        env={**env, "ILP_CLIENT_SECRET": "gateway-secret"},
    )
    assert exchanged.returncode == 0 and oct(output.stat().st_mode & 0o777) == "0o600"
    assert output.read_text().strip() not in exchanged.stdout + exchanged.stderr
    whoami = cli("whoami", "--site", site.http, env=env)
    assert whoami.returncode == 0 and "ilp-alice" in whoami.stdout
    denied = cli("whoami", "--site", site.http, "garbage")
    assert denied.returncode == 1 and "refuses this token" in denied.stderr
    missing = cli("discover", env={"BEARER_TOKEN_FILE": str(tmp_path / "none"), "XDG_RUNTIME_DIR": str(tmp_path)})
    assert missing.returncode == 2 and "no bearer token found" in missing.stderr


async def test_tokens_never_reach_logs_or_readable_files(site, idp):
    token = await token_for(idp, "alice")
    async with SidecarClient(site.http, token=token) as alice:
        req = whoami_pod("secretive")
        answer = await alice.create(req)

        async def done():
            return phase_of((await alice.status([pod_ref(answer["PodUID"])]))[0]) == SUCCEEDED

        await wait_for(done, 90, what="the pod to succeed")
    async with SidecarClient(site.http, token="eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln") as bad:
        with pytest.raises(SidecarError):
            await bad.pods()
    places = [site.workdir, site.pods_root, Path(idp.workdir)]
    for place in places:
        for path in place.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert token.encode() not in data, f"the token was written to {path}"
                assert b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0" not in data, f"a refused token was logged in {path}"
    for path in Path(idp.workdir, "state").rglob("*"):
        if path.is_file() and path.name in ("signing-keys.json", "server.key"):
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


async def test_a_log_follow_ends_when_its_token_does(site, idp):
    """kubectl logs -f with a token that expires 3 s later: the body ends then (the pod runs on)."""
    token = await token_for(idp, "alice")
    async with SidecarClient(site.http, token=token) as alice:
        req = whoami_pod("follower")
        req["pod"]["spec"]["containers"][0]["command"] = ["sh", "-c", "while true; do echo tick; sleep 1; done"]
        answer = await alice.create(req)

        async def running():
            [status] = await alice.status([pod_ref(answer["PodUID"])])
            return "running" in status["containers"][0]["state"]

        await wait_for(running, 90, what="the pod to run")
        expires = int(time.time()) + 3  # whole seconds, as JWT's exp: 2 to 3 s from now
        short = idp.forge(sub="alice", client_id="alice", exp=expires)
        query = {"PodUID": answer["PodUID"], "ContainerName": "c", "Opts": {"Follow": True}}
        started, left = time.monotonic(), expires - time.time()
        async with SidecarClient(site.http, token=short) as follower:
            text = await asyncio.wait_for(follower.logs_text(query), 20)
        # Followed until the token expired, not cut at once (nor read for long after).
        assert left - 1 < time.monotonic() - started < left + 7 and "tick" in text
        await alice.delete(req["pod"])
    assert "ended a log follow of alice@" in site.log()
