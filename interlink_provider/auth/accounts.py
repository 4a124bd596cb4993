"""Local Unix accounts that jobs run as: the names a site config may give.

Checked when a config is loaded: a POSIX portable login name (`[a-z_][a-z0-9_-]*`, at most 32
characters), never empty, never a uid (`#N`, which sudo reads as one), never starting with `-`
(an option to sudo, chown or id). `root` is refused unless the site sets
`auth.allow_jobs_as_root` (the sidecar's config checks that: `is_superuser_name`). An account
whose *uid* is 0 under another name is refused when a pod is created (the sidecar resolves it
then, where the account lives).
"""

from __future__ import annotations

import re

ACCOUNT_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
ROOT_OPT_IN = "auth.allow_jobs_as_root"
SUPERUSER = "root"


def check_account_name(name: str) -> str:
    """The name, or ValueError saying why it cannot name a local account."""
    if not name:
        raise ValueError(
            "an empty account name does not name an account (it would mean the sidecar's own): "
            "name the local login jobs run as"
        )
    if name.startswith("#"):
        raise ValueError(f"{name!r} is a uid, not a login name: name the account")
    if name.startswith("-"):
        raise ValueError(f"{name!r} starts with '-': not a login name")
    if not ACCOUNT_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a POSIX login name: [a-z_] then [a-z0-9_-], at most 32 characters")
    return name


def is_superuser_name(name: str | None) -> bool:
    return name == SUPERUSER
