"""Tokens that verify but must still be refused (RFC 8725, WLCG profile), each with a one-line
reason that names what to change and never quotes the token; against ScriptedIdP (real HTTP)."""

from __future__ import annotations

import json
import time

import pytest

from interlink_provider.auth import errors
from interlink_provider.auth.jwtparse import MAX_TOKEN_CHARS
from tests.scripted_idp import ScriptedIdP


@pytest.fixture
async def idp():
    server = await ScriptedIdP().start()
    yield server
    await server.close()


@pytest.fixture
async def validator(idp):
    v = idp.validator()
    yield v
    await v.close()


async def refused(validator, token: str, kind: type[errors.AuthError], text: str, caplog=None) -> errors.AuthError:
    """The token is refused as `kind`, as a 401 with a one-line reason containing `text`."""
    with pytest.raises(kind) as info:
        await validator.validate(token)
    refusal = info.value
    assert text in refusal.message, refusal.message
    assert refusal.status == 401 and "\n" not in refusal.message
    assert token not in refusal.message and (caplog is None or token not in caplog.text)
    return refusal


async def test_the_plain_token_is_accepted(idp, validator):
    """The baseline every refusal below differs from by one thing."""
    assert (await validator.validate(idp.token())).subject == "alice"


async def test_an_oversized_token_is_refused_before_anything_is_decoded_or_fetched(idp, validator, caplog):
    huge = idp.token(padding="x" * 1024 * 1024)  # signed, valid in every other way
    await refused(validator, huge, errors.MalformedToken, f"at most {MAX_TOKEN_CHARS} are accepted", caplog)
    assert not idp.requests  # no key fetched for it
    assert (await validator.validate(idp.token(padding="x" * 8000))).subject == "alice"  # large, within the limit


async def test_a_name_repeated_in_the_claims_or_header_is_refused(idp, validator):
    """json.loads keeps the last `sub`, another parser the first: the same signed bytes must not name two subjects."""
    claims = json.dumps(idp.claims())
    assert (await validator.validate(idp.sign_raw(claims))).subject == "alice"  # the raw signer signs right
    twice = idp.sign_raw(claims[:-1] + ', "sub": "root"}')
    await refused(validator, twice, errors.MalformedToken, "the token's payload names 'sub' twice")
    nested = idp.sign_raw(claims[:-1] + ', "act": {"sub": "gateway", "sub": "root"}}')
    await refused(validator, nested, errors.MalformedToken, "payload names 'sub' twice")
    header = f'{{"alg": "none", "kid": "{idp.kid}", "alg": "RS256"}}'
    await refused(validator, idp.sign_raw(claims, header), errors.MalformedToken, "header names 'alg' twice")


async def test_a_payload_that_is_not_utf8_json_is_refused(idp, validator):
    """RFC 8725 §3.7: json.loads would take UTF-16 bytes for JSON; PyJWT, and main, accepted this one."""
    utf16 = idp.sign_raw(json.dumps(idp.claims()), encoding="utf-16")
    await refused(validator, utf16, errors.MalformedToken, "not base64url-encoded UTF-8 JSON")


async def test_a_kid_that_is_not_a_string_is_malformed(idp, validator):
    claims = json.dumps(idp.claims())
    listed = idp.sign_raw(claims, header='{"alg": "RS256", "kid": ["key-1"]}')  # PyJWT refused it; we read headers now
    await refused(validator, listed, errors.MalformedToken, "no `kid`")


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt", "application/at+jwt", "AT+JWT"])
async def test_access_token_types_are_accepted(idp, validator, typ):
    """RFC 9068's at+jwt, IAM's JWT or nothing (PyJWT drops a typ of None)."""
    assert (await validator.validate(idp.token(header={"typ": typ}))).subject == "alice"


@pytest.mark.parametrize("typ", ["logout+jwt", "application/dpop+jwt", "secevent+jwt", "id_token+jwt", 5])
async def test_other_typed_jwts_are_refused(idp, validator, typ):
    refusal = await refused(validator, idp.token(header={"typ": typ}), errors.NotAnAccessToken, "not an access token")
    assert refusal.code == "not_access_token" and str(typ) in refusal.message


@pytest.mark.parametrize(
    "claims,text",
    [
        ({"at_hash": "77QmUPtjPfzWtF2AnpK9RQ"}, "claim at_hash"),
        ({"c_hash": "LDktKdoQak3Pk0cnXxCltA"}, "claim c_hash"),
        ({"nonce": "n-0S6_WzA2Mj", "client_id": "https://site.test"}, "a nonce, for its own client"),
        ({"nonce": "n-0S6_WzA2Mj", "azp": "https://site.test", "client_id": None}, "a nonce, for its own client"),
        ({"nonce": "n-0S6_WzA2Mj", "client_id": None}, "a nonce, and no client_id"),  # oidc-provider's
        ({"typ": "ID"}, "claim typ: ID"),
    ],
)
async def test_id_tokens_are_refused_by_their_claims(idp, validator, claims, text):
    """An ID token of a client the site lists as an audience verifies like an access token: its claims tell."""
    await refused(validator, idp.token(**claims), errors.NotAnAccessToken, text)


async def test_a_nonce_in_an_access_token_for_a_resource_is_accepted(idp, validator):
    """Some IdPs copy the nonce into access tokens; their audience is the resource, not the client."""
    assert (await validator.validate(idp.token(nonce="n-0S6_WzA2Mj", azp="alice-client"))).subject == "alice"
    assert (await validator.validate(idp.token(typ="Bearer"))).subject == "alice"  # Keycloak's access tokens


@pytest.mark.parametrize("hours", [1, 6, 24])
async def test_lifetimes_of_real_access_tokens_are_accepted(idp, validator, hours):
    """IAM's 1 h, the WLCG profile's 6 h maximum, and a day: within the default bound."""
    now = int(time.time())
    assert (await validator.validate(idp.token(iat=now, exp=now + hours * 3600))).subject == "alice"


async def test_a_token_for_a_hundred_years_is_refused(idp, validator):
    now = int(time.time())
    century = idp.token(iat=now, exp=now + 100 * 365 * 86400)
    refusal = await refused(validator, century, errors.LifetimeTooLong, "auth.token.max_token_lifetime_seconds")
    assert "876000.0 h" in refusal.message and refusal.code == "lifetime_too_long"
    old = idp.token(iat=now - 30 * 3600, exp=now + 600)  # expires soon, but was issued for 30 h
    await refused(validator, old, errors.LifetimeTooLong, "issued for 30.2 h")


async def test_the_lifetime_bound_is_configurable(idp):
    now = int(time.time())
    pilots = idp.validator(max_token_lifetime_seconds=4 * 86400)
    try:
        assert (await pilots.validate(idp.token(iat=now, exp=now + 96 * 3600))).subject == "alice"
    finally:
        await pilots.close()


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.12"])
async def test_wlcg_versions_of_major_1_are_accepted(idp, validator, version):
    """WLCG profile 1.1 §4.3.3: a newer MINOR MUST be accepted."""
    assert (await validator.validate(idp.token(**{"wlcg.ver": version}))).subject == "alice"


@pytest.mark.parametrize(
    "version", ["1.evil", "1", "1.0.0", "1.", " 1.0", "1.0\n", "\u0661.0", "01.0", "2.0", 1.0, ["1.0"]]
)
async def test_what_is_not_a_wlcg_version_of_major_1_is_refused(idp, validator, version):
    """MAJOR.MINOR, digits only (`[0-9]+\\.[0-9]+`), and a MAJOR we know."""
    await refused(validator, idp.token(**{"wlcg.ver": version}), errors.ProfileViolation, "major 1 required")


@pytest.mark.parametrize("scope", ["storage.read", "compute.read storage.create", "storage.modify: compute.read"])
async def test_a_storage_scope_without_a_path_is_refused(idp, validator, scope):
    """WLCG profile §2.2.1: $PATH MUST be specified for storage scopes, or the token MUST be rejected."""
    refusal = await refused(validator, idp.token(scope=scope), errors.ProfileViolation, "has no path")
    assert ":/` for all" in refusal.message


async def test_storage_scopes_with_paths_are_accepted_and_pathless_ones_grant_nothing_without_the_profile(idp):
    validator = idp.validator(require_wlcg_profile=False)
    try:
        identity = await validator.validate(idp.token(scope="storage.read storage.create:/out compute.read"))
    finally:
        await validator.close()
    assert identity.has_scope("storage.create:/out/x") and not identity.has_scope("storage.read:/anything")


async def test_a_non_wlcg_idps_token_is_refused_naming_the_setting_that_admits_it(idp, validator):
    """A conformant OIDC IdP's access token (no wlcg.ver): the refusal says what to change."""
    plain_oidc = idp.token(**{"wlcg.ver": None, "scope": "openid compute.create"})
    refusal = await refused(validator, plain_oidc, errors.ProfileViolation, "no `wlcg.ver` claim")
    assert "`require_wlcg_profile: false` in its entry of auth.token.issuers" in refusal.message
    admitting = idp.validator(trusted={"require_wlcg_profile": False})  # that issuer alone
    try:
        assert (await admitting.validate(plain_oidc)).subject == "alice"
    finally:
        await admitting.close()


async def test_an_issuers_own_setting_overrides_the_sites(idp):
    strict = idp.validator(require_wlcg_profile=False, trusted={"require_wlcg_profile": True})
    try:
        await refused(strict, idp.token(**{"wlcg.ver": None}), errors.ProfileViolation, "no `wlcg.ver` claim")
    finally:
        await strict.close()


async def test_an_issuer_missed_by_a_trailing_slash_is_refused_naming_the_near_match(idp):
    """OIDC compares issuers exactly: not accepted, but the typo is pointed at, both ways round."""
    with_slash = idp.issuer  # http://127.0.0.1:PORT/
    assert with_slash.endswith("/")
    for configured, iss in [(with_slash, with_slash.rstrip("/")), (with_slash.rstrip("/"), with_slash)]:
        validator = idp.validator(issuer=configured)
        try:
            refusal = await refused(
                validator, idp.token(iss=iss), errors.UnknownIssuer, f"issuer {iss!r} is not trusted"
            )
            assert f"the trusted issuer {configured!r} differs only by a trailing '/'" in refusal.message
            assert refusal.code == "unknown_issuer"
        finally:
            await validator.close()
    validator = idp.validator()
    try:
        elsewhere = await refused(
            validator, idp.token(iss="https://evil.example/"), errors.UnknownIssuer, "not trusted"
        )
        assert "trailing" not in elsewhere.message
    finally:
        await validator.close()
