"""The pull phase of a pod: its images made ready in the site's image cache before anything else.

Like stage-in, it runs on the sidecar's host (compute nodes often have no route to a registry)
while the pod's containers wait with reason `PullingImage`. Each container is then pinned to the
digest it will run (`images.pins`) and the pod moves on: stage-in, or the submission queue.
Failures show as the kubelet shows them: `ErrImagePull` with the registry's words, then
`ImagePullBackOff` until the next try (10 s doubling to 5 min); `InvalidImageName` and
`CreateContainerError` are not retried. Pods of one image share one download (the cache's single
flight). A deleted pod stops waiting (a download other pods wait for goes on); a restarted
sidecar starts the phase again, and the cache makes that cheap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from interlink_provider.images.backoff import PullBackoff
from interlink_provider.images.cache import CachedImage, ImageCache
from interlink_provider.images.credentials import parse_dockerconfigjson
from interlink_provider.images.errors import (
    CREATE_CONTAINER_ERROR,
    ERR_IMAGE_PULL,
    IMAGE_PULL_BACKOFF,
    INVALID_IMAGE_NAME,
    PULLING_IMAGE,
    ImageError,
)
from interlink_provider.images.pins import Pins
from interlink_provider.pods.wire import RetrievedPodData
from sidecars.core.domain import status
from sidecars.core.domain.book import PodBook
from sidecars.core.domain.records import ContainerInfo, JsonObject, PodRecord, PodStatuses, PodSummary, Stage

log = logging.getLogger(__name__)
FINAL_REASONS = (INVALID_IMAGE_NAME, CREATE_CONTAINER_ERROR)  # retrying cannot help
ERR_IMAGE_PULL_SHOWN = 5.0  # seconds a failed pull shows as ErrImagePull before ImagePullBackOff
DOCKERCONFIGJSON = ".dockerconfigjson"
Credentials = list[dict[str, dict[str, str]]]  # parsed imagePullSecrets, in the pod's order


def pull_secrets(data: RetrievedPodData) -> Credentials:
    """The pod's imagePullSecrets that came with it, parsed. As under a kubelet, one that is
    missing or unreadable is skipped with a warning (never its content): the pull goes on without."""
    sent = data.secrets()
    out: Credentials = []
    uid = data.pod.metadata.uid
    for reference in data.pod.spec.image_pull_secrets:
        secret = sent.get(reference.name)
        content = secret.items_bytes().get(DOCKERCONFIGJSON) if secret is not None else None
        if content is None:
            log.warning("pod %s: image pull secret %r not sent with the pod", uid, reference.name)
            continue
        try:
            out.append(parse_dockerconfigjson(content))
        except ValueError:
            log.warning("pod %s: image pull secret %r is not a .dockerconfigjson", uid, reference.name)
    return out


class ImagePulls:
    """`proceed(record)` is awaited (under the pod's lock) once every container is pinned: it moves
    the pod to its next stage and starts that stage."""

    def __init__(
        self,
        book: PodBook,
        cache: ImageCache,
        proceed: Callable[[PodRecord], Awaitable[None]],
        secrets_dir: Path,
        size_limit: int | None = None,
    ) -> None:
        self.book = book
        self.cache = cache
        self.pins = Pins(cache.root)
        # A pod's pull credentials until its images are pinned: 0600 files of the sidecar's own
        # account, so a restart mid-pull still has them; never logged, gone once pulled.
        self.secrets_dir = secrets_dir
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(secrets_dir, 0o700)
        self.proceed = proceed
        self.size_limit = size_limit
        self.backoff = PullBackoff()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def remember(self, uid: str, credentials: Credentials) -> None:
        """Keep a new pod's pull credentials for its pull phase (nothing kept when it has none)."""
        if not credentials:
            return
        path = self._secrets_file(uid)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(credentials, file)
        os.replace(tmp, path)

    def _credentials(self, uid: str) -> list[Mapping[str, Mapping[str, Any]]]:
        try:
            loaded = json.loads(self._secrets_file(uid).read_text())
        except (OSError, ValueError):
            return []
        return loaded if isinstance(loaded, list) else []

    def _forget(self, uid: str) -> None:
        self._secrets_file(uid).unlink(missing_ok=True)

    def _secrets_file(self, uid: str) -> Path:
        if "/" in uid or uid.startswith("."):
            raise ValueError(f"not a pod UID: {uid!r}")
        return self.secrets_dir / f"{uid}.json"

    def start(self, record: PodRecord) -> None:
        if record.uid in self._tasks and not self._tasks[record.uid].done():
            return
        self._tasks[record.uid] = asyncio.create_task(self._guard(record.uid), name=f"pull-{record.uid}")

    def cancel(self, uid: str) -> None:
        """The pod was deleted: stop waiting for its images (a shared download goes on)."""
        task = self._tasks.pop(uid, None)
        if task is not None:
            task.cancel()

    def release(self, uid: str) -> None:
        """The pod's job ended or the pod is gone: its images may be evicted."""
        self.cancel(uid)
        self.pins.remove(uid)
        self._forget(uid)

    def keep_only(self, uids: set[str]) -> None:
        self.pins.keep_only(uids)
        for path in self.secrets_dir.glob("*.json"):
            if path.stem not in uids:
                path.unlink(missing_ok=True)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _guard(self, uid: str) -> None:
        try:
            await self._pull_all(uid)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not leave the pod waiting silently
            log.exception("pulling the images of %s failed unexpectedly", uid)
            await self._show(uid, None, ERR_IMAGE_PULL, "internal error while pulling (see the sidecar log)")
        finally:
            if self._tasks.get(uid) is asyncio.current_task():
                del self._tasks[uid]

    async def _pull_all(self, uid: str) -> None:
        """Every container's image, in order; after a failure, again once its back-off is over."""
        while (record := self.book.get(uid)) is not None and record.stage == Stage.PULLING:
            images: dict[str, CachedImage] = {}
            credentials = self._credentials(uid)
            for container in record.summary.containers:
                result = await self._pull_one(uid, container, credentials)
                if isinstance(result, ImageError):
                    break
                images[container.name] = result
            else:
                await self._pinned(uid, images)
                return
            if result.reason in FINAL_REASONS:
                return  # the pod stays waiting, as under a kubelet, until it is deleted
            await self._back_off(uid, container, result)

    async def _back_off(self, uid: str, container: ContainerInfo, error: ImageError) -> None:
        """ErrImagePull for a moment (the kubelet's next sync), then ImagePullBackOff until the retry."""
        remaining = self.backoff.remaining(_key(uid, container), time.monotonic())
        shown = min(remaining / 2, ERR_IMAGE_PULL_SHOWN)
        await asyncio.sleep(shown)
        message = f'Back-off pulling image "{container.image}": {error.message}'
        await self._show(uid, container.name, IMAGE_PULL_BACKOFF, message)
        await asyncio.sleep(remaining - shown)

    async def _pull_one(
        self, uid: str, container: ContainerInfo, credentials: list[Mapping[str, Mapping[str, Any]]]
    ) -> CachedImage | ImageError:
        """The container's image in the cache and pinned, or why not (shown on the container)."""
        await self._show(uid, container.name, PULLING_IMAGE, f'Pulling image "{container.image}"')
        try:
            image = await self.cache.ensure(container.image, container.pull_policy or None, credentials)
            self.pins.write(uid, container.name, image)
        except ImageError as exc:
            if exc.reason not in FINAL_REASONS:
                self.backoff.failed(_key(uid, container), time.monotonic())
            log.warning("pod %s: container %s: %s: %s", uid, container.name, exc.reason, exc.message)
            await self._show(uid, container.name, exc.reason, exc.message)
            return exc
        self.backoff.succeeded(_key(uid, container))
        what = "pulled" if image.pulled else "already present on the site"
        log.info("pod %s: container %s: image %s %s (%s)", uid, container.name, container.image, what, image.digest)
        return image

    async def _pinned(self, uid: str, images: dict[str, CachedImage]) -> None:
        async with self.book.lock(uid):
            record = self.book.get(uid)
            if record is None or record.stage != Stage.PULLING:
                self.pins.remove(uid)
                self._forget(uid)
                return
            self._forget(uid)
            digests = sorted({image.digest for image in images.values()})
            summary = with_image_ids(record.summary, images)
            message = f"images ready: {', '.join(digests)}"
            await self.proceed(await self.book.save(uid, summary=summary, message=message))
        await self._evict()

    async def _evict(self) -> None:
        """The pins of pods that ended go; above the size limit, so do the least recently used
        images no live pod is pinned to."""
        self.pins.keep_only({r.uid for r in self.book.all() if not r.stage.terminal})
        if self.size_limit is None:
            return
        evicted = await self.cache.evict(self.size_limit, self.pins.in_use())
        if evicted:
            log.info("image cache above its limit: evicted %s", ", ".join(evicted))

    async def _show(self, uid: str, container: str | None, reason: str, message: str) -> None:
        """A waiting reason on one container (None: all), the others as they are."""
        async with self.book.lock(uid):
            record = self.book.get(uid)
            if record is None or record.stage != Stage.PULLING:
                return
            waiting = status.waiting(reason, message)
            statuses = _with_waiting(record.status, record.summary.containers, container, waiting)
            if statuses != record.status:
                await self.book.save(uid, status=statuses, message="" if reason == PULLING_IMAGE else message)


def with_image_ids(summary: PodSummary, images: Mapping[str, CachedImage]) -> PodSummary:
    """The containers' imageID as the kubelet reports it: repository@digest of what they run."""
    containers = tuple(
        replace(c, image_id=f"{images[c.name].reference.name}@{images[c.name].digest}") if c.name in images else c
        for c in summary.containers
    )
    return replace(summary, containers=containers)


def _key(uid: str, container: ContainerInfo) -> str:
    """The kubelet backs off per pod and image."""
    return f"{uid}/{container.image}"


def _with_waiting(
    current: PodStatuses, containers: tuple[ContainerInfo, ...], name: str | None, waiting: JsonObject
) -> PodStatuses:
    if name is None:
        return status.uniform_statuses(containers, waiting)
    fresh = status.uniform_statuses(tuple(c for c in containers if c.name == name), waiting)
    replacement = {item["name"]: item for item in fresh.all()}

    def swap(items: tuple[JsonObject, ...]) -> tuple[JsonObject, ...]:
        return tuple(replacement.get(item.get("name", ""), item) for item in items)

    return PodStatuses(swap(current.init), swap(current.apps))
