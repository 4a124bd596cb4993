"""Pods that run under their owners' own identities: identity Secrets through the gateway, a real
devidp (RFC 8693 exchange, device flow, refresh-token rotation), a real sidecar over gRPC + TLS,
real Slurm and two real Unix accounts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time

import aiohttp
import pytest
import yaml

from interlink_provider.cli.client import SidecarClient, SidecarError
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import SUCCEEDED, phase_of
from tests.federation import GatewayProcess, grpc_sidecar, vk_request, wait_until_up
from tests.idp import IdP
from tests.integration.test_gateway import finished, hello
from tests.integration.test_trust import user_token

pytestmark = pytest.mark.slurm
ANNOTATION = "interlink.provider/identity-secret"
TOKEN_LIFETIME = 70  # with the gateway's 60 s renewal margin: a pod older than 10 s needs a refreshed token


@pytest.fixture(scope="module")
def short_idp(tmp_path_factory):
    """A devidp whose access tokens are short-lived, so a pod outlives its owner's first token."""
    instance = IdP(tmp_path_factory.mktemp("devidp-short"), tls=True, access_token_lifetime=TOKEN_LIFETIME).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def tenants(local_site, unix_accounts, short_idp, tmp_path_factory):
    root = tmp_path_factory.mktemp("tenants")
    site = grpc_sidecar(root / "alpha", short_idp)
    grants = root / "gw" / "state" / "user-grants.json"
    identities = {"default": "service", "namespaces": {"team-a": "user", "team-c": "user"}, "grants_file": str(grants)}
    gateway = GatewayProcess(root / "gw", short_idp, {"alpha": site}, extra={"identities": identities}).start()
    asyncio.run(wait_until_up(gateway, 1))
    yield gateway, site, grants
    gateway.stop()
    site.stop()
    shutil.rmtree(site.scratch, ignore_errors=True)


def user_pod(name: str, secret: str | None, script: str = "id -un") -> dict:
    if secret is None:
        return hello(name, script=script)
    return hello(
        name,
        annotations={ANNOTATION: secret},
        script=script,
        volumes=[{"name": "me", "secret": {"secretName": secret, "optional": True}}],
        mounts=[{"name": "me", "mountPath": "/var/run/identity"}],
    )


def request_with(pod: dict, namespace: str, secret: dict | None) -> dict:
    secrets = {(namespace, secret["metadata"]["name"]): secret} if secret else {}
    return vk_request(pod, manifest.Manifests(secrets=secrets), namespace=namespace)


def access_secret(name: str, token: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"access_token": token}}


def token_login(idp: IdP, namespace: str, name: str, output) -> subprocess.Popen:
    """`interlink-provider token login`, approved the way a user does it in a browser."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "interlink_provider.cli.main",
            "token",
            "login",
            "--issuer",
            idp.issuer,
            "--ca-file",
            idp.ca_file,
            "--namespace",
            namespace,
            "--secret-name",
            name,
            "--output",
            str(output),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    found = re.search(r"open (\S+) and enter the code (\S+)", line)
    assert found, line
    return process, found.group(1), found.group(2)


async def approve(url: str, code: str, user: str, password: str) -> None:
    async with aiohttp.ClientSession() as session:
        form = {"user_code": code, "username": user, "password": password}
        async with session.post(url, data=form, ssl=False) as response:
            assert response.status == 200, await response.text()


def files_under(path) -> str:
    return "".join(p.read_text(errors="replace") for p in path.rglob("*") if p.is_file())


async def test_two_users_run_as_their_own_accounts(tenants, short_idp, tmp_path):
    gateway, site, _ = tenants
    alice = await user_token(short_idp, "alice", "compute.create compute.read compute.cancel")
    login, url, code = token_login(short_idp, "team-c", "carol-id", tmp_path / "carol-id.yaml")
    await approve(url, code, "carol", "carol-pw")
    assert login.wait(30) == 0, login.stderr.read() if login.stderr else ""
    assert (tmp_path / "carol-id.yaml").stat().st_mode & 0o777 == 0o600
    carol_secret = yaml.safe_load((tmp_path / "carol-id.yaml").read_text())
    assert carol_secret["metadata"] == {
        "name": "carol-id",
        "namespace": "team-c",
        "labels": {"app.kubernetes.io/managed-by": "interlink-provider"},
    }
    carol_refresh = carol_secret["stringData"]["refresh_token"]

    async with SidecarClient(gateway.address) as client:
        a = await client.call(
            "POST",
            "/create",
            request_with(user_pod("as-alice", "alice-id"), "team-a", access_secret("alice-id", alice)),
        )
        c = await client.call("POST", "/create", request_with(user_pod("as-carol", "carol-id"), "team-c", carol_secret))
        accounts = {}
        for uid, namespace in ((a["PodUID"], "team-a"), (c["PodUID"], "team-c")):
            assert phase_of(await finished(client, uid)) == SUCCEEDED
            query = {"PodUID": uid, "Namespace": namespace, "ContainerName": "c", "Opts": {}}
            accounts[namespace] = (await client.logs_text(query)).strip()
    assert accounts == {"team-a": "ilp-alice", "team-c": "ilp-bob"}
    # Neither credential, nor the volume that carried it, reached the site.
    at_site = files_under(site.pods_root)
    assert alice not in at_site and carol_refresh not in at_site and "/var/run/identity" not in at_site


async def test_a_long_pod_is_acted_on_as_its_owner_across_refreshes_and_restarts(tenants, short_idp):
    gateway, _site, grants = tenants
    alice = await user_token(short_idp, "alice", "compute.create compute.read compute.cancel")
    pod = user_pod("long-alice", "alice-id", script="sleep 14; id -un")
    query = {"PodUID": "", "Namespace": "team-a", "ContainerName": "c", "Opts": {}}
    async with SidecarClient(gateway.address) as client:
        created = await client.call("POST", "/create", request_with(pod, "team-a", access_secret("alice-id", alice)))
        uid = query["PodUID"] = created["PodUID"]
        first = json.loads(grants.read_text())
        key = first["pods"][uid]
        assert oct(grants.stat().st_mode & 0o777) == "0o600"
        assert phase_of(await finished(client, uid)) == SUCCEEDED
        assert (await client.logs_text(query)).strip() == "ilp-alice"
    # The pod outlived the owner's token the gateway got at create: it refreshed (the IdP rotates).
    middle = json.loads(grants.read_text())
    assert middle["grants"][key]["refresh_token"] != first["grants"][key]["refresh_token"]
    gateway.stop()  # the rotated refresh token must survive the gateway
    gateway.start()
    await wait_until_up(gateway, 1)
    async with SidecarClient(gateway.address) as client:
        assert (await client.logs_text(query)).strip() == "ilp-alice"
        await client.call("POST", "/delete", pod_with_uid(pod, uid, "team-a"))
    later = json.loads(grants.read_text())
    assert later["grants"][key]["refresh_token"] != middle["grants"][key]["refresh_token"]
    assert uid not in later["pods"]
    assert "acting as the gateway itself" not in gateway.log_path.read_text()  # every call was made as alice


def pod_with_uid(pod: dict, uid: str, namespace: str) -> dict:
    return {**pod, "metadata": {**pod["metadata"], "uid": uid, "namespace": namespace}}


async def test_missing_expired_and_refused_identities_fail_the_pod_with_the_reason(tenants, short_idp):
    gateway, site, _ = tenants
    expired = short_idp.forge(exp=int(time.time()) - 120, aud=short_idp.issuer)
    mallory = await user_token(short_idp, "mallory", "compute.read")
    cases = [
        (
            request_with(user_pod("no-annotation", None), "team-a", None),
            422,
            f"IdentityMissing: pods of namespace team-a run under their owner's identity: annotate the pod with {ANNOTATION}",
        ),
        (
            request_with(user_pod("no-secret", "alice-id"), "team-a", None),
            422,
            "IdentityMissing: identity Secret team-a/alice-id was not sent with the pod",
        ),
        (
            request_with(user_pod("expired", "old-id"), "team-a", access_secret("old-id", expired)),
            403,
            "TokenExpired: the token in identity Secret team-a/old-id expired at 20",
        ),
        (
            request_with(user_pod("refused", "m-id"), "team-a", access_secret("m-id", mallory)),
            403,
            "TokenExchangeRefused: the IdP refused to let the gateway act for the owner of team-a/m-id",
        ),
    ]
    before = set(site.pods_root.iterdir()) if site.pods_root.exists() else set()
    async with SidecarClient(gateway.address) as client:
        for body, status, text in cases:
            with pytest.raises(SidecarError) as refused:
                await client.call("POST", "/create", body)
            assert refused.value.status == status and text in refused.value.message, refused.value.message
    assert (set(site.pods_root.iterdir()) if site.pods_root.exists() else set()) == before
    log = gateway.log_path.read_text()
    assert expired not in log and mallory not in log  # tokens are never logged
