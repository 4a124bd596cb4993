"""ImagePullBackOff: after a failed pull the kubelet waits before trying again, 10 s doubling to
5 min per pod and image, and shows ImagePullBackOff meanwhile (ErrImagePull right after the
failure). Kept here so the sidecar reports the same states on the same schedule, and does not
hammer a registry that refused."""

from __future__ import annotations

from dataclasses import dataclass, field

from interlink_provider.images.errors import ERR_IMAGE_PULL, IMAGE_PULL_BACKOFF

INITIAL_SECONDS = 10.0  # the kubelet's backOffPeriod
MAXIMUM_SECONDS = 300.0  # its MaxContainerBackOff


@dataclass
class _Entry:
    delay: float
    failed_at: float


@dataclass
class PullBackoff:
    """Per key (the kubelet's is the pod's UID and the image): when the next pull may be tried.
    `now` is the caller's monotonic clock, so tests need no sleeping."""

    initial: float = INITIAL_SECONDS
    maximum: float = MAXIMUM_SECONDS
    _entries: dict[str, _Entry] = field(default_factory=dict)

    def failed(self, key: str, now: float) -> float:
        """Record a failed pull; the seconds to wait before the next one. A key quiet for twice the
        maximum starts again from the initial delay, as the kubelet's garbage collection does."""
        entry = self._entries.get(key)
        if entry is None or now - entry.failed_at > 2 * self.maximum:
            delay = self.initial
        else:
            delay = min(entry.delay * 2, self.maximum)
        self._entries[key] = _Entry(delay, now)
        return delay

    def remaining(self, key: str, now: float) -> float:
        """Seconds before a pull may be tried again (0: now)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.failed_at + entry.delay - now)

    def reason(self, key: str, now: float) -> str | None:
        """ImagePullBackOff while waiting, ErrImagePull once a retry is due, None if never failed."""
        if key not in self._entries:
            return None
        return IMAGE_PULL_BACKOFF if self.remaining(key, now) > 0 else ERR_IMAGE_PULL

    def succeeded(self, key: str) -> None:
        self._entries.pop(key, None)
