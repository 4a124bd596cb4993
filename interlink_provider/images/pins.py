"""Pins: which cached image each container of a pod runs, fixed when its images were pulled.

A pin is a small bash file the pod's job script sources on the compute node: the image's rootfs
in the cache and what its config says (Entrypoint, Cmd, Env, WorkingDir and the user it names,
resolved to numbers here from the image's own /etc/passwd and /etc/group). The job never asks a
registry and never reads OCI layouts: with the pin and the cache it runs offline.

  <root>/pins/<pod uid>/<container name>.sh

Pins live in the cache, which only the sidecar's account writes, so a pod's account can read its
pin but not change what it points to. A pin names a digest: `in_use()` is what eviction keeps.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from interlink_provider.images.cache import CachedImage
from interlink_provider.images.config import ImageConfig
from interlink_provider.images.errors import CreateContainerError
from interlink_provider.shell import shjoin, shq

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # as shq leaves it: nothing to quote
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_UID = re.compile(r"[-0-9a-zA-Z_.]{1,253}")


def pin_path(root: str | Path, uid: str, container: str) -> str:
    """Where the job script finds a container's pin (the names are checked by the pod model)."""
    return os.path.join(str(root), "pins", uid, f"{container}.sh")


def user_ids(config: ImageConfig, rootfs: Path) -> tuple[int, int]:
    """The uid and gid the image's User names: numbers as they are, names from the image's own
    /etc/passwd and /etc/group, root when the image names no one (as a container runtime does)."""
    if not config.user:
        return 0, 0
    user, _, group = config.user.partition(":")
    passwd = _table(rootfs / "etc" / "passwd")
    uid_text, primary_gid = _lookup(user, passwd, config.user)
    gid = primary_gid if not group else _lookup(group, _table(rootfs / "etc" / "group"), config.user)[0]
    return int(uid_text), int(gid)


def pin_text(image: CachedImage) -> str:
    """The bash the job script sources: arrays and words, every value quoted."""
    config = image.config
    uid, gid = user_ids(config, image.rootfs)
    lines = [
        f"# {image.reference} pinned to {image.digest}",
        f"ILP_IMAGE_DIGEST={shq(image.digest)}",
        f"ILP_IMAGE_ROOTFS={shq(image.rootfs)}",
        f"ILP_IMAGE_ENTRYPOINT=({shjoin(config.entrypoint)})",
        f"ILP_IMAGE_CMD=({shjoin(config.cmd)})",
        f"ILP_IMAGE_ENV=({shjoin(config.env)})",
        f"ILP_IMAGE_WORKDIR={shq(config.working_dir)}",
        f"ILP_IMAGE_UID={uid}",
        f"ILP_IMAGE_GID={gid}",
    ]
    return "\n".join(lines) + "\n"


class Pins:
    """The pins of one cache root."""

    def __init__(self, root: Path) -> None:
        self.root = root / "pins"
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)

    def write(self, uid: str, container: str, image: CachedImage) -> str:
        """Pin a container of a pod to a cached image (idempotent: a re-pull rewrites it)."""
        _check(uid, container)
        directory = self.root / uid
        directory.mkdir(mode=0o755, exist_ok=True)
        path = Path(pin_path(self.root.parent, uid, container))
        tmp = path.with_name(f".{container}.tmp")
        tmp.write_text(pin_text(image))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return str(path)

    def remove(self, uid: str) -> None:
        if _UID.fullmatch(uid):
            shutil.rmtree(self.root / uid, ignore_errors=True)

    def keep_only(self, uids: set[str]) -> list[str]:
        """Remove the pins of every pod not named (at start-up: pods that ended meanwhile)."""
        removed = []
        for entry in self.root.iterdir():
            if entry.name not in uids:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed

    def in_use(self) -> set[str]:
        """The digests some pin names (never evicted)."""
        digests = set()
        for pin in self.root.glob("*/*.sh"):
            for line in pin.read_text().splitlines():
                name, _, value = line.partition("=")
                if name == "ILP_IMAGE_DIGEST" and _DIGEST.fullmatch(value):
                    digests.add(value)
        return digests


def _check(uid: str, container: str) -> None:
    if not _UID.fullmatch(uid) or uid.startswith(".") or not _NAME.fullmatch(container):
        raise ValueError(f"not a pod UID and container name: {uid!r}, {container!r}")


def _table(path: Path) -> list[list[str]]:
    """The lines of an /etc/passwd or /etc/group file (missing: none). The image is unpacked
    without links that leave it (umoci), and the file is read, never followed out of the rootfs."""
    try:
        if path.is_symlink():
            return []
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _lookup(name: str, table: list[list[str]], user: str) -> tuple[str, int]:
    """(id, primary gid or 0) of a name or number in a passwd or group table."""
    if name.isdigit():
        for row in table:
            if len(row) > 3 and row[2] == name:
                return name, int(row[3]) if row[3].isdigit() else 0
        return name, 0
    for row in table:
        if row[0] == name and len(row) > 2 and row[2].isdigit():
            primary = int(row[3]) if len(row) > 3 and row[3].isdigit() else 0
            return row[2], primary
    raise CreateContainerError(user, f'unable to find user or group {name!r} in the image (its User is "{user}")')
