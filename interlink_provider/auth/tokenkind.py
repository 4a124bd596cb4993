"""Telling an access token from an ID token or another JWT of the same IdP (RFC 8725 §2.8, §3.11).

An IdP signs its ID tokens with the keys that sign its access tokens, so an ID token's signature
verifies here too; were a site to list an OIDC client id among its audiences, a user's ID token
for that client would pass for an access token. The rule, in the order applied:

1. The header's `typ`, when there is one, must name a JWT or an access token: `JWT` or `at+jwt`
   (case-insensitive, with or without `application/`, RFC 7515 §4.1.9). RFC 9068 access tokens
   say at+jwt; INDIGO IAM's say JWT or nothing, and WLCG tokens follow IAM: both are accepted.
   Any other type (a logout token, a DPoP proof, an ID token of an IdP that types them) is refused.
2. Claims that OpenID Connect Core defines for ID tokens alone mark one, whatever the header:
   `at_hash` and `c_hash` (hashes of the access token or code the ID token came with: an access
   token cannot carry its own); `nonce` when the token's audience is its own client (`aud` is its
   `azp` or `client_id`), the shape of an ID token (some IdPs copy `nonce` into access tokens, whose
   audience is a resource, not the client); `nonce` in a token without `client_id`, which every
   access token of RFC 9068 (and IAM's) carries and an ID token need not: oidc-provider's ID tokens
   have `nonce` and `aud` and neither `azp` nor `client_id`; Keycloak's claim `typ: ID` (its access
   tokens say `Bearer`).

What this cannot tell: an untyped ID token without these claims. Its audience is the client that
asked for it, so the audience check refuses it, unless a site lists an OIDC client id in
`auth.token.audiences`: list resource URIs (`https://site.example.org`), as the WLCG profile says.
"""

from __future__ import annotations

from typing import Any

from .errors import NotAnAccessToken

ACCESS_TOKEN_TYPES = frozenset({"jwt", "at+jwt"})  # lower case, without `application/`
ID_TOKEN_HASHES = ("at_hash", "c_hash")


def media_type(typ: str) -> str:
    """`typ` as RFC 7515 §4.1.9 compares it: case-insensitive, `application/` optional."""
    return typ.lower().removeprefix("application/")


def check_access_token(header: dict[str, Any], claims: dict[str, Any]) -> None:
    """Refuse (NotAnAccessToken) a JWT that says, or shows, it is not an access token."""
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or media_type(typ) not in ACCESS_TOKEN_TYPES):
        raise NotAnAccessToken(f"the token's header says typ {str(typ)[:64]!r}: not an access token (at+jwt or JWT)")
    hashes = [name for name in ID_TOKEN_HASHES if name in claims]
    if hashes:
        raise NotAnAccessToken(f"an ID token (claim {hashes[0]}), not an access token")
    if "nonce" in claims and _audience_is_own_client(claims):
        raise NotAnAccessToken("an ID token (a nonce, for its own client), not an access token")
    if "nonce" in claims and "client_id" not in claims:
        raise NotAnAccessToken("an ID token (a nonce, and no client_id as access tokens have), not an access token")
    if claims.get("typ") == "ID":
        raise NotAnAccessToken("an ID token (claim typ: ID), not an access token")


def _audience_is_own_client(claims: dict[str, Any]) -> bool:
    audience = claims.get("aud")
    audiences = {a for a in (audience if isinstance(audience, list) else [audience]) if isinstance(a, str)}
    clients = {c for c in (claims.get("azp"), claims.get("client_id")) if isinstance(c, str)}
    return bool(audiences) and audiences <= clients
