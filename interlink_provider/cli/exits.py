"""The exit codes of every `interlink-provider` command, and the one line a command ends with.

One scheme for all commands, so that a script can tell "fix your input" (2) from "the service is
down" (3) without knowing which command it ran. docs/generate.py prints MEANING in the CLI reference.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # imported when an error is shown: the daemons start through this package
    from yaml import MarkedYAMLError

Config = TypeVar("Config")


class Exit(IntEnum):
    OK = 0
    BAD = 1
    USAGE = 2
    UNREACHABLE = 3
    DAMAGED = 78  # sysexits' EX_CONFIG: systemd units do not restart on it (RestartPreventExitStatus)
    TIMEOUT = 124
    INTERRUPTED = 130


MEANING = {
    Exit.OK: "done; the thing checked is good",
    Exit.BAD: "the thing checked or asked for is bad: a pod failed, a token or request was refused, data is "
    "missing or corrupt, a doctor check failed, no pod of that name; a daemon could not start with a valid "
    "configuration (a port in use, a certificate it cannot read)",
    Exit.USAGE: "the command cannot run as given: an unknown flag or a bad argument, an address without its "
    "scheme, a configuration file that is missing or invalid (YAML, keys, values, `ILP__` variables), no token "
    "found, a missing optional extra (`interlink-provider[staging]`)",
    Exit.UNREACHABLE: "a server does not answer: the sidecar, the gateway, the IdP, Rucio or XRootD",
    Exit.DAMAGED: "a daemon will not start over its damaged state database (restarting cannot help: the systemd "
    "units do not restart on it, nor on 2); `site check-state` says what is damaged, `site rebuild-state` recovers",
    Exit.TIMEOUT: "the wait asked for ran out (`pod run --timeout`, `token login --timeout`)",
    Exit.INTERRUPTED: "interrupted (Ctrl-C, SIGTERM); partial files were removed",
}


class Refusal(Exception):
    """A command cannot go on: main() prints `interlink-provider COMMAND: message` (one line) and exits `code`."""

    def __init__(self, message: str, code: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def one_line(exc: BaseException) -> str:
    """An error in one line: each of pydantic's errors as `where: what`, a YAML error by line and column."""
    import yaml
    from pydantic import ValidationError

    if isinstance(exc, yaml.MarkedYAMLError):
        return yaml_line(exc)
    if not isinstance(exc, ValidationError):
        return " ".join(str(exc).split())
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"])
        what = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {what}" if where else what)
    return "; ".join(parts)


def yaml_line(exc: MarkedYAMLError) -> str:
    """PyYAML's own message is five lines quoting the text; the line and column say as much in one."""
    mark, context = exc.problem_mark, exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    started = ""
    if exc.context and context:
        started = f" ({exc.context} at line {context.line + 1}, column {context.column + 1})"
    return f"YAML syntax error{where}: {exc.problem or 'not YAML'}{started}"


def load_config(load: Callable[[str], Config], path: str) -> Config:
    """A configuration file loaded by `load`, or a Refusal (exit 2) saying in one line what is wrong and where."""
    import yaml

    try:
        return load(path)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise Refusal(f"invalid configuration {path}: {one_line(exc)}") from exc
