"""The image cache: content-addressed by manifest digest on the site's shared filesystem, so an
image crosses the network once however many pods (and sidecar processes) run it.

  <root>/images/sha256-<hex>/rootfs        the unpacked filesystem (umoci --rootless), what ch-run runs
  <root>/images/sha256-<hex>/config.json   ImageConfig (Entrypoint, Cmd, Env, WorkingDir, User)
  <root>/images/sha256-<hex>/image.json    the image's OCI config blob, as the registry served it
  <root>/images/sha256-<hex>/size          bytes on disk of the rootfs (eviction counts these)
  <root>/images/sha256-<hex>/last-used     its mtime is the last time a pod asked for it (LRU)
  <root>/index.json                        tag -> digest, what IfNotPresent and Never look up
  <root>/locks/                            one lock file per digest: processes share one pull
  <root>/tmp/                              downloads and unpacks in progress (same filesystem)

An image directory appears whole or not at all: it is built under tmp/ and renamed into place.
Pull policies as the kubelet reads them: Always resolves the tag at the registry every time (the
content is still fetched only when the digest is new), IfNotPresent uses the tag's cached digest
when there is one, Never uses only the cache. Failures are ImageErrors carrying Kubernetes reasons.

A reference with a digest is served from the cache under every policy: its content cannot have
changed (the kubelet's runtime would still ask the registry for the manifest under Always).

Note (as with the kubelet): an image in the cache is served to any pod asking for it by name under
IfNotPresent or Never, without that pod's credentials; Always checks them at the registry first.

The cache is shared by the accounts pods run as, so nothing in a published image is writable by
group or others (an image's /tmp is 1777 in its layer): one pod's account cannot change what
another's container runs or reads. Runtimes mount the image read-only anyway (ch-run does).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from interlink_provider.images import tools
from interlink_provider.images.config import ImageConfig
from interlink_provider.images.credentials import auth_for
from interlink_provider.images.errors import ErrImageNeverPull, ErrImagePull, ImageError
from interlink_provider.images.reference import DEFAULT_TAG, ImageReference, parse


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


def default_policy(ref: ImageReference) -> PullPolicy:
    """Kubernetes' default: Always for `:latest` (or no tag), IfNotPresent otherwise."""
    if ref.digest is None and ref.tag == DEFAULT_TAG:
        return PullPolicy.ALWAYS
    return PullPolicy.IF_NOT_PRESENT


@dataclass(frozen=True)
class CachedImage:
    """An image ready to run: its rootfs and its configuration."""

    reference: ImageReference  # as the pod named it, normalised
    digest: str
    path: Path
    config: ImageConfig
    size: int
    pulled: bool  # this call downloaded it (False: it was in the cache)

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"


@dataclass(frozen=True)
class CacheEntry:
    digest: str
    size: int
    last_used: float


@dataclass
class CacheStats:
    """Counters of this process's cache (tests and metrics)."""

    resolves: int = 0
    pulls: int = 0
    pull_seconds: float = 0.0
    unpack_seconds: float = 0.0
    evictions: int = 0
    last_pull: dict[str, float] = field(default_factory=dict)


def _dirname(digest: str) -> str:
    return digest.replace(":", "-")


class ImageCache:
    """One cache directory. `mirrors` maps a registry to the host really pulled from;
    `cert_dir` holds the CA (ca.crt) the registries' TLS certificates chain to."""

    def __init__(
        self,
        root: Path,
        *,
        mirrors: Mapping[str, str] | None = None,
        cert_dir: Path | None = None,
        programs: tools.Tools | None = None,
        lock_poll: float = 0.05,
    ) -> None:
        self.root = root
        self.mirrors = dict(mirrors or {})
        self.cert_dir = cert_dir
        self.tools = programs or tools.Tools()
        self.lock_poll = lock_poll
        self.stats = CacheStats()
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        for sub in ("images", "locks", "tmp", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "tmp", 0o700)
        os.chmod(root / "home", 0o700)
        self._policy_file = root / "home" / "policy.json"
        if not self._policy_file.exists():
            _atomic_write(self._policy_file, json.dumps(tools.ACCEPT_ANYTHING))
        self.sweep()

    def sweep(self) -> list[str]:
        """Remove what a process that died mid-pull or mid-eviction left in tmp/: a pull's work
        directory is named after its digest and is left alone while that digest's lock is held
        (a live pull, maybe another process's); an eviction's has nothing anyone reads."""
        removed = []
        for path in (self.root / "tmp").iterdir():
            if path.name.startswith("pull-"):
                lock = self._try_lock(path.name.removeprefix("pull-").rsplit(".", 1)[0])
                if lock is None:
                    continue
                try:
                    _remove_tree(path)
                finally:
                    os.close(lock)
            elif path.name.startswith("evict-"):
                _remove_tree(path)
            else:
                continue
            removed.append(path.name)
        return removed

    # -- the one entry point ------------------------------------------------------------------

    async def ensure(
        self,
        image: str,
        policy: PullPolicy | str | None = None,
        secrets: Sequence[Mapping[str, Mapping[str, Any]]] = (),
    ) -> CachedImage:
        """The image ready in the cache, pulled if the policy allows and it is not there.
        `secrets` are parsed imagePullSecrets (credentials.parse_dockerconfigjson); only the entry
        for the host really contacted is used: a pod's docker.io password never goes to the site's
        mirror of docker.io (a mirror that needs credentials has its own entry)."""
        ref = parse(image)
        chosen = PullPolicy(policy) if policy else default_policy(ref)
        auth = auth_for(ref.located(self.mirrors).domain, secrets)
        digest = ref.digest
        if digest is None and chosen is not PullPolicy.ALWAYS:
            known = self.lookup(ref)
            if known is not None and self._present(known):
                digest = known
        if digest is None and chosen is PullPolicy.NEVER:
            raise ErrImageNeverPull(image, f'Container image "{image}" is not present with pull policy of Never')
        if digest is None:
            digest = await self.resolve(ref, auth)
        pulled = False
        if not self._present(digest):
            if chosen is PullPolicy.NEVER:
                raise ErrImageNeverPull(image, f'Container image "{image}" is not present with pull policy of Never')
            pulled = await self._single_flight(image, ref.pinned(digest), auth)
        if ref.digest is None:
            await self._remember(ref, digest)
        return self._open(ref, digest, pulled)

    # -- resolution ---------------------------------------------------------------------------

    async def resolve(self, ref: ImageReference, auth: Mapping[str, Any] | None = None) -> str:
        """The digest the registry gives for this reference now (of its top manifest: an index
        for a multi-platform image, as the kubelet's image ID is)."""
        location = ref.located(self.mirrors)
        argv = [self.tools.skopeo, "inspect", "--raw", "--retry-times", "0"]
        if self.cert_dir is not None:
            argv += ["--cert-dir", str(self.cert_dir)]
        self.stats.resolves += 1
        with tools.authfile(location.domain, auth, self.root / "home") as authfile:
            argv += ["--authfile", str(authfile)]
            try:
                raw = await tools.run([*argv, f"docker://{location}"], timeout=self.tools.timeout, env=self._env())
            except tools.ToolFailed as failed:
                raise ErrImagePull(str(ref), failed.message) from None
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    # -- the tag index ------------------------------------------------------------------------

    def lookup(self, ref: ImageReference) -> str | None:
        """The digest last seen for this name:tag, if any."""
        return self._read_index().get(str(ref))

    def _read_index(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}  # a damaged index only costs a resolution
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    async def _remember(self, ref: ImageReference, digest: str) -> None:
        if self._read_index().get(str(ref)) == digest:
            return
        async with self._locked("index"):
            index = self._read_index()
            index[str(ref)] = digest
            _atomic_write(self.root / "index.json", json.dumps(index, indent=1, sort_keys=True))

    # -- pulls ----------------------------------------------------------------------------------

    def _present(self, digest: str) -> bool:
        return (self.root / "images" / _dirname(digest) / "config.json").is_file()

    async def _single_flight(self, image: str, pinned: ImageReference, auth: Mapping[str, Any] | None) -> bool:
        """One download per digest: callers in this process await the same task; other processes
        wait on the digest's lock file and find the image published. True if this call pulled."""
        digest = pinned.digest
        assert digest is not None
        task = self._inflight.get(digest)
        first = task is None
        if task is None:
            task = asyncio.ensure_future(self._pull_locked(image, pinned, auth))
            self._inflight[digest] = task
            task.add_done_callback(lambda _: self._inflight.pop(digest, None))
        pulled = await asyncio.shield(task)
        return first and pulled

    async def _pull_locked(self, image: str, pinned: ImageReference, auth: Mapping[str, Any] | None) -> bool:
        digest = pinned.digest
        assert digest is not None
        async with self._locked(_dirname(digest)):
            if self._present(digest):
                return False  # another process published it while we waited
            await self._pull(image, pinned, auth)
            return True

    async def _pull(self, image: str, pinned: ImageReference, auth: Mapping[str, Any] | None) -> None:
        digest = pinned.digest
        assert digest is not None
        location = pinned.located(self.mirrors)
        # named for the digest, so a sweep knows whose lock says it is alive
        work = Path(tempfile.mkdtemp(prefix=f"pull-{_dirname(digest)}.", dir=self.root / "tmp"))
        try:
            started = time.monotonic()
            argv = [self.tools.skopeo, "--policy", str(self._policy_file), "copy", "-q", "--retry-times", "0"]
            if self.cert_dir is not None:
                argv += ["--src-cert-dir", str(self.cert_dir)]
            with tools.authfile(location.domain, auth, self.root / "home") as authfile:
                argv += ["--src-authfile", str(authfile)]
                try:
                    await tools.run(
                        [*argv, f"docker://{location}", f"oci:{work / 'oci'}:image"],
                        timeout=self.tools.timeout,
                        env=self._env(),
                    )
                except tools.ToolFailed as failed:
                    raise ErrImagePull(image, failed.message) from None
            self.stats.pulls += 1
            pulled_at = time.monotonic()
            self.stats.pull_seconds += pulled_at - started
            try:
                await tools.run(
                    [
                        self.tools.umoci,
                        "unpack",
                        "--rootless",
                        "--image",
                        f"{work / 'oci'}:image",
                        str(work / "bundle"),
                    ],
                    timeout=self.tools.timeout,
                    env=self._env(),
                )
            except tools.ToolFailed as failed:
                raise ErrImagePull(image, f"unpacking: {failed.message}") from None
            self.stats.unpack_seconds += time.monotonic() - pulled_at
            publish = work / "publish"
            publish.mkdir()
            (work / "bundle" / "rootfs").rename(publish / "rootfs")
            os.chmod(publish / "rootfs", 0o755)  # umoci makes it 0700; pods run as other accounts
            await asyncio.to_thread(_no_shared_writes, publish / "rootfs")
            blob = _image_config_blob(work / "oci")
            try:
                config = ImageConfig.from_oci(json.loads(blob))
            except ValueError as bad:
                raise ErrImagePull(image, f"the image's configuration is not valid: {bad}") from None
            (publish / "image.json").write_bytes(blob)
            (publish / "config.json").write_text(config.to_json())
            size = await asyncio.to_thread(_disk_usage, publish / "rootfs")
            (publish / "size").write_text(f"{size}\n")
            (publish / "last-used").touch()
            os.chmod(publish, 0o755)
            target = self.root / "images" / _dirname(digest)
            try:
                publish.rename(target)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            self.stats.last_pull[digest] = time.monotonic() - started
        finally:
            await asyncio.to_thread(_remove_tree, work)

    def _open(self, ref: ImageReference, digest: str, pulled: bool) -> CachedImage:
        path = self.root / "images" / _dirname(digest)
        try:
            config = ImageConfig.from_json((path / "config.json").read_text())
            size = int((path / "size").read_text())
            os.utime(path / "last-used")
        except (OSError, ValueError, KeyError) as exc:  # evicted under us, or damaged
            raise ImageError(str(ref), f"cached image {digest} unreadable: {exc}") from None
        return CachedImage(ref, digest, path, config, size, pulled)

    # -- eviction -------------------------------------------------------------------------------

    def entries(self) -> list[CacheEntry]:
        """The images in the cache, least recently used first."""
        out = []
        for path in (self.root / "images").iterdir():
            try:
                size = int((path / "size").read_text())
                used = (path / "last-used").stat().st_mtime
            except (OSError, ValueError):
                continue
            out.append(CacheEntry(path.name.replace("-", ":", 1), size, used))
        return sorted(out, key=lambda entry: entry.last_used)

    def size(self) -> int:
        return sum(entry.size for entry in self.entries())

    async def evict(self, limit: int, in_use: Collection[str]) -> list[str]:
        """Remove least recently used images until the cache holds at most `limit` bytes; never
        one in `in_use` (the digests live pods run, passed by the caller) nor one being pulled.
        Returns the digests removed; the cache may stay above the limit if the rest is in use."""
        entries = self.entries()
        total = sum(entry.size for entry in entries)
        evicted: list[str] = []
        for entry in entries:
            if total <= limit:
                break
            if entry.digest in in_use or entry.digest in self._inflight:
                continue
            lock = self._try_lock(_dirname(entry.digest))
            if lock is None:
                continue  # another process is pulling or evicting it
            try:
                path = self.root / "images" / _dirname(entry.digest)
                doomed = Path(tempfile.mkdtemp(prefix="evict-", dir=self.root / "tmp")) / "image"
                path.rename(doomed)  # gone from readers at once; the bytes go after
            finally:
                os.close(lock)
            await asyncio.to_thread(_remove_tree, doomed.parent)
            total -= entry.size
            evicted.append(entry.digest)
            self.stats.evictions += 1
        return evicted

    # -- locks ----------------------------------------------------------------------------------

    def _try_lock(self, name: str) -> int | None:
        fd = os.open(self.root / "locks" / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @contextlib.asynccontextmanager
    async def _locked(self, name: str) -> AsyncIterator[None]:
        """An exclusive lock between processes, polled so the event loop never blocks on it: a flock
        held by another process signals nothing to wait on, and a thread blocked in flock could not
        be cancelled (it would take the lock after its caller had gone)."""
        while True:
            fd = self._try_lock(name)
            if fd is not None:
                break
            await asyncio.sleep(self.lock_poll)
        try:
            yield
        finally:
            os.close(fd)

    def _env(self) -> dict[str, str]:
        return tools.tool_env(self.root / "home")


def _image_config_blob(layout: Path) -> bytes:
    """The config blob of the one image in an OCI layout skopeo wrote."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]))
    return _blob(layout, manifest["config"]["digest"])


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, _, hexdigest = digest.partition(":")
    return (layout / "blobs" / algorithm / hexdigest).read_bytes()


def _no_shared_writes(root: Path) -> None:
    """Clear the group and other write bits (and set-ID bits: the cache's owner is not the image's)
    of everything under root; symbolic links have no modes of their own."""
    strip = stat.S_IWGRP | stat.S_IWOTH | stat.S_ISUID | stat.S_ISGID
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & strip:
                os.chmod(path, stat.S_IMODE(mode) & ~strip)


def _disk_usage(path: Path) -> int:
    total = 0
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


def _remove_tree(path: Path) -> None:
    """rmtree that also removes what a rootless unpack left read-only (dirs mode 0555)."""

    def make_writable(function: Callable[..., Any], failed: str, _info: Any) -> None:
        parent = os.path.dirname(failed)
        with contextlib.suppress(OSError):
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, os.stat(failed).st_mode | stat.S_IRWXU)
        function(failed)

    if path.exists():
        with contextlib.suppress(FileNotFoundError):  # another process removing it too
            shutil.rmtree(path, onerror=make_writable)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
