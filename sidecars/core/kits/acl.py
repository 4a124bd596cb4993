"""POSIX access control lists, just enough to let one more account read (or write) a file the
sidecar owns: the content cache's files are the sidecar's alone (0600) and each account that
staged one is added to its ACL, so staged data is readable by the accounts that staged it and
by nobody else, whatever the umask.

The ACL is the `system.posix_acl_access` extended attribute in the kernel's binary layout
(acl(5), xattr(7)): a version header, then entries (tag, permissions, id) sorted by tag and id.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
import struct
from pathlib import Path

ATTRIBUTE = "system.posix_acl_access"
VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NO_ID = 0xFFFFFFFF
READ, WRITE, EXECUTE = 4, 2, 1
_HEADER, _ENTRY = struct.Struct("<I"), struct.Struct("<HHI")

Entry = tuple[int, int, int]  # (tag, permissions, id)


class AclError(OSError):
    """The filesystem keeps no ACLs (or would not take this one)."""


def _entries(path: Path) -> list[Entry]:
    """The file's ACL entries: its stored ACL, or the one its mode bits amount to."""
    try:
        blob = os.getxattr(path, ATTRIBUTE, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        return [(USER_OBJ, mode >> 6 & 7, NO_ID), (GROUP_OBJ, mode >> 3 & 7, NO_ID), (OTHER, mode & 7, NO_ID)]
    (version,) = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise AclError(f"{path}: ACL version {version} not understood")
    return [_ENTRY.unpack_from(blob, offset) for offset in range(_HEADER.size, len(blob), _ENTRY.size)]


def grant(path: Path, account: str, permissions: int) -> None:
    """Let `account` (a local login) have `permissions` on `path` (a file or directory the
    sidecar owns), beside whatever the ACL already allows; the mode bits stay as they are."""
    uid = pwd.getpwnam(account).pw_uid
    entries = [e for e in _entries(path) if not (e[0] == USER and e[2] == uid) and e[0] != MASK]
    entries.append((USER, permissions, uid))
    named = [p for tag, p, _ in entries if tag in (USER, GROUP)]
    group = next(p for tag, p, _ in entries if tag == GROUP_OBJ)
    entries.append((MASK, group | _union(named), NO_ID))  # the mask lets every named entry through
    blob = _HEADER.pack(VERSION) + b"".join(_ENTRY.pack(*e) for e in sorted(entries, key=lambda e: (e[0], e[2])))
    try:
        os.setxattr(path, ATTRIBUTE, blob, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise AclError(exc.errno, f"{path}: this filesystem keeps no POSIX ACLs") from exc
        raise


def _union(permissions: list[int]) -> int:
    union = 0
    for permission in permissions:
        union |= permission
    return union


def allowed(path: Path, account: str) -> int:
    """The permissions a named-user entry gives `account` (0 without one), before the mask."""
    uid = pwd.getpwnam(account).pw_uid
    return next((p for tag, p, i in _entries(path) if tag == USER and i == uid), 0)
