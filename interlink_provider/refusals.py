"""Every refusal our APIs give, in one table: its HTTP status, its gRPC status code, its wording.

The site's REST and gRPC APIs and the gateway's REST API answer an error with a status,
not a 500, when its class derives from one of the kinds below. `OUTCOMES` gives each kind
its HTTP status, the name of its gRPC status code (`grpc.StatusCode[name]`: this module
imports no grpc) and the words put before the error's own message. `answer(exc)` looks an
error up by its classes (a subclass answers as its kind) and also words the few foreign
errors a request body can raise (pydantic's ValidationError, JSON or UTF-8 that does not
decode). `HTTP_OF_SITE_CODE` is the way back, for the gateway: the gRPC code a site
answered with, as the HTTP status the Virtual Kubelet gets.

The errors are defined where they are raised and name their kind as a base class:

- BadRequest, NotFound, Forbidden, Unavailable: the site's service core raises these
  themselves (sidecars.core.domain.errors re-exports them);
- PodRejected (interlink_provider.pods) is Rejected; TransportError (sidecars.core.kits)
  is Unreachable;
- AuthError (interlink_provider.auth.errors) is Unauthenticated; its NotAllowed and
  ExchangeRefused are Forbidden, its IdPUnreachable is Unavailable;
- the gateway's NoSite is Unroutable, its IdentityUnusable is Invalid, its IdentityRefused
  Forbidden; an AuthError at the gateway is about a token it asked for: NoTokenForSite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError


class Refusal(Exception):
    """An error the APIs answer with a status and a reason: raise one of its kinds below."""

    def detail(self) -> str:
        """What follows the kind's prefix in the answer: the message itself, unless a class says more."""
        return str(self)

    @property
    def status(self) -> int:
        """The HTTP status this refusal is answered with."""
        return OUTCOMES[kind_of(type(self))].http


class BadRequest(Refusal):
    """The request cannot be read: not JSON, the wrong shape, options that contradict each other."""


class Invalid(Refusal):
    """The request is read, but a value in it is refused: a field failing its model, an identity Secret."""


class Rejected(Refusal):
    """The pod is well formed but cannot run here: a name, path, flag or resource the site refuses."""


class Unroutable(Refusal):
    """No site of the gateway can take the pod."""


class Unauthenticated(Refusal):
    """No token, or one that cannot be trusted."""


class Forbidden(Refusal):
    """The caller is known but may not do this: a scope missing, no account, another's pod."""


class NotFound(Refusal):
    """What the request names is not here."""


class Conflict(Refusal):
    """What the request would create is already there and not its own (a pod directory no record
    of this pod accounts for)."""


class Exhausted(Refusal):
    """A limit is reached: the site's places for pods (max_pods), or one identity's share."""


class Unavailable(Refusal):
    """Something the answer needs is down for now (the scheduler, an IdP, storage): try again."""


class Unreachable(Refusal):
    """The site's scheduler commands cannot be run at all (missing, timed out, the SSH link lost)."""


class NoTokenForSite(Refusal):
    """The gateway could not get a token to call a site with (its own, or a pod owner's)."""


@dataclass(frozen=True)
class Outcome:
    http: int  # the HTTP status
    grpc: str  # the name of the grpc.StatusCode
    prefix: str = ""  # put before the error's own message


OUTCOMES: dict[type[Refusal], Outcome] = {
    BadRequest: Outcome(400, "INVALID_ARGUMENT"),
    Invalid: Outcome(422, "INVALID_ARGUMENT"),
    Rejected: Outcome(422, "INVALID_ARGUMENT", "pod rejected: "),
    Unroutable: Outcome(422, "INVALID_ARGUMENT", "no site for this pod: "),
    Unauthenticated: Outcome(401, "UNAUTHENTICATED"),
    Forbidden: Outcome(403, "PERMISSION_DENIED"),
    NotFound: Outcome(404, "NOT_FOUND"),
    Conflict: Outcome(409, "ALREADY_EXISTS"),
    Exhausted: Outcome(429, "RESOURCE_EXHAUSTED"),
    Unavailable: Outcome(503, "UNAVAILABLE"),
    Unreachable: Outcome(503, "UNAVAILABLE", "the site cannot be reached: "),
    NoTokenForSite: Outcome(502, "UNAVAILABLE", "the gateway has no token for the site: "),
}

# The gateway's way back: a site's gRPC code as the HTTP status the Virtual Kubelet gets
# (any other code: 500). Not the inverse of OUTCOMES everywhere, on purpose:
HTTP_OF_SITE_CODE: dict[str, int] = {
    "INVALID_ARGUMENT": 422,  # the site's 400s and 422s alike: the pod, as the VK sent it, cannot run there
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "UNAUTHENTICATED": 502,  # the site refused the gateway's token, not the VK's (which sends none)
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,  # the site did not answer in time
}


@dataclass(frozen=True)
class Answer:
    """What one refusal becomes on the wire."""

    http: int
    grpc: str
    message: str
    refusal: Refusal


def kind_of(cls: type[Refusal]) -> type[Refusal]:
    """The first of the class's bases (itself included) that OUTCOMES has a row for."""
    for base in cls.__mro__:
        if base in OUTCOMES:
            return base
    raise LookupError(f"{cls.__qualname__} derives from no kind of refusal of interlink_provider.refusals")


def validation_message(exc: ValidationError) -> str:
    """A request that failed its model, as one line naming each bad field (first ten)."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:10]]
    return "invalid request: " + "; ".join(parts)


def refusal_of(exc: BaseException) -> Refusal | None:
    """The error as a refusal: itself, or the words for a foreign error a request body can raise.
    None for anything else: a bug, which the APIs answer with a 500 (or gRPC's UNKNOWN)."""
    if isinstance(exc, Refusal):
        return exc
    if isinstance(exc, ValidationError):
        return Invalid(validation_message(exc))
    if isinstance(exc, json.JSONDecodeError):
        return BadRequest(f"invalid JSON: {exc}")
    if isinstance(exc, UnicodeDecodeError):
        return BadRequest("the request body is not UTF-8")
    return None


def answer(exc: BaseException) -> Answer | None:
    """How to answer the error: its HTTP status, gRPC code and message; None if it is no refusal."""
    refusal = refusal_of(exc)
    if refusal is None:
        return None
    outcome = OUTCOMES[kind_of(type(refusal))]
    return Answer(outcome.http, outcome.grpc, outcome.prefix + refusal.detail(), refusal)


def site_answer(code: str, details: str | None) -> tuple[int, str]:
    """A site's gRPC refusal (code name, details) as the gateway's HTTP status and message."""
    return HTTP_OF_SITE_CODE.get(code, 500), f"site: {code}: {details}"


__all__ = [
    "HTTP_OF_SITE_CODE",
    "OUTCOMES",
    "Answer",
    "BadRequest",
    "Conflict",
    "Exhausted",
    "Forbidden",
    "Invalid",
    "NoTokenForSite",
    "NotFound",
    "Outcome",
    "Refusal",
    "Rejected",
    "Unauthenticated",
    "Unavailable",
    "Unreachable",
    "Unroutable",
    "answer",
    "kind_of",
    "refusal_of",
    "site_answer",
    "validation_message",
]
