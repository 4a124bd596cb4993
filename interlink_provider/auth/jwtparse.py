"""A JWT's header and claims read strictly, before its signature is checked.

What PyJWT lets through is refused here, before it can cost or confuse:
- a token longer than MAX_TOKEN_CHARS, before anything is decoded: a real access token is
  a few KiB (the WLCG profile keeps claims short), so a megabyte one is only work for us;
- a repeated member name in the header or the claims (two `sub`): Python's json keeps the
  last, other parsers (the issuer's, another service's) may keep the first, so the same
  signed bytes would name two subjects. RFC 7515 §4 and RFC 7519 §4 let a parser refuse
  such a token: we do;
- a header or payload that is not UTF-8 (RFC 8725 §3.7; json.loads would guess UTF-16/32).

PyJWT later decodes the same segments with the same json module, so once these pass, what
it verifies is what we read.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jwt.utils import base64url_decode

from .errors import MalformedToken

MAX_TOKEN_CHARS = 16 * 1024


@dataclass(frozen=True)
class Unverified:
    header: dict[str, Any]
    claims: dict[str, Any]


def _unique_members(what: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A json object_pairs_hook refusing a name given twice in any object of the header or payload."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        members: dict[str, Any] = {}
        for name, value in pairs:
            if name in members:
                raise MalformedToken(f"the token's {what} names {name[:64]!r} twice")
            members[name] = value
        return members

    return hook


def _object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(base64url_decode(segment).decode("utf-8"), object_pairs_hook=_unique_members(what))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise MalformedToken(f"not a JWT: its {what} is not base64url-encoded UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise MalformedToken(f"not a JWT: its {what} is not a JSON object")
    return value


def read_unverified(token: str) -> Unverified:
    """The header and claims of a compact JWS, or MalformedToken saying why not (never quoting it)."""
    if len(token) > MAX_TOKEN_CHARS:
        raise MalformedToken(f"the token is {len(token)} characters long; at most {MAX_TOKEN_CHARS} are accepted")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken(f"not a JWT: {len(parts)} dot-separated parts, not 3")
    return Unverified(_object(parts[0], "header"), _object(parts[1], "payload"))
