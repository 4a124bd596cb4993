"""skopeo and umoci, run as subprocesses with argument vectors (never a shell), each with a
deadline; their failures come back as the tool's own message (skopeo's `msg="..."`), which is what
a user needs in ErrImagePull: "manifest unknown", "unauthorized", "connection refused"."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interlink_provider.bounded import run_bounded, text

_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
# skopeo checks signatures against a policy: the cache pins digests itself, so it accepts any
# image rather than depend on the host's /etc/containers/policy.json being present or permissive.
ACCEPT_ANYTHING = {"default": [{"type": "insecureAcceptAnything"}]}


class ToolFailed(Exception):
    """A tool exited non-zero (or timed out); `message` is its own explanation."""

    def __init__(self, argv0: str, message: str) -> None:
        super().__init__(f"{argv0}: {message}")
        self.message = message


@dataclass(frozen=True)
class Tools:
    """Where the programs are and how long they may take."""

    skopeo: str = "skopeo"
    umoci: str = "umoci"
    timeout: float = 600.0


def tool_message(stderr: str) -> str:
    """The last logrus `msg="..."` of a Go tool's stderr, unescaped; else its last line."""
    found = _MSG.findall(stderr)
    if found:
        return str(found[-1]).replace('\\"', '"').replace("\\\\", "\\")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "failed without a message"


async def run(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None) -> bytes:
    """stdout of argv; ToolFailed with the tool's message on a non-zero exit or the deadline."""
    try:
        returncode, out, err = await run_bounded(argv, env, timeout)
    except TimeoutError:
        raise ToolFailed(argv[0], f"no answer within {timeout:.0f} s") from None
    if returncode != 0:
        raise ToolFailed(argv[0], tool_message(text(err)))
    return out


def tool_env(home: Path) -> dict[str, str]:
    """A minimal environment: no proxy or registry settings of whoever started the sidecar leak in,
    and HOME points at a private directory (skopeo reads auth files under it otherwise)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LC_ALL": "C"}
    for name in ("TMPDIR",):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


@contextlib.contextmanager
def authfile(registry: str, auth: Mapping[str, Any] | None, parent: Path) -> Iterator[Path]:
    """A containers-auth.json holding one registry's entry, 0600 in a private 0700 directory,
    removed after use: secrets go to skopeo through a file, never its command line (`ps`).
    Without credentials the file is empty, and still given: skopeo then reads no auth file of its
    own choosing (/run/containers/<uid>/auth.json: the sidecar account's own registry logins,
    which a pod without a pull secret must not borrow)."""
    private = Path(tempfile.mkdtemp(prefix="auth-", dir=parent))
    try:
        os.chmod(private, 0o700)
        path = private / "auth.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump({"auths": {registry: dict(auth)} if auth is not None else {}}, file)
        yield path
    finally:
        for child in private.iterdir():
            child.unlink()
        private.rmdir()
