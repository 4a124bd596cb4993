"""Interop with an IdP this project did not write: panva's oidc-provider (tests/interop_idp.py).

Our token client (client credentials, RFC 8693 exchange with `audience` and RFC 8707 `resource`,
the grant checks of auth/grant.py, `interlink-provider token ...`) and our validator (discovery,
JWKS, the WLCG-profile and access-token checks) against its real endpoints. Only the exchange
grant's handler on its side is ours (tests/interop_idp/token_exchange.mjs)."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jwt
import pytest

from interlink_provider.auth import errors
from interlink_provider.auth.exchange import OAuthClient, basic_credentials
from interlink_provider.auth.mapping import IdentityPolicy
from interlink_provider.auth.tokenkind import check_access_token
from interlink_provider.auth.validate import TokenValidator, TrustedIssuer, ValidationConfig
from interlink_provider.cli.client import SidecarClient, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import SUCCEEDED, phase_of
from tests.helpers import Sidecar, wait_for
from tests.idp import SITE_AUDIENCE
from tests.interop_idp import GATEWAY_AUDIENCE, ODD_SECRET, IndependentIdP, new_nonce

USER_SCOPE = "compute.create compute.read"


@pytest.fixture(scope="module")
def oidc(tmp_path_factory) -> Iterator[IndependentIdP]:
    """oidc-provider over HTTPS with a local CA, on a free port, stopped after the module."""
    instance = IndependentIdP(tmp_path_factory.mktemp("oidc-provider")).start()
    yield instance
    instance.stop()


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def client(oidc: IndependentIdP, name: str, secret: str | None = None) -> OAuthClient:
    return OAuthClient(oidc.issuer, name, secret or f"{name}-secret", ca_file=oidc.ca_file)


async def user_token(oidc: IndependentIdP, scope: str = USER_SCOPE, audience: str = GATEWAY_AUDIENCE) -> str:
    """alice's access token (client credentials) for the gateway: the subject of an exchange."""
    alice = client(oidc, "alice")
    try:
        return (await alice.client_credentials(scope, audience)).access_token
    finally:
        await alice.close()


async def exchanged(oidc: IndependentIdP, subject: str, scope: str, audience: str = SITE_AUDIENCE) -> str:
    gateway = client(oidc, "gateway")
    try:
        return (await gateway.exchange(subject, audience, scope)).access_token
    finally:
        await gateway.close()


async def validated(oidc: IndependentIdP, token: str, issuer: str | None = None, **trusted):
    """The identity our validator gives `token`, trusting this IdP (as `issuer`) for SITE_AUDIENCE."""
    entry = TrustedIssuer(issuer=issuer or oidc.issuer, ca_file=oidc.ca_file, **trusted)
    validator = TokenValidator(ValidationConfig(issuers=[entry], audiences=[SITE_AUDIENCE]))
    try:
        return await validator.validate(token)
    finally:
        await validator.close()


def cli(*args: str, secret: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"ILP_CLIENT_SECRET": secret} if secret else {})}
    command = [sys.executable, "-m", "interlink_provider.cli.main", "token", *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, env=env)


# ------------------------------------------------------------------ our token client


async def test_client_credentials_for_our_resource_is_a_jwt_for_it(oidc):
    """Asked with `audience` and `resource`, its token names the site as `aud` and the scope asked."""
    alice = client(oidc, "alice")
    try:
        token = await alice.client_credentials(USER_SCOPE, SITE_AUDIENCE)
    finally:
        await alice.close()
    assert jwt.get_unverified_header(token.access_token)["typ"] == "at+jwt"  # RFC 9068
    c = claims(token.access_token)
    assert c["iss"] == oidc.issuer and c["aud"] == SITE_AUDIENCE and c["sub"] == "alice"
    assert c["scope"] == USER_SCOPE and token.scope == USER_SCOPE
    assert 0 < token.expires_at - c["iat"] <= 600 + 5


async def test_a_scope_the_idp_grants_less_of_is_named(oidc):
    """oidc-provider drops, silently, a scope its resource does not offer: our check names it."""
    with pytest.raises(errors.ExchangeRefused) as refused:
        await user_token(oidc, "compute.read storage.modify:/", SITE_AUDIENCE)
    assert f"{oidc.issuer} granted compute.read without storage.modify:/" in refused.value.message
    assert "must allow the client alice" in refused.value.message


async def test_a_resource_it_does_not_know_is_its_own_refusal(oidc):
    with pytest.raises(errors.ExchangeRefused) as refused:
        await user_token(oidc, "compute.read", "https://elsewhere.test")
    assert refused.value.oauth_error == "invalid_target"  # type: ignore[attr-defined]


async def test_a_secret_with_reserved_characters_authenticates(oidc):
    """RFC 6749 §2.3.1: HTTP Basic carries the form-urlencoded id and secret, which oidc-provider
    decodes; a secret with `+`, `%`, `:` or a space must reach it intact."""
    odd = client(oidc, "odd", ODD_SECRET)
    try:
        await odd.client_credentials("compute.read", SITE_AUDIENCE)
    finally:
        await odd.close()


async def test_token_exchange_with_audience_and_resource(oidc):
    subject = await user_token(oidc)
    assert claims(subject)["aud"] == GATEWAY_AUDIENCE
    token = await exchanged(oidc, subject, f"{USER_SCOPE} offline_access")
    c = claims(token)
    assert c["aud"] == SITE_AUDIENCE and c["sub"] == "alice" and c["client_id"] == "gateway"
    assert c["act"] == {"sub": "gateway"} and c["scope"] == USER_SCOPE


async def test_an_exchange_granting_less_names_what_is_missing(oidc):
    """The exchange grants no more than the subject token holds: asking more is named at once."""
    subject = await user_token(oidc, "compute.read")
    with pytest.raises(errors.ExchangeRefused) as refused:
        await exchanged(oidc, subject, USER_SCOPE)
    assert "granted compute.read without compute.create" in refused.value.message


async def test_a_subject_token_it_did_not_sign_is_refused(oidc):
    subject = await user_token(oidc)
    header, payload, _ = subject.split(".")
    with pytest.raises(errors.ExchangeRefused) as refused:
        await exchanged(oidc, f"{header}.{payload}.{'A' * 342}", USER_SCOPE)
    assert refused.value.oauth_error == "invalid_grant"  # type: ignore[attr-defined]


async def test_the_token_cli_exchanges_and_verifies(oidc):
    subject = await user_token(oidc)
    common = ["--issuer", oidc.issuer, "--ca-file", oidc.ca_file]
    done = cli("exchange", "-", *common, "--client-id", "gateway", "--audience", SITE_AUDIENCE,
               "--scope", USER_SCOPE, secret="gateway-secret", stdin=subject)  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert claims(token)["act"] == {"sub": "gateway"}
    verify = ["verify", token, *common, "--audience", SITE_AUDIENCE, "--scope", "compute.create"]
    strict = cli(*verify)
    assert strict.returncode == 1 and "require_wlcg_profile: false" in strict.stderr, strict.stderr
    lenient = cli(*verify, "--no-wlcg")
    assert lenient.returncode == 0, lenient.stderr
    assert "VALID: sub alice" in lenient.stdout and "exchanged by gateway" in lenient.stdout


async def test_the_token_cli_names_what_an_exchange_lacks(oidc):
    subject = await user_token(oidc, "compute.read")
    done = cli("exchange", subject, "--issuer", oidc.issuer, "--ca-file", oidc.ca_file, "--client-id", "gateway",
               "--audience", SITE_AUDIENCE, "--scope", USER_SCOPE, secret="gateway-secret")  # fmt: skip
    assert done.returncode == 1 and "without compute.create" in done.stderr, done.stderr


# ------------------------------------------------------------------ our validator


async def test_its_tokens_fail_the_wlcg_profile_naming_the_setting(oidc):
    token = await exchanged(oidc, await user_token(oidc), USER_SCOPE)
    with pytest.raises(errors.ProfileViolation) as refused:
        await validated(oidc, token)
    assert "no `wlcg.ver`" in refused.value.message and "require_wlcg_profile: false" in refused.value.message


async def test_its_tokens_are_accepted_without_the_profile_and_mapped(oidc):
    token = await exchanged(oidc, await user_token(oidc), USER_SCOPE)
    identity = await validated(oidc, token, require_wlcg_profile=False)
    assert (identity.issuer, identity.subject, identity.actor) == (oidc.issuer, "alice", "gateway")
    assert identity.audiences == (SITE_AUDIENCE,) and identity.client_id == "gateway"
    assert identity.has_scope("compute.create") and not identity.has_scope("compute.cancel")
    policy = IdentityPolicy.model_validate({"rules": [{"issuer": oidc.issuer, "sub": "alice", "account": "ilp-alice"}]})
    assert policy.account_for(identity) == "ilp-alice"


async def test_a_token_for_another_resource_is_refused(oidc):
    with pytest.raises(errors.WrongAudience):
        await validated(oidc, await user_token(oidc), require_wlcg_profile=False)


async def test_an_issuer_configured_with_a_trailing_slash_is_refused_with_the_hint(oidc):
    token = await exchanged(oidc, await user_token(oidc), USER_SCOPE)
    with pytest.raises(errors.UnknownIssuer) as refused:
        await validated(oidc, token, issuer=oidc.issuer + "/", require_wlcg_profile=False)
    assert f"the trusted issuer '{oidc.issuer}/' differs only by a trailing '/'" in refused.value.message


async def id_token(oidc: IndependentIdP, nonce: str) -> str:
    """An ID token from its authorization code flow, logging in through its own (development)
    login and consent pages, as a browser would."""
    context = ssl.create_default_context(cafile=oidc.ca_file)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        url = oidc.authorization_url(nonce, state="s1")
        while not url.startswith("https://rp.test/"):
            async with browser.get(url, ssl=context, allow_redirects=False) as page:
                body = await page.text()
                url = urllib.parse.urljoin(url, page.headers.get("Location", ""))
            prompt = re.search(r'name="prompt" value="(\w+)"', body)
            if prompt:  # its login or consent form: any login works on its development pages
                form = {"prompt": prompt.group(1), "login": "alice", "password": "any"}
                async with browser.post(url, data=form, ssl=context, allow_redirects=False) as answer:
                    url = urllib.parse.urljoin(url, answer.headers["Location"])
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["code"][0]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": "https://rp.test/callback"}
        auth = {"Authorization": basic_credentials("web", "web-secret")}
        async with browser.post(f"{oidc.issuer}/token", data=form, headers=auth, ssl=context) as answer:
            return (await answer.json())["id_token"]


async def test_its_id_tokens_are_not_access_tokens(oidc):
    """Signed by the keys that sign its access tokens, for its client: refused even by a site that
    lists that client id among its audiences. Its ID tokens carry no `jti` (our validator requires
    one) and no `typ`, `azp` or `client_id`: the access-token check must tell them by `nonce` alone."""
    token = await id_token(oidc, new_nonce())
    header, body = jwt.get_unverified_header(token), claims(token)
    assert body["aud"] == "web" and body["sub"] == "alice" and "nonce" in body and "typ" not in header
    entry = TrustedIssuer(issuer=oidc.issuer, ca_file=oidc.ca_file, require_wlcg_profile=False)
    for audiences in ([SITE_AUDIENCE], ["web"]):
        validator = TokenValidator(ValidationConfig(issuers=[entry], audiences=audiences))
        try:
            with pytest.raises(errors.ProfileViolation, match="jti"):
                await validator.validate(token)
        finally:
            await validator.close()
    with pytest.raises(errors.NotAnAccessToken, match="a nonce, and no client_id"):
        check_access_token(header, {**body, "jti": "as if it had one"})


# ------------------------------------------------------------------ a site trusting it


@pytest.fixture(scope="module")
def site(local_site, unix_accounts, oidc, tmp_path_factory) -> Iterator[Sidecar]:
    """A sidecar on real Slurm trusting only this IdP, without the WLCG profile for it, mapping
    its `alice` to the account ilp-alice."""
    pods_root = Path(tempfile.mkdtemp(prefix="ilp-interop-"))
    pods_root.chmod(0o711)  # the job accounts traverse it to their pods
    trusted = {"issuer": oidc.issuer, "ca_file": oidc.ca_file, "require_wlcg_profile": False}
    auth = {
        "unix_socket_without_token": False,
        "token": {"issuers": [trusted], "audiences": [SITE_AUDIENCE]},
        "identities": {"rules": [{"issuer": oidc.issuer, "sub": "alice", "account": "ilp-alice"}]},
    }
    sidecar = Sidecar(tmp_path_factory.mktemp("interop-site"), {"pods_root": str(pods_root / "pods"), "auth": auth})
    yield sidecar.start()
    sidecar.stop()
    shutil.rmtree(pods_root, ignore_errors=True)


def whoami_pod() -> dict:
    container = {"name": "c", "image": "busybox", "command": ["sh", "-c", "id -un"]}
    spec = {"restartPolicy": "Never", "automountServiceAccountToken": False, "containers": [container]}
    pod = {"metadata": {"name": "interop"}, "spec": spec}
    return manifest.create_request(pod, manifest.Manifests(), namespace="team")


@pytest.mark.slurm
async def test_a_site_runs_a_pod_of_its_exchanged_token_as_the_mapped_account(site, oidc):
    token = await exchanged(oidc, await user_token(oidc, f"{USER_SCOPE} compute.cancel"), USER_SCOPE)
    async with SidecarClient(site.address, token=token) as alice:
        me = await alice.whoami()
        assert (me["subject"], me["actor"], me["account"]) == ("alice", "gateway", "ilp-alice")
        assert me["allowed"] == {"create": True, "read": True, "cancel": False}  # as granted
        request = whoami_pod()
        created = await alice.create(request)

        async def succeeded() -> bool:
            return phase_of((await alice.status([pod_ref(created["PodUID"])]))[0]) == SUCCEEDED

        await wait_for(succeeded, 90, what="the pod to succeed")
        log = {"PodUID": created["PodUID"], "ContainerName": "c", "Opts": {}}
        assert await alice.logs_text(log) == "ilp-alice\n"
