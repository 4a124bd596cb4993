"""What an IdP granted, checked against what was asked for.

RFC 6749 §5.1 lets a token endpoint grant fewer scopes than asked (it must then say which), and an
IdP that does not know the `audience` parameter (RFC 8693) or the `resource` one (RFC 8707) gives a
token for its default audience without a word. Either token is refused by the site much later,
with a reason that points at the wrong party; here it fails at once, naming what is missing.
"""

from __future__ import annotations

import jwt

from . import errors

# OpenID Connect scopes ask for ID-token claims or a refresh token: access tokens need not carry them.
NOT_IN_ACCESS_TOKENS = frozenset({"openid", "offline_access", "profile", "email"})


def check(access_token: str, granted: str | None, asked: str, audience: str | None, issuer: str, client: str) -> None:
    """Raise ExchangeRefused when the token lacks an asked scope or is for another audience.
    `granted`: the answer's scope, None when it has none."""
    claims = _claims(access_token)
    in_token = claims.get("scope")
    said = granted if granted is not None else in_token if isinstance(in_token, str) else None
    if said is not None:  # no scope in the answer nor the token: granted as asked (RFC 6749 §5.1)
        missing = [scope for scope in asked.split() if not covered(scope, said.split())]
        if missing:
            raise errors.ExchangeRefused(
                f"{issuer} granted {said or 'no scope'} without {' '.join(missing)}: "
                f"the IdP must allow the client {client} to ask for them"
            )
    if audience and claims:
        audiences = claims.get("aud")
        named = [audiences] if isinstance(audiences, str) else audiences if isinstance(audiences, list) else []
        if audience not in named:
            raise errors.ExchangeRefused(
                f"{issuer} gave a token for audience {audiences or 'none'} instead of {audience}: it ignored "
                f"the audience (and resource) asked for; the IdP must allow the client {client} that audience"
            )


def covered(asked: str, granted: list[str]) -> bool:
    """Whether an asked scope is among those granted (a WLCG storage scope by a granted parent path)."""
    if asked in NOT_IN_ACCESS_TOKENS or asked in granted:
        return True
    name, colon, path = asked.partition(":")
    if not colon:
        return False
    for scope in granted:
        granted_name, granted_colon, granted_path = scope.partition(":")
        parent = granted_path.rstrip("/") + "/"
        if granted_colon and granted_name == name and (path == granted_path or path.startswith(parent)):
            return True
    return False


def _claims(access_token: str) -> dict[str, object]:
    """The token's claims when it is a JWT (read, not verified: the site verifies it); else {}."""
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}  # an opaque token: only the answer's scope can be checked
    return claims if isinstance(claims, dict) else {}
