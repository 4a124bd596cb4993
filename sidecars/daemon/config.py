"""The site sidecar's configuration: one YAML file, validated, every key documented.

Unknown keys are an error (a typo must not silently fall back to a default).
Environment variables override keys: `ILP__listen__port=4001` sets listen.port.
Paths may name environment variables ($ILP_SITE_DIR/pods); relative paths are
relative to the config file's directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from interlink_provider.paths import expand_variables
from sidecars.core.adapters.settings import AuthConfig, GrpcConfig, ListenConfig
from sidecars.core.domain.settings import ServiceSettings
from sidecars.core.kits.ssh import SshConfig
from sidecars.core.kits.strict import Strict
from sidecars.htcondor.backend import HTCondorConfig
from sidecars.slurm.backend import SlurmConfig
from sidecars.slurm.restd import SlurmRestdConfig

ENV_PREFIX = "ILP__"


class TransportConfig(Strict):
    """How the sidecar reaches the site: it runs there (`local`), over SSH to a login node, or
    through Slurm's REST API (`slurmrestd`, with the pods' directories on a shared filesystem)."""

    kind: Literal["local", "ssh", "slurmrestd"] = Field(
        "local",
        description="`local`: commands and files on this machine; `ssh`: over SSH to a login node "
        "(`transport.ssh`); `slurmrestd`: Slurm's REST API (`transport.slurmrestd`, backend slurm only)",
    )
    ssh: SshConfig | None = Field(None, description="the login node, for kind ssh")
    slurmrestd: SlurmRestdConfig | None = Field(None, description="Slurm's REST API, for kind slurmrestd")

    @model_validator(mode="after")
    def _kind_needs_its_section(self) -> TransportConfig:
        if self.kind == "ssh" and self.ssh is None:
            raise ValueError("transport kind ssh needs a `transport.ssh` section (host, user, key_file, known_hosts)")
        if self.kind == "slurmrestd" and self.slurmrestd is None:
            raise ValueError(
                "transport kind slurmrestd needs a `transport.slurmrestd` section (jwt_key_file or "
                "token_file; url defaults to http://127.0.0.1:6820)"
            )
        return self


class AgentsConfig(Strict):
    """Per-account agents: the sidecar runs unprivileged (a service account) and acts on each pod
    only as the pod's own account, through that account's agent (`interlink-provider site agent`),
    started with `sudo -n -u ACCOUNT` (one sudoers rule; docs/admin-guide.md)."""

    executable: str = Field(
        "", description="the interlink-provider the sudoers rule names (default: the one running the sidecar)"
    )
    idle_seconds: float = Field(300, gt=0, description="an account's agent exits after this long without a request")


class SiteConfig(ServiceSettings):
    """A whole sidecar: the service core's settings, its listeners and authentication, the batch
    system and how it is reached."""

    listen: ListenConfig = Field(
        description="where the interLink plugin API (REST) is served: a unix socket, or host and port"
    )
    backend: Literal["slurm", "htcondor"] = Field("slurm", description="the site's batch system")
    slurm: SlurmConfig = Field(
        SlurmConfig(),
        description="the Slurm backend (commands, partition, rate limits, sbatch flags), for backend slurm",
    )
    htcondor: HTCondorConfig = Field(HTCondorConfig(), description="the HTCondor backend, for backend htcondor")
    transport: TransportConfig = TransportConfig()
    auth: AuthConfig = AuthConfig()
    grpc: GrpcConfig | None = Field(None, description="the gRPC API beside REST (none: REST only)")
    agents: AgentsConfig | None = Field(
        None,
        description="act on each pod only as its own account, through per-account agents started with sudo "
        "(multi-account mode without a root sidecar); none: the sidecar acts itself (single-account mode, or a "
        "root sidecar handing directories over)",
    )

    @model_validator(mode="after")
    def _someone_can_get_in(self) -> SiteConfig:
        if self.listen.host and not self.auth.token.issuers:
            raise ValueError("auth.token.issuers is empty: a TCP listener needs trusted issuers")
        if self.grpc is not None and not self.auth.token.issuers:
            raise ValueError("auth.token.issuers is empty: the gRPC API needs trusted issuers")
        if not self.auth.token.issuers and not self.auth.unix_socket_without_token:
            raise ValueError(
                "no trusted issuers and auth.unix_socket_without_token is false: nobody could use this sidecar"
            )
        return self

    @model_validator(mode="after")
    def _transport_fits_the_backend(self) -> SiteConfig:
        if self.backend == "htcondor" and self.transport.kind == "slurmrestd":
            raise ValueError("transport kind slurmrestd is Slurm's REST API: HTCondor runs over local or ssh")
        if self.agents is not None and self.transport.kind == "ssh":
            raise ValueError("agents run on the sidecar's own machine: over SSH the login node's accounts are used")
        if self.staging is not None and self.transport.kind == "ssh":
            raise ValueError(
                "staging needs the pods' directories on the sidecar's own filesystem (it links staged files "
                "into them and reads outputs from them): use transport kind local or slurmrestd, or no staging"
            )
        return self


def _apply_env_overrides(raw: dict[str, Any], environ: dict[str, str]) -> dict[tuple[str, ...], str]:
    """Set each `ILP__a__b` variable's YAML value at a.b of `raw`; which variable set which path.

    A section's variable comes before its keys' (sorted: ILP__listen before ILP__listen__port), so a key
    under a section that a variable, or the file, made a scalar is refused by name, not overwritten."""
    sources: dict[tuple[str, ...], str] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        path = tuple(name[len(ENV_PREFIX) :].split("__"))
        node = raw
        for depth, key in enumerate(path[:-1], start=1):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                setter = sources.get(path[:depth])
                origin = f"set by {setter}" if setter else "in the file"
                raise ValueError(f"{name}: {'.'.join(path[:depth])} is {child!r} ({origin}), not a section")
            node = child
        try:
            node[path[-1]] = yaml.safe_load(environ[name])
        except yaml.YAMLError as exc:
            raise ValueError(f"{name}: not a YAML value: {environ[name]!r}") from exc
        sources[path] = name
    return sources


def _blamed(exc: ValidationError, sources: dict[tuple[str, ...], str]) -> ValidationError:
    """`exc` with each error set by an ILP__ variable naming it: `listen.port (set by ILP__listen__port)`."""
    if not sources:
        return exc
    errors: list[Any] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        keys = tuple(str(part) for part in loc)  # a list index as its variable names it: ILP__a__0
        setter = next((sources[keys[:n]] for n in range(len(keys), 0, -1) if keys[:n] in sources), None)
        if setter and loc:
            loc = (*loc[:-1], f"{loc[-1]} (set by {setter})")
        detail = {"type": error["type"], "loc": loc, "input": error["input"]}
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        errors.append(detail)
    try:
        return ValidationError.from_exception_data(exc.title, errors)
    except (KeyError, TypeError, ValueError):  # an error type pydantic cannot rebuild: unannotated
        return exc


def _resolve(base: Path, value: str | None, environ: dict[str, str]) -> str | None:
    """Paths may use ~ and $VARIABLES; relative ones start at the config file."""
    if value is None:
        return None
    path = Path(os.path.expanduser(expand_variables(value, environ)))
    return str(path if path.is_absolute() else (base / path).resolve())


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> SiteConfig:
    file = Path(path)
    raw = yaml.safe_load(file.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: the configuration must be a mapping")
    env = dict(os.environ if environ is None else environ)
    sources = _apply_env_overrides(raw, env)
    try:
        config = SiteConfig.model_validate(raw)
    except ValidationError as exc:
        raise _blamed(exc, sources) from None
    base = file.parent.resolve()
    config.state_dir = _resolve(base, config.state_dir, env) or config.state_dir
    config.pods_root = _resolve(base, config.pods_root, env) or config.pods_root
    for name in ("socket", "tls_cert", "tls_key", "client_ca"):
        setattr(config.listen, name, _resolve(base, getattr(config.listen, name), env))
    if config.transport.ssh is not None:  # local files of the sidecar (pods_root is the site's)
        ssh = config.transport.ssh
        ssh.key_file = _resolve(base, ssh.key_file, env) or ssh.key_file
        ssh.known_hosts = _resolve(base, ssh.known_hosts, env) or ssh.known_hosts
    for name in ("token_directory", "scitoken_file"):
        setattr(config.htcondor, name, _resolve(base, getattr(config.htcondor, name), env))
    if config.transport.slurmrestd is not None:
        restd = config.transport.slurmrestd
        for name in ("jwt_key_file", "token_file", "ca_file"):
            setattr(restd, name, _resolve(base, getattr(restd, name), env))
    config.render.template_dir = _resolve(base, config.render.template_dir, env)
    if config.grpc is not None:
        for name in ("tls_cert", "tls_key", "client_ca"):
            value = getattr(config.grpc, name)
            setattr(config.grpc, name, _resolve(base, value, env) or value)
    for issuer in config.auth.token.issuers:
        issuer.ca_file = _resolve(base, issuer.ca_file, env)
    if config.staging is not None:
        config.staging.cache_dir = _resolve(base, config.staging.cache_dir, env) or config.staging.cache_dir
        if config.staging.rucio is not None:
            config.staging.rucio.password_file = _resolve(base, config.staging.rucio.password_file, env)
            config.staging.rucio.ca_cert = _resolve(base, config.staging.rucio.ca_cert, env)
        tokens = config.staging.tokens
        if tokens is not None:
            tokens.client_secret_file = _resolve(base, tokens.client_secret_file, env) or tokens.client_secret_file
            tokens.ca_file = _resolve(base, tokens.ca_file, env)
            tokens.x509_cert_dir = _resolve(base, tokens.x509_cert_dir, env)
    return config
