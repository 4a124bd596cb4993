"""A registry with token auth (issue #19): CNCF Distribution started by deploy/local/images.sh as the
site starts its own, whose tokens the site's real devidp issues (/registry/token, the rules of
deploy/local/devidp.yaml: anyone pulls, private/* needs the user demo). Real skopeo asks for the
tokens; a real sidecar pulls with a pod's imagePullSecrets and runs the image with ch-run.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from interlink_provider.cli.client import SidecarClient
from interlink_provider.images.cache import ImageCache
from interlink_provider.images.credentials import parse_dockerconfigjson
from interlink_provider.images.errors import ErrImagePull
from interlink_provider.pods.phase import SUCCEEDED
from tests.integration.test_charliecloud import cached_image_sidecar, image_pod, logs, waiting_with
from tests.integration.test_images import Registry, _free_port, _script
from tests.integration.test_rest_api import run_until

IDP_URL = "https://127.0.0.1:8480/"
SERVICE = "ilp-local-registry"  # deploy/local/devidp.yaml `registry.service`
IMAGES = {"ILP_REGISTRY_IMAGES": "ilp/entrypoint:1 private/entrypoint:1"}


@pytest.fixture(scope="module")
def token_registry(local_site):
    """A registry of our own (free port, private directory) trusting the site devidp's tokens."""
    idp = Path(local_site) / "devidp"
    work = Path(tempfile.mkdtemp(prefix="ilp-token-registry-", dir="/tmp"))
    os.chmod(work, 0o755)
    host = f"127.0.0.1:{_free_port()}"
    builder = base64.b64encode(b"registry-builder:builder-secret").decode()
    (work / "builder.json").write_text(json.dumps({"auths": {host: {"auth": builder}}}))
    os.chmod(work / "builder.json", 0o600)
    env = {
        **os.environ,
        **IMAGES,
        "ILP_SITE_DIR": str(work / "site"),
        "ILP_REGISTRY_PORT": host.rsplit(":", 1)[1],
        "ILP_REGISTRY_TOKEN_REALM": f"{IDP_URL}registry/token",
        "ILP_REGISTRY_TOKEN_SERVICE": SERVICE,
        "ILP_REGISTRY_TOKEN_ISSUER": IDP_URL,
        "ILP_REGISTRY_TOKEN_CERT": str(idp / "registry-token.pem"),
        "ILP_REGISTRY_TOKEN_CA": str(idp / "ca.pem"),
        "ILP_REGISTRY_AUTHFILE": str(work / "builder.json"),
    }
    try:
        started = _script("start", env)
        if started.returncode != 0:
            pytest.fail(f"the token-auth registry did not start:\n{started.stderr}")
        assert "pushed" in started.stderr  # pushes need the builder's push token
        reg = work / "site" / "registry"
        yield Registry(host, reg / "certs", reg / "registry.log", work)
    finally:
        _script("stop", env)
        shutil.rmtree(work, ignore_errors=True)


def dockerconfig(host: str, user: str, password: str) -> dict:
    return {"auths": {host: {"username": user, "password": password}}}


def test_the_registry_sends_clients_to_the_devidp_and_the_devidp_names_what_it_refuses(token_registry):
    context = ssl.create_default_context(cafile=str(token_registry.cert_dir / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as challenged:
        urllib.request.urlopen(f"https://{token_registry.host}/v2/", context=context, timeout=10)
    assert challenged.value.code == 401
    assert challenged.value.headers["WWW-Authenticate"] == (
        f'Bearer realm="{IDP_URL}registry/token",service="{SERVICE}"'
    )
    idp_context = ssl.create_default_context(cafile=str(token_registry.cert_dir / "token-realm-ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            f"{IDP_URL}registry/token?service=another&scope=repository:a:pull", context=idp_context, timeout=10
        )
    assert refused.value.code == 400
    assert "unknown service 'another'" in json.loads(refused.value.read())["errors"][0]["message"]


async def test_public_images_pull_anonymously_private_ones_with_the_right_secret(token_registry):
    cache = ImageCache(token_registry.work / "cache", mirrors={}, cert_dir=token_registry.cert_dir)
    host = token_registry.host
    public = await cache.ensure(f"{host}/ilp/entrypoint:1", "IfNotPresent")
    assert public.config.entrypoint == ("/bin/echo", "from-entrypoint")
    private = f"{host}/private/entrypoint:1"
    with pytest.raises(ErrImagePull) as anonymous:
        await cache.ensure(private, "IfNotPresent")
    assert "requested access to the resource is denied" in anonymous.value.message
    wrong = parse_dockerconfigjson(json.dumps(dockerconfig(host, "demo", "not-demo")))
    with pytest.raises(ErrImagePull) as refused:
        await cache.ensure(private, "IfNotPresent", secrets=[wrong])
    assert "invalid username or password" in refused.value.message  # the devidp's words, through skopeo
    other_user = parse_dockerconfigjson(json.dumps(dockerconfig(host, "registry-builder", "wrong")))
    with pytest.raises(ErrImagePull):
        await cache.ensure(private, "IfNotPresent", secrets=[other_user])
    right = parse_dockerconfigjson(json.dumps(dockerconfig(host, "demo", "demo")))
    pulled = await cache.ensure(private, "IfNotPresent", secrets=[right])
    assert pulled.pulled and pulled.config.entrypoint == ("/bin/echo", "from-private")


@pytest.fixture
def token_sidecar(local_site, token_registry, tmp_path):
    """A charliecloud sidecar trusting the registry's and the realm's CAs, with no mirrors."""
    images = {"cert_dir": str(token_registry.cert_dir)}
    with cached_image_sidecar(token_registry.work, tmp_path, "charliecloud", {}, images) as sidecar:
        yield sidecar


def pull_secret(host: str, user: str, password: str) -> dict:
    encoded = base64.b64encode(json.dumps(dockerconfig(host, user, password)).encode()).decode()
    return {
        "metadata": {"name": "creds", "namespace": "ns"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": encoded},
    }


async def test_a_pod_pulls_a_private_image_through_the_token_exchange(token_sidecar, token_registry):
    image = f"{token_registry.host}/private/entrypoint:1"
    refused = image_pod("anonymous", [{"name": "c", "image": image}])
    allowed = image_pod("allowed", [{"name": "c", "image": image}], imagePullSecrets=[{"name": "creds"}])
    allowed["container"][0]["secrets"] = [pull_secret(token_registry.host, "demo", "demo")]
    async with SidecarClient(token_sidecar.address) as client:
        await client.create(refused)
        answer = await waiting_with(client, refused["pod"]["metadata"]["uid"], "ErrImagePull")
        assert "denied" in answer["containers"][0]["state"]["waiting"]["message"]
        await client.delete(refused["pod"])
        await client.create(allowed)
        await run_until(client, allowed["pod"]["metadata"]["uid"], SUCCEEDED, timeout=120)
        assert (await logs(client, allowed, "c")).split() == ["from-private", "default-arg"]
    assert list((token_sidecar.workdir / "state" / "pull-secrets").iterdir()) == []
