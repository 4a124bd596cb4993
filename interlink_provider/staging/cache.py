"""The content cache: files keyed by DID + adler32, shared by every pod of the site.

A file enters only after its checksum was verified (downloads land on a temporary
name and are renamed in place), so the cache never holds a partial or corrupt
file, whatever crashes. Pods get hard links (the cache and pods_root share a
filesystem), so evicting a cache entry never touches a running pod's data. Use
counts as recency: every hit touches the file; eviction removes the least
recently used files until the cache fits its size limit. The cache's total size is
counted once at start and kept up to date, so admitting a file costs no directory
walk; only an eviction walks the cache.

Several sidecars may share one cache (say a Slurm and an HTCondor sidecar on one login
node). Each downloads into its own directory under `.partial/`, which it holds locked
(flock) while it lives; whoever starts removes the directories nobody holds any more
(their owner crashed mid-download), never a live sidecar's downloads.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from pathlib import Path

from .refs import FileRef

DIR_MODE = 0o711
FILE_MODE = 0o600


class ContentCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.partial = root / ".partial"
        root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        os.chmod(root, DIR_MODE)
        self.partial.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.downloads, self._held = claim_area(self.partial)  # this process's temporary files
        sweep_abandoned(self.partial)
        self._used: int | None = None  # bytes in the cache, counted on first need

    def close(self) -> None:
        """Remove this process's temporary files and give up its claim."""
        shutil.rmtree(self.downloads, ignore_errors=True)
        if self._held >= 0:
            os.close(self._held)
            self._held = -1

    def path(self, ref: FileRef) -> Path:
        checksum = ref.adler32 or "nochecksum"
        scope = ref.scope or "_url"
        safe_name = ref.name.replace("/", "%2F") if ref.scope else uuid.uuid5(uuid.NAMESPACE_URL, ref.did).hex
        return self.root / checksum[:2] / checksum / scope / safe_name

    def lookup(self, ref: FileRef) -> Path | None:
        if not ref.adler32:
            return None  # without a checksum there is no safe key
        path = self.path(ref)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        if ref.size is not None and stat.st_size != ref.size:
            path.unlink(missing_ok=True)
            self._used = None  # recount when next needed
            return None
        os.utime(path)  # recency for LRU
        return path

    def temporary(self) -> Path:
        return self.downloads / uuid.uuid4().hex

    def admit(self, ref: FileRef, verified: Path) -> Path:
        """Move a verified download into the cache (atomic rename), then keep to the limit."""
        if not ref.adler32:
            return verified
        path = self.path(ref)
        self._make_dirs(path.parent)
        replaced = path.stat().st_size if path.exists() else 0
        added = verified.stat().st_size
        os.chmod(verified, FILE_MODE)  # ours alone: each account that stages it is added to its ACL
        os.replace(verified, path)
        self._used = self.size() if self._used is None else self._used + added - replaced
        if self._used > self.max_bytes:
            self.evict(keep=path)
        return path

    def _make_dirs(self, directory: Path) -> None:
        """Traversable, not listable: a file's path is no secret, its content is (FILE_MODE)."""
        missing = [d for d in [directory, *directory.parents] if self.root in d.parents and not d.exists()]
        for made in reversed(missing):
            made.mkdir(mode=DIR_MODE, exist_ok=True)
            os.chmod(made, DIR_MODE)

    def _entries(self) -> list[Path]:
        """The cached files (not the areas whose names start with a dot: downloads, exports)."""
        return [
            p for p in self.root.rglob("*") if p.is_file() and not p.relative_to(self.root).parts[0].startswith(".")
        ]

    def evict(self, keep: Path | None = None) -> int:
        """Remove least recently used files beyond max_bytes; returns bytes freed."""
        entries = []
        for path in self._entries():
            stat = path.stat()
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        freed = 0
        for _, size, path in sorted(entries):
            if total - freed <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            freed += size
        self._used = total - freed
        return freed

    def size(self) -> int:
        return sum(p.stat().st_size for p in self._entries())


NEW = ".new-"  # an area being claimed: not yet locked, left alone for a while
STALE_NEW_SECONDS = 3600


def claim_area(partial: Path) -> tuple[Path, int]:
    """A download area of our own under `partial`, and the descriptor whose flock marks it as
    alive. It is locked under a temporary name first, so no sweeper ever sees it unlocked."""
    name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    claiming = partial / f"{NEW}{name}"
    claiming.mkdir(mode=0o700)
    held = os.open(claiming, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    area = partial / name
    claiming.rename(area)
    return area, held


def sweep_abandoned(partial: Path) -> None:
    """Remove what no live process owns under `partial`: areas whose lock can be taken (their
    owner died mid-download), stray files (the old single-directory layout), old claims."""
    now = time.time()
    for entry in partial.iterdir():
        try:
            if entry.name.startswith(NEW) and now - entry.stat().st_mtime < STALE_NEW_SECONDS:
                continue
        except FileNotFoundError:
            continue  # claimed meanwhile
        if not entry.is_dir():
            entry.unlink(missing_ok=True)
        elif not _alive(entry):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(area: Path) -> bool:
    """Whether a live process holds the area's lock. An area this process may not open is another
    account's (say a root sidecar's, on a site moving to the multi-account mode): left alone."""
    try:
        descriptor = os.open(area, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except PermissionError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def link_into(source: Path, target: Path) -> None:
    """Give a pod its own name for a cached file: a hard link, or a copy across filesystems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)
