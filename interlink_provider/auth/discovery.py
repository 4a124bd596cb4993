"""WLCG bearer-token discovery: where a client finds its token, in the order the spec sets.

1. $BEARER_TOKEN  2. $BEARER_TOKEN_FILE  3. $XDG_RUNTIME_DIR/bt_u$UID  4. /tmp/bt_u$UID
Whitespace is stripped; an empty value moves on to the next place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingToken


@dataclass(frozen=True)
class Found:
    token: str
    source: str  # where it came from, for humans


def candidates(environ: dict[str, str], uid: int) -> list[tuple[str, str | None, Path | None]]:
    """(description, inline value, file) in discovery order."""
    places: list[tuple[str, str | None, Path | None]] = [("$BEARER_TOKEN", environ.get("BEARER_TOKEN"), None)]
    if environ.get("BEARER_TOKEN_FILE"):
        places.append(
            (f"$BEARER_TOKEN_FILE ({environ['BEARER_TOKEN_FILE']})", None, Path(environ["BEARER_TOKEN_FILE"]))
        )
    if environ.get("XDG_RUNTIME_DIR"):
        path = Path(environ["XDG_RUNTIME_DIR"]) / f"bt_u{uid}"
        places.append((str(path), None, path))
    places.append((f"/tmp/bt_u{uid}", None, Path(f"/tmp/bt_u{uid}")))
    return places


def discover(environ: dict[str, str] | None = None, uid: int | None = None) -> Found:
    environ = dict(os.environ if environ is None else environ)
    uid = os.geteuid() if uid is None else uid
    tried = []
    for description, value, path in candidates(environ, uid):
        tried.append(description)
        if path is not None:
            try:
                value = path.read_text()
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
        if value and value.strip():
            return Found(value.strip(), description)
    raise MissingToken("no bearer token found (looked in " + ", ".join(tried) + ")")
