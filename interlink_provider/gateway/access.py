"""Who may call the gateway's interLink API over TCP.

The upstream Virtual Kubelet can prove itself two ways, and the gateway checks either or both:
a client certificate (its `TLS.CertFile`/`KeyFile`; checked in the TLS handshake against
`listen.client_ca`, see interlink_provider.listeners.server_tls), and `Authorization: Bearer
<token>` with the verbatim content of its `VKTokenFile`, read anew for every request: here a
shared token from `listen.token_file`, compared in constant time. The unix socket is guarded by
its mode and not checked here.
"""

from __future__ import annotations

import hmac
import logging
import os
import stat
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from ..listeners import CannotListen, via_unix_socket

log = logging.getLogger(__name__)
MIN_TOKEN_CHARS = 16


class TokenFileProblem(Exception):
    """The token file cannot be used: unreadable, readable by others, or too short a token."""


def read_token(path: str) -> str:
    """The token in `path` (surrounding whitespace dropped), if the file is fit to hold one."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileProblem(f"listen.token_file {path}: {exc}") from exc
    # Group read is tolerated: Kubernetes gives a Secret volume's files to the pod's fsGroup.
    if mode & 0o037:
        raise TokenFileProblem(f"listen.token_file {path}: mode {mode:04o}, open to others: chmod 600 it")
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenFileProblem(
            f"listen.token_file {path}: the token must be one word of at least {MIN_TOKEN_CHARS} characters "
            "(e.g. openssl rand -hex 32)"
        )
    return token


class SharedToken:
    """The bearer token of `listen.token_file`, re-read when the file changes (a rotated Secret)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._problem: str | None = None
        try:
            self._seen = self._identity()  # before reading: a change in between is read again next time
            self._token = read_token(path).encode()
        except (TokenFileProblem, OSError) as exc:
            raise CannotListen(str(exc)) from exc

    def _identity(self) -> tuple[int, int, int, int]:
        info = os.stat(self.path)
        return info.st_ino, info.st_mtime_ns, info.st_size, info.st_mode

    def current(self) -> bytes | None:
        """The token now; None if the file became unusable (every request is then refused)."""
        try:
            seen = self._identity()
            if seen != self._seen or self._problem:
                self._token, self._seen = read_token(self.path).encode(), seen
                log.info("listen.token_file %s changed: using the new token", self.path)
        except (TokenFileProblem, OSError) as exc:
            if str(exc) != self._problem:  # said once, not on every request
                log.error("%s: refusing every TCP request until it is fixed", exc)
            self._problem = str(exc)
            return None
        self._problem = None
        return self._token

    def admits(self, authorization: str | None) -> bool:
        expected = self.current()
        scheme, _, presented = (authorization or "").partition(" ")
        if expected is None or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode(), expected)


TOKEN_KEY = web.AppKey("token", SharedToken)


@web.middleware
async def token_required(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Over TCP, every path needs the shared token (unix-socket callers passed the socket's mode)."""
    token = request.app.get(TOKEN_KEY)
    if token is None or via_unix_socket(request) or token.admits(request.headers.get("Authorization")):
        return await handler(request)
    peer = request.remote or "?"
    log.warning(
        "refused %s %s from %s: unauthenticated (no valid Authorization header)", request.method, request.path, peer
    )
    return web.Response(
        status=401,
        text="401: the gateway's interLink API needs `Authorization: Bearer <token>` (the VK's VKTokenFile)\n",
        content_type="text/plain",
        headers={"WWW-Authenticate": 'Bearer realm="interlink-provider gateway"'},
    )
