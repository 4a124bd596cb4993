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
from pydantic import BaseModel, ConfigDict, Field, model_validator

from interlink_provider.auth.mapping import IdentityPolicy
from interlink_provider.auth.validate import ValidationConfig
from interlink_provider.paths import expand_variables
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.runtimes import RuntimeConfig
from interlink_provider.staging.config import StagingConfig
from sidecars.htcondor.backend import HTCondorConfig
from sidecars.slurm.backend import SlurmConfig
from sidecars.slurm.restd import SlurmRestdConfig

from .script import DEFAULT_PASSTHROUGH_ENV, RenderOptions
from .ssh import SshConfig

ENV_PREFIX = "ILP__"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenConfig(Strict):
    socket: str | None = Field(None, description="unix socket path (the interLink default)")
    host: str | None = Field(None, description="TCP address, e.g. 127.0.0.1")
    port: int | None = Field(None, ge=1, le=65535, description="TCP port, together with `host`")
    socket_mode: int = Field(0o660, description="permissions of the unix socket")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest accepted request")

    @model_validator(mode="after")
    def _one_address(self) -> ListenConfig:
        if not self.socket and not (self.host and self.port):
            raise ValueError("listen needs `socket`, or `host` and `port`")
        return self


class GrpcConfig(Strict):
    """The gRPC API (proto/offloader/v1) for the gateway: TLS and a token on every call."""

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(ge=1, le=65535, description="TCP port to listen on")
    tls_cert: str = Field(description="server certificate chain (PEM)")
    tls_key: str = Field(description="its private key (PEM, kept 0600)")
    client_ca: str | None = Field(None, description="CA of client certificates: set it to require mTLS")
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest message either way")
    max_concurrent_rpcs: int = Field(256, ge=1, description="calls served at once; more are refused")


class RenderConfig(Strict):
    passthrough_env: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PASSTHROUGH_ENV),
        description="site variables containers may see (Slurm job id, GPU visibility)",
    )
    allow_pre_exec: bool = Field(True, description="honour slurm-job.vk.io/pre-exec")
    allow_runtime_options: bool = Field(True, description="honour slurm-job.vk.io/<runtime>-options and -mounts")
    template_dir: str | None = Field(None, description="site templates overriding ours")
    restart_backoff_seconds: int = Field(
        10, ge=1, description="first back-off before a container restarts (doubles up to 300)"
    )


class StatusConfig(Strict):
    poll_interval: float = Field(5.0, gt=0, description="seconds between status cycles")
    lost_after: float = Field(120.0, gt=0, description="a job absent from queue and accounting this long is lost")


class TaintConfig(Strict):
    """A Kubernetes taint the sidecar reports for its virtual node."""

    key: str = Field(description="taint key")
    value: str = Field("", description="taint value (empty: none)")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        "NoSchedule", description="what the taint does to pods that do not tolerate it (Kubernetes' effects)"
    )


class AuthConfig(Strict):
    """Who may use this sidecar, and as which local account their jobs run."""

    unix_socket_without_token: bool = Field(
        False,
        description="accept requests without a token on the unix socket (the upstream interLink "
        "API server sends none); TCP always needs a token",
    )
    unix_socket_admin: bool = Field(
        False,
        description="tokenless unix-socket callers are site admins: they may read every pod (the "
        "socket is the site's own channel; its mode decides who can open it)",
    )
    unix_socket_account: str | None = Field(
        None, description="account for tokenless unix-socket pods (default: the sidecar's own)"
    )
    token: ValidationConfig = Field(
        default_factory=ValidationConfig, description="trusted issuers, our audiences, leeway, key caching"
    )
    identities: IdentityPolicy = Field(
        default_factory=IdentityPolicy, description="identity -> local account rules, scopes per operation"
    )


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


class SiteConfig(Strict):
    site_name: str = Field("local", description="name of this site, shown in status messages")
    listen: ListenConfig = Field(
        description="where the interLink plugin API (REST) is served: a unix socket, or host and port"
    )
    state_dir: str = Field(description="where the sidecar keeps its SQLite database")
    pods_root: str = Field(description="pods' working directories; must be shared with the compute nodes")
    backend: Literal["slurm", "htcondor"] = Field("slurm", description="the site's batch system")
    slurm: SlurmConfig = Field(
        SlurmConfig(),
        description="the Slurm backend (commands, partition, rate limits, sbatch flags), for backend slurm",
    )
    htcondor: HTCondorConfig = Field(HTCondorConfig(), description="the HTCondor backend, for backend htcondor")
    transport: TransportConfig = TransportConfig()
    runtime: RuntimeConfig = Field(
        RuntimeConfig(), description="container runtimes: the default one, those pods may choose, and their settings"
    )
    translation: TranslationPolicy = TranslationPolicy()
    render: RenderConfig = Field(
        RenderConfig(),
        description="how job scripts are written: environment passed to containers, annotations "
        "honoured, templates, restart back-off",
    )
    status: StatusConfig = Field(
        StatusConfig(), description="status cycles: how often the scheduler is asked, when a vanished job is lost"
    )
    job_name_prefix: str = Field(
        "ilp-",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="jobs are named this prefix + the pod's UID; the prefix marks the scheduler's jobs as ours "
        "(see cancel_unknown_jobs)",
    )
    cancel_unknown_jobs: bool = Field(
        False, description="at start-up, cancel jobs named with our prefix that no pod owns"
    )
    retention_seconds: float = Field(3600.0, ge=0, description="how long finished pods stay answerable (status, logs)")
    max_pods: int = Field(10000, ge=1, description="pod capacity reported to the Virtual Kubelet")
    gpu_resource: str = Field("nvidia.com/gpu", description="resource name for the site's GPUs")
    taints: list[TaintConfig] = Field(
        default_factory=list,
        description="taints of the virtual node, sent with its capacity (ping); the Virtual Kubelet applies them",
    )
    max_concurrent_submits: int = Field(8, ge=1, description="submitters working through the queue of new pods")
    create_wait_seconds: float = Field(
        10.0,
        ge=0,
        description="how long a create waits for its job id; then it answers without one "
        "(the status shows the job once submitted)",
    )
    auth: AuthConfig = AuthConfig()
    grpc: GrpcConfig | None = Field(None, description="the gRPC API beside REST (none: REST only)")
    staging: StagingConfig | None = Field(
        None, description="datalake staging (Rucio + XRootD); pods declaring data are refused without it"
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
        return self

    def render_options(self) -> RenderOptions:
        return RenderOptions(
            passthrough_env=tuple(self.render.passthrough_env),
            allow_pre_exec=self.render.allow_pre_exec,
            allow_runtime_options=self.render.allow_runtime_options,
            sandbox_executable=self.runtime.sandbox.executable,
            template_dir=self.render.template_dir,
            restart_backoff_seconds=self.render.restart_backoff_seconds,
        )


def _apply_env_overrides(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].split("__")
        node = raw
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = yaml.safe_load(value)
    return raw


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
    raw = _apply_env_overrides(raw, env)
    config = SiteConfig.model_validate(raw)
    base = file.parent.resolve()
    config.state_dir = _resolve(base, config.state_dir, env) or config.state_dir
    config.pods_root = _resolve(base, config.pods_root, env) or config.pods_root
    config.listen.socket = _resolve(base, config.listen.socket, env)
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
