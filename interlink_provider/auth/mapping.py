"""Site policy: which token identities may do what, and as which local account.

Rules are tried in order; the first whose every condition holds gives the account.
Operations need scopes (WLCG compute scopes by default): `create` a pod, `read`
status/logs/listings, `cancel` (delete) a pod.
"""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import errors
from .accounts import check_account_name
from .identity import Identity

Operation = Literal["create", "read", "cancel"]
DEFAULT_SCOPES: dict[Operation, list[str]] = {
    "create": ["compute.create"],
    "read": ["compute.read"],
    "cancel": ["compute.cancel"],
}


class IdentityMatch(BaseModel):
    """Which identities a rule is about: every field given must match."""

    model_config = ConfigDict(extra="forbid")

    issuer: str | None = Field(None, description="exact `iss`; any issuer when absent")
    sub: str | None = Field(None, description="`sub`, glob patterns allowed ('*' for any)")
    groups: list[str] = Field(default_factory=list, description="one of these WLCG groups (or a subgroup)")
    scopes: list[str] = Field(default_factory=list, description="all of these scopes")

    def matches(self, identity: Identity) -> bool:
        if self.issuer is not None and identity.issuer != self.issuer:
            return False
        if self.sub is not None and not fnmatch.fnmatchcase(identity.subject, self.sub):
            return False
        if self.groups and not any(_in_group(g, identity.groups) for g in self.groups):
            return False
        return all(identity.has_scope(scope) for scope in self.scopes)


class MappingRule(IdentityMatch):
    """Identities that match run their jobs as `account`."""

    account: str = Field(
        description="local Unix account the identity's jobs run as: a POSIX login name; never `root` "
        "(unless auth.allow_jobs_as_root), a uid (`#N`) or empty"
    )

    @field_validator("account", mode="after")
    @classmethod
    def _a_login_name(cls, account: str) -> str:
        return check_account_name(account)


def _in_group(wanted: str, groups: tuple[str, ...]) -> bool:
    wanted = wanted.rstrip("/")
    return any(g == wanted or g.startswith(wanted + "/") for g in groups)


class IdentityPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[MappingRule] = Field(
        default_factory=list,
        description="tried in order: the first rule whose every condition holds gives the local account; "
        "no match refuses the identity",
    )
    required_scopes: dict[Operation, list[str]] = Field(
        default_factory=lambda: dict(DEFAULT_SCOPES),
        description="scopes a token needs per operation (create; read: status, logs, lists; cancel: delete); "
        "an operation left out keeps its default (give it [] to require no scope)",
    )

    site_admins: list[IdentityMatch] = Field(
        default_factory=list,
        description="identities that may read every pod of the site (statuses, logs, /pods, the status "
        "page), to tell why a pod is stuck; they may create and cancel only their own, like anyone",
    )

    @field_validator("required_scopes", mode="after")
    @classmethod
    def _defaults_for_the_rest(cls, given: dict[Operation, list[str]]) -> dict[Operation, list[str]]:
        """Naming one operation must not silently open the others."""
        return {**DEFAULT_SCOPES, **given}

    def is_site_admin(self, identity: Identity) -> bool:
        return any(rule.matches(identity) for rule in self.site_admins)

    def account_for(self, identity: Identity) -> str:
        for rule in self.rules:
            if rule.matches(identity):
                return rule.account
        raise errors.NoAccount(
            f"no account on this site for {identity.subject} from {identity.issuer}"
            f" (groups {list(identity.groups) or 'none'})"
        )

    def check(self, identity: Identity, operation: Operation) -> None:
        missing = [s for s in self.required_scopes.get(operation, []) if not identity.has_scope(s)]
        if missing:
            raise errors.MissingScope(
                f"{operation} needs scope {' '.join(missing)}; the token has "
                f"{' '.join(str(s) for s in identity.scopes) or 'none'}"
            )
