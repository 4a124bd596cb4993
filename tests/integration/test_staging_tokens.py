"""Staging with tokens of the trust network, against the real token-authorized XRootD
(TLS + ztn + SciTokens), Rucio accepting the IdP's tokens, the site IdP (devidp) and Slurm.

deploy/local/devidp.yaml: demo-user may read all storage; demo-guest's storage tokens
may only read /public; site-stager is the sidecar's staging client.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from interlink_provider.auth.exchange import OAuthClient
from interlink_provider.cli.client import SidecarClient, SidecarError
from interlink_provider.pods.phase import FAILED, SUCCEEDED, phase_of
from interlink_provider.pods.staging import parse_staging
from interlink_provider.staging.config import StagingConfig
from interlink_provider.staging.engine import PodStaging, Stager
from interlink_provider.staging.errors import StagingError
from interlink_provider.staging.volumes import VolumeDirs
from tests.datalake import RUCIO_HOST, TOKEN_RSE, put_token_dataset, token_disk_path
from tests.helpers import Sidecar, site_dir, wait_for
from tests.idp import free_port
from tests.integration.test_staging import final, staging_pod
from tests.otlp import OtlpReceiver

pytestmark = pytest.mark.slurm
ISSUER = "https://127.0.0.1:8480/"
STORAGE = "127.0.0.1:11096"
SITE_AUDIENCE = "https://token-site.test"
USER_SCOPES = "compute.create compute.read compute.cancel"


def tokens_config(root: Path, **overrides) -> dict:
    secret = root / "stager-secret"
    secret.write_text("stager-secret\n")
    secret.chmod(0o600)
    return {
        "issuer": ISSUER,
        "ca_file": str(site_dir() / "devidp" / "ca.pem"),
        "client_id": "site-stager",
        "client_secret_file": str(secret),
        "storage_audience": f"https://{STORAGE}",
        "storage_endpoints": [STORAGE],
        "x509_cert_dir": str(site_dir() / "pki" / "ca-dir"),
        **overrides,
    }


def staging_config(root: Path, **token_overrides) -> dict:
    return {
        "cache_dir": str(root / "cache"),
        "connection_window": 2,
        "connection_retry": 1,
        "retries": 1,
        "retry_backoff_seconds": 0.2,
        "default_rse": TOKEN_RSE,
        "rucio": {"host": RUCIO_HOST, "account": "root"},  # no password: tokens only
        "tokens": tokens_config(root, **token_overrides),
    }


async def user_token(client_id: str, secret: str) -> str:
    client = OAuthClient(ISSUER, client_id, secret, ca_file=str(site_dir() / "devidp" / "ca.pem"))
    try:
        return (await client.client_credentials(USER_SCOPES, SITE_AUDIENCE)).access_token
    finally:
        await client.close()


@pytest.fixture(scope="module")
def token_site(local_site, unix_accounts, tmp_path_factory):
    root = tmp_path_factory.mktemp("token-staging")
    pods_root = Path(tempfile.mkdtemp(prefix="ilp-tokensite-"))
    pods_root.chmod(0o711)  # the job account traverses it
    port = free_port()
    sidecar = Sidecar(
        root / "sidecar",
        {
            "pods_root": str(pods_root / "pods"),
            "listen": {"host": "127.0.0.1", "port": port},
            "auth": {
                "unix_socket_without_token": True,
                "token": {
                    "issuers": [
                        {"issuer": ISSUER, "ca_file": str(site_dir() / "devidp" / "ca.pem"), "development": True}
                    ],
                    "audiences": [SITE_AUDIENCE],
                },
                "identities": {"rules": [{"issuer": ISSUER, "sub": "demo-*", "account": "ilp-alice"}]},
            },
            "staging": staging_config(root),
        },
    ).start()
    sidecar.http = f"http://127.0.0.1:{port}"
    yield sidecar
    sidecar.stop()
    shutil.rmtree(pods_root, ignore_errors=True)


async def test_a_users_pod_stages_with_its_owners_tokens(token_site, catalog):
    contents = {"a.dat": os.urandom(100_000), "b.dat": b"token data\n"}
    did = put_token_dataset(catalog, contents)
    token = await user_token("demo-user", "demo-secret")
    script = "cd /data/in && md5sum a.dat b.dat && id -un && echo result > /data/out/result.txt"
    req = staging_pod(
        "token-roundtrip", f"- {{did: '{did}', mount: /data/in}}", "- {mount: /data/out, scope: user}", script
    )
    async with SidecarClient(token_site.http, token=token) as client:
        answer = await client.create(req)
        uid = answer["PodUID"]
        grants = token_site.workdir / "state" / "staging-grants.json"
        assert grants.stat().st_mode & 0o077 == 0 and uid in grants.read_text()  # enrolled at create, 0600
        result = await final(client, uid)
        assert phase_of(result) == SUCCEEDED, result
        log = await client.logs_text({"PodUID": uid, "ContainerName": "c", "Opts": {}})
        pods = {p["uid"]: p for p in await client.pods()}
    for name, data in contents.items():
        assert f"{hashlib.md5(data).hexdigest()}  {name}" in log
    assert "ilp-alice" in log
    dataset = f"data.token-roundtrip.{uid[:8]}"
    assert f"outputs registered in user:{dataset}" in pods[uid]["message"]
    [replica] = catalog.replicas("user", dataset)
    assert set(replica["rses"]) == {TOKEN_RSE}
    assert token_disk_path(next(iter(replica["pfns"]))).read_bytes() == b"result\n"
    assert uid not in grants.read_text()  # forgotten once the pod stages nothing more
    for path in [*token_site.workdir.rglob("*"), *token_site.pods_root.rglob("*")]:
        if path.is_file() and not path.is_symlink():
            assert token.encode() not in path.read_bytes(), f"the user's token was written to {path}"
            if "staging-tokens" in path.parts:
                assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


async def test_an_owner_grant_the_idp_no_longer_takes_fails_stage_out_as_token_expired(token_site, catalog):
    """The refresh token kept for the pod is refused (expired or revoked) when its outputs are due:
    the pod fails with reason TokenExpired and what to do, and the stage-out span says so."""
    did = put_token_dataset(catalog, {"in.dat": b"input\n"})
    token = await user_token("demo-user", "demo-secret")
    req = staging_pod(
        "token-expires",
        f"- {{did: '{did}', mount: /data/in}}",
        "- {mount: /data/out, scope: user}",
        "sleep 12; echo result > /data/out/result.txt",
    )
    uid = req["pod"]["metadata"]["uid"]
    grants = token_site.workdir / "state" / "staging-grants.json"
    with OtlpReceiver() as otlp:
        async with SidecarClient(token_site.http, token=token) as client:
            await client.create(req)

            async def running():
                # The job itself (stage-out also shows the pod Running: it must not have begun yet).
                pods = await client.pods()
                return [p for p in pods if p["uid"] == uid and p["phase"] == "Running" and p["stage"] == "submitted"]

            await wait_for(running, 60, what="the job to run (staged in)")
            token_site.stop()  # while the job runs: its grant now expires
            kept = json.loads(grants.read_text())
            grants.write_text(json.dumps({**kept, uid: "expired-" + kept[uid][8:]}))
            token_site.start(env=otlp.env())
            result = await final(client, uid)
        [container] = result["containers"]
        terminated = container["state"]["terminated"]
        assert phase_of(result) == FAILED and terminated["reason"] == "TokenExpired", terminated
        assert "refresh token" in terminated["message"] and "log in again" in terminated["message"]

        async def stage_out_span():
            return [s for s in otlp.named("stage-out") if s.attributes.get("k8s.pod.uid") == uid]

        [span] = await wait_for(stage_out_span, 30, what="the stage-out span")
        assert span.attributes["ilp.failure.reason"] == "TokenExpired"
    token_site.stop()
    token_site.start()  # the module's other tests export nowhere


async def test_a_tokenless_pod_stages_with_the_sites_own_tokens(token_site, catalog):
    did = put_token_dataset(catalog, {"site.dat": b"read by the site client\n"})
    async with SidecarClient(token_site.address) as client:  # the trusted unix socket, no token
        answer = await client.create(
            staging_pod("token-site", f"- {{did: '{did}', mount: /data/in}}", script="cat /data/in/site.dat")
        )
        result = await final(client, answer["PodUID"])
        assert phase_of(result) == SUCCEEDED, result
        log = await client.logs_text({"PodUID": answer["PodUID"], "ContainerName": "c", "Opts": {}})
    assert "read by the site client" in log


async def test_an_owner_the_idp_will_not_give_storage_tokens_is_refused_at_create(token_site, catalog):
    did = put_token_dataset(catalog, {"private.dat": b"not for guests\n"})
    token = await user_token("demo-guest", "guest-secret")
    async with SidecarClient(token_site.http, token=token) as client:
        with pytest.raises(SidecarError) as refused:
            await client.create(staging_pod("token-guest", f"- {{did: '{did}', mount: /data/in}}"))
        assert refused.value.status == 403
        assert "may not stage its data here" in str(refused.value) and "storage.read:/" in str(refused.value)
        assert not [p for p in await client.pods() if p["name"] == "token-guest"]


async def test_the_cache_serves_a_file_only_to_pods_whose_token_may_read_it(local_site, catalog, tmp_path):
    """Pod A (demo-user) fills the cache; pod B (demo-guest, tokens for /public only) asks for
    the same DID: the storage, not the cache, decides, and B is refused."""
    did = put_token_dataset(catalog, {"secret.dat": b"cached secret\n"})
    spec = parse_staging({"datalake.interlink/inputs": f"- {{did: '{did}', mount: /data/in}}"})

    def pod(stager: Stager, uid: str, directory: Path) -> PodStaging:
        directory.mkdir()
        return PodStaging(spec, VolumeDirs([directory]), "data", uid, uid, credentials=stager.credentials_for(uid))

    full = Stager(StagingConfig(**staging_config(tmp_path)), tmp_path / "state-a")
    public_only = Stager(
        StagingConfig(**staging_config(tmp_path, read_scopes=["storage.read:/public"])), tmp_path / "state-b"
    )
    try:
        await full.tokens.enroll("pod-a", await user_token("demo-user", "demo-secret"), [])
        await full.stage_in(pod(full, "pod-a", tmp_path / "a"))
        assert (tmp_path / "a" / "secret.dat").read_bytes() == b"cached secret\n"
        await public_only.tokens.enroll("pod-b", await user_token("demo-guest", "guest-secret"), [])
        with pytest.raises(StagingError) as refused:
            await public_only.stage_in(pod(public_only, "pod-b", tmp_path / "b"))
        assert "may not read" in refused.value.message and "secret.dat" in refused.value.message
        assert not (tmp_path / "b" / "secret.dat").exists()
        assert public_only.cache_hits == 0
    finally:
        await full.close()
        await public_only.close()


def test_stage_check_names_a_refused_token_and_accepts_a_good_one(local_site, catalog, tmp_path):
    did = put_token_dataset(catalog, {"probe.dat": b"probe me\n"})
    [entry] = catalog.describe(*did.split(":"))
    url = entry.ref.sources[0]
    env = {**os.environ, "X509_CERT_DIR": str(site_dir() / "pki" / "ca-dir")}
    cli = [sys.executable, "-m", "interlink_provider.cli.main", "stage", "check"]
    anonymous = subprocess.run([*cli, url], capture_output=True, text=True, env=env, timeout=60)
    assert anonymous.returncode == 1 and "refused" in anonymous.stdout + anonymous.stderr
    token_file = tmp_path / "token"
    token_file.write_text(issue_storage_token("storage.read:/"))
    token_file.chmod(0o600)
    good = subprocess.run(
        [*cli, url, "--token-file", str(token_file)], capture_output=True, text=True, env=env, timeout=60
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok" in good.stdout and "xrd.ztn" not in good.stdout
    token_file.write_text(issue_storage_token("storage.read:/public"))
    narrow = subprocess.run(
        [*cli, url, "--token-file", str(token_file)], capture_output=True, text=True, env=env, timeout=60
    )
    assert narrow.returncode == 1 and "refused" in narrow.stdout + narrow.stderr


def issue_storage_token(scope: str) -> str:
    import asyncio

    async def issue() -> str:
        client = OAuthClient(ISSUER, "site-stager", "stager-secret", ca_file=str(site_dir() / "devidp" / "ca.pem"))
        try:
            return (await client.client_credentials(scope, f"https://{STORAGE}")).access_token
        finally:
            await client.close()

    return asyncio.run(issue())
