"""Which listeners the gateway and the sidecar accept at load, and how a unix socket is created:
never with wider permissions than configured, whatever the process umask."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import ValidationError

from interlink_provider.gateway.config import GatewayListen
from interlink_provider.listeners import is_loopback, unix_site
from sidecars.core.adapters.settings import ListenConfig


def gateway_listen(**listen) -> GatewayListen:
    return GatewayListen.model_validate(listen)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "gateway.example.org"])
def test_a_gateway_tcp_listener_off_loopback_without_authentication_is_refused(host):
    with pytest.raises(ValidationError) as refused:
        gateway_listen(host=host, port=4000)
    message = str(refused.value)
    assert f"listen.host {host} is not loopback" in message
    assert "listen.client_ca" in message and "listen.token_file" in message  # what to add


def test_the_gateway_needs_tls_off_loopback_unless_plain_tcp_is_asked_for_by_name():
    with pytest.raises(ValidationError, match="insecure_plain_tcp: true"):
        gateway_listen(host="0.0.0.0", port=4000, token_file="/etc/token")
    # even the override never makes an anonymous listener acceptable
    with pytest.raises(ValidationError, match="no authentication"):
        gateway_listen(host="0.0.0.0", port=4000, insecure_plain_tcp=True)
    assert gateway_listen(host="0.0.0.0", port=4000, token_file="/etc/token", insecure_plain_tcp=True)


def test_gateway_listeners_that_are_accepted():
    assert gateway_listen(host="127.0.0.1", port=4000)  # loopback: the VK beside it
    assert gateway_listen(host="localhost", port=4000)
    assert gateway_listen(socket="/run/gw.sock")
    tls = {"tls_cert": "/etc/gw.pem", "tls_key": "/etc/gw.key"}
    assert gateway_listen(host="0.0.0.0", port=4000, client_ca="/etc/vk-ca.pem", **tls)
    assert gateway_listen(host="0.0.0.0", port=4000, token_file="/etc/token", **tls)


def test_gateway_tls_settings_that_cannot_work_are_refused():
    with pytest.raises(ValidationError, match="go together"):
        gateway_listen(host="127.0.0.1", port=4000, tls_cert="/etc/gw.pem")
    with pytest.raises(ValidationError, match="client_ca needs"):
        gateway_listen(host="127.0.0.1", port=4000, client_ca="/etc/ca.pem")
    with pytest.raises(ValidationError, match="socket_mode"):  # a token on a socket-only gateway protects nothing
        gateway_listen(socket="/run/gw.sock", token_file="/etc/token")


def test_a_sidecar_plain_tcp_listener_off_loopback_needs_tls_or_the_named_override():
    with pytest.raises(ValidationError) as refused:
        ListenConfig.model_validate({"host": "0.0.0.0", "port": 4480})
    assert "listen.tls_cert" in str(refused.value) and "insecure_plain_tcp: true" in str(refused.value)
    assert ListenConfig.model_validate({"host": "0.0.0.0", "port": 4480, "insecure_plain_tcp": True})
    assert ListenConfig.model_validate({"host": "0.0.0.0", "port": 4480, "tls_cert": "/c.pem", "tls_key": "/c.key"})
    assert ListenConfig.model_validate({"host": "127.0.0.1", "port": 4480})


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost", "LOCALHOST"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "", "192.168.1.1", "example.org", "localhost.example.org"]))


def test_a_unix_socket_is_never_wider_than_its_mode_even_under_umask_000(tmp_path, monkeypatch):
    """Every mode the socket file has between its bind and the daemon serving on it."""
    path = str(tmp_path / "api.sock")
    seen: list[int] = []
    real_chmod = os.chmod

    def chmod(target, mode, *args, **kwargs):  # the file as it was bound, before any chmod
        if str(target) == path:
            seen.append(stat.S_IMODE(os.stat(path).st_mode))
        return real_chmod(target, mode, *args, **kwargs)

    monkeypatch.setattr(os, "chmod", chmod)
    previous = os.umask(0)
    try:

        async def serve() -> int:
            runner = web.AppRunner(web.Application())
            await runner.setup()
            try:
                await unix_site(runner, path, 0o660)
                return stat.S_IMODE(os.stat(path).st_mode)
            finally:
                await runner.cleanup()

        final = asyncio.run(serve())
        assert os.umask(0) == 0  # the process umask is as it was
    finally:
        os.umask(previous)
    assert final == 0o660
    assert all(mode & ~0o660 == 0 for mode in seen), [oct(m) for m in seen]


def test_a_stale_socket_is_replaced(tmp_path):
    path = tmp_path / "api.sock"
    path.write_text("left by a killed daemon")

    async def serve() -> None:
        runner = web.AppRunner(web.Application())
        await runner.setup()
        try:
            assert await unix_site(runner, str(path), 0o600) == f"unix://{path}"
        finally:
            await runner.cleanup()

    asyncio.run(serve())
    assert stat.S_ISSOCK(Path(path).lstat().st_mode)


def test_doctor_checks_the_gateway_listeners_certificate_and_token_file(tmp_path):
    from interlink_provider.cli.doctor_gateway import listener
    from interlink_provider.devidp.tls import ensure_certificates
    from interlink_provider.gateway.config import GatewayConfig

    _, cert, key = ensure_certificates(tmp_path / "tls", "127.0.0.1")
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123")
    token.chmod(0o644)
    listen = {"host": "0.0.0.0", "port": 4000, "tls_cert": str(cert), "tls_key": str(key), "token_file": str(token)}
    config = GatewayConfig.model_validate(
        {
            "listen": listen,
            "identity": {"issuer": "https://idp/", "client_id": "g", "client_secret_file": "/s"},
            "sites": [{"name": "a", "target": "a:1", "audience": "a"}],
        }
    )
    verdicts = {check.name: (check.verdict, check.detail) for check in listener(config)}
    assert verdicts["interLink API TLS"][0] == "ok"
    assert verdicts["interLink API token"][0] == "FAIL" and "chmod 600" in verdicts["interLink API token"][1]
    token.chmod(0o440)  # a Kubernetes Secret volume with an fsGroup
    assert {check.verdict for check in listener(config)} == {"ok"}


def test_the_gateway_token_is_compared_exactly_and_follows_a_rotated_file(tmp_path):
    from interlink_provider.gateway.access import SharedToken

    path = tmp_path / "token"
    path.write_text("first-token-0123456789\n")
    path.chmod(0o600)
    token = SharedToken(str(path))
    assert token.admits("Bearer first-token-0123456789") and token.admits("bearer first-token-0123456789")
    assert not any(map(token.admits, [None, "", "first-token-0123456789", "Bearer first-token-012345678", "Basic x"]))
    replacement = tmp_path / "token.new"  # as a Kubernetes Secret update swaps the file
    replacement.write_text("second-token-0123456789")
    replacement.chmod(0o600)
    replacement.rename(path)
    assert token.admits("Bearer second-token-0123456789") and not token.admits("Bearer first-token-0123456789")
    path.chmod(0o644)  # unusable now: nothing is admitted until it is fixed
    assert not token.admits("Bearer second-token-0123456789")
    path.chmod(0o600)
    assert token.admits("Bearer second-token-0123456789")
