"""Every way a token can be refused, each with a message a user can act on.

Each error is a kind of refusal of interlink_provider.refusals, which gives its HTTP status
(`.status`) and gRPC code: Unauthenticated (401) unless a class says otherwise below. The
APIs answer `code: message` (and, over HTTP, a 401 with `WWW-Authenticate`).
"""

from __future__ import annotations

from interlink_provider.refusals import Forbidden, Unauthenticated, Unavailable


class AuthError(Unauthenticated):
    """Base: `code` is the reason word a caller (and the refusal metric) sees."""

    code = "invalid_token"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def detail(self) -> str:
        return f"{self.code}: {self.message}"


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


class LifetimeTooLong(AuthError):
    """Issued for longer than the site accepts (`exp` - `iat` over auth.token.max_token_lifetime_seconds)."""

    code = "lifetime_too_long"


class WrongAudience(AuthError):
    code = "wrong_audience"


class NotAnAccessToken(AuthError):
    """An ID token, or another JWT of a trusted IdP that is not an access token (auth.tokenkind)."""

    code = "not_access_token"


class ProfileViolation(AuthError):
    code = "wlcg_profile"


class DevelopmentToken(AuthError):
    """A test IdP's token (claim `ilp_dev`) at a service whose trusted issuer is not marked `development`."""

    code = "development_token"


class IdPUnreachable(Unavailable, AuthError):
    """The token cannot be checked (or got) now: the IdP does not answer. 503, not a refusal of the token."""

    code = "idp_unreachable"


class NotAllowed(Forbidden, AuthError):
    """Valid token, but not allowed: missing scope, no account mapping."""

    code = "forbidden"


class MissingScope(NotAllowed):
    code = "missing_scope"


class NoAccount(NotAllowed):
    code = "no_account"


class ExchangeRefused(Forbidden, AuthError):
    """The IdP refused a token exchange or refresh (its error and description)."""

    code = "exchange_refused"
    oauth_error = ""  # the IdP's RFC 6749 error code (invalid_grant: the grant itself is gone)
