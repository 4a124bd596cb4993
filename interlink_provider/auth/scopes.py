"""WLCG scopes: `storage.read:/a` covers `/a/b` but not `/ab`; compute scopes take no path."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

PATH_SCOPES = frozenset({"storage.read", "storage.create", "storage.modify", "storage.stage", "storage.poll"})


@dataclass(frozen=True)
class Scope:
    name: str
    path: str | None = None  # normalised, for path scopes

    @classmethod
    def parse(cls, text: str) -> Scope:
        name, sep, path = text.partition(":")
        if name in PATH_SCOPES:
            if not sep or not path.startswith("/"):
                # The profile makes the path mandatory; be lenient only with a missing one.
                path = "/" if not sep else "/" + path
            return cls(name, _normalise(path))
        return cls(text, None)

    def covers(self, wanted: Scope) -> bool:
        if self.name != wanted.name:
            return False
        if self.path is None or wanted.path is None:
            return self.path == wanted.path
        return self.path == "/" or wanted.path == self.path or wanted.path.startswith(self.path + "/")

    def __str__(self) -> str:
        return f"{self.name}:{self.path}" if self.path is not None else self.name


def _normalise(path: str) -> str:
    normalised = posixpath.normpath(path)
    return "/" if normalised in ("/", "//", ".") else normalised.rstrip("/")


def parse_scopes(value: str | list[str] | None) -> list[Scope]:
    if not value:
        return []
    words = value.split() if isinstance(value, str) else [w for item in value for w in str(item).split()]
    return [Scope.parse(word) for word in words]


def covered(granted: list[Scope], wanted: str | Scope) -> bool:
    target = wanted if isinstance(wanted, Scope) else Scope.parse(wanted)
    return any(scope.covers(target) for scope in granted)
