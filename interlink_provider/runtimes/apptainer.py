"""Apptainer and SingularityCE: `exec` when the pod sets a command, `run` otherwise.

`run` honours the image's runscript (ENTRYPOINT + CMD, with args replacing CMD),
which is what Kubernetes users expect when they omit `command` (interLink slurm
plugin issue #32). Environment goes through APPTAINERENV_/SINGULARITYENV_
variables, never through an env file the runtime would parse as shell.

With `image_cache` on, the image comes from the site's image cache instead: the sidecar pulls it
on the login node before the job is submitted (compute nodes need no registry) and pins the
container to it (`images.pins`). The job runs the pinned rootfs directory as a sandbox image,
always with `exec` (an unpacked OCI image has no runscript): the job script's `ilp_apptainer`
(runner/lib.sh) reads the pin and applies Kubernetes' rule for the process, the image's Env
under the pod's, and its WorkingDir unless the pod sets one.
"""

from __future__ import annotations

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


class ApptainerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    executable: str = Field("apptainer", description="the runtime's executable on the compute nodes (name or path)")
    options: list[str] = Field(
        default_factory=lambda: ["--containall", "--cleanenv", "--no-eval"],
        description="options for every exec/run (interLink uses --containall --no-eval)",
    )
    image_prefix: str = Field(
        "docker://",
        description="prefix of image references that have no scheme and are not absolute paths; "
        "the slurm-job.vk.io/image-root annotation replaces it",
    )
    image_cache: bool = Field(
        False,
        description="run images from the site's image cache (its `images` section), pulled on the login node "
        "before the job is submitted, instead of pulling them on the compute node (for compute nodes without "
        "outbound network): the pinned rootfs runs as a sandbox image with `exec`, its Entrypoint, Cmd, Env and "
        "WorkingDir applied by Kubernetes' rule. image_prefix is then unused, and pods with the image-root "
        "annotation are refused",
    )


class ApptainerRuntime(Runtime):
    name = "apptainer"
    annotation_stems: tuple[str, ...] = ("singularity", "apptainer")
    env_prefix = "APPTAINERENV_"

    def __init__(self, config: ApptainerConfig | None = None) -> None:
        self.config = config or ApptainerConfig()

    @property
    def uses_image_cache(self) -> bool:
        return self.config.image_cache

    def _options(self, container: ContainerSpec, ctx: LaunchContext) -> list[str]:
        """Options of every exec/run but the working directory."""
        args = list(self.config.options)
        if container.gpus:
            args.append("--rocm" if ctx.gpu_vendor == "amd" else "--nv")
        for bind in ctx.binds:
            args += ["--bind", f"{bind.source}:{bind.target}:{'ro' if bind.read_only else 'rw'}"]
        # As in interLink, the -mounts annotation holds whole options ("--bind /a:/b").
        args += [*ctx.extra_mounts, *ctx.extra_options]
        return args

    def launch(self, container: ContainerSpec, ctx: LaunchContext) -> Launch:
        if self.config.image_cache:
            return self._from_cache(container, ctx)
        image = image_reference(container.image, self.config.image_prefix, ctx.image_root)
        env = [f"{self.env_prefix}{name}={value}" for name, value in container.env]
        head = ["env", Raw('"${ILP_PASS[@]}"'), *env, self.config.executable]
        common = self._options(container, ctx)
        if container.working_dir:
            common += ["--pwd", container.working_dir]
        if container.command:
            run = [*head, "exec", *common, image, *container.command, *container.args]
        else:
            run = [*head, "run", *common, image, *container.args]
        return Launch(
            run=tuple(run),
            exec_prefix=(*head, "exec", *common, image),
            passthrough_prefix=self.env_prefix,
        )

    def _from_cache(self, container: ContainerSpec, ctx: LaunchContext) -> Launch:
        """ilp_apptainer PIN EXE ENV_PREFIX MODE WORKDIR N OPTIONS... M NAME=VALUE... WORDS...; exec
        probes, hooks and `kubectl exec` run in the same image (mode `command`: their own argv)."""
        pin = require_pin(container, ctx, f"the {self.name} runtime with image_cache on")
        if ctx.image_root is not None:
            raise reject(
                container,
                f"the {self.name} runtime of this site runs images from its image cache: "
                "remove the slurm-job.vk.io/image-root annotation",
            )
        env = [f"{name}={value}" for name, value in container.env]
        options = counted(self._options(container, ctx))
        head = ("ilp_apptainer", pin, self.config.executable, self.env_prefix)
        rest = (container.working_dir, *options, *counted(env))
        return Launch(
            run=(*head, process_mode(container), *rest, *process_words(container)),
            exec_prefix=(*head, "command", *rest),
            prepare=(("ilp_pinned", pin),),
            passthrough_prefix=self.env_prefix,
        )


class SingularityRuntime(ApptainerRuntime):
    name = "singularity"
    annotation_stems = ("singularity",)
    env_prefix = "SINGULARITYENV_"

    def __init__(self, config: ApptainerConfig | None = None) -> None:
        super().__init__(config or ApptainerConfig(executable="singularity"))
