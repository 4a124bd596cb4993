"""The host runtime: the container's command runs directly on the compute node.

No filesystem isolation at all, so volumes cannot appear at their mountPaths:
pods with volume mounts are refused (use the sandbox runtime for those).
"""

from __future__ import annotations

from ..pods.jobspec import ContainerSpec
from ..shell import Raw
from .base import Launch, LaunchContext, Runtime, reject
from .sandbox import SandboxConfig, SandboxRuntime, base_environment


class HostRuntime(Runtime):
    name = "host"

    def __init__(self, config: SandboxConfig | None = None) -> None:
        # Image defaults are shared with the sandbox: same question, no image to read.
        self._argv = SandboxRuntime(config).argv

    def launch(self, container: ContainerSpec, ctx: LaunchContext) -> Launch:
        if ctx.binds:
            raise reject(
                container,
                "the host runtime cannot mount volumes at their mountPath; "
                "this site must use the sandbox or an image runtime for this pod",
            )
        workdir = container.working_dir or ctx.rootfs
        head = ["env", "-i", Raw('"${ILP_PASS[@]}"'), *base_environment(container)]
        head = ["ilp_in_dir", workdir, *head]
        return Launch(run=(*head, *self._argv(container)), exec_prefix=tuple(head))
