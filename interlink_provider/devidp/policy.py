"""IAM's token-exchange policies: which client may exchange tokens of which, for which scopes.

The applicable policy is the one with the highest rank (ANY=0, BY_SCOPE=1, BY_ID=2
for origin plus destination); at equal rank DENY wins; no applicable policy denies.
Each requested scope must then be permitted by a scope policy (DENY wins), unless
the policy lists none.
"""

from __future__ import annotations

import re

from interlink_provider.auth.scopes import Scope

from .config import ClientMatch, ExchangePolicy, ScopePolicy

RANK = {"ANY": 0, "BY_SCOPE": 1, "BY_ID": 2}


def _client_matches(match: ClientMatch, client_id: str, client_scopes: list[str]) -> bool:
    if match.type == "ANY":
        return True
    if match.type == "BY_ID":
        return client_id == match.match
    return match.match in client_scopes


def _scope_matches(policy: ScopePolicy, scope: str) -> bool:
    if policy.type == "EQ":
        return scope == policy.match
    if policy.type == "REGEXP":
        return re.fullmatch(policy.match, scope) is not None
    return Scope.parse(policy.match).covers(Scope.parse(scope))


def decide(
    policies: list[ExchangePolicy],
    origin: tuple[str, list[str]],
    destination: tuple[str, list[str]],
    scopes: list[str],
) -> str | None:
    """None when the exchange is allowed, else the reason it is not."""
    applicable = [
        p for p in policies if _client_matches(p.origin, *origin) and _client_matches(p.destination, *destination)
    ]
    if not applicable:
        return "no exchange policy applies"
    top = max(RANK[p.origin.type] + RANK[p.destination.type] for p in applicable)
    best = [p for p in applicable if RANK[p.origin.type] + RANK[p.destination.type] == top]
    chosen = next((p for p in best if p.rule == "DENY"), best[0])
    name = _printable(chosen.description) or "unnamed"
    if chosen.rule == "DENY":
        return f"exchange denied by policy ({name})"
    if not chosen.scopes:
        return None
    for scope in scopes:
        matching = [s for s in chosen.scopes if _scope_matches(s, scope)]
        if not matching or any(s.rule == "DENY" for s in matching):
            return f"scope {_printable(scope)} is not permitted by policy ({name})"
    return None


def _printable(text: str) -> str:
    """OAuth error descriptions may not carry double quotes or backslashes (RFC 6749 5.2)."""
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in text)
