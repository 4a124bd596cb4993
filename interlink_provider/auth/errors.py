"""Every way a token can be refused, each with a message a user can act on."""

from __future__ import annotations


class AuthError(Exception):
    """Base: `status` is the HTTP status a server should answer with."""

    status = 401
    code = "invalid_token"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingToken(AuthError):
    code = "missing_token"


class MalformedToken(AuthError):
    code = "malformed_token"


class UnknownIssuer(AuthError):
    code = "unknown_issuer"


class BadSignature(AuthError):
    code = "bad_signature"


class Expired(AuthError):
    code = "expired"


class NotYetValid(AuthError):
    code = "not_yet_valid"


class WrongAudience(AuthError):
    code = "wrong_audience"


class ProfileViolation(AuthError):
    code = "wlcg_profile"


class IdPUnreachable(AuthError):
    status = 503
    code = "idp_unreachable"


class Forbidden(AuthError):
    """Valid token, but not allowed: missing scope, no account mapping, another's pod."""

    status = 403
    code = "forbidden"


class MissingScope(Forbidden):
    code = "missing_scope"


class NoAccount(Forbidden):
    code = "no_account"


class ExchangeRefused(AuthError):
    """The IdP refused a token exchange or refresh (its error and description)."""

    status = 403
    code = "exchange_refused"
