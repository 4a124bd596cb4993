"""One command run to its end or to a time limit: what the transport (for the sidecar), the
per-account agent (for its account) and the image cache (skopeo, umoci) all do with a command.
Standard library only: the agent imports it, and starts on every first call of an account."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence


async def run_bounded(
    argv: Sequence[str], env: Mapping[str, str] | None, timeout: float, cwd: str | None = None
) -> tuple[int, bytes, bytes]:
    """argv's exit code, stdout and stderr as bytes (a digest is taken of them), stdin closed.
    OSError when it cannot start; TimeoutError after `timeout` seconds (it is killed and reaped)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):  # it may end between the deadline and the kill
            process.kill()
        await process.wait()
        raise
    return (process.returncode if process.returncode is not None else -1), out, err


def text(data: bytes) -> str:
    """A command's output as text, bad bytes replaced."""
    return data.decode("utf-8", "replace")
