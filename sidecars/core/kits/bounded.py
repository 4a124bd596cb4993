"""One command run to its end or to a time limit: what the transport (for the sidecar) and the
per-account agent (for its account) both do with a scheduler command. Standard library only:
the agent imports it, and starts on every first call of an account."""

from __future__ import annotations

import asyncio


async def run_bounded(
    argv: list[str], env: dict[str, str], timeout: float, cwd: str | None = None
) -> tuple[int, str, str]:
    """argv's exit code, stdout and stderr (decoded, bad bytes replaced), stdin closed.
    OSError when it cannot start; TimeoutError after `timeout` seconds (it is killed and reaped)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    code = process.returncode if process.returncode is not None else -1
    return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
