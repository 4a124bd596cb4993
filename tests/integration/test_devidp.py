"""The devidp is a development IdP and behaves like one: HTTPS on loopback unless started with
--insecure-dev, a password for every user, device codes that expire (and are forgotten), and
tokens marked as development tokens. Real devidp processes; no local site needed."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yaml

from interlink_provider.auth import errors
from interlink_provider.auth.exchange import OAuthClient
from interlink_provider.devidp.config import load
from tests.idp import SITE_AUDIENCE, IdP, free_port, run_devidp
from tests.idp import test_config as idp_config  # not a test

CLI_SCOPE = "compute.read offline_access"
DEVELOPMENT_CLAIM = "ilp_dev"  # the documented claim of development tokens


def write_config(tmp_path: Path, **overrides: Any) -> Path:
    path = tmp_path / "idp.yaml"
    config = {**idp_config(free_port(), tmp_path / "state", tls=True), **overrides}
    path.write_text(yaml.safe_dump(config))
    return path


def devidp(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Run the devidp expecting it to stop by itself (a refusal); a devidp that serves times out.
    As the devidp's account, as the local site runs it."""
    return run_devidp(config, *flags)


def one_error_line(stderr: str) -> str:
    """The only line the refused devidp wrote: a JSON log record at ERROR level, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    record = json.loads(lines[0])
    assert record["level"] == "ERROR" and "exception" not in record, record
    return str(record["message"])


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


# ------------------------------------------------------------------ listeners


def test_it_refuses_an_address_other_than_loopback_without_the_flag(tmp_path):
    result = devidp(write_config(tmp_path, host="0.0.0.0"))
    assert result.returncode == 2
    message = one_error_line(result.stderr)
    assert "refusing to listen on 0.0.0.0:" in message and "not a loopback address" in message
    assert "set host to a loopback address" in message and "--insecure-dev" in message
    assert not (tmp_path / "state").exists()  # refused before it made keys or certificates


def test_it_refuses_plain_http_even_on_loopback_without_the_flag(tmp_path):
    config = write_config(tmp_path, tls={"enabled": False})
    result = devidp(config)
    assert result.returncode == 2
    message = one_error_line(result.stderr)
    assert message.startswith("devidp: refusing to serve plain HTTP on 127.0.0.1:")
    assert "give it tls" in message and "--insecure-dev" in message
    both = devidp(write_config(tmp_path, host="0.0.0.0", tls={"enabled": False}))
    assert both.returncode == 2 and "plain HTTP on 0.0.0.0" in one_error_line(both.stderr)


def test_insecure_dev_serves_plain_http_and_says_so_loudly(tmp_path):
    idp = IdP(tmp_path, tls=False, insecure_dev=True).start()
    try:
        records = [json.loads(line) for line in idp.log_path.read_text().splitlines() if line.startswith("{")]
    finally:
        idp.stop()
    warnings = [r["message"] for r in records if r["level"] == "WARNING"]
    assert any("--insecure-dev" in m and "plain HTTP" in m and DEVELOPMENT_CLAIM in m for m in warnings), records


def test_without_the_flag_a_plain_http_test_idp_does_not_start(tmp_path):
    idp = IdP(tmp_path, tls=False)
    try:
        with pytest.raises(RuntimeError, match="refusing to serve plain HTTP"):
            idp.start()
    finally:
        idp.stop()  # should it have started


# ------------------------------------------------------------------ users


@pytest.mark.parametrize("user", [{"sub": "dave-sub"}, {"sub": "dave-sub", "password": ""}])
def test_a_user_without_a_password_is_refused_when_the_config_is_loaded(tmp_path, user):
    config = write_config(tmp_path, users={"dave": user})
    with pytest.raises(ValueError, match="needs a non-empty password"):
        load(config)
    result = devidp(config)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "invalid configuration" in result.stderr and "users.dave" in result.stderr
    assert "needs a non-empty password" in result.stderr


# ------------------------------------------------------------------ device codes


async def approve(verification_uri: str, code: str, password: str = "carol-pw") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        form = {"user_code": code, "username": "carol", "password": password}
        async with session.post(verification_uri, data=form, ssl=False) as response:
            return response.status, await response.text()


@pytest.fixture
def short_codes(tmp_path):
    """A devidp whose device codes live one second."""
    instance = IdP(tmp_path / "idp", device_code_lifetime=1, device_poll_interval=0).start()
    yield instance
    instance.stop()


async def test_an_expired_device_code_is_refused_when_polled_and_when_approved(short_codes):
    cli = OAuthClient(short_codes.issuer, "cli", None, ca_file=short_codes.ca_file)
    try:
        start = await cli.device_authorization(CLI_SCOPE)
        assert start["expires_in"] == 1
        await asyncio.sleep(1.3)
        with pytest.raises(errors.ExchangeRefused) as polled:
            await cli.device_token(start["device_code"])
        assert polled.value.oauth_error == "expired_token"  # RFC 8628 3.5
        status, page = await approve(start["verification_uri"], start["user_code"])
        assert status == 403 and "expired" in page
        with pytest.raises(errors.ExchangeRefused) as still:  # the refused approval granted nothing
            await cli.device_token(start["device_code"])
        assert still.value.oauth_error == "expired_token"
        await asyncio.sleep(1.2)  # expired for longer than a lifetime: forgotten, memory does not grow
        with pytest.raises(errors.ExchangeRefused) as forgotten:
            await cli.device_token(start["device_code"])
        assert forgotten.value.oauth_error == "invalid_request"
    finally:
        await cli.close()


async def test_a_device_code_in_time_gives_one_token(idp):
    cli = OAuthClient(idp.issuer, "cli", None, ca_file=idp.ca_file)
    try:
        start = await cli.device_authorization(CLI_SCOPE)
        assert (await approve(start["verification_uri"], start["user_code"], "wrong"))[0] == 403
        status, page = await approve(start["verification_uri"], start["user_code"])
        assert status == 200 and "development IdP" in page
        token = await cli.device_token(start["device_code"])
        assert claims(token.access_token)["sub"] == "carol-sub"
        with pytest.raises(errors.ExchangeRefused) as again:
            await cli.device_token(start["device_code"])
        assert again.value.oauth_error == "invalid_request"
    finally:
        await cli.close()


# ------------------------------------------------------------------ tokens


async def test_every_token_is_marked_as_a_development_token(idp):
    alice = OAuthClient(idp.issuer, "alice", "alice-secret", ca_file=idp.ca_file)
    gateway = OAuthClient(idp.issuer, "gateway", "gateway-secret", ca_file=idp.ca_file)
    try:
        own = await alice.client_credentials("compute.read", SITE_AUDIENCE)
        exchanged = await gateway.exchange(own.access_token, SITE_AUDIENCE, "compute.read offline_access")
        refreshed = await gateway.refresh(exchanged.refresh_token)
    finally:
        await alice.close()
        await gateway.close()
    for token in (own, exchanged, refreshed):
        assert claims(token.access_token)[DEVELOPMENT_CLAIM] is True
