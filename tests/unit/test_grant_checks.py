"""What an IdP grants is checked against what was asked (#17): an IdP that honours only RFC 8707
`resource`, or ignores the audience, or grants fewer scopes, fails at once naming what is missing.
The IdP is ScriptedIdP's token endpoint (a test double answering what the test sets)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from interlink_provider.auth import errors, grant
from interlink_provider.auth.exchange import OAuthClient, basic_credentials
from tests.scripted_idp import AUDIENCE, ScriptedIdP


@pytest.fixture
async def idp() -> AsyncIterator[ScriptedIdP]:
    idp = await ScriptedIdP().start()
    yield idp
    await idp.close()


def answer(idp: ScriptedIdP, said: str | None, **claims) -> dict:
    """The token endpoint's answer: a token with `claims`, and `said` as the answer's scope (None: left out)."""
    body = {"access_token": idp.token(**claims), "token_type": "Bearer", "expires_in": 600}
    return body if said is None else {**body, "scope": said}


async def ask(idp: ScriptedIdP, scope: str, audience: str | None = AUDIENCE):
    client = OAuthClient(idp.issuer, "gateway", "secret")
    try:
        return await client.client_credentials(scope, audience)
    finally:
        await client.close()


async def test_a_uri_audience_is_also_asked_as_an_rfc_8707_resource(idp):
    idp.token_answer = answer(idp, "compute.read", scope="compute.read")
    token = await ask(idp, "compute.read")
    assert token.scope == "compute.read"
    assert idp.token_forms[-1]["audience"] == AUDIENCE and idp.token_forms[-1]["resource"] == AUDIENCE
    idp.token_answer = answer(idp, "compute.read", aud="site-b", scope="compute.read")
    await ask(idp, "compute.read", "site-b")
    assert "resource" not in idp.token_forms[-1]  # not a URI: RFC 8707 would refuse it as invalid_target


async def test_a_token_for_the_idps_default_audience_is_refused_naming_both(idp):
    idp.token_answer = answer(idp, "compute.read", aud="https://idp.default", scope="compute.read")
    with pytest.raises(errors.ExchangeRefused) as refused:
        await ask(idp, "compute.read")
    assert f"audience https://idp.default instead of {AUDIENCE}" in refused.value.message
    assert "allow the client gateway that audience" in refused.value.message


async def test_fewer_scopes_than_asked_are_refused_naming_the_missing_ones(idp):
    idp.token_answer = answer(idp, "", scope=None)  # an empty scope, as an IdP that will not grant it answers
    with pytest.raises(errors.ExchangeRefused, match=r"granted no scope without compute\.create"):
        await ask(idp, "compute.create")
    idp.token_answer = answer(idp, "compute.read", scope="compute.read")
    with pytest.raises(errors.ExchangeRefused, match=r"granted compute\.read without compute\.cancel"):
        await ask(idp, "compute.read compute.cancel")


async def test_scope_left_out_of_the_answer_is_read_from_the_token_or_granted_as_asked(idp):
    idp.token_answer = answer(idp, None, scope="compute.read")  # RFC 6749 §5.1: omitted when as asked
    await ask(idp, "compute.read openid offline_access")  # OIDC scopes need not be in access tokens
    idp.token_answer = answer(idp, None, scope=None)
    await ask(idp, "compute.read")
    idp.token_answer = {"access_token": "opaque-token", "expires_in": 600}  # not a JWT: nothing to read
    await ask(idp, "compute.read")


def test_a_storage_scope_is_covered_by_a_parent_path_only():
    assert grant.covered("storage.read:/data/run1", ["storage.read:/data"])
    assert grant.covered("storage.read:/data", ["storage.read:/"])
    assert not grant.covered("storage.read:/database", ["storage.read:/data"])
    assert not grant.covered("storage.modify:/data", ["storage.read:/"])
    assert not grant.covered("storage.read:/", ["storage.read:/data"])


@pytest.mark.parametrize("secret", ["plain-Secret_1.~", "s3cr+t:%/ ~", "a%20b"])
def test_client_secret_basic_is_form_urlencoded_as_rfc_6749_says(secret):
    """IdPs decode HTTP Basic's id and secret (RFC 6749 §2.3.1): authlib's (the devidp's) reads
    back what was sent, `+` and `%` included; oidc-provider's too (test_independent_idp)."""
    from authlib.oauth2.rfc6749.util import extract_basic_authorization

    header = basic_credentials("client:1", secret)
    assert extract_basic_authorization({"Authorization": header}) == ("client:1", secret)
    if secret.startswith("plain"):  # unreserved characters go as they are, as before
        assert header == "Basic " + base64.b64encode(f"client%3A1:{secret}".encode()).decode()
