"""sd_notify without libsystemd: messages reach the socket systemd names (abstract ones too),
and the watchdog is on only for the process systemd meant."""

from __future__ import annotations

import os
import socket

from interlink_provider import sdnotify


def test_nothing_is_sent_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


def test_messages_reach_an_abstract_socket(monkeypatch):
    name = f"ilp-sdnotify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1\nSTATUS=ok") is True
        assert sock.recv(100) == b"READY=1\nSTATUS=ok"


def test_the_watchdog_is_for_the_named_process_only(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    monkeypatch.delenv("WATCHDOG_PID")
    assert sdnotify.watchdog_interval() is None
