"""The daemons' listeners as a client on the network meets them, with real processes and a real
HTTP client (no Slurm: the gateway's site and IdP are addresses where nothing answers, so whatever
gets past the listener ends at "no site is up"; the sidecar runs on the HTCondor emulator).

- the gateway refuses, at load, a TCP listener off loopback that nobody authenticates;
- with TLS and a client CA, a client without a certificate never reaches the API;
- with a token check, an anonymous POST /create is 401 (and reaches no site);
- its unix socket never exists with more permissions than configured (under umask 000);
- a sidecar's plain TCP listener off loopback needs `insecure_plain_tcp`, which it warns about;
  its REST API over TLS works end to end with a bearer token."""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from interlink_provider.cli.client import SidecarClient, SidecarError
from interlink_provider.devidp.tls import ensure_certificates
from interlink_provider.pods import manifest
from tests.federation import GATEWAY_APART, GATEWAY_PLACES
from tests.helpers import (
    GATEWAY_ACCOUNT,
    Sidecar,
    account_environment,
    account_prefix,
    account_workdir,
    ensure_site_accounts,
    htcondor_overrides,
    readable_config,
    wait_for,
    write_private,
)
from tests.idp import free_port, token_auth
from tests.integration.test_site_auth import token_for

CLI = [sys.executable, "-m", "interlink_provider.cli.main"]
TOKEN = "f3c1b2a4d5e6f708192a3b4c5d6e7f80"
CREATE = {
    "pod": {
        "metadata": {"name": "p", "namespace": "default", "uid": "6f1e4a52-0000-4000-8000-000000000001"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"]}]},
    },
    "configmaps": [],
    "secrets": [],
    "projectedvolumesmaps": [],
    "jobscriptURL": "",
}


def gateway_argv() -> list[str]:
    """The gateway, run as the local site's gateway account (as deploy/local/federation.sh runs it)."""
    ensure_site_accounts()
    return [*account_prefix(GATEWAY_ACCOUNT), *CLI, "gateway"]


def gateway_socket(tmp_path: Path) -> Path:
    """A socket path the gateway's account may bind (pytest's tmp_path is root's, 0700)."""
    ensure_site_accounts()
    return account_workdir(GATEWAY_ACCOUNT, tmp_path) / "gw.sock"


def gateway_config(root: Path, listen: dict) -> Path:
    """A gateway whose one site and IdP do not answer: only its listener is under test."""
    root.mkdir(parents=True, exist_ok=True)
    secret = root / "client-secret"
    secret.write_text("s")
    secret.chmod(0o600)
    config = {
        "listen": listen,
        "identity": {
            "issuer": f"https://127.0.0.1:{free_port()}/",
            "client_id": "gateway",
            "client_secret_file": str(secret),
        },
        "sites": [{"name": "nowhere", "target": f"127.0.0.1:{free_port()}", "audience": "https://nowhere.test"}],
    }
    path = root / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    # what the gateway's account reads: a copy of the config naming copies of the files it cannot
    ensure_site_accounts()
    workdir = account_workdir(GATEWAY_ACCOUNT, root)
    readable = readable_config(config, GATEWAY_ACCOUNT, workdir, GATEWAY_PLACES, GATEWAY_APART)
    write_private(workdir / "gateway.yaml", yaml.safe_dump(readable), GATEWAY_ACCOUNT)
    return workdir / "gateway.yaml"


class Daemon:
    def __init__(self, argv: list[str], log: Path, umask: int | None = None) -> None:
        self.log_path = log
        self.process = subprocess.Popen(
            argv,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **account_environment(GATEWAY_ACCOUNT), "ILP_LOG_FORMAT": "text"},
            preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
        )

    def wait_tcp(self, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited {self.process.returncode}:\n{self.log()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"no listener on {port}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


@pytest.fixture
def pki(tmp_path):
    """A server certificate for 127.0.0.1 (and its CA); a client certificate from another CA."""
    server_ca, cert, key = ensure_certificates(tmp_path / "server-tls", "127.0.0.1")
    client_ca, client_cert, client_key = ensure_certificates(tmp_path / "client-tls", "vk")
    return {
        "server_ca": str(server_ca),
        "cert": str(cert),
        "key": str(key),
        "client_ca": str(client_ca),
        "client_cert": str(client_cert),
        "client_key": str(client_key),
    }


def start_gateway(tmp_path: Path, listen: dict, umask: int | None = None) -> Daemon:
    config = gateway_config(tmp_path / "gw", listen)
    return Daemon([*gateway_argv(), "--config", str(config)], tmp_path / "gateway.log", umask)


def test_a_gateway_listening_on_all_interfaces_without_authentication_does_not_start(tmp_path):
    config = gateway_config(tmp_path, {"host": "0.0.0.0", "port": free_port()})
    ran = subprocess.run([*gateway_argv(), "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert "listen.host 0.0.0.0 is not loopback" in lines[0]
    assert "listen.client_ca" in lines[0] and "listen.token_file" in lines[0]


async def test_with_a_client_ca_only_clients_with_a_certificate_reach_the_api(tmp_path, pki):
    port = free_port()
    listen = {
        "host": "0.0.0.0",
        "port": port,
        "tls_cert": pki["cert"],
        "tls_key": pki["key"],
        "client_ca": pki["client_ca"],
    }
    gateway = start_gateway(tmp_path, listen)
    try:
        gateway.wait_tcp(port)
        address = f"https://127.0.0.1:{port}"
        async with SidecarClient(address, ca_file=pki["server_ca"], speaks_vk=True) as anonymous:
            with pytest.raises(aiohttp.ClientError):  # the handshake fails: no HTTP request is ever read
                await anonymous.call("POST", "/create", CREATE)
        _, other_cert, other_key = ensure_certificates(tmp_path / "stranger", "vk")
        async with SidecarClient(
            address, ca_file=pki["server_ca"], cert_file=str(other_cert), key_file=str(other_key)
        ) as stranger:
            with pytest.raises(aiohttp.ClientError):  # a certificate, but not from the configured CA
                await stranger.call("GET", "/healthz")
        async with SidecarClient(
            address, ca_file=pki["server_ca"], cert_file=pki["client_cert"], key_file=pki["client_key"]
        ) as vk:
            with pytest.raises(SidecarError) as answered:
                await vk.call("GET", "/healthz")
        assert answered.value.status == 503 and "nowhere: down" in answered.value.message  # the API itself
        async with aiohttp.ClientSession() as plain:  # no TLS at all: the TLS listener does not speak HTTP
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(f"http://127.0.0.1:{port}/healthz") as response:
                    await response.read()
    finally:
        gateway.stop()
    assert "TCP requires: client certificates" in gateway.log()


async def test_with_a_token_check_an_anonymous_create_is_refused_401(tmp_path, pki):
    port = free_port()
    token_file = tmp_path / "vk-token"
    token_file.write_text(TOKEN)  # as the VK's VKTokenFile holds it: the token, no newline
    token_file.chmod(0o600)
    listen = {
        "host": "0.0.0.0",
        "port": port,
        "tls_cert": pki["cert"],
        "tls_key": pki["key"],
        "token_file": str(token_file),
        "socket": str(gateway_socket(tmp_path)),
    }
    gateway = start_gateway(tmp_path, listen)
    try:
        gateway.wait_tcp(port)
        address = f"https://127.0.0.1:{port}"
        for token in (None, "wrong-" + TOKEN, TOKEN[:-1]):
            async with SidecarClient(address, ca_file=pki["server_ca"], token=token, speaks_vk=True) as client:
                with pytest.raises(SidecarError) as refused:
                    await client.call("POST", "/create", CREATE)
            assert refused.value.status == 401, refused.value
        async with aiohttp.ClientSession() as session:  # the header exactly as the Go VK writes it
            context = ssl.create_default_context(cafile=pki["server_ca"])
            headers = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"}
            async with session.post(address + "/create", data=json.dumps(CREATE), headers=headers, ssl=context) as r:
                status, text = r.status, await r.text()
            async with session.get(address + "/metrics", ssl=context) as r:
                metrics_status = r.status
        assert status == 502 and "no token for the site" in text, text  # past the check: its IdP does not answer
        assert metrics_status == 401  # every path over TCP
        async with SidecarClient(f"unix://{gateway_socket(tmp_path)}") as local:  # the socket: guarded by its mode
            with pytest.raises(SidecarError) as on_socket:
                await local.call("GET", "/healthz")
        assert on_socket.value.status == 503
    finally:
        gateway.stop()
    log = gateway.log()
    assert log.count("unauthenticated (no valid Authorization header)") == 4  # three creates and /metrics, each logged
    assert "-> site" not in log  # no pod went anywhere


def test_a_token_file_others_can_read_stops_the_gateway_in_one_line(tmp_path):
    token_file = tmp_path / "vk-token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    config = gateway_config(tmp_path / "gw", {"host": "127.0.0.1", "port": free_port(), "token_file": str(token_file)})
    ran = subprocess.run(
        [*gateway_argv(), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **account_environment(GATEWAY_ACCOUNT), "ILP_LOG_FORMAT": "text"},
    )
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran.stderr
    errors = [line for line in ran.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "chmod 600" in errors[0], ran.stderr


def test_the_gateway_socket_never_has_more_permissions_than_its_mode(tmp_path):
    path = gateway_socket(tmp_path)
    gateway = start_gateway(tmp_path, {"socket": str(path), "socket_mode": 0o660}, umask=0)
    modes: set[int] = set()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and gateway.process.poll() is None:
            try:
                modes.add(stat.S_IMODE(path.lstat().st_mode))
            except FileNotFoundError:
                continue
            if modes and 0o660 in modes:
                break
    finally:
        gateway.stop()
    assert modes and all(mode & ~0o660 == 0 for mode in modes), [oct(m) for m in modes]


def condor_sidecar(tmp_path: Path, listen: dict, auth: dict | None = None) -> Sidecar:
    overrides = {**htcondor_overrides(tmp_path), "staging": None, "listen": listen}
    if auth is not None:
        overrides["auth"] = auth
    return Sidecar(tmp_path / "sidecar", overrides)


def test_a_sidecar_serving_plain_http_off_loopback_needs_the_named_option_and_warns(tmp_path):
    port = free_port()
    refused = condor_sidecar(tmp_path / "a", {"host": "0.0.0.0", "port": port})
    ran = refused.run_once()
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert "listen.host 0.0.0.0 is not loopback" in ran.stderr and "insecure_plain_tcp: true" in ran.stderr

    allowed = condor_sidecar(tmp_path / "b", {"host": "0.0.0.0", "port": port, "insecure_plain_tcp": True})
    allowed.start()
    try:
        assert "WARNING" in allowed.log() and "insecure_plain_tcp" in allowed.log()
    finally:
        allowed.stop()


async def test_a_sidecar_serves_rest_over_tls_end_to_end_with_a_bearer_token(tmp_path, pki, idp):
    port = free_port()
    listen = {"host": "127.0.0.1", "port": port, "tls_cert": pki["cert"], "tls_key": pki["key"]}
    auth = token_auth(idp, [{"sub": "alice", "account": "ilp-alice"}])
    sidecar = condor_sidecar(tmp_path, listen, auth).start()
    try:
        assert f"https://127.0.0.1:{port}" in sidecar.log()
        address = f"https://127.0.0.1:{port}"
        token = await token_for(idp, "alice")
        async with SidecarClient(address, ca_file=pki["server_ca"], token=token) as client:
            pod = {
                "metadata": {"name": "over-tls"},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo over tls"]}],
                },
            }
            request = manifest.create_request(pod, manifest.Manifests(), namespace="tls")
            uid = (await client.create(request))["PodUID"]

            async def done():
                answers = await client.status([{"metadata": {"uid": uid}}])
                states = [c.get("state", {}) for c in (answers[0].get("containers") or [])] if answers else []
                return any("terminated" in s for s in states)

            await wait_for(done, 90, what="the pod to finish")
            log = await client.logs_text({"PodUID": uid, "Namespace": "tls", "ContainerName": "c", "Opts": {}})
            assert log == "over tls\n"
        async with SidecarClient(address, ca_file=pki["server_ca"]) as anonymous:
            with pytest.raises(SidecarError) as refused:
                await anonymous.pods()
        assert refused.value.status == 401
        async with SidecarClient(address) as untrusting:  # the system CAs do not know the site's CA
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await untrusting.pods()
    finally:
        sidecar.stop()


def test_the_health_probe_reaches_a_tls_listener_with_the_token(tmp_path, pki):
    port = free_port()
    token_file = tmp_path / "vk-token"
    token_file.write_text(TOKEN + "\n")  # the gateway's own copy may end with a newline
    token_file.chmod(0o600)
    listen = {"host": "0.0.0.0", "port": port, "tls_cert": pki["cert"], "tls_key": pki["key"]}
    gateway = start_gateway(tmp_path, {**listen, "token_file": str(token_file)})
    try:
        gateway.wait_tcp(port)
        config = str(tmp_path / "gw" / "gateway.yaml")
        probe = subprocess.run([*CLI, "gateway", "--config", config, "--health"], capture_output=True, text=True)
    finally:
        gateway.stop()
    assert probe.returncode == 1 and "nowhere: down" in probe.stderr, probe  # answered (503), not refused
