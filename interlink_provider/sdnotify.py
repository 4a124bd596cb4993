"""systemd's service notifications (sd_notify(3)), spoken directly: one datagram per message
to $NOTIFY_SOCKET, no libsystemd needed.

With `Type=notify` a daemon is "started" only once it says READY=1 (after its listeners
are up), so units ordered after it start when it can serve. With `WatchdogSec=`, systemd
restarts a daemon that stops sending WATCHDOG=1: the pings come from the event loop itself,
so a blocked loop (not only a dead process) is caught. Outside systemd both do nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1\\nSTATUS=serving") if systemd asked for notifications."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half the unit's WatchdogSec, when the watchdog is on for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2e6, 0.1)
    except ValueError:
        return None


async def watchdog() -> None:
    """Ping systemd's watchdog from the event loop until cancelled (returns at once if it is off)."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def ready(status: str) -> asyncio.Task[None]:
    """READY=1 with a status line; returns the watchdog task (cancel it when stopping)."""
    notify(f"READY=1\nSTATUS={status}")
    return asyncio.create_task(watchdog(), name="systemd-watchdog")


async def stopping(task: asyncio.Task[None]) -> None:
    notify("STOPPING=1")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
