"""Kubernetes' rule for the process a container runs, from its image and its spec:

  command given          command + args          (the image's Entrypoint and Cmd both ignored)
  only args given        Entrypoint + args       (the image's Cmd ignored)
  neither                Entrypoint + Cmd

The environment is the image's Env with the container's env over it; the working directory is the
container's workingDir, else the image's WorkingDir, else /. Written once here so every runtime
(ch-run today) starts the same process the kubelet would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from interlink_provider.images.config import ImageConfig


class NoCommand(ValueError):
    """Neither the container nor its image names a program (Kubernetes: CreateContainerError)."""


@dataclass(frozen=True)
class Process:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str


def argv(image: ImageConfig, command: Sequence[str] | None, args: Sequence[str] | None) -> tuple[str, ...]:
    """The argument vector; an empty list in the spec counts as not given, as in the kubelet."""
    if command:
        out = tuple(command) + tuple(args or ())
    elif args:
        out = image.entrypoint + tuple(args)
    else:
        out = image.entrypoint + image.cmd
    if not out:
        raise NoCommand("no command specified: neither the container nor its image names one")
    return out


def environment(image: ImageConfig, container_env: Mapping[str, str] | None) -> dict[str, str]:
    """The image's Env under the container's: a name the pod sets is the pod's."""
    env = image.env_map()
    env.update(container_env or {})
    return env


def working_dir(image: ImageConfig, container_working_dir: str | None) -> str:
    return container_working_dir or image.working_dir or "/"


def process(
    image: ImageConfig,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
) -> Process:
    """The whole process a container of this image runs."""
    return Process(argv(image, command, args), environment(image, env), working_dir(image, workdir))
