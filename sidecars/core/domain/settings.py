"""What the service core needs to know about its site: where pods live, how jobs are named,
how often the scheduler is asked, what the virtual node offers, and how job scripts are written.

The daemon's whole config (`sidecars.daemon.config.SiteConfig`) extends these settings with its
listeners, authentication and backend sections; the domain sees only this part.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from interlink_provider.images.settings import ImagesConfig
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.runtimes import RuntimeConfig
from interlink_provider.staging.config import StagingConfig
from sidecars.core.kits.script import DEFAULT_PASSTHROUGH_ENV, RenderOptions
from sidecars.core.kits.strict import Strict


class RenderConfig(Strict):
    passthrough_env: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PASSTHROUGH_ENV),
        description="site variables containers may see (Slurm job id, GPU visibility)",
    )
    allow_pre_exec: bool = Field(
        False,
        description="honour slurm-job.vk.io/pre-exec (a shell command the pod's author runs before the "
        "containers, outside them, as the pod's account); off: such pods are refused (422)",
    )
    allow_runtime_options: bool = Field(
        False,
        description="honour slurm-job.vk.io/<runtime>-options and -mounts (words added to the runtime's "
        "command line, e.g. binds of site paths); off: pods giving them for their runtime are refused (422)",
    )
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


class ServiceSettings(Strict):
    site_name: str = Field("local", description="name of this site, shown in status messages")
    state_dir: str = Field(description="where the sidecar keeps its SQLite database")
    pods_root: str = Field(description="pods' working directories; must be shared with the compute nodes")
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
    max_pods: int = Field(
        10000,
        ge=1,
        description="pods the site holds at once (not finished or deleted): reported to the Virtual Kubelet "
        "as capacity, and creates beyond it are refused (429 / RESOURCE_EXHAUSTED)",
    )
    max_pods_per_identity: int | None = Field(
        None, ge=1, description="pods one identity (token subject) may hold at once; none: only max_pods"
    )
    max_streams_per_identity: int = Field(
        16,
        ge=1,
        description="status watches and log follows one identity (token subject) may hold open at once; "
        "the trusted unix socket has no limit",
    )
    unclaimed_retention_seconds: float = Field(
        7 * 86400.0,
        ge=0,
        description="how long a finished pod that no client deletes is kept (the Virtual Kubelet deletes "
        "those it sees finish; this bounds the rest)",
    )
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
    images: ImagesConfig | None = Field(
        None,
        description="the image cache: pods of the charliecloud and podman runtimes (and of apptainer, singularity "
        "or enroot with their image_cache on) run their own images, pulled here before their jobs are submitted; those "
        "runtimes refuse pods without it",
    )
    staging: StagingConfig | None = Field(
        None, description="datalake staging (Rucio + XRootD); pods declaring data are refused without it"
    )

    def render_options(self) -> RenderOptions:
        return RenderOptions(
            passthrough_env=tuple(self.render.passthrough_env),
            allow_pre_exec=self.render.allow_pre_exec,
            allow_runtime_options=self.render.allow_runtime_options,
            sandbox_executable=self.runtime.sandbox.executable,
            charliecloud_executable=self.runtime.charliecloud.executable,
            template_dir=self.render.template_dir,
            restart_backoff_seconds=self.render.restart_backoff_seconds,
            image_cache=self.images.cache_dir if self.images else "",
        )
