"""`interlink-provider token ...`: diagnose tokens the way the trust network sees them.

Exit codes: 0 the answer is yes (found, valid, exchanged); 1 the token is refused
(expired, wrong audience, unknown issuer, missing scope, bad signature, ...);
2 usage error or no token; 3 the IdP or the site cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import jwt
import yaml
from rich.console import Console

from ..auth import discovery, errors
from ..auth.exchange import OAuthClient, Token, write_private
from ..auth.profile import supported_version
from ..auth.scopes import parse_scopes
from ..auth.validate import (
    DEVELOPMENT_CLAIM,
    REQUIRED_CLAIMS,
    WLCG_ANY_AUDIENCE,
    TokenValidator,
    TrustedIssuer,
    ValidationConfig,
)
from .client import SidecarClient, SidecarError

out = Console(highlight=False, soft_wrap=True)  # paths and tokens must not be cut by wrapping
err = Console(stderr=True, highlight=False, soft_wrap=True)
OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
# A subcommand's body: an exit code, or a coroutine that gives one.
Body = Callable[[argparse.Namespace], int | Coroutine[Any, Any, int]]


def human_delta(seconds: float) -> str:
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def expiry_text(exp: float | None, now: float | None = None) -> str:
    if exp is None:
        return "no expiry (exp missing)"
    delta = float(exp) - (now or time.time())
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(exp)))
    return f"expires in {human_delta(delta)} ({stamp})" if delta > 0 else f"EXPIRED {human_delta(delta)} ago ({stamp})"


def wlcg_checks(claims: dict[str, Any]) -> list[tuple[bool, str]]:
    """The WLCG profile checks a human wants to see at a glance."""
    checks = [(name in claims, f"claim {name} present") for name in [*REQUIRED_CLAIMS, "aud", "wlcg.ver"]]
    version = claims.get("wlcg.ver")
    checks.append((supported_version(version), f"wlcg.ver is 1.<minor> (got {version or 'none'})"))
    checks.append(("scope" in claims or "wlcg.groups" in claims, "carries scope or wlcg.groups"))
    exp = claims.get("exp")
    checks.append((exp is not None and float(exp) > time.time(), expiry_text(exp)))
    return checks


def _token_from(args: argparse.Namespace) -> tuple[str, str]:
    if getattr(args, "token", None) and args.token != "-":
        return args.token.strip(), "the command line"
    if getattr(args, "token", None) == "-":
        return sys.stdin.read().strip(), "standard input"
    found = discovery.discover()
    return found.token, found.source


def command(run: Body) -> Callable[[argparse.Namespace], int]:
    """A subcommand: runs (awaiting coroutines); a missing token is a usage error (exit 2)."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            result = run(args)
            return result if isinstance(result, int) else asyncio.run(result)
        except errors.MissingToken as exc:
            err.print(f"[red]{exc.message}[/]")
            return USAGE

    return wrapper


@command
def discover_cmd(args: argparse.Namespace) -> int:
    found = discovery.discover()
    claims = _unverified(found.token)
    out.print(f"token from {found.source}")
    if claims:
        out.print(f"  sub {claims.get('sub')}  iss {claims.get('iss')}  {expiry_text(claims.get('exp'))}")
    return OK


def _unverified(token: str) -> dict[str, Any]:
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}


@command
def inspect_cmd(args: argparse.Namespace) -> int:
    token, source = _token_from(args)
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        err.print(f"[red]not a JWT: {exc}[/]")
        return REFUSED
    out.print(f"[bold]token from {source}[/] (signature not checked: use `token verify`)")
    out.print("[bold]header[/] " + json.dumps(header))
    out.print("[bold]claims[/]")
    out.print(json.dumps(claims, indent=2, sort_keys=True))
    out.print(f"[bold]scopes[/] {' '.join(str(s) for s in parse_scopes(claims.get('scope'))) or '(none)'}")
    if claims.get(DEVELOPMENT_CLAIM) not in (None, False):
        out.print(
            f"[yellow]a development token[/] (claim {DEVELOPMENT_CLAIM}: from a devidp test IdP); sites "
            "accept it only from an issuer marked `development: true`"
        )
    out.print("[bold]WLCG profile[/]")
    checks = wlcg_checks(claims)
    for passed, text in checks:
        out.print(f"  {'[green]ok[/]  ' if passed else '[red]FAIL[/]'} {text}")
    return OK if all(p for p, _ in checks) else REFUSED


@command
async def verify_cmd(args: argparse.Namespace) -> int:
    token, _ = _token_from(args)
    config = ValidationConfig(
        issuers=[TrustedIssuer(issuer=args.issuer, ca_file=args.ca_file, development=args.development)],
        audiences=args.audience or [],
        accept_any_audience=args.any_audience,
        require_wlcg_profile=not args.no_wlcg,
    )
    validator = TokenValidator(config)
    try:
        identity = await validator.validate(token)
    except errors.IdPUnreachable as exc:
        err.print(f"[red]cannot check: {exc.message}[/]")
        return UNREACHABLE
    except errors.AuthError as exc:
        err.print(f"[red]INVALID ({exc.code}): {exc.message}[/]")
        return REFUSED
    finally:
        await validator.close()
    missing = [s for s in args.scope or [] if not identity.has_scope(s)]
    if missing:
        err.print(f"[red]INVALID (missing_scope): the token lacks {' '.join(missing)}[/]")
        return REFUSED
    out.print(
        f"[green]VALID[/]: sub {identity.subject} from {identity.issuer}, "
        f"aud {list(identity.audiences)}, {expiry_text(identity.expires_at)}"
        + (f", exchanged by {identity.actor}" if identity.actor else "")
    )
    return OK


def _secret(args: argparse.Namespace) -> str | None:
    if args.client_secret_file:
        return Path(args.client_secret_file).read_text().strip()
    return os.environ.get("ILP_CLIENT_SECRET")


async def _from_idp(client: OAuthClient, request: Awaitable[Token], what: str) -> Token | int:
    """The IdP's token, or the exit code after saying why not; the client is closed either way."""
    try:
        return await request
    except errors.IdPUnreachable as exc:
        err.print(f"[red]{exc.message}[/]")
        return UNREACHABLE
    except errors.AuthError as exc:
        err.print(f"[red]{what} refused: {exc.message}[/]")
        return REFUSED
    finally:
        await client.close()


@command
async def exchange_cmd(args: argparse.Namespace) -> int:
    token, _ = _token_from(args)
    client = OAuthClient(args.issuer, args.client_id, _secret(args), ca_file=args.ca_file)
    result = await _from_idp(client, client.exchange(token, args.audience, args.scope), "exchange")
    if isinstance(result, int):
        return result
    if args.output:
        write_private(Path(args.output), result.access_token + "\n")
        err.print(f"wrote the exchanged token to {args.output} (mode 0600); {expiry_text(result.expires_at)}")
    else:
        print(result.access_token)
    return OK


async def _device_login(client: OAuthClient, scope: str, deadline_seconds: float) -> Token:
    """RFC 8628: show the user where to approve, then poll until they did (or refused, or it expired)."""
    start = await client.device_authorization(scope)
    where = start.get("verification_uri_complete") or start["verification_uri"]
    err.print(f"To log in, open [bold]{where}[/] and enter the code [bold]{start['user_code']}[/]")
    interval = float(start.get("interval") or 5)
    deadline = time.monotonic() + min(float(start.get("expires_in") or 600), deadline_seconds)
    while time.monotonic() < deadline:
        await asyncio.sleep(interval)
        try:
            return await client.device_token(start["device_code"])
        except errors.ExchangeRefused as exc:
            code = getattr(exc, "oauth_error", "")
            if code == "slow_down":
                interval += 5
            elif code != "authorization_pending":
                raise
    raise errors.ExchangeRefused("the login was not approved in time")


def identity_secret(name: str, namespace: str, issuer: str, client_id: str, token: Token) -> dict[str, Any]:
    """The Secret a pod names with `interlink.provider/identity-secret` (read by the gateway, never forwarded)."""
    data = {"issuer": issuer, "client_id": client_id, "access_token": token.access_token}
    if token.refresh_token:
        data["refresh_token"] = token.refresh_token
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "interlink-provider"},
        },
        "stringData": data,
    }


@command
async def login_cmd(args: argparse.Namespace) -> int:
    client = OAuthClient(args.issuer, args.client_id, None, ca_file=args.ca_file)
    token = await _from_idp(client, _device_login(client, args.scope, args.timeout), "login")
    if isinstance(token, int):
        return token
    if not token.refresh_token:
        err.print(
            "[yellow]the IdP gave no refresh token (offline_access?): pods can start only while the "
            f"access token lives ({expiry_text(token.expires_at)})[/]"
        )
    manifest = yaml.safe_dump(
        identity_secret(args.secret_name, args.namespace, args.issuer, args.client_id, token), sort_keys=False
    )
    if args.output:
        write_private(Path(args.output), manifest)
        err.print(
            f"wrote Secret {args.namespace}/{args.secret_name} to {args.output} (mode 0600): "
            f"kubectl apply -f {args.output}"
        )
    else:
        print(manifest, end="")
    err.print(
        f"pods name it with the annotation interlink.provider/identity-secret: {args.secret_name} and a "
        f"volume `secret: {{secretName: {args.secret_name}}}` (the gateway removes both before the site)"
    )
    return OK


@command
async def whoami_cmd(args: argparse.Namespace) -> int:
    token, source = _token_from(args)
    async with SidecarClient(args.site, token=token, ca_file=args.ca_file) as client:
        try:
            answer = await client.whoami()
        except SidecarError as exc:
            err.print(f"[red]the site refuses this token (HTTP {exc.status}): {exc.message}[/]")
            return REFUSED
        except OSError as exc:
            err.print(f"[red]cannot reach the site {args.site}: {exc}[/]")
            return UNREACHABLE
    out.print(f"token from {source}")
    out.print(
        f"  identity {answer['subject']} from {answer['issuer']}"
        + (f" (exchanged by {answer['actor']})" if answer.get("actor") else "")
    )
    out.print(f"  runs jobs as account [bold]{answer['account']}[/]")
    allowed = answer["allowed"]
    out.print("  may " + ", ".join(f"{op} {'yes' if ok else 'NO'}" for op, ok in allowed.items()))
    return OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser(
        "token",
        help="find, inspect, verify and exchange OIDC tokens",
        description="Find, inspect, verify and exchange OIDC tokens the way the trust network "
        "sees them. Exit codes: 0 yes, 1 the token is refused, 2 usage error or no token, "
        "3 the IdP or the site is unreachable.",
    )
    actions = token.add_subparsers(dest="action", required=True)

    p = actions.add_parser(
        "discover",
        help="which token WLCG discovery would use, and from where",
        description="Show which token WLCG bearer token discovery finds (BEARER_TOKEN, "
        "BEARER_TOKEN_FILE, ...), where from, and its subject, issuer and expiry.",
    )
    p.set_defaults(func=discover_cmd)

    p = actions.add_parser(
        "inspect",
        help="header, claims, expiry and WLCG profile checks (no signature check)",
        description="Print a token's header, claims and scopes and check the WLCG profile, "
        "without checking the signature (see `token verify`).",
    )
    p.add_argument("token", nargs="?", help="the token, '-' for stdin (default: discovered)")
    p.set_defaults(func=inspect_cmd)

    p = actions.add_parser(
        "verify",
        help="full validation against the issuer's live JWKS",
        description="Validate a token as a sidecar would: signature against the issuer's "
        "live JWKS, expiry, audience, WLCG profile and the scopes given with --scope.",
    )
    p.add_argument("token", nargs="?", help="the token, '-' for stdin (default: discovered)")
    p.add_argument("--issuer", required=True, help="the trusted issuer (exact `iss`)")
    p.add_argument("--audience", action="append", help="accepted audience (repeatable)")
    p.add_argument("--any-audience", action="store_true", help=f"also accept {WLCG_ANY_AUDIENCE}")
    p.add_argument("--scope", action="append", help="scope the token must carry (repeatable)")
    p.add_argument("--ca-file", help="CA bundle for the issuer's HTTPS")
    p.add_argument("--no-wlcg", action="store_true", help="do not require the WLCG profile")
    p.add_argument(
        "--development",
        action="store_true",
        help=f"accept a development token (claim {DEVELOPMENT_CLAIM}, from a devidp), as a site whose "
        "issuer entry says `development: true` does",
    )
    p.set_defaults(func=verify_cmd)

    p = actions.add_parser(
        "exchange",
        help="RFC 8693 exchange for another audience and scope",
        description="Exchange a token (RFC 8693) at the issuer for one with another audience "
        "and scope, as the exchanging client.",
    )
    p.add_argument("token", nargs="?", help="the subject token, '-' for stdin (default: discovered)")
    p.add_argument("--issuer", required=True)
    p.add_argument("--client-id", required=True, help="the exchanging (actor) client")
    p.add_argument("--client-secret-file", help="file holding its secret (default: $ILP_CLIENT_SECRET)")
    p.add_argument("--audience", required=True)
    p.add_argument("--scope", required=True, help="space-separated scopes (required by IAM)")
    p.add_argument("--ca-file")
    p.add_argument("--output", help="write the token to this file (mode 0600) instead of stdout")
    p.set_defaults(func=exchange_cmd)

    p = actions.add_parser(
        "login",
        help="device-flow login; writes the identity Secret a pod names for the gateway",
        description="Log in with the device flow and write the Kubernetes Secret holding your "
        "token, which pods name so that the gateway runs them under your identity.",
    )
    p.add_argument("--issuer", required=True)
    p.add_argument("--client-id", default="cli", help="the public client for device flow (default: cli)")
    p.add_argument(
        "--scope",
        default="compute.create compute.read compute.cancel wlcg.groups offline_access",
        help="space-separated scopes (offline_access: pods may start later and run long)",
    )
    p.add_argument("--ca-file")
    p.add_argument("--namespace", required=True, help="the namespace of the pods that will use it")
    p.add_argument("--secret-name", default="interlink-identity")
    p.add_argument("--output", "-o", help="write the Secret manifest here (mode 0600) instead of stdout")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the approval")
    p.set_defaults(func=login_cmd)

    p = actions.add_parser(
        "whoami",
        help="how a site maps this token: identity, account, operations",
        description="Ask a site's sidecar how it maps this token: the identity, the local "
        "account its jobs run as, and which operations it may do.",
    )
    p.add_argument("token", nargs="?", help="the token, '-' for stdin (default: discovered)")
    p.add_argument(
        "--site", required=True, help="the sidecar: unix:///path.sock, http://host:port or https://host:port"
    )
    p.add_argument("--ca-file", help="CA of an https:// site's certificate (default: $ILP_SIDECAR_CA, system CAs)")
    p.set_defaults(func=whoami_cmd)
