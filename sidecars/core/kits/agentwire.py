"""The wire between the sidecar and a per-account agent: one JSON object per line, both ways.

A request is `{"id": N, "op": NAME, "args": {...}}`; its answer `{"id": N, "ok": RESULT}` or
`{"id": N, "error": {"kind": KIND, "message": TEXT}}`. Requests may overlap (the agent
answers each as it finishes). The first request is always `hello`: what the agent needs to
know (the pods root, the scheduler's environment), since it takes nothing from its command
line or environment (sudo runs it with neither). Bytes travel as base64.

Error kinds map back to the exceptions of the site-files and transport seam: `workdir`
(WorkdirError: the pod's files refused an operation), `os` (an OSError), `transport` (a
command could not run), `refused` (the agent will not act outside its account's pods),
`internal` (a bug; its message is in the agent's log).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from sidecars.core.kits.podpaths import PodPaths

PROTOCOL = 1
MAX_LINE = 256 * 1024 * 1024  # one message (a pod directory's plan with its volumes) at most

OPS = frozenset(
    {
        "hello",
        "materialize",
        "remove",
        "scrub",
        "read_pod",
        "link_inputs",
        "volume_files",
        "read_tail",
        "read_from",
        "run",
        "export_outputs",
    }
)
ERROR_KINDS = frozenset({"workdir", "taken", "os", "transport", "refused", "internal", "unknown-op"})


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    id: int
    ok: Any = None
    error_kind: str = ""
    error: str = ""


class WireError(Exception):
    """A line that is not a message of this protocol."""


def request_line(request: Request) -> bytes:
    return _line({"id": request.id, "op": request.op, "args": request.args})


def answer_line(answer: Answer) -> bytes:
    if answer.error_kind:
        return _line({"id": answer.id, "error": {"kind": answer.error_kind, "message": answer.error}})
    return _line({"id": answer.id, "ok": answer.ok})


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _object(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WireError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("id"), int):
        raise WireError("a message is an object with an integer id")
    return message


def parse_request(line: bytes) -> Request:
    message = _object(line)
    op, args = message.get("op"), message.get("args", {})
    if not isinstance(op, str) or not isinstance(args, dict):
        raise WireError("a request names an op and gives its args as an object")
    return Request(message["id"], op, args)


def parse_answer(line: bytes) -> Answer:
    message = _object(line)
    error = message.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise WireError("an error is an object")
        return Answer(message["id"], error_kind=str(error.get("kind", "internal")), error=str(error.get("message", "")))
    return Answer(message["id"], ok=message.get("ok"))


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode_bytes(text: object) -> bytes:
    if not isinstance(text, str):
        raise WireError("bytes travel as base64 text")
    return base64.b64decode(text)


def paths_json(paths: PodPaths) -> dict[str, str]:
    return {"pods_root": paths.pods_root, "pod_dir": paths.pod_dir}


def paths_of(data: object) -> PodPaths:
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("pods_root", "pod_dir")):
        raise WireError("paths are {pods_root, pod_dir}")
    return PodPaths(pods_root=data["pods_root"], pod_dir=data["pod_dir"])


def identity_json(identity: Any) -> Any:
    """A log file's identity as JSON (a (device, inode) pair travels as a list)."""
    return list(identity) if isinstance(identity, tuple) else identity


def identity_of(data: Any) -> Any:
    return tuple(data) if isinstance(data, list) else data
