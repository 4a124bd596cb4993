"""Building test images: a busybox shell and a file of random bytes (so compression cannot shrink
the download), pushed to a registry with umoci and skopeo, for tests and benches that need an
image bigger than the local site's stand-ins."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path


def in_registry(host: str, cert_dir: Path, ref: str, authfile: Path | None = None) -> bool:
    auth = ["--authfile", str(authfile)] if authfile else []
    argv = ["skopeo", "inspect", "--raw", "--cert-dir", str(cert_dir), *auth, f"docker://{host}/{ref}"]
    return subprocess.run(argv, capture_output=True).returncode == 0


def push_random_image(host: str, cert_dir: Path, ref: str, size_mib: int, authfile: Path | None = None) -> None:
    """`ref` (e.g. ilp/big:200) in the registry at `host`, built once: busybox's sh, sleep, true,
    echo, cat and wc, /data/random.bin of `size_mib` MiB, Cmd sh, PATH=/bin. No /etc, /dev, /proc, /sys
    or /tmp: a minimal image, as FROM scratch builds them. `authfile`: the pusher's credentials
    (the local site's registry takes pushes from its builder only)."""

    def files(rootfs: Path) -> None:
        (rootfs / "data").mkdir()
        with open(rootfs / "data" / "random.bin", "wb") as out:
            for _ in range(size_mib):
                out.write(os.urandom(2**20))

    _push(host, cert_dir, ref, files, [], authfile)


def push_user_image(host: str, cert_dir: Path, ref: str) -> None:
    """`ref` in the registry at `host`, built once: the busybox applets of push_random_image, an
    /etc/passwd and /etc/group naming `runner` (1000:1001), and User `runner`."""

    def files(rootfs: Path) -> None:
        (rootfs / "etc").mkdir()
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nrunner:x:1000:1001::/home:/bin/sh\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\nrunners:x:1001:\n")

    _push(host, cert_dir, ref, files, ["--config.user", "runner"])


def _push(
    host: str, cert_dir: Path, ref: str, files: Callable[[Path], None], config: list[str], authfile: Path | None = None
) -> None:
    """Build and push `ref` unless the registry has it: busybox applets, then `files`, then `config`."""
    if in_registry(host, cert_dir, ref, authfile):
        return
    work = Path(tempfile.mkdtemp(prefix="ilp-test-image-"))
    try:
        rootfs = work / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
        for applet in ("sh", "sleep", "true", "echo", "cat", "wc", "id"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        files(rootfs)
        layout = f"{work / 'oci'}:img"
        for argv in (
            ["umoci", "init", "--layout", str(work / "oci")],
            ["umoci", "new", "--image", layout],
            ["umoci", "insert", "--image", layout, str(rootfs), "/"],
            ["umoci", "config", "--image", layout, "--config.cmd", "sh", "--config.env", "PATH=/bin", *config],
            [
                "skopeo",
                "copy",
                "-q",
                "--dest-cert-dir",
                str(cert_dir),
                *(["--dest-authfile", str(authfile)] if authfile else []),
                f"oci:{layout}",
                f"docker://{host}/{ref}",
            ],
        ):
            subprocess.run(argv, check=True, capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
