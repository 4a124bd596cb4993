"""Rendering a JobSpec into the pod's batch script (backend header + shared pod runner).

Pure: no files are written here. The Jinja environment quotes every `{{ value }}`
for the shell (`finalize=shq`), so a template cannot forget to quote pod data; the
few fragments of shell syntax that Python builds are wrapped in `Raw`.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from interlink_provider.images.pins import pin_path
from interlink_provider.pods.annotations import PRE_EXEC
from interlink_provider.pods.annotations import field as annotation_field
from interlink_provider.pods.gang import RENDEZVOUS_ENV
from interlink_provider.pods.jobspec import ContainerSpec, Handler, JobSpec, ProbeSpec
from interlink_provider.pods.validate import PodRejected
from interlink_provider.runtimes import Bind, Launch, LaunchContext, Runtime
from interlink_provider.shell import Raw, shjoin, shq
from sidecars.core.kits.podpaths import PodPaths

CORE_TEMPLATES = Path(__file__).parent / "templates"

DEFAULT_PASSTHROUGH_ENV = [
    "SLURM_JOB_ID",
    "SLURM_JOB_NODELIST",
    "SLURM_JOB_PARTITION",
    "SLURM_CPUS_ON_NODE",
    "SLURM_GPUS_ON_NODE",
    "SLURM_JOB_GPUS",
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
]


@dataclass(frozen=True)
class RenderOptions:
    """The site's choices that shape the script."""

    passthrough_env: tuple[str, ...] = tuple(DEFAULT_PASSTHROUGH_ENV)
    allow_pre_exec: bool = False  # the site's render.allow_pre_exec
    allow_runtime_options: bool = False  # the site's render.allow_runtime_options
    sandbox_executable: str = "bwrap"
    charliecloud_executable: str = "ch-run"
    template_dir: str | None = None  # a site admin's own templates override ours
    restart_backoff_seconds: int = 10  # first back-off before restarting a container, doubling to 300
    image_cache: str = ""  # the site's image cache (its pins tell jobs which image a container runs)


@dataclass
class _ContainerContext:
    index: int
    spec: ContainerSpec
    launch: Launch
    sub_path_checks: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[tuple[str, Raw]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)


_ENDRAW = re.compile(r"\{%[-+]?\s*endraw")


class _TemplateLoader(jinja2.FileSystemLoader):
    """Files ending in .j2 are templates; any other file (runner/lib.sh) is static text, included
    verbatim: what looks like template syntax in it is left alone."""

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        if template.endswith(".j2"):
            return source, filename, uptodate
        if _ENDRAW.search(source):
            raise jinja2.TemplateSyntaxError("a static file cannot contain an endraw tag", 1, template, filename)
        return "{% raw %}" + source + "{% endraw %}", filename, uptodate


@functools.lru_cache(maxsize=16)
def make_environment(*template_dirs: str | Path, finalize: Callable[[Any], str] = shq) -> jinja2.Environment:
    """One environment per set of template directories (and value quoting): templates are parsed
    once. `finalize` quotes every {{ value }}: for bash by default (an HTCondor submit
    description has its own). A file not ending in .j2 is included verbatim."""
    env = jinja2.Environment(
        loader=_TemplateLoader([str(d) for d in template_dirs]),
        finalize=finalize,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        # Bash uses "{#" (${#array[@]}): Jinja comments are "{## ... ##}" here.
        comment_start_string="{##",
        comment_end_string="##}",
    )
    env.filters["shjoin"] = lambda words: Raw(shjoin(words))
    env.filters["raw"] = Raw
    return env


def handler_command(index: int, handler: Handler) -> str:
    """A probe or hook as one shell command (run by the job script's dispatcher)."""
    if handler.kind == "exec":
        return shjoin([f"ilp_exec_{index}", *handler.command])
    if handler.kind == "http":
        headers = [f"{name}: {value}" for name, value in handler.headers]
        return shjoin(["ilp_http", handler.scheme, handler.host, handler.port, handler.path, *headers])
    if handler.kind == "tcp":
        return shjoin(["ilp_tcp", handler.host, handler.port])
    return shjoin(["sleep", handler.seconds])


def _binds(spec: JobSpec, container: ContainerSpec, paths: PodPaths) -> tuple[list[Bind], list[dict[str, Any]]]:
    volumes = {v.name: v for v in spec.volumes}
    binds: list[Bind] = []
    checks: list[dict[str, Any]] = []
    for mount in container.mounts:
        volume = volumes[mount.volume]
        root = volume.host_path if volume.kind == "hostPath" else paths.volume_dir(volume.name)
        # configMap, secret and projected volumes are read-only in Kubernetes.
        read_only = mount.read_only or volume.kind in ("configMap", "secret", "projected")
        source = root
        if mount.sub_path:
            source = posixpath.join(root, mount.sub_path)
            create = 1 if volume.kind in ("emptyDir", "hostPath") else 0
            checks.append({"volume_dir": root, "sub_path": mount.sub_path, "create": create})
        binds.append(Bind(source=source, target=mount.container_path, read_only=read_only))
    return binds, checks


def _probe_contexts(index: int, container: ContainerSpec) -> list[dict[str, Any]]:
    probes: list[tuple[str, ProbeSpec | None]] = [
        ("startup", container.startup_probe),
        ("liveness", container.liveness_probe),
        ("readiness", container.readiness_probe),
    ]
    return [
        {"kind": kind, "spec": probe, "check": Raw(handler_command(index, probe.handler))}
        for kind, probe in probes
        if probe is not None
    ]


def container_context(
    index: int,
    spec: JobSpec,
    container: ContainerSpec,
    runtime: Runtime,
    paths: PodPaths,
    options: RenderOptions,
) -> _ContainerContext:
    binds, checks = _binds(spec, container, paths)
    runtime_options: tuple[str, ...] = ()
    runtime_mounts: tuple[str, ...] = ()
    for stem in runtime.annotation_stems:
        given = spec.pod_options.runtime_annotations(stem)
        if given and not options.allow_runtime_options:
            raise PodRejected(
                f"this site does not allow runtime options or mounts (its render.allow_runtime_options is off): "
                f"remove {given[0]}",
                field=annotation_field(given[0]),
            )
        runtime_options += spec.pod_options.runtime_options(stem)
        runtime_mounts += spec.pod_options.runtime_mounts(stem)
    ctx = LaunchContext(
        pod_dir=paths.pod_dir,
        rootfs=paths.rootfs(container.name),
        binds=tuple(binds),
        image_root=spec.pod_options.image_root,
        extra_options=runtime_options,
        extra_mounts=runtime_mounts,
        gpu_vendor=spec.resources.gpu_vendor,
        image_pin=pin_path(options.image_cache, spec.uid, container.name) if options.image_cache else "",
    )
    hooks = [
        (name, Raw(handler_command(index, handler)))
        for name, handler in (("postStart", container.post_start), ("preStop", container.pre_stop))
        if handler is not None
    ]
    return _ContainerContext(
        index=index,
        spec=container,
        launch=runtime.launch(container, ctx),
        sub_path_checks=checks,
        hooks=hooks,
        probes=_probe_contexts(index, container),
    )


def runner_context(spec: JobSpec, runtime: Runtime, paths: PodPaths, options: RenderOptions) -> dict[str, Any]:
    """Template variables of the shared pod runner."""
    containers = [container_context(i, spec, c, runtime, paths, options) for i, c in enumerate(spec.all_containers())]
    pre_exec = spec.pod_options.pre_exec
    if pre_exec and not options.allow_pre_exec:
        raise PodRejected(
            "this site does not allow pre-exec commands (its render.allow_pre_exec is off)",
            field=annotation_field(PRE_EXEC),
        )
    if "\x00" in pre_exec:
        raise PodRejected("pre-exec contains a NUL byte", field=annotation_field(PRE_EXEC))
    return {
        "pod_dir": paths.pod_dir,
        "pods_root": paths.pods_root,
        "pod_name": spec.name,
        "pod_hostname": spec.hostname,
        "grace_seconds": spec.grace_seconds,
        "containers": containers,
        "container_names": [c.spec.name for c in containers],
        "init_indexes": [c.index for c in containers if c.spec.is_init],
        "app_indexes": [c.index for c in containers if not c.spec.is_init],
        # A gang's members also see its rendezvous, which the gang's batch script sets.
        "passthrough_env": [*options.passthrough_env, *(RENDEZVOUS_ENV if spec.gang else ())],
        "pre_exec": pre_exec,
        "sandbox_executable": options.sandbox_executable,
        "charliecloud_executable": options.charliecloud_executable,
        "restart_backoff": options.restart_backoff_seconds,
    }


def render(
    template: str,
    backend_dir: str | Path,
    context: dict[str, Any],
    options: RenderOptions,
) -> str:
    dirs: list[str | Path] = []
    if options.template_dir:
        dirs.append(options.template_dir)
    dirs += [backend_dir, CORE_TEMPLATES]
    return make_environment(*dirs).get_template(template).render(**context)
