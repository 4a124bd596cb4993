"""The parts of an OCI image configuration a pod's process needs (Entrypoint, Cmd, Env,
WorkingDir, User), read from the config blob's JSON and kept beside the unpacked rootfs, so a
runner starts the process without reading OCI layouts again."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageConfig:
    """What the image says about its process; empty fields mean the image says nothing."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # NAME=value, in the image's order
    working_dir: str = ""
    user: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)  # labels, kept for reports

    @classmethod
    def from_oci(cls, document: Any) -> ImageConfig:
        """From an OCI (or Docker v2) image config blob: its `config` object, all fields optional."""
        if not isinstance(document, dict):
            raise ValueError("an image config is a JSON object")
        config = document.get("config")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise ValueError("the image config's `config` is not an object")
        return cls(
            entrypoint=_strings(config.get("Entrypoint"), "Entrypoint"),
            cmd=_strings(config.get("Cmd"), "Cmd"),
            env=_strings(config.get("Env"), "Env"),
            working_dir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
            extra={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ImageConfig:
        data = json.loads(text)
        return cls(
            entrypoint=tuple(data["entrypoint"]),
            cmd=tuple(data["cmd"]),
            env=tuple(data["env"]),
            working_dir=data["working_dir"],
            user=data["user"],
            extra=dict(data.get("extra") or {}),
        )

    def env_map(self) -> dict[str, str]:
        """The image's Env as a mapping (a later duplicate wins, as in a shell's environment)."""
        out: dict[str, str] = {}
        for item in self.env:
            name, _, value = item.partition("=")
            if name:
                out[name] = value
        return out


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"the image config's {what} is not a list of strings")
    return tuple(value)
