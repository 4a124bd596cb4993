"""Two halves of the federation for tests: sidecars serving gRPC, and the gateway in front of them."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from interlink_provider.cli.client import SidecarClient, SidecarError
from interlink_provider.devidp.tls import ensure_certificates
from interlink_provider.pods import manifest
from tests.helpers import (
    GATEWAY_ACCOUNT,
    Sidecar,
    account_environment,
    account_prefix,
    account_workdir,
    ensure_site_accounts,
    environment_for_account,
    readable_config,
    wait_for,
    write_private,
)
from tests.idp import SITE_AUDIENCE, free_port

LABEL = "site.example.org/name"
GATEWAY_PLACES = frozenset({("identities", "grants_file")})  # what the gateway writes
GATEWAY_APART = frozenset({("listen", "socket")})


def grpc_sidecar(root: Path, idp, client_ca: Path | None = None) -> Sidecar:
    ca, cert, key = ensure_certificates(root / "tls", "127.0.0.1")
    pods_root = Path(tempfile.mkdtemp(prefix="ilp-grpcsite-"))
    pods_root.chmod(0o711)  # the job accounts traverse it
    port = free_port()
    sidecar = Sidecar(
        root / "sidecar",
        {
            "pods_root": str(pods_root / "pods"),
            "grpc": {
                "host": "127.0.0.1",
                "port": port,
                "tls_cert": str(cert),
                "tls_key": str(key),
                "client_ca": str(client_ca) if client_ca else None,
            },
            "auth": {
                "unix_socket_without_token": True,
                "token": {
                    "issuers": [{"issuer": idp.issuer, "ca_file": idp.ca_file, "development": True}],
                    "audiences": [SITE_AUDIENCE],
                },
                "identities": {
                    "rules": [
                        {"issuer": idp.issuer, "sub": "alice", "account": "ilp-alice"},
                        {"issuer": idp.issuer, "sub": "bob", "account": "ilp-bob"},
                        {"issuer": idp.issuer, "sub": "carol-sub", "account": "ilp-bob"},  # a device-flow user
                        {"issuer": idp.issuer, "sub": "gateway", "account": "ilp-alice"},  # the gateway's own identity
                    ]
                },
            },
        },
    ).start()
    sidecar.target, sidecar.ca = f"127.0.0.1:{port}", str(ca)
    sidecar.scratch = pods_root
    return sidecar


def vk_request(pod: dict, manifests: manifest.Manifests | None = None, namespace: str = "gw") -> dict:
    """What the Virtual Kubelet POSTs to the interLink API's /create (PodCreateRequests)."""
    return as_vk_request(manifest.create_request(pod, manifests or manifest.Manifests(), namespace=namespace))


def as_vk_request(retrieved: dict) -> dict:
    """A RetrievedPodData back as the PodCreateRequests it came from (the VK's side of the API server)."""
    containers = retrieved["container"]
    unique = lambda key: list({o["metadata"]["name"]: o for c in containers for o in c[key]}.values())  # noqa: E731
    return {
        "pod": retrieved["pod"],
        "configmaps": unique("configMaps"),
        "secrets": unique("secrets"),
        "projectedvolumesmaps": unique("projectedvolumemaps"),
        "jobscriptURL": "",
    }


class GatewayProcess:
    """A real gateway, running as the local site's gateway account (ilp-gatewayd), as
    deploy/local/federation.sh runs it: its config in a directory of its own, with copies of the
    files it names that it could not read (`readable_config`)."""

    def __init__(self, root: Path, idp, sites: dict[str, Sidecar], extra: dict | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        ensure_site_accounts()
        self.user = GATEWAY_ACCOUNT
        self.workdir = account_workdir(self.user, root)
        secret = root / "gateway-secret"
        secret.write_text("gateway-secret\n")
        secret.chmod(0o600)
        self.socket = f"/tmp/ilp-gw-{os.getpid()}-{abs(hash(str(root))) % 10**6}.sock"
        config = {
            "listen": {"socket": self.socket},
            "identity": {
                "issuer": idp.issuer,
                "ca_file": idp.ca_file,
                "client_id": "gateway",
                "client_secret_file": str(secret),
            },
            "heartbeat_seconds": 1,
            "sites": [
                {
                    "name": name,
                    "target": sidecar.target,
                    "ca_file": sidecar.ca,
                    "audience": SITE_AUDIENCE,
                    "labels": {LABEL: name},
                }
                for name, sidecar in sites.items()
            ],
            **(extra or {}),
        }
        self.config = config
        self.config_path = self.workdir / "gateway.yaml"
        self.write_config()
        self.log_path = root / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        config = readable_config(self.config, self.user, self.workdir, GATEWAY_PLACES, GATEWAY_APART)
        write_private(self.config_path, yaml.safe_dump(config), self.user)

    def start(self, env: dict[str, str] | None = None) -> GatewayProcess:
        self.write_config()
        environment = {**os.environ, **account_environment(self.user), **(env or {})}
        self.process = subprocess.Popen(
            [
                *account_prefix(self.user),
                sys.executable,
                "-m",
                "interlink_provider.cli.main",
                "gateway",
                "--config",
                str(self.config_path),
            ],
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
            env=environment_for_account(environment, self.user, self.workdir),
        )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"


async def wait_until_up(gateway: GatewayProcess, sites: int) -> None:
    async def all_up():
        async with SidecarClient(gateway.address) as client:
            try:
                text = await client.call("GET", "/healthz")
            except (SidecarError, OSError):
                return None
            return text if text.count(": up") == sites else None

    await wait_for(all_up, 30, what="the gateway to reach its sites")
