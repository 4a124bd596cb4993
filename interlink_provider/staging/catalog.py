"""Rucio as the catalog: DIDs to files and replicas, output registration.

Blocking (rucio-clients): call these from a worker thread. rucio-clients reads its
settings from a file, so the catalog writes a private one (mode 0600, it may hold a
password) and points RUCIO_CONFIG at it before the client is built. Rucio's
interactive login fallback must never be reached: any failure to build the client
becomes a StagingError with a message instead of a prompt on stdin.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..auth.exchange import write_private
from .config import RucioConfig
from .errors import StagingError
from .refs import FileRef


def _token_file_name(config: RucioConfig) -> str:
    """One cached Rucio token per server and identity: never present one server's token to another."""
    who = "\0".join(
        (config.auth_host or config.host, config.vo, config.account, config.auth_type, config.username or "")
    )
    return f"rucio-auth-token-{hashlib.sha256(who.encode()).hexdigest()[:16]}"


def _client_config(config: RucioConfig, state_dir: Path) -> Path:
    password = Path(config.password_file).read_text().strip() if config.password_file else ""
    lines = [
        "[client]",
        f"rucio_host = {config.host}",
        f"auth_host = {config.auth_host or config.host}",
        f"auth_type = {config.auth_type}",
        f"account = {config.account}",
        f"vo = {config.vo}",
        f"request_retries = {config.request_retries}",
        f"auth_token_file_path = {state_dir / _token_file_name(config)}",
    ]
    if config.username:
        lines.append(f"username = {config.username}")
    if password:
        lines.append(f"password = {password}")
    if config.ca_cert:
        lines.append(f"ca_cert = {config.ca_cert}")
    path = state_dir / "rucio-client.cfg"
    write_private(path, "\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Replica:
    rse: str
    pfn: str
    domain: str  # "lan": at this site (Rucio's client_location), else "wan"
    priority: int


@dataclass(frozen=True)
class CatalogFile:
    ref: FileRef  # sources ordered best first
    replicas: list[Replica]  # the same order, with where each one lives


class RucioCatalog:
    def __init__(self, config: RucioConfig, state_dir: Path, site: str) -> None:
        self.config = config
        self.site = site
        self.state_dir = state_dir
        self._local = threading.local()
        os.environ["RUCIO_CONFIG"] = str(_client_config(config, state_dir))

    def client(self, token: str | None = None) -> Any:
        """This worker thread's client (the Rucio client is not thread-safe).

        With `token` (a bearer token of the trust network) every request presents it;
        without, the client logs in as configured (userpass for the local site).
        """
        from rucio.common.exception import CannotAuthenticate, RucioException

        slot = "bearer" if token else "login"
        client = getattr(self._local, slot, None)
        if client is None:
            try:
                client = _BearerClient.build(self.config, token) if token else _login_client()
            except CannotAuthenticate as exc:
                raise StagingError(
                    f"Rucio at {self.config.host} refused the login of account "
                    f"{self.config.account} ({self.config.auth_type}): {exc}"
                ) from exc
            except (RucioException, EOFError, OSError) as exc:
                raise StagingError(f"cannot log in to Rucio at {self.config.host}: {exc}", transient=True) from exc
            setattr(self._local, slot, client)
        if token:
            client.present(token)
        return client

    def resolve(self, scope: str, name: str, token: str | None = None) -> list[FileRef]:
        """All files of a DID (file, dataset or container) with their replicas, local first."""
        return [entry.ref for entry in self.describe(scope, name, token)]

    def describe(self, scope: str, name: str, token: str | None = None) -> list[CatalogFile]:
        """Like resolve, keeping which RSE serves each replica and whether it is site-local."""
        from rucio.common.exception import DataIdentifierNotFound, RucioException

        client = self.client(token)
        try:
            client.get_did(scope, name)
        except DataIdentifierNotFound as exc:
            raise StagingError(f"DID {scope}:{name} does not exist") from exc
        except RucioException as exc:
            raise StagingError(f"Rucio: {exc}", transient=_transient(exc)) from exc
        try:
            found = list(
                client.list_replicas(
                    [{"scope": scope, "name": name}], schemes=["root"], client_location={"site": self.site}
                )
            )
        except RucioException as exc:
            raise StagingError(
                f"Rucio cannot list replicas of {scope}:{name}: {exc}", transient=_transient(exc)
            ) from exc
        files = []
        for entry in found:
            pfns = entry.get("pfns") or {}
            replicas = sorted(
                (
                    Replica(info.get("rse", "?"), pfn, info.get("domain") or "wan", info.get("priority", 99))
                    for pfn, info in pfns.items()
                ),
                key=lambda r: (r.domain != "lan", r.priority),
            )
            if not replicas:
                raise StagingError(f"{entry['scope']}:{entry['name']} has no readable root:// replica")
            ref = FileRef(
                entry["scope"],
                entry["name"],
                entry.get("bytes"),
                (entry.get("adler32") or "").lower() or None,
                tuple(r.pfn for r in replicas),
            )
            files.append(CatalogFile(ref, replicas))
        if not files:
            raise StagingError(f"DID {scope}:{name} has no files")
        return files

    def pfn(self, rse: str, scope: str, name: str, token: str | None = None) -> str:
        """Where a new file goes on an RSE (deterministic RSE, root:// protocol)."""
        from rucio.common.exception import RucioException
        from rucio.rse import rsemanager

        try:
            info = self.client(token).get_rse(rse)  # what rsemanager.get_rse_info asks, with our client
            # rucio-clients carries no types: lfns2pfns answers {"scope:name": pfn}
            pfns: dict[str, str] = rsemanager.lfns2pfns(
                info, [{"scope": scope, "name": name}], operation="write", scheme="root"
            )
            return pfns[f"{scope}:{name}"]
        except RucioException as exc:
            raise StagingError(f"RSE {rse} has no writable root:// protocol: {exc}") from exc

    def register(
        self,
        rse: str,
        files: list[FileRef],
        dataset: tuple[str, str] | None,
        lifetime: int | None,
        token: str | None = None,
    ) -> None:
        """Replicas, the dataset that holds them, and a rule that keeps them (idempotent).

        Without a dataset each file gets its own rule.
        """
        from rucio.common.exception import DataIdentifierAlreadyExists, Duplicate, DuplicateRule, RucioException

        client = self.client(token)
        try:
            for f in files:  # one by one: a replica registered before a crash must not stop the others
                try:
                    client.add_replica(rse, f.scope, f.name, f.size, f.adler32)
                except Duplicate:
                    pass
            if dataset is not None:
                try:
                    client.add_dataset(dataset[0], dataset[1], lifetime=lifetime)
                except DataIdentifierAlreadyExists:
                    pass
                existing = {f["name"] for f in client.list_files(*dataset)}
                new = [{"scope": f.scope, "name": f.name} for f in files if f.name not in existing]
                if new:
                    client.attach_dids(dataset[0], dataset[1], new)
            kept = (
                [{"scope": dataset[0], "name": dataset[1]}]
                if dataset
                else [{"scope": f.scope, "name": f.name} for f in files]
            )
            for did in kept:
                try:
                    client.add_replication_rule([did], 1, rse, lifetime=lifetime)
                except (DuplicateRule, Duplicate):
                    pass
        except RucioException as exc:
            where = f"{dataset[0]}:{dataset[1]}" if dataset else rse
            raise StagingError(f"registering outputs in {where} failed: {exc}", transient=_transient(exc)) from exc

    def existing_adler32(self, scope: str, name: str, token: str | None = None) -> str | None:
        """The catalogued checksum of a DID that already exists, or None."""
        from rucio.common.exception import DataIdentifierNotFound, RucioException

        try:
            meta = self.client(token).get_metadata(scope, name)
        except DataIdentifierNotFound:
            return None
        except RucioException as exc:
            raise StagingError(f"Rucio: {exc}", transient=_transient(exc)) from exc
        return (meta.get("adler32") or "").lower() or "unknown"

    def replicas(self, scope: str, name: str, token: str | None = None) -> list[dict[str, Any]]:
        return list(self.client(token).list_replicas([{"scope": scope, "name": name}], schemes=["root"]))


def _transient(exc: Exception) -> bool:
    """Refusals (bad credentials, no permission) do not get better by retrying."""
    from rucio.common.exception import AccessDenied, CannotAuthenticate

    return not isinstance(exc, (AccessDenied, CannotAuthenticate))


def _login_client() -> Any:
    from rucio.client import Client

    return Client()


class _BearerClient:
    """A Rucio client that presents a given bearer token and never logs in by itself.

    rucio-clients reads tokens from files or runs an interactive OIDC login when the
    server says 401; both are replaced: the token is set per request, and a refusal
    is an error with a message.
    """

    @staticmethod
    def build(config: RucioConfig, token: str) -> Any:
        from rucio.client import Client
        from rucio.common.exception import CannotAuthenticate

        class BearerClient(Client):  # type: ignore[misc]  # rucio-clients carries no types
            def _BaseClient__read_token(self) -> bool:
                self.present(token)
                return True

            def _BaseClient__get_token(self) -> None:
                raise CannotAuthenticate("Rucio refused the bearer token (is its identity mapped to an account?)")

            def _BaseClient__write_token(self) -> None:
                pass

            def present(self, bearer: str) -> None:
                self.auth_token = bearer
                self.headers["X-Rucio-Auth-Token"] = bearer

        return BearerClient(
            rucio_host=config.host,
            auth_host=config.auth_host or config.host,
            account=config.account,
            auth_type="oidc",
            vo=config.vo,
            ca_cert=config.ca_cert,
        )
