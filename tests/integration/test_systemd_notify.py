"""The sidecar under systemd's notification protocol, with a real datagram socket standing
where systemd's would: READY=1 once it serves, watchdog pings from its event loop, STOPPING=1."""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import Sidecar

pytestmark = pytest.mark.slurm


def received(sock: socket.socket, seconds: float) -> list[str]:
    messages, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
    return messages


def test_the_sidecar_says_ready_pings_the_watchdog_and_says_stopping(local_site, tmp_path):
    path = Path(tempfile.mkdtemp(prefix="ilp-notify-")) / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        # as systemd's own (/run/systemd/notify): any service's account may send to it
        path.parent.chmod(0o711)
        path.chmod(0o777)
        sock.settimeout(0.1)
        sidecar = Sidecar(tmp_path / "s", {"site_name": "notified"})
        sidecar.start(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        try:
            first = received(sock, 1.5)
        finally:
            sidecar.stop()
        last = received(sock, 0.5)
    assert first[0] == "READY=1\nSTATUS=site notified: 0 pods"  # ready only once it serves
    assert first[1:].count("WATCHDOG=1") >= 4  # every 0.2 s (half the watchdog interval)
    assert "STOPPING=1" in last
