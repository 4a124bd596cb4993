"""The pod's working directory on the shared filesystem: planned, written, read back, removed.

Blocking file I/O: callers run these functions in a worker thread. What a pod's directory
holds is decided first, as data (`plan_directory`: pure, and what a per-account agent is
sent), then written (`create`). Every path is built from validated names and checked to
stay inside the pod directory. Nothing here follows a symbolic link below the pods root:
files are reached by walking each component with O_NOFOLLOW (a job that swaps a file or a
directory of its pod for a link to somewhere else gets an error, not the other file), and
every read is bounded in size (a link to /dev/zero, or a huge file, cannot exhaust us).
"""

from __future__ import annotations

import base64
import errno
import os
import posixpath
import pwd
import shutil
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interlink_provider.pods.jobspec import JobSpec
from interlink_provider.staging.volumes import regular_files
from sidecars.core.kits.podpaths import PodPaths

DIR_MODE = 0o700
PARENT_MODE = 0o711  # account and namespace levels: traversable, not listable
SCRIPT_MODE = 0o700
FILE_MODE = 0o600
MARKER = ".ilp-pod"  # the pod UID its directory belongs to
STATE_FILE_LIMIT = 4096  # bytes read of a runner state file (a timestamp, an exit code)


class WorkdirError(Exception):
    pass


class DirectoryTaken(WorkdirError):
    """A new pod's directory exists already and is not a leftover of this same pod: never reused,
    never removed."""


def _inside(root: Path, path: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def inside(root: str, path: str) -> bool:
    """`path` is `root` or below it, lexically."""
    root_path, target = Path(os.path.normpath(root)), Path(os.path.normpath(path))
    return target == root_path or root_path in target.parents


# ---------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlannedFile:
    path: str  # relative to the pod directory, normalised, never escaping it
    content: bytes
    mode: int


@dataclass(frozen=True)
class DirectoryPlan:
    """Everything a new pod directory holds: its directories, the volumes' files, and the
    scripts written last (job.sh and the submission's extra files)."""

    uid: str
    dirs: tuple[str, ...] = ()
    files: tuple[PlannedFile, ...] = ()
    scripts: tuple[PlannedFile, ...] = ()

    def to_json(self) -> dict[str, Any]:
        def files(items: tuple[PlannedFile, ...]) -> list[dict[str, Any]]:
            return [{"path": f.path, "mode": f.mode, "b64": base64.b64encode(f.content).decode()} for f in items]

        return {"uid": self.uid, "dirs": list(self.dirs), "files": files(self.files), "scripts": files(self.scripts)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DirectoryPlan:
        def files(items: list[dict[str, Any]]) -> tuple[PlannedFile, ...]:
            return tuple(_planned(str(f["path"]), base64.b64decode(f["b64"]), int(f["mode"])) for f in items)

        return cls(
            uid=str(data["uid"]),
            dirs=tuple(_relative(str(d)) for d in data["dirs"]),
            files=files(data["files"]),
            scripts=files(data["scripts"]),
        )


def _relative(path: str) -> str:
    """A path relative to the pod directory that stays inside it."""
    normal = posixpath.normpath(path)
    if normal.startswith(("/", "../")) or normal in ("", ".", "..") or "\x00" in normal:
        raise WorkdirError(f"{path!r} escapes the pod directory")
    return normal


def _planned(path: str, content: bytes, mode: int) -> PlannedFile:
    return PlannedFile(_relative(path), content, mode & 0o777)


# Names the pod directory itself uses: an extra file must not take their place.
RESERVED_NAMES = frozenset({"job.sh", "job.out", "volumes", "containers"})


def check_extra_file(name: str) -> None:
    """An extra file of a submission (written next to job.sh): a plain, visible file name."""
    if not name or "/" in name or "\x00" in name or name.startswith(".") or name in RESERVED_NAMES or len(name) > 255:
        raise WorkdirError(f"{name!r} is not a plain file name for the pod directory")


def plan_directory(spec: JobSpec, script: str, files: dict[str, str] | None = None) -> DirectoryPlan:
    """What the pod's directory will hold (pure: validation only)."""
    for name in files or {}:
        check_extra_file(name)
    dirs: list[str] = []
    planned: list[PlannedFile] = []
    for volume in spec.volumes:
        if volume.kind == "hostPath":
            continue
        root = f"volumes/{volume.name}"
        dirs.append(root)
        for item in volume.files:
            target = posixpath.normpath(posixpath.join(root, item.path))
            if not target.startswith(root + "/"):
                raise WorkdirError(f"{item.path!r} escapes its volume")
            planned.append(_planned(target, item.content, item.mode))
    dirs += [f"containers/{c.name}" for c in spec.all_containers()]
    scripts = [_planned(name, text.encode(), FILE_MODE) for name, text in (files or {}).items()]
    scripts.append(_planned("job.sh", script.encode(), SCRIPT_MODE))
    return DirectoryPlan(spec.uid, tuple(dirs), tuple(planned), tuple(scripts))


# ---------------------------------------------------------------------- walking without links


@contextmanager
def opened_dir(root: str, path: str) -> Iterator[int]:
    """A directory below `root`, opened by walking each component without following a link (as
    O_PATH: only traversal is needed, so a pods root others may not list is fine)."""
    if not inside(root, path):
        raise WorkdirError(f"{path} is outside {root}")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for part in Path(os.path.normpath(path)).relative_to(os.path.normpath(root)).parts:
            try:
                child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise WorkdirError(f"{path}: {part} is not a directory of the pod (a link?)") from exc
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


@contextmanager
def opened_file(root: str, path: str) -> Iterator[int | None]:
    """A regular file below `root`, opened read-only without following a link anywhere below
    `root` (None when there is no such file). Links and special files are refused."""
    directory, name = posixpath.split(os.path.normpath(path))
    try:
        with opened_dir(root, directory) as dir_fd:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        yield None
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WorkdirError(f"{path} is a link: not read") from exc
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise WorkdirError(f"{path} is not a regular file: not read")
        yield fd
    finally:
        os.close(fd)


def read_bounded(root: str, path: str, limit: int, offset: int = 0) -> bytes | None:
    """At most `limit` bytes of a regular file below `root` from `offset` (see opened_file)."""
    with opened_file(root, path) as fd:
        return None if fd is None else os.pread(fd, limit, offset)


# ---------------------------------------------------------------------- writing


def _write_file(pod_fd: int, relative: str, content: bytes, mode: int) -> None:
    directory, name = posixpath.split(relative)
    _make_dirs(pod_fd, directory)
    dir_fd = _open_below(pod_fd, directory)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        fd = os.open(name, flags, mode, dir_fd=dir_fd)
        try:
            os.fchmod(fd, mode)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def _open_below(pod_fd: int, directory: str) -> int:
    fd = os.dup(pod_fd)
    for part in [p for p in directory.split("/") if p]:
        child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        os.close(fd)
        fd = child
    return fd


def _make_dirs(pod_fd: int, directory: str) -> None:
    fd = os.dup(pod_fd)
    try:
        for part in [p for p in directory.split("/") if p]:
            try:
                os.mkdir(part, DIR_MODE, dir_fd=fd)
            except FileExistsError:
                pass
            child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def _write_atomically(pod_fd: int, planned: PlannedFile) -> None:
    tmp = f".{planned.path}.tmp"
    _write_file(pod_fd, tmp, planned.content, planned.mode)
    os.replace(tmp, planned.path, src_dir_fd=pod_fd, dst_dir_fd=pod_fd)


def _make_pod_dir(paths: PodPaths, uid: str) -> None:
    """The pod's own directory, created exclusively: one left by an interrupted create of this
    same pod is started afresh; any other existing directory refuses the create."""
    pods_root, pod_dir = Path(paths.pods_root), Path(paths.pod_dir)
    if not _inside(pods_root, pod_dir) or pod_dir == pods_root:
        raise WorkdirError(f"pod directory {pod_dir} is outside {pods_root}")
    pods_root.mkdir(parents=True, exist_ok=True, mode=PARENT_MODE)
    for parent in reversed(pod_dir.relative_to(pods_root).parents[:-1]):
        try:
            (pods_root / parent).mkdir(mode=PARENT_MODE)
        except FileExistsError:
            pass
    try:
        pod_dir.mkdir(mode=DIR_MODE)
    except FileExistsError:
        if not _ours(paths, uid):
            raise DirectoryTaken(
                f"{pod_dir} already exists and belongs to no record of this pod: refusing to reuse it"
            ) from None
        shutil.rmtree(pod_dir)  # an interrupted create of this very pod: start afresh
        pod_dir.mkdir(mode=DIR_MODE)
    os.chmod(pod_dir, DIR_MODE)


def _ours(paths: PodPaths, uid: str) -> bool:
    """An existing pod directory left by an interrupted create of this same pod: its marker names
    the pod, or it is still empty (a create stopped between making it and marking it)."""
    found = read_bounded(paths.pods_root, f"{paths.pod_dir}/{MARKER}", 256)
    if found is not None:
        return found.decode(errors="replace").strip() == uid
    parent, name = posixpath.split(os.path.normpath(paths.pod_dir))
    with opened_dir(paths.pods_root, parent) as parent_fd:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        try:
            return not os.listdir(fd)
        finally:
            os.close(fd)


def create(paths: PodPaths, plan: DirectoryPlan, account: str | None = None) -> None:
    """Write a new pod directory from its plan; owned by `account` when given (a root sidecar
    running jobs as other accounts), else by whoever runs this (the pod's own agent)."""
    _make_pod_dir(paths, plan.uid)
    with opened_dir(paths.pods_root, paths.pod_dir) as pod_fd:
        _write_file(pod_fd, MARKER, plan.uid.encode(), FILE_MODE)
        for directory in plan.dirs:
            _make_dirs(pod_fd, directory)
        for planned in plan.files:
            _write_file(pod_fd, planned.path, planned.content, planned.mode)
        for planned in plan.scripts:
            _write_atomically(pod_fd, planned)
    if account:
        _give_to(Path(paths.pod_dir), account)


def materialize(
    paths: PodPaths, spec: JobSpec, script: str, account: str | None = None, files: dict[str, str] | None = None
) -> None:
    """Plan and write a pod's directory in one go."""
    create(paths, plan_directory(spec, script, files), account)


def _give_to(pod_dir: Path, account: str) -> None:
    """Hand a freshly written pod directory to `account`, children first: the account can write
    into a directory only once everything below it is settled (no link swapped in meanwhile)."""
    try:
        entry = pwd.getpwnam(account)
    except KeyError as exc:
        raise WorkdirError(f"local account {account!r} does not exist on this site") from exc
    if (entry.pw_uid, entry.pw_gid) == (os.geteuid(), os.getegid()):
        return
    for root, dirs, files in os.walk(pod_dir, topdown=False):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.lchown(pod_dir, entry.pw_uid, entry.pw_gid)


# ---------------------------------------------------------------------- staging volumes


def link_inputs(paths: PodPaths, volume: str, links: Sequence[tuple[Path, str]]) -> None:
    """Give the pod each staged file (in the content cache) under its name in `volume`: a hard
    link, or a copy where the cache is on another filesystem or not ours to link."""
    with opened_dir(paths.pods_root, paths.volume_dir(volume)) as volume_fd:
        for source, name in links:
            check_extra_file(name)
            tmp = f".{name}.{os.getpid()}.tmp"
            try:
                os.link(source, tmp, dst_dir_fd=volume_fd)
            except OSError:
                _copy_into(source, volume_fd, tmp)
            os.replace(tmp, name, src_dir_fd=volume_fd, dst_dir_fd=volume_fd)


def _copy_into(source: Path, dir_fd: int, name: str) -> None:
    with open(source, "rb") as reader:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as writer:
            shutil.copyfileobj(reader, writer, 1024 * 1024)


def volume_files(paths: PodPaths, volume: str) -> list[tuple[str, Path]]:
    """The regular files a pod's containers left in `volume` (symbolic links neither followed nor listed)."""
    root = paths.volume_dir(volume)
    try:
        with opened_dir(paths.pods_root, root):
            pass  # every component is a real directory, not a link out of the pod
    except FileNotFoundError:
        return []
    return regular_files(Path(root))


# ---------------------------------------------------------------------- removing


def scrub_sensitive(paths: PodPaths, volume_names: list[str]) -> None:
    """Remove secret and projected volume contents once no container can read them."""
    for name in volume_names:
        target = paths.volume_dir(name)
        if inside(paths.pod_dir, target):
            shutil.rmtree(target, ignore_errors=True)  # rmtree never follows a link out of the tree


def remove(paths: PodPaths) -> None:
    pod_dir = Path(paths.pod_dir)
    if not _inside(Path(paths.pods_root), pod_dir) or pod_dir == Path(paths.pods_root):
        raise WorkdirError(f"refusing to remove {pod_dir}: outside {paths.pods_root}")
    shutil.rmtree(pod_dir, ignore_errors=True)


# ---------------------------------------------------------------------- reading the runner's files


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


def _state_text(paths: PodPaths, container: str, name: str) -> str | None:
    """A runner state file's text; None when absent or not a plain file of the pod (a link)."""
    try:
        found = read_bounded(paths.pods_root, posixpath.join(paths.container_dir(container), name), STATE_FILE_LIMIT)
    except (WorkdirError, NotADirectoryError):
        return None
    return None if found is None else found.decode("utf-8", "replace").strip()


def read_container(paths: PodPaths, container: str) -> ContainerFiles:
    return container_files({name: _state_text(paths, container, name) for name in CONTAINER_FILES})


def read_pod(paths: PodPaths, containers: list[str]) -> dict[str, ContainerFiles]:
    """Each container's files, by container name."""
    return {name: read_container(paths, name) for name in containers}
