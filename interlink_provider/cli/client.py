"""A small async client for a sidecar's REST API, or a gateway's interLink API (unix socket, HTTP or HTTPS)."""

from __future__ import annotations

import argparse
import json
import os
import ssl
from collections.abc import AsyncIterator
from typing import Any, TypedDict, cast

import aiohttp
import yarl

from .exits import Refusal

DEFAULT_ENV = "ILP_SIDECAR"
CA_ENV = "ILP_SIDECAR_CA"
FORMS = "unix:///path.sock, http://host:port or https://host:port"
# The ways a call ends without an answer: refused, reset, timed out, a name that does not resolve, a TLS
# handshake that fails. (OSError covers TimeoutError; aiohttp's ServerDisconnectedError is no OSError.)
UNANSWERED = (OSError, aiohttp.ClientError)


class CreateAnswer(TypedDict):
    """`/create`'s answer (interLink's CreateStruct); PodJID is empty while the pod stages in."""

    PodUID: str
    PodJID: str


class PodListing(TypedDict):
    """One pod of `/pods` (our extension), as the sidecar lists its records."""

    uid: str
    namespace: str
    name: str
    job_id: str
    phase: str
    stage: str
    message: str
    created_at: float  # seconds since the epoch


class WhoAmI(TypedDict):
    """`/whoami`: how the site sees the caller (issuer, subject and actor are None on the trusted socket)."""

    owner: str
    account: str
    site_admin: bool
    issuer: str | None
    subject: str | None
    actor: str | None
    groups: list[str]
    scopes: list[str]
    allowed: dict[str, bool]  # create, read, cancel


class BadAddress(Refusal, ValueError):
    """An address the client cannot use (exit 2): its message says which forms it takes."""


def check_address(address: str) -> str:
    """`address` if it is unix:///path, http://host[:port] or https://host[:port]; else BadAddress.
    (aiohttp would take `127.0.0.1:4000` for a URL with the scheme `127.0.0.1`, and fail deep inside.)"""
    if address.startswith("unix://"):
        if address[len("unix://") :].startswith("/"):
            return address
    else:
        try:
            url = yarl.URL(address)
        except ValueError:  # a port that is no number, a scheme without a host
            url = yarl.URL()
        if url.scheme in ("http", "https") and url.host:
            return address
    raise BadAddress(f"{address!r} is not an address: use {FORMS}")


def address_argument(text: str) -> str:
    """argparse's `type` for an address flag: a bad one is a usage error naming the flag."""
    try:
        return check_address(text)
    except BadAddress as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class SidecarError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message.strip()}")
        self.status = status
        self.message = message.strip()


def default_address() -> str:
    address = os.environ.get(DEFAULT_ENV, "unix:///var/run/interlink-provider/sidecar.sock")
    try:
        return check_address(address)
    except BadAddress as exc:
        raise BadAddress(f"${DEFAULT_ENV}: {exc}") from None


def client_tls(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None, verify: bool = True
) -> ssl.SSLContext:
    """TLS for an https:// address: the server verified against `ca_file` (default: the system CAs)
    unless `verify` is off; a client certificate presented when the server requires one (mTLS)."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:  # a daemon's probe of its own listener, by its own config: no certificate to check
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


class SidecarClient:
    """`address` is unix:///path/to.sock, http://host:port or https://host:port (`ca_file`: the CA
    of its certificate, default $ILP_SIDECAR_CA, else the system CAs; `cert_file`/`key_file`: a
    client certificate for listeners that require one)."""

    def __init__(
        self,
        address: str | None = None,
        timeout: float = 120.0,
        token: str | None = None,
        speaks_vk: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        verify_server: bool = True,
    ) -> None:
        self.address = check_address(address) if address else default_address()
        self.speaks_vk = speaks_vk  # a gateway: /create takes the VK's PodCreateRequests
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if self.address.startswith("unix://"):
            self._connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=self.address[len("unix://") :])
            self.base = "http://sidecar"
        elif self.address.startswith("https://"):
            tls = client_tls(ca_file or os.environ.get(CA_ENV) or None, cert_file, key_file, verify_server)
            self._connector = aiohttp.TCPConnector(ssl=tls)
            self.base = self.address.rstrip("/")
        else:
            self._connector = aiohttp.TCPConnector()
            self.base = self.address.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=self._connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout)
        )

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> SidecarClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """The answer: parsed JSON (whatever its shape) or text. The typed calls below name the shape
        each path's JSON has: the sidecar's contract, trusted here, not checked."""
        data = None if body is None else json.dumps(body)
        async with self._session.request(method, self.base + path, data=data, headers=self.headers) as response:
            text = await response.text()
            if response.status != 200:
                raise SidecarError(response.status, text)
            content_type = response.headers.get("Content-Type", "")
            return json.loads(text) if content_type.startswith("application/json") else text

    async def create(self, request: dict[str, Any]) -> CreateAnswer:
        return cast(CreateAnswer, await self.call("POST", "/create", request))

    async def delete(self, pod: dict[str, Any]) -> str:
        return cast(str, await self.call("POST", "/delete", pod))  # text/plain: what became of the pod

    async def status(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """interLink's PodStatus JSON, one per pod the sidecar knows (pods.phase reads it)."""
        return cast(list[dict[str, Any]], await self.call("GET", "/status", pods))

    async def ping(self) -> dict[str, Any]:
        """The node's resources (interLink's PingResponse JSON)."""
        return cast(dict[str, Any], await self.call("GET", "/status", []))

    async def pods(self) -> list[PodListing]:
        return cast(list[PodListing], await self.call("GET", "/pods"))

    async def whoami(self) -> WhoAmI:
        return cast(WhoAmI, await self.call("GET", "/whoami"))

    async def logs(self, query: dict[str, Any]) -> AsyncIterator[bytes]:
        async with self._session.request(
            "GET", self.base + "/getLogs", data=json.dumps(query), headers=self.headers
        ) as response:
            if response.status != 200:
                raise SidecarError(response.status, await response.text())
            async for chunk in response.content.iter_any():
                yield chunk

    async def logs_text(self, query: dict[str, Any]) -> str:
        out = bytearray()
        async for chunk in self.logs(query):
            out += chunk
        return out.decode("utf-8", "replace")


def pod_ref(uid: str, name: str = "", namespace: str = "") -> dict[str, Any]:
    """The smallest v1.Pod the sidecar accepts to name a pod."""
    return {"metadata": {"uid": uid, "name": name, "namespace": namespace}}
