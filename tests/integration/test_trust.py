"""The trust network against a real devidp over HTTPS: flows, IAM semantics, validation, caching."""

from __future__ import annotations

import json
import os
import stat
import time
import urllib.parse

import aiohttp
import jwt
import pytest

from interlink_provider.auth import errors
from interlink_provider.auth.exchange import ExchangeCache, OAuthClient
from interlink_provider.auth.validate import TokenValidator, TrustedIssuer, ValidationConfig
from tests.idp import SITE_AUDIENCE, IdP


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def client(idp: IdP, name: str) -> OAuthClient:
    secret = None if name == "cli" else f"{name}-secret"
    return OAuthClient(idp.issuer, name, secret, ca_file=idp.ca_file)


def validator(idp: IdP, development: bool = True, **kwargs) -> TokenValidator:
    """A validator trusting the devidp; development: accepting its development tokens."""
    config = {
        "issuers": [TrustedIssuer(issuer=idp.issuer, ca_file=idp.ca_file, development=development)],
        "audiences": [SITE_AUDIENCE],
        **kwargs,
    }
    return TokenValidator(ValidationConfig(**config))


async def user_token(
    idp: IdP, name: str = "alice", scope: str = "compute.create compute.read wlcg.groups", audience: str | None = None
) -> str:
    c = client(idp, name)
    try:
        return (await c.client_credentials(scope, audience)).access_token
    finally:
        await c.close()


async def refused(coro, kind: type[errors.AuthError], text: str) -> errors.AuthError:
    with pytest.raises(kind) as info:
        await coro
    assert text in info.value.message, info.value.message
    return info.value


# ------------------------------------------------------------------ the IdP


async def test_discovery_and_wlcg_profile_tokens(idp):
    async with aiohttp.ClientSession() as session:
        async with session.get(idp.issuer + ".well-known/openid-configuration", ssl=False) as r:
            meta = await r.json()
    assert meta["issuer"] == idp.issuer and meta["jwks_uri"] == idp.issuer + "jwk"
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in meta["grant_types_supported"]
    c = claims(await user_token(idp))
    assert c["sub"] == "alice" and c["wlcg.ver"] == "1.0" and c["aud"] == "https://wlcg.cern.ch/jwt/v1/any"
    assert c["wlcg.groups"] == ["/vo/alice-team"] and c["scope"] == "compute.create compute.read wlcg.groups"
    assert {"jti", "nbf", "iat", "exp", "client_id"} <= set(c) and c["nbf"] < c["iat"]
    assert "wlcg.groups" not in claims(await user_token(idp, scope="compute.read"))
    await refused(user_token(idp, scope="compute.read storage.modify:/"), errors.ExchangeRefused, "invalid_scope")


async def test_token_exchange_with_iam_semantics(idp):
    subject = await user_token(idp)
    gateway = client(idp, "gateway")
    try:
        exchanged = await gateway.exchange(subject, SITE_AUDIENCE, "compute.create compute.read offline_access")
        c = claims(exchanged.access_token)
        assert c["sub"] == "alice" and c["act"] == {"sub": "gateway"} and c["aud"] == SITE_AUDIENCE
        assert c["client_id"] == "gateway" and exchanged.refresh_token  # offline_access: for the actor
        again = await gateway.exchange(exchanged.access_token, SITE_AUDIENCE, "compute.read")
        assert claims(again.access_token)["act"] == {"sub": "gateway", "act": {"sub": "gateway"}}  # chained
        assert again.refresh_token is None
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": subject}
        await refused(
            gateway._post("token_endpoint", {**form, "scope": "compute.read", "actor_token": subject}),
            errors.ExchangeRefused,
            "Delegation not supported",
        )
        await refused(gateway._post("token_endpoint", form), errors.ExchangeRefused, "scope parameter is required")
        await refused(gateway.exchange("not-a-token", None, "compute.read"), errors.ExchangeRefused, "invalid_token")
        mallory = await user_token(idp, "mallory", "compute.read")
        await refused(gateway.exchange(mallory, None, "compute.read"), errors.ExchangeRefused, "denied by policy")
        bob = await user_token(idp, "bob", "compute.read storage.read:/")
        assert (await gateway.exchange(bob, None, "compute.read storage.read:/public/x")).access_token
        await refused(gateway.exchange(bob, None, "storage.read:/private"), errors.ExchangeRefused, "not permitted")
    finally:
        await gateway.close()
    alice = client(idp, "alice")
    try:  # a client without the grant type
        await refused(alice.exchange(subject, None, "compute.read"), errors.ExchangeRefused, "Unauthorized grant type")
    finally:
        await alice.close()


async def test_same_client_offline_access_is_refused(idp, tmp_path):
    gateway = client(idp, "gateway")
    try:
        own = (await gateway.client_credentials("compute.read")).access_token
        assert (await gateway.exchange(own, None, "compute.read")).access_token  # narrowing is fine
        await refused(
            gateway.exchange(own, None, "compute.read offline_access"),
            errors.ExchangeRefused,
            "actor and the subject are the same client",
        )
    finally:
        await gateway.close()


async def test_refresh_tokens_rotate_and_keep_the_actor(idp):
    gateway = client(idp, "gateway")
    try:
        first = await gateway.exchange(await user_token(idp), SITE_AUDIENCE, "compute.read offline_access")
        second = await gateway.refresh(first.refresh_token)
        assert second.refresh_token != first.refresh_token
        assert claims(second.access_token)["act"] == {"sub": "gateway"}
        assert claims(second.access_token)["aud"] == SITE_AUDIENCE
        await refused(gateway.refresh(first.refresh_token), errors.ExchangeRefused, "invalid_grant")
    finally:
        await gateway.close()


async def test_device_flow(idp):
    cli = client(idp, "cli")
    try:
        start = await cli.device_authorization("compute.read offline_access")
        assert (start["expires_in"], start["interval"]) == (600, 1)  # the IdP's own settings (defaults)
        await refused(cli.device_token(start["device_code"]), errors.ExchangeRefused, "authorization_pending")
        async with aiohttp.ClientSession() as session:
            form = {"user_code": start["user_code"], "username": "carol", "password": "wrong"}
            async with session.post(start["verification_uri"], data=form, ssl=False) as r:
                assert r.status == 403
            form["password"] = "carol-pw"
            async with session.post(start["verification_uri"], data=form, ssl=False) as r:
                assert r.status == 200
        token = await cli.device_token(start["device_code"])
        assert claims(token.access_token)["sub"] == "carol-sub" and token.refresh_token
    finally:
        await cli.close()


# ------------------------------------------------------------------ validation


async def test_valid_token_gives_an_identity(idp):
    v = validator(idp)
    try:
        identity = await v.validate(await user_token(idp, audience=SITE_AUDIENCE))
    finally:
        await v.close()
    assert identity.subject == "alice" and identity.issuer == idp.issuer
    assert identity.has_scope("compute.create") and not identity.has_scope("compute.cancel")
    assert identity.groups == ("/vo/alice-team",)


async def test_development_tokens_only_where_the_issuer_is_marked_development(idp):
    token = await user_token(idp, audience=SITE_AUDIENCE)
    assert claims(token)["ilp_dev"] is True
    production = validator(idp, development=False)
    test_site = validator(idp, development=True)
    try:
        refusal = await refused(production.validate(token), errors.DevelopmentToken, "`development: true`")
        assert "ilp_dev" in refusal.message and refusal.code == "development_token" and refusal.status == 401
        assert (await production.validate(idp.forge())).subject == "alice"  # its other tokens are fine
        assert (await test_site.validate(token)).subject == "alice"
    finally:
        await production.close()
        await test_site.close()


@pytest.mark.parametrize(
    "overrides,kind,text",
    [
        ({"exp": int(time.time()) - 3600}, errors.Expired, "expired"),
        ({"nbf": int(time.time()) + 3600}, errors.NotYetValid, "not valid yet"),
        ({"aud": "https://elsewhere.test"}, errors.WrongAudience, "not for this service"),
        ({"wlcg.ver": None}, errors.ProfileViolation, "wlcg.ver"),
        ({"wlcg.ver": "2.0"}, errors.ProfileViolation, "major 1"),
        ({"jti": None}, errors.ProfileViolation, "jti"),
        ({"iss": "https://evil.example/"}, errors.UnknownIssuer, "not trusted"),
    ],
)
async def test_every_rejection_has_its_reason(idp, overrides, kind, text):
    v = validator(idp)
    try:
        await refused(v.validate(idp.forge(**overrides)), kind, text)
    finally:
        await v.close()


async def test_bad_signatures_and_malformed_tokens(idp):
    v = validator(idp)
    try:
        token = idp.forge()
        head, _payload, signature = token.split(".")
        tampered = claims(token) | {"sub": "root"}
        forged = ".".join([head, jwt.utils.base64url_encode(json.dumps(tampered).encode()).decode(), signature])
        await refused(v.validate(forged), errors.BadSignature, "does not verify")
        await refused(v.validate("garbage"), errors.MalformedToken, "not a JWT")
        await refused(v.validate(idp.forge(_kid="no-such-kid")), errors.BadSignature, "no signing key")
        other = jwt.encode(
            {"iss": idp.issuer, "sub": "x"},
            "a-long-enough-hmac-secret-for-sha256!",
            algorithm="HS256",
            headers={"kid": "k"},
        )
        await refused(v.validate(other), errors.BadSignature, "not accepted")
    finally:
        await v.close()


async def test_unreachable_idp(tmp_path):
    down = IdP(tmp_path / "down", tls=False)  # configured, never started
    v = validator(down)
    try:
        await refused(v.validate(_unsigned(down.issuer)), errors.IdPUnreachable, "cannot reach")
    finally:
        await v.close()


def _unsigned(issuer: str) -> str:
    """A token naming a trusted issuer, with a fake signature (the key lookup comes first)."""
    now = int(time.time())
    part = lambda data: jwt.utils.base64url_encode(json.dumps(data).encode()).decode()  # noqa: E731
    payload = {"iss": issuer, "sub": "x", "aud": SITE_AUDIENCE, "iat": now, "exp": now + 60, "jti": "1"}
    return ".".join([part({"alg": "RS256", "kid": "some-kid"}), part(payload), "c2lnbmF0dXJl"])


async def test_key_rotation_while_tokens_are_in_flight(idp):
    v = validator(idp, jwks_cooldown_seconds=3600)
    try:
        before = await user_token(idp, audience=SITE_AUDIENCE)
        await v.validate(before)
        fetches = v.keys.fetches
        new_kid = idp.rotate()
        after = await user_token(idp, audience=SITE_AUDIENCE)
        assert jwt.get_unverified_header(after)["kid"] == new_kid
        assert (await v.validate(after)).subject == "alice"  # unknown kid: one forced re-fetch
        assert (await v.validate(before)).subject == "alice"  # the old key is still published
        assert v.keys.fetches == fetches + 1
        for _ in range(5):  # forged kids cannot make us hammer the IdP within the cooldown
            await refused(v.validate(idp.forge(_kid="forged")), errors.BadSignature, "no signing key")
        assert v.keys.fetches == fetches + 1
    finally:
        await v.close()


async def test_exchange_cache_refreshes_before_expiry_and_persists_0600(idp, tmp_path):
    store = tmp_path / "tokens.json"
    gateway = client(idp, "gateway")
    cache = ExchangeCache(gateway, store, margin=60)
    subject = await user_token(idp)
    try:
        first = await cache.get(subject, SITE_AUDIENCE, "compute.read offline_access", subject="alice@idp")
        assert (await cache.get(subject, SITE_AUDIENCE, "offline_access compute.read", subject="alice@idp")) is first
        assert (cache.exchanges, cache.hits, cache.refreshes) == (1, 1, 0)
        assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
        assert first.refresh_token in store.read_text()
        first.expires_at = time.time() + 30  # inside the margin: must not be served
        second = await cache.get(subject, SITE_AUDIENCE, "compute.read offline_access", subject="alice@idp")
        assert second is not first and second.valid_for(60) and cache.refreshes == 1
        assert second.refresh_token != first.refresh_token and second.refresh_token in store.read_text()
        restarted = ExchangeCache(gateway, store, margin=60)  # a new process finds the refresh token
        restarted._tokens[next(iter(restarted._tokens))].expires_at = 0
        third = await restarted.get(subject, SITE_AUDIENCE, "compute.read offline_access", subject="alice@idp")
        assert restarted.refreshes == 1 and restarted.exchanges == 0 and third.valid_for(60)
    finally:
        await gateway.close()


async def test_https_is_verified_against_the_local_ca(idp):
    untrusting = TokenValidator(ValidationConfig(issuers=[TrustedIssuer(issuer=idp.issuer)], audiences=[SITE_AUDIENCE]))
    try:
        await refused(untrusting.validate(idp.forge()), errors.IdPUnreachable, "cannot reach")
    finally:
        await untrusting.close()
    assert urllib.parse.urlparse(idp.issuer).scheme == "https"
