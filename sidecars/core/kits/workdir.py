"""The pod's working directory on the shared filesystem: written, read back, removed.

Blocking file I/O: callers run these functions in a worker thread. Every path is
built from validated names and checked to stay inside the pod directory; files
are opened with O_NOFOLLOW so a planted symlink cannot redirect a write.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from interlink_provider.pods.jobspec import JobSpec
from interlink_provider.staging.cache import link_into
from interlink_provider.staging.volumes import regular_files
from sidecars.core.kits.script import PodPaths

DIR_MODE = 0o700
SCRIPT_MODE = 0o700
FILE_MODE = 0o600


class WorkdirError(Exception):
    pass


def _inside(root: Path, path: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _write_file(root: Path, relative: str, content: bytes, mode: int) -> None:
    target = Path(os.path.normpath(root / relative))
    if not _inside(root, target) or target == root:
        raise WorkdirError(f"{relative!r} escapes its volume")
    target.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if not _inside(root.resolve(), target.parent.resolve()):
        raise WorkdirError(f"{relative!r} escapes its volume through a symlink")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = os.open(target, flags, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as handle:
            handle.write(content)
    finally:
        os.close(fd)


# Names the pod directory itself uses: an extra file must not take their place.
RESERVED_NAMES = frozenset({"job.sh", "job.out", "volumes", "containers"})


def check_extra_file(name: str) -> None:
    """An extra file of a submission (written next to job.sh): a plain, visible file name."""
    if not name or "/" in name or "\x00" in name or name.startswith(".") or name in RESERVED_NAMES or len(name) > 255:
        raise WorkdirError(f"{name!r} is not a plain file name for the pod directory")


def _write_atomically(pod_dir: Path, name: str, text: str, mode: int) -> None:
    tmp = pod_dir / f".{name}.tmp"
    _write_file(pod_dir, tmp.name, text.encode(), mode)
    os.replace(tmp, pod_dir / name)


def materialize(
    paths: PodPaths, spec: JobSpec, script: str, account: str | None = None, files: dict[str, str] | None = None
) -> None:
    """Write volumes, container directories, the batch script and the submission's extra
    `files` (idempotent), owned by `account` when the job will run as another local account."""
    for name in files or {}:
        check_extra_file(name)
    pods_root = Path(paths.pods_root)
    pod_dir = Path(paths.pod_dir)
    if not _inside(pods_root, pod_dir) or pod_dir == pods_root:
        raise WorkdirError(f"pod directory {pod_dir} is outside {pods_root}")
    pods_root.mkdir(parents=True, exist_ok=True, mode=0o711)
    pod_dir.mkdir(exist_ok=True, mode=DIR_MODE)
    os.chmod(pod_dir, DIR_MODE)
    for volume in spec.volumes:
        if volume.kind == "hostPath":
            continue
        root = Path(paths.volume_dir(volume.name))
        root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        for item in volume.files:
            _write_file(root, item.path, item.content, item.mode)
    for container in spec.all_containers():
        Path(paths.container_dir(container.name)).mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    for name, text in (files or {}).items():
        _write_atomically(pod_dir, name, text, FILE_MODE)
    _write_atomically(pod_dir, "job.sh", script, SCRIPT_MODE)
    if account:
        _give_to(pod_dir, account)


def _give_to(pod_dir: Path, account: str) -> None:
    try:
        entry = pwd.getpwnam(account)
    except KeyError as exc:
        raise WorkdirError(f"local account {account!r} does not exist on this site") from exc
    if (entry.pw_uid, entry.pw_gid) == (os.geteuid(), os.getegid()):
        return
    for root, dirs, files in os.walk(pod_dir):
        os.lchown(root, entry.pw_uid, entry.pw_gid)
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _volume_root(paths: PodPaths, volume: str) -> Path:
    """A volume's directory, refused when it is (or leads through) a symbolic link out of the pod."""
    root = Path(paths.volume_dir(volume))
    if root.is_symlink() or not _inside(Path(paths.pod_dir).resolve(), root.resolve()):
        raise WorkdirError(f"volume {volume} is not a directory inside the pod")
    return root


def link_inputs(paths: PodPaths, volume: str, links: Sequence[tuple[Path, str]]) -> None:
    """Give the pod each staged file (in the content cache) under its name in `volume`."""
    root = _volume_root(paths, volume)
    for source, name in links:
        check_extra_file(name)
        link_into(source, root / name)


def volume_files(paths: PodPaths, volume: str) -> list[tuple[str, Path]]:
    """The regular files a pod's containers left in `volume` (symbolic links neither followed nor listed)."""
    root = _volume_root(paths, volume)
    return regular_files(root) if root.is_dir() else []


def scrub_sensitive(paths: PodPaths, volume_names: list[str]) -> None:
    """Remove secret and projected volume contents once no container can read them."""
    for name in volume_names:
        shutil.rmtree(paths.volume_dir(name), ignore_errors=True)


def remove(paths: PodPaths) -> None:
    pod_dir = Path(paths.pod_dir)
    if not _inside(Path(paths.pods_root), pod_dir) or pod_dir == Path(paths.pods_root):
        raise WorkdirError(f"refusing to remove {pod_dir}: outside {paths.pods_root}")
    shutil.rmtree(pod_dir, ignore_errors=True)


@dataclass
class ContainerFiles:
    """What the pod runner wrote about one container."""

    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    ready: bool = False
    restarts: int = 0
    reason: str | None = None
    skipped: str | None = None
    last_state: tuple[int, str, str] | None = None


def _read(directory: Path, name: str) -> str | None:
    try:
        return (directory / name).read_text(errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


CONTAINER_FILES = ("started_at", "finished_at", "exit_code", "ready", "restarts", "reason", "skipped", "last_state")


def container_files(texts: dict[str, str | None]) -> ContainerFiles:
    """What the runner's files say (file name -> its stripped text, None if absent)."""
    last = texts.get("last_state")
    last_state = None
    if last:
        parts = last.split()
        if len(parts) == 3 and parts[0].lstrip("-").isdigit():
            last_state = (int(parts[0]), parts[1], parts[2])
    return ContainerFiles(
        started_at=texts.get("started_at"),
        finished_at=texts.get("finished_at"),
        exit_code=_int(texts.get("exit_code")),
        ready=texts.get("ready") == "1",
        restarts=_int(texts.get("restarts")) or 0,
        reason=texts.get("reason"),
        skipped=texts.get("skipped"),
        last_state=last_state,
    )


def read_container(directory: Path) -> ContainerFiles:
    return container_files({name: _read(directory, name) for name in CONTAINER_FILES})


def read_pod(paths: PodPaths, containers: list[str]) -> dict[str, ContainerFiles]:
    """Each container's files, by container name."""
    return {name: read_container(Path(paths.container_dir(name))) for name in containers}
