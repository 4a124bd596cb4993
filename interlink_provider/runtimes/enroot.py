"""NVIDIA enroot: import the image once per pod, create a container root, start it.

Without `command`, enroot cannot apply Kubernetes' "args replace CMD" rule (it does
not expose the image ENTRYPOINT), so args alone replace the whole default command.

With `image_cache` on, the image comes from the site's image cache instead (pulled on the login
node before the job is submitted, `images.pins`), and the pin knows the image's config, so the
rule is Kubernetes' own. enroot starts a container root that is a directory under
ENROOT_DATA_PATH (`enroot create` unpacks a squashfs image there; `enroot start NAME` runs
`$ENROOT_DATA_PATH/NAME`): the job's prepare step (`ilp_enroot_root`, runner/lib.sh) copies the
pinned rootfs to `<container dir>/rootfs/<name>` and points ENROOT_DATA_PATH (an environment
variable beats enroot.conf) there, so no squashfs and no network are needed. enroot has no
working-directory option: a command script (`enroot start --rc`, which gets the start command's
words as its parameters) changes to it, then execs the process.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

from ..pods.jobspec import ContainerSpec
from ..shell import Raw
from .base import (
    Launch,
    LaunchContext,
    Runtime,
    counted,
    image_reference,
    process_mode,
    process_words,
    reject,
    require_pin,
)


class EnrootConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    executable: str = Field("enroot", description="enroot executable on the compute nodes (name or path)")
    image_prefix: str = Field(
        "docker://",
        description="prefix of image references that have no scheme and are not absolute paths; "
        "the slurm-job.vk.io/image-root annotation replaces it",
    )
    options: list[str] = Field(["--rw"], description="options for every `enroot start`")
    image_cache: bool = Field(
        False,
        description="run images from the site's image cache (its `images` section), pulled on the login node "
        "before the job is submitted, instead of `enroot import` on the compute node (for compute nodes without "
        "outbound network): the job copies the pinned rootfs into a container root of its own (no squashfs) and "
        "applies the image's Entrypoint, Cmd (args replace only Cmd), Env and WorkingDir by Kubernetes' rule. "
        "image_prefix is then unused, and pods with the image-root annotation are refused",
    )


class EnrootRuntime(Runtime):
    name = "enroot"
    annotation_stems = ("enroot",)

    def __init__(self, config: EnrootConfig | None = None) -> None:
        self.config = config or EnrootConfig()

    @property
    def uses_image_cache(self) -> bool:
        return self.config.image_cache

    def _options(self, container: ContainerSpec, ctx: LaunchContext) -> list[str]:
        """Options of every `enroot start` (the environment aside)."""
        start = list(self.config.options)
        for bind in ctx.binds:
            start += ["--mount", f"{bind.source}:{bind.target}:{'ro' if bind.read_only else 'rw'}"]
        return [*start, *ctx.extra_mounts, *ctx.extra_options]  # whole options, as in interLink

    def launch(self, container: ContainerSpec, ctx: LaunchContext) -> Launch:
        pod_key = hashlib.sha1(ctx.pod_dir.encode()).hexdigest()[:10]
        name = f"ilp-{pod_key}-{container.name}"
        if self.config.image_cache:
            return self._from_cache(container, ctx, name)
        exe = self.config.executable
        image = image_reference(container.image, self.config.image_prefix, ctx.image_root)
        squashfs = f"{ctx.rootfs}.sqsh"
        start = [exe, "start", *self._options(container, ctx), Raw('"${ILP_PASS[@]}"')]
        for key, value in container.env:
            start += ["--env", f"{key}={value}"]
        argv = [*container.command, *container.args] if container.command else list(container.args)
        return Launch(
            run=(*start, name, *argv),
            exec_prefix=(*start, name),
            prepare=(
                (exe, "import", "--output", squashfs, image),
                (exe, "create", "--force", "--name", name, squashfs),
            ),
            passthrough_flag="--env",
        )

    def _from_cache(self, container: ContainerSpec, ctx: LaunchContext, name: str) -> Launch:
        """ilp_enroot PIN EXE DATA NAME RC MODE WORKDIR N OPTIONS... M NAME=VALUE... WORDS...; exec
        probes, hooks and `kubectl exec` start the same container root (mode `command`)."""
        pin = require_pin(container, ctx, "the enroot runtime with image_cache on")
        if ctx.image_root is not None:
            raise reject(
                container,
                "the enroot runtime of this site runs images from its image cache: "
                "remove the slurm-job.vk.io/image-root annotation",
            )
        data, rc = ctx.rootfs, f"{ctx.rootfs}.rc"  # ENROOT_DATA_PATH of this container alone
        env = [f"{key}={value}" for key, value in container.env]
        head = ("ilp_enroot", pin, self.config.executable, data, name, rc)
        rest = (container.working_dir, *counted(self._options(container, ctx)), *counted(env))
        return Launch(
            run=(*head, process_mode(container), *rest, *process_words(container)),
            exec_prefix=(*head, "command", *rest),
            prepare=(("ilp_pinned", pin), ("ilp_enroot_root", pin, data, name, rc)),
            passthrough_flag="--env",
        )
