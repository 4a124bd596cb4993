"""One site as the gateway sees it: a TLS channel, a token for its audience, and a
status cache kept fresh by one WatchStatus stream.

The stream resumes from the last (epoch, revision) it saw, so a cut costs nothing
but the reconnect; a restarted sidecar (new epoch) sends every pod again. Three
missed heartbeats or a failed stream mark the site down: its pods are then
reported Unknown by the gateway (never Failed) until the stream is back.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc

from ..auth.errors import AuthError
from ..auth.exchange import OAuthClient, Token
from ..rpc.client import bearer, offloader, open_channel
from ..rpc.offloader.v1 import offloader_pb2 as pb
from ..telemetry.metrics import STREAM_RECONNECTS
from .config import ServiceIdentity, SiteLink

log = logging.getLogger(__name__)
RENEW_MARGIN = 60.0


class ServiceTokens:
    """The gateway's own tokens, one per site audience, renewed before they expire."""

    def __init__(self, identity: ServiceIdentity) -> None:
        secret = Path(identity.client_secret_file).read_text().strip()
        self.client = OAuthClient(identity.issuer, identity.client_id, secret, identity.ca_file)
        self.scope = " ".join(identity.scopes)
        self._tokens: dict[str, Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def for_audience(self, audience: str) -> str:
        async with self._locks.setdefault(audience, asyncio.Lock()):
            token = self._tokens.get(audience)
            if token is None or not token.valid_for(RENEW_MARGIN):
                token = await self.client.client_credentials(self.scope, audience)
                self._tokens[audience] = token
            return token.access_token

    async def close(self) -> None:
        await self.client.close()


class Site:
    def __init__(self, link: SiteLink, tokens: ServiceTokens, heartbeat_seconds: int) -> None:
        self.link = link
        self.name = link.name
        self.tokens = tokens
        self.heartbeat = heartbeat_seconds
        self.channel = open_channel(link.target, link.ca_file, link.cert_file, link.key_file)
        self.stub = offloader(self.channel)
        self.pods: dict[str, pb.PodStatus] = {}  # what the stream said last, per pod UID
        self.node: pb.NodeInfo | None = None
        self.up = False
        self.error = "not connected yet"
        self.epoch, self.revision = "", 0
        self._unconfirmed: set[str] = set()  # pods of the previous epoch not yet sent again
        self.synced = asyncio.Event()  # the first snapshot has arrived
        self._task: asyncio.Task[None] | None = None

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(await self.tokens.for_audience(self.link.audience))

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name=f"watch-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.channel.close()

    async def _watch(self) -> None:
        backoff = 1.0
        opened = False
        while True:
            if opened:
                STREAM_RECONNECTS.labels(self.name).inc()
            opened = True
            try:
                await self._follow()
            except (TimeoutError, grpc.aio.AioRpcError, AuthError, OSError) as exc:
                self._down(_describe(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            if self.up:
                backoff = 1.0

    async def _follow(self) -> None:
        request = pb.WatchStatusRequest(
            epoch=self.epoch, since_revision=self.revision, heartbeat_seconds=self.heartbeat
        )
        stream = self.stub.WatchStatus(request, metadata=await self.metadata())
        try:
            await self._ping()
            while True:
                event = await asyncio.wait_for(stream.read(), timeout=3 * self.heartbeat)
                if event is grpc.aio.EOF:
                    raise ConnectionError("the site closed the status stream")
                self._apply(event)
        finally:
            stream.cancel()

    def _apply(self, event: pb.StatusEvent) -> None:
        if event.epoch != self.epoch:
            log.info("site %s: status epoch %s (was %s): full resync", self.name, event.epoch, self.epoch or "none")
            self.epoch = event.epoch
            self._unconfirmed = set(self.pods)  # each live pod is sent again before the next heartbeat
        self.revision = event.revision
        if event.HasField("pod"):
            self.pods[event.pod.uid] = event.pod
            self._unconfirmed.discard(event.pod.uid)
        elif event.removed_uid:
            self.pods.pop(event.removed_uid, None)
        if not self.up:
            log.info("site %s is up", self.name)
        self.up, self.error = True, ""
        if event.heartbeat:  # the snapshot is complete: what it did not send is gone
            self._drop_unconfirmed()
            self.synced.set()

    def _drop_unconfirmed(self) -> None:
        """Pods known before a resync that the new snapshot left out: removed while the site
        restarted, or while its feed forgot removals. (Pods created since are not in the set.)"""
        for uid in self._unconfirmed:
            if self.pods.pop(uid, None) is not None:
                log.info("site %s: pod %s is gone (not in the site's snapshot)", self.name, uid)
        self._unconfirmed = set()

    async def _ping(self) -> None:
        self.node = await self.stub.Ping(pb.PingRequest(), metadata=await self.metadata(), timeout=10)

    async def refresh_node(self) -> None:
        """A fresh NodeInfo (the site's free capacity changes with every job); keeps the last on failure."""
        try:
            await self._ping()
        except (grpc.aio.AioRpcError, AuthError) as exc:
            log.info("site %s: ping failed: %s", self.name, _describe(exc))

    def _down(self, reason: str) -> None:
        if self.up or self.error != reason:
            log.warning("site %s is down: %s", self.name, reason)
        self.up, self.error = False, reason

    @property
    def free_pods(self) -> int:
        try:
            return int(self.node.capacity.pods) if self.node else 0
        except ValueError:
            return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, asyncio.TimeoutError):
        return "no heartbeat from the site"
    if isinstance(exc, AuthError):
        return f"no token for the site: {exc.message}"
    return str(exc) or type(exc).__name__
