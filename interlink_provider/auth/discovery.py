"""WLCG bearer-token discovery: where a client finds its token, in the order the spec sets.

1. $BEARER_TOKEN  2. $BEARER_TOKEN_FILE  3. $XDG_RUNTIME_DIR/bt_u$UID  4. /tmp/bt_u$UID
Whitespace is stripped; an empty value moves on to the next place. The two well-known files
(3 and 4, in directories others may write to) are used only when they are regular files the
caller owns, opened without following a link: anyone can create /tmp/bt_u1000, and a token
planted there must not be sent as the user's own.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingToken


@dataclass(frozen=True)
class Found:
    token: str
    source: str  # where it came from, for humans


@dataclass(frozen=True)
class Place:
    description: str
    value: str | None = None  # an inline token
    path: Path | None = None  # a file holding one
    must_own: bool = False  # a well-known path: only a file the caller owns counts


def candidates(environ: dict[str, str], uid: int) -> list[Place]:
    """The places to look, in discovery order."""
    places = [Place("$BEARER_TOKEN", environ.get("BEARER_TOKEN"))]
    if environ.get("BEARER_TOKEN_FILE"):
        named = environ["BEARER_TOKEN_FILE"]
        places.append(Place(f"$BEARER_TOKEN_FILE ({named})", path=Path(named)))
    if environ.get("XDG_RUNTIME_DIR"):
        path = Path(environ["XDG_RUNTIME_DIR"]) / f"bt_u{uid}"
        places.append(Place(str(path), path=path, must_own=True))
    places.append(Place(f"/tmp/bt_u{uid}", path=Path(f"/tmp/bt_u{uid}"), must_own=True))
    return places


class NotOurs(Exception):
    """A well-known token file that is a link, not a regular file, or someone else's."""


def read_owned(path: Path, uid: int) -> str:
    """The text of a regular file `uid` owns, opened without following a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotOurs(f"{path} is a link") from exc
        raise
    with os.fdopen(fd, "r") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
            raise NotOurs(f"{path} is not a file of uid {uid}")
        return handle.read(64 * 1024)


def discover(environ: dict[str, str] | None = None, uid: int | None = None) -> Found:
    environ = dict(os.environ if environ is None else environ)
    uid = os.geteuid() if uid is None else uid
    tried = []
    for place in candidates(environ, uid):
        tried.append(place.description)
        value = place.value
        if place.path is not None:
            try:
                value = read_owned(place.path, uid) if place.must_own else place.path.read_text()
            except NotOurs:
                tried[-1] += " (ignored: not a file of yours)"
                continue
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
        if value and value.strip():
            return Found(value.strip(), place.description)
    raise MissingToken("no bearer token found (looked in " + ", ".join(tried) + ")")
