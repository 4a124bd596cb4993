"""WLCG scopes: `storage.read:/a` covers `/a/b` but not `/ab`; compute scopes take no path.

A storage scope without a path (`storage.read`, `storage.read:`) grants no path at all: the
WLCG profile makes the path mandatory and has such tokens refused (auth.profile does, where
the profile is required); it is not read as `storage.read:/`, the whole namespace.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

PATH_SCOPES = frozenset({"storage.read", "storage.create", "storage.modify", "storage.stage", "storage.poll"})


@dataclass(frozen=True)
class Scope:
    name: str
    path: str | None = None  # normalised, for path scopes; None for a path scope given without one

    @classmethod
    def parse(cls, text: str) -> Scope:
        name, _, path = text.partition(":")
        if name in PATH_SCOPES:
            if not path:
                return cls(name, None)
            # A relative path is non-conforming; the profile leaves normalising it to us.
            return cls(name, _normalise(path if path.startswith("/") else "/" + path))
        return cls(text, None)

    @property
    def missing_path(self) -> bool:
        """A storage scope given without the path the WLCG profile requires."""
        return self.name in PATH_SCOPES and self.path is None

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
