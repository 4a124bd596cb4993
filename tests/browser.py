"""Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol, for
tests of the pages the daemons serve. Just what those tests need: headers, navigation and
reading the DOM."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import aiohttp


class Chromium:
    def __init__(self) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            raise RuntimeError("chromium is not installed (deploy/local/install.sh installs it)")
        self.binary = binary
        self.profile = Path(tempfile.mkdtemp(prefix="ilp-chromium-"))
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def __aenter__(self) -> Chromium:
        self.process = await asyncio.create_subprocess_exec(
            self.binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        port = await self._port()
        self.http = aiohttp.ClientSession()
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t["type"] == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Network.enable")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        await self.ws.close()
        await self.http.close()
        self.process.kill()
        await self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def _port(self, timeout: float = 30) -> int:
        marker = self.profile / "DevToolsActivePort"  # Chromium writes the port it chose here
        for _ in range(int(timeout / 0.1)):
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port")

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            future = self._waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        future = self._waiting[number] = asyncio.get_running_loop().create_future()
        await self.ws.send_str(json.dumps({"id": number, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    async def headers(self, headers: dict[str, str]) -> None:
        """Sent with every request the page makes from now on (reloads included)."""
        await self.send("Network.setExtraHTTPHeaders", headers=headers)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        for _ in range(300):
            if await self.evaluate("document.readyState") == "complete":
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{url} did not finish loading")

    async def evaluate(self, expression: str) -> Any:
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer.get("result", {}).get("value")

    async def text(self, selector: str) -> str | None:
        """The rendered text of the first element matching `selector`, or None."""
        return await self.evaluate(f"document.querySelector({json.dumps(selector)})?.innerText ?? null")
