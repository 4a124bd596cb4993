"""The WLCG JWT profile's own rules for an access token (WLCG Common JWT Profiles 1.1).

`wlcg.ver` (§2.1.1, §4.3.3) MUST be present, as MAJOR.MINOR (`[0-9]+\\.[0-9]+`, nothing else:
"1.evil" and "1" are not versions). A relying party MUST reject a MAJOR it does not know (we
know 1) and MUST accept newer MINOR versions, so 1.1 or 1.7 pass. Tokens of every published
version still say 1.0: version 1.0 told libraries to reject any other, so 1.1 tokens keep it
until all software accepts 1.x.

Every `storage.*` scope (§2.2.1) MUST name a path (`storage.read:/` for the whole namespace);
"if not specified for these scopes, the token MUST be rejected".
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ProfileViolation
from .scopes import parse_scopes

VERSION = re.compile(r"([0-9]+)\.[0-9]+")
KNOWN_MAJORS = frozenset({"1"})


def supported_version(version: object) -> bool:
    """`wlcg.ver` is MAJOR.MINOR with a MAJOR we know."""
    match = VERSION.fullmatch(version) if isinstance(version, str) else None
    return match is not None and match.group(1) in KNOWN_MAJORS


def check_wlcg(claims: dict[str, Any]) -> None:
    """Refuse (ProfileViolation) a token the WLCG profile says to reject."""
    version = claims.get("wlcg.ver")
    if version is None:
        raise ProfileViolation(
            "the token has no `wlcg.ver` claim: this site holds its issuer to the WLCG profile; for an IdP that is "
            "not a WLCG one, set `require_wlcg_profile: false` in its entry of auth.token.issuers "
            "(`token verify`: --no-wlcg)"
        )
    if not supported_version(version):
        raise ProfileViolation(
            f"unsupported WLCG profile version {str(version)[:32]!r}: major 1 required, as `1.<minor>`"
        )
    pathless = [scope.name for scope in parse_scopes(claims.get("scope")) if scope.missing_path]
    if pathless:
        raise ProfileViolation(
            f"scope {pathless[0]} has no path: the WLCG profile requires one on every storage scope "
            f"(`{pathless[0]}:/` for all) and tokens without it refused"
        )
