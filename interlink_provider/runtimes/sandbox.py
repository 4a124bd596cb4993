"""The sandbox runtime: the host's own root filesystem in a bubblewrap namespace.

For sites (and CI machines) with no image runtime. The container sees the host's
system directories read-only, a private writable root holding its own /tmp and
/root (kept across restarts and shared with its exec hooks), and the pod's volumes
at their mountPaths. The image is not pulled: its programs must exist on the host.
Images whose default ENTRYPOINT/CMD matter are described in the site config
(`image_defaults`), since nothing here can read an image manifest.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..pods.jobspec import ContainerSpec
from ..shell import Raw
from .base import (
    ImageDefaults,
    Launch,
    LaunchContext,
    Runtime,
    find_image_defaults,
    kubernetes_argv,
    reject,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    executable: str = Field("bwrap", description="bubblewrap executable on the compute nodes (name or path)")
    image_defaults: list[ImageDefaults] = Field(
        default_factory=list,
        description="ENTRYPOINT/CMD of images used without `command`",
    )
    hide_paths: list[str] = Field(
        default_factory=list,
        description="host directories replaced by an empty tmpfs inside the sandbox "
        "(the pods' working root is always hidden)",
    )


def base_environment(container: ContainerSpec) -> list[str]:
    """What an image would provide: a standard PATH and HOME, then the pod's variables."""
    names = {name for name, _ in container.env}
    env = []
    if "PATH" not in names:
        env.append(f"PATH={DEFAULT_PATH}")
    if "HOME" not in names:
        env.append("HOME=/root")
    return env + [f"{name}={value}" for name, value in container.env]


class SandboxRuntime(Runtime):
    name = "sandbox"

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()

    def argv(self, container: ContainerSpec) -> list[str]:
        if container.command:
            return kubernetes_argv(container, [], [])
        defaults = find_image_defaults(container.image, self.config.image_defaults)
        if defaults is None:
            if container.args:
                # No ENTRYPOINT known: treat args as the command, as images with an
                # empty ENTRYPOINT (busybox, alpine, python) do.
                return list(container.args)
            raise reject(
                container,
                f"image {container.image!r} has no known default command on this site; "
                "set `command` or add the image to the sandbox image_defaults",
            )
        argv = kubernetes_argv(container, defaults.entrypoint, defaults.cmd)
        if not argv:
            raise reject(container, f"image {container.image!r} defines no command")
        return argv

    def launch(self, container: ContainerSpec, ctx: LaunchContext) -> Launch:
        sandbox = ["ilp_sandbox", ctx.rootfs, "1" if container.gpus else "0"]
        for path in self.config.hide_paths:
            sandbox += ["--tmpfs", path]
        for bind in ctx.binds:
            sandbox += ["--ro-bind" if bind.read_only else "--bind", bind.source, bind.target]
        sandbox += ["--chdir", container.working_dir or "/", "--"]
        # TERM back to its default: bwrap itself runs with TERM ignored (see ilp_sandbox)
        head = [*sandbox, "env", "--default-signal=TERM", "-i", Raw('"${ILP_PASS[@]}"'), *base_environment(container)]
        return Launch(run=(*head, *self.argv(container)), exec_prefix=tuple(head))
