"""Shell quoting for rendered job scripts: every value quoted unless explicitly raw.

A job script is rendered from templates; pod-provided strings (commands, env
values, paths) are data and must reach the shell as single words. `Raw` marks
the few fragments that are shell syntax written by us (never by a pod).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable


class Raw(str):
    """A fragment of shell syntax authored by this project; emitted verbatim."""

    __slots__ = ()


def shq(value: object) -> str:
    """Quote one value as a single shell word (Raw passes through)."""
    if isinstance(value, Raw):
        return value
    text = str(value)
    if "\x00" in text:
        raise ValueError("shell words cannot contain NUL bytes")
    return shlex.quote(text)


def shjoin(words: Iterable[object]) -> str:
    """Quote and join an argv for a shell command line."""
    return " ".join(shq(word) for word in words)
