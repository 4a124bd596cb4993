"""The `interlink-provider` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .. import __version__
from ..telemetry.tracing import TracingConfigError
from .exits import Exit, Refusal, load_config

if TYPE_CHECKING:
    from ..devidp.config import IdPConfig
    from ..gateway.config import GatewayListen

Config = TypeVar("Config")

# The user-facing commands, each a module of this package with add_parser(sub). They import the
# auth, staging and HTTP client stacks, so they are imported only when asked for (or for help):
# the daemons (the sidecar, each per-account agent) start through this same command.
USER_COMMANDS = ("pod", "token", "stage", "doctor")
DAEMONS = ("sidecar", "site", "gateway", "devidp")


def _daemon(
    load: Callable[[str], Config],
    run: Callable[[Config], None],
    args: argparse.Namespace,
    adjust: Callable[[Config], None] | None = None,
) -> int:
    """Load a daemon's configuration (a Refusal, exit 2, if it is invalid), then run it."""
    config = load_config(load, args.config)
    if adjust is not None:
        adjust(config)
    try:
        run(config)
    except TracingConfigError as exc:  # raised before anything starts
        raise Refusal(str(exc)) from exc
    return Exit.OK


def _sidecar(args: argparse.Namespace) -> int:
    from sidecars.daemon.config import load_config as load_site
    from sidecars.daemon.serve import run

    return _daemon(load_site, run, args)


def _site_agent(args: argparse.Namespace) -> int:
    from sidecars.agent.serve import run

    return run()


def _site_check_state(args: argparse.Namespace) -> int:
    from sidecars.daemon.config import load_config as load_site
    from sidecars.daemon.state import check_state

    return check_state(load_config(load_site, args.config))


def _site_rebuild_state(args: argparse.Namespace) -> int:
    from sidecars.daemon.config import load_config as load_site
    from sidecars.daemon.state import rebuild_state

    return rebuild_state(load_config(load_site, args.config))


def _devidp(args: argparse.Namespace) -> int:
    from ..devidp.config import load
    from ..devidp.run import run

    def port(config: IdPConfig) -> None:
        if args.port:
            config.port = args.port

    def serve(config: IdPConfig) -> None:
        run(config, insecure_dev=args.insecure_dev)

    return _daemon(load, serve, args, port)


def _gateway(args: argparse.Namespace) -> int:
    from ..gateway.config import load_config as load_gateway
    from ..gateway.server import run

    if args.health:
        return _gateway_health(args.config)
    return _daemon(load_gateway, run, args)


def _gateway_health(path: str) -> int:
    """A running gateway's /healthz (readiness probes): 0 when at least one site is up, 1 when none is."""
    import asyncio

    from ..gateway.config import load_config as load_gateway
    from .client import UNANSWERED, SidecarClient, SidecarError

    address, token = _health_address(load_config(load_gateway, path).listen)

    async def ask() -> int:
        async with SidecarClient(address, token=token, verify_server=False) as client:
            try:
                print(await client.call("GET", "/healthz"), end="")
                return Exit.OK
            except SidecarError as exc:
                print(exc.message, file=sys.stderr)
                return Exit.BAD
            except UNANSWERED as exc:
                raise Refusal(f"the gateway does not answer at {address}: {exc}", Exit.UNREACHABLE) from exc

    return asyncio.run(ask())


def _health_address(listen: GatewayListen) -> tuple[str, str | None]:
    """Where the probe asks, and with which token: the socket if any, else the TCP listener with its token
    (TLS, without checking the gateway's own certificate). A listener the probe cannot use is a Refusal."""
    from ..gateway.access import TokenFileProblem, read_token

    if listen.socket:
        return f"unix://{listen.socket}", None
    if listen.client_ca:
        raise Refusal("the gateway requires client certificates on TCP: give it a listen.socket for --health")
    try:
        token = read_token(listen.token_file) if listen.token_file else None
    except TokenFileProblem as exc:
        raise Refusal(str(exc)) from exc
    return f"{'https' if listen.tls_cert else 'http'}://{listen.host}:{listen.port}", token


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (with `command`) the daemons plus that one user command."""
    parser = argparse.ArgumentParser(
        prog="interlink-provider",
        description="Burst Kubernetes pods, unchanged, to remote HPC sites.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sidecar = sub.add_parser(
        "sidecar",
        help="run a site sidecar (the interLink plugin API on Slurm or HTCondor)",
        description="Run a site sidecar: it serves the interLink plugin API (and, if configured, the gRPC API "
        "for a gateway) and runs each pod as a Slurm or HTCondor job, as the site configuration says.",
    )
    sidecar.add_argument("--config", required=True, help="site configuration YAML")
    sidecar.set_defaults(func=_sidecar)
    site = sub.add_parser(
        "site",
        help="site-side helpers of the sidecar (the per-account agent)",
        description="Programs the sidecar starts itself at its site.",
    )
    site_sub = site.add_subparsers(dest="site_command", required=True)
    agent = site_sub.add_parser(
        "agent",
        help="one account's agent: the sidecar starts it (through sudo) to act on that account's pods",
        description="The per-account agent. The sidecar starts it as the pods' account, usually through one "
        "sudoers rule naming exactly this command, and speaks to it on stdin/stdout (one JSON message per line). "
        "It takes no arguments and acts only inside its own account's part of the pods root; not for humans.",
    )
    agent.set_defaults(func=_site_agent)
    check_state = site_sub.add_parser(
        "check-state",
        help="read the sidecar's state database (without writing to it): its pods by stage, or what is damaged",
        description="Read the sidecar's state database as its start does, without writing to it: how many pods "
        "it holds in each stage, or which check or record fails. Exit 0 when the sidecar can start over it, 1 not.",
    )
    check_state.add_argument("--config", required=True, help="site configuration YAML")
    check_state.set_defaults(func=_site_check_state)
    rebuild_state = site_sub.add_parser(
        "rebuild-state",
        help="rebuild the records of the sidecar's live jobs from the scheduler (after its database was lost)",
        description="With the sidecar stopped: ask the scheduler for the live jobs named with the sidecar's prefix "
        "and write a record for each one its state database lacks (a damaged database is moved aside first). A "
        "rebuilt record is followed like any other; its pod's name and containers, and its owner, come with the "
        "first create or status call of a client whose account runs the job. Exit 0 when every live job has a "
        "record, 1 when some could not get one (each is listed with why), 3 when the scheduler did not answer.",
    )
    rebuild_state.add_argument("--config", required=True, help="site configuration YAML")
    rebuild_state.set_defaults(func=_site_rebuild_state)
    gateway = sub.add_parser(
        "gateway",
        help="run the cluster-side gateway (interLink API -> sites over gRPC)",
        description="Run the cluster-side gateway: it serves the interLink API to the Virtual Kubelet and sends "
        "each pod over gRPC to one site's sidecar. With --health, only ask a running gateway whether a site is up.",
    )
    gateway.add_argument("--config", required=True, help="gateway configuration YAML")
    gateway.add_argument("--health", action="store_true", help="ask the running gateway whether a site is up")
    gateway.set_defaults(func=_gateway)
    devidp = sub.add_parser(
        "devidp",
        help="run the small IAM-like OIDC provider (local site, tests)",
        description="Run the small IAM-like OIDC provider of the local site and the tests (client credentials, "
        "device flow, refresh and token exchange). Not for production: it serves HTTPS on loopback only "
        "(unless --insecure-dev), and its tokens carry the claim ilp_dev, which sites accept only from an "
        "issuer marked `development: true`.",
    )
    devidp.add_argument("--config", required=True, help="devidp configuration YAML")
    devidp.add_argument("--port", type=int, help="override the configured port")
    devidp.add_argument(
        "--insecure-dev",
        action="store_true",
        help="allow plain HTTP and addresses other than loopback (a throwaway test IdP); "
        "without it the devidp refuses them",
    )
    devidp.set_defaults(func=_devidp)
    for name in USER_COMMANDS:
        if command in (None, name):
            importlib.import_module(f"{__package__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    named = argv[0] if argv and argv[0] in (*DAEMONS, *USER_COMMANDS) else None  # else help or an error: all
    args = build_parser(named).parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.func  # each subcommand's set_defaults(func=...)
    try:
        return command(args)
    except Refusal as refusal:
        print(f"interlink-provider {args.command}: {refusal.message}", file=sys.stderr)
        return refusal.code
    except KeyboardInterrupt:
        print(f"interlink-provider {args.command}: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
