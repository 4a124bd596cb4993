"""Paths in configuration files: `$NAME`/`${NAME}` from the environment, strictly.

Both daemons' configs name files through variables ($ILP_SITE_DIR/pods, ${CREDENTIALS_DIRECTORY}/...);
an unset variable is an error naming it (and the key), never a literal `$X` left in a path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def expand_variables(value: str, environ: Mapping[str, str], key: str | None = None) -> str:
    """`$NAME` and `${NAME}` in a path, from `environ`; an unset variable is an error (naming `key`, if given)."""

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in environ:
            raise ValueError(f"{key + ': ' if key else ''}path {value!r} uses ${name}, which is not set")
        return environ[name]

    return _VARIABLE.sub(variable, value)
