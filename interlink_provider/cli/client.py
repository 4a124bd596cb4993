"""A small async client for a sidecar's REST API (unix socket or HTTP)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

DEFAULT_ENV = "ILP_SIDECAR"


class SidecarError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message.strip()}")
        self.status = status
        self.message = message.strip()


def default_address() -> str:
    return os.environ.get(DEFAULT_ENV, "unix:///var/run/interlink-provider/sidecar.sock")


class SidecarClient:
    """`address` is unix:///path/to.sock or http://host:port."""

    def __init__(
        self, address: str | None = None, timeout: float = 120.0, token: str | None = None, speaks_vk: bool = False
    ) -> None:
        self.address = address or default_address()
        self.speaks_vk = speaks_vk  # a gateway: /create takes the VK's PodCreateRequests
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if self.address.startswith("unix://"):
            self._connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=self.address[len("unix://") :])
            self.base = "http://sidecar"
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
        data = None if body is None else json.dumps(body)
        async with self._session.request(method, self.base + path, data=data, headers=self.headers) as response:
            text = await response.text()
            if response.status != 200:
                raise SidecarError(response.status, text)
            content_type = response.headers.get("Content-Type", "")
            return json.loads(text) if content_type.startswith("application/json") else text

    async def create(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", "/create", request)

    async def delete(self, pod: dict[str, Any]) -> str:
        return await self.call("POST", "/delete", pod)

    async def status(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await self.call("GET", "/status", pods)

    async def ping(self) -> dict[str, Any]:
        return await self.call("GET", "/status", [])

    async def pods(self) -> list[dict[str, Any]]:
        return await self.call("GET", "/pods")

    async def whoami(self) -> dict[str, Any]:
        return await self.call("GET", "/whoami")

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
