"""Where a pod lives on the site's shared filesystem: names only, no I/O.

Its own module because the per-account agent needs the layout and nothing of the rendering."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

GANG_SCRIPT = "gang.sh"


@dataclass(frozen=True)
class PodPaths:
    """Where a pod lives on the site's shared filesystem."""

    pods_root: str
    pod_dir: str

    @classmethod
    def for_pod(cls, pods_root: str, namespace: str, uid: str, account: str = "") -> PodPaths:
        """`pods_root/<account>/<namespace>/<uid>`: one level per name, so no two pods can share
        a directory, and each account's pods under one directory of its own."""
        parts = [account] if account else []
        return cls(pods_root=pods_root, pod_dir=posixpath.join(pods_root, *parts, namespace, uid))

    def volume_dir(self, volume: str) -> str:
        return posixpath.join(self.pod_dir, "volumes", volume)

    def container_dir(self, container: str) -> str:
        return posixpath.join(self.pod_dir, "containers", container)

    def log_file(self, container: str, previous: bool = False) -> str:
        """A container's log (the one before its last restart with `previous`)."""
        return posixpath.join(self.container_dir(container), "log.previous" if previous else "log")

    def rootfs(self, container: str) -> str:
        return posixpath.join(self.container_dir(container), "rootfs")

    @property
    def script(self) -> str:
        return posixpath.join(self.pod_dir, "job.sh")

    @property
    def gang_script(self) -> str:
        """The batch script of the gang this pod belongs to, used when it is the gang's first."""
        return posixpath.join(self.pod_dir, GANG_SCRIPT)

    @property
    def output(self) -> str:
        return posixpath.join(self.pod_dir, "job.out")
