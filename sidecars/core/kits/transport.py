"""Running scheduler commands on the site, asynchronously, with a count of every command.

The local transport runs them as child processes of the sidecar, optionally as
another account through `sudo -n -u`. (SSH and slurmrestd transports implement
the same `run`.) Every command first takes a token from the site's bucket
(ratelimit.py), shared by all accounts.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from interlink_provider.bounded import run_bounded, text
from interlink_provider.refusals import Unreachable
from interlink_provider.telemetry import tracing
from interlink_provider.telemetry.metrics import COMMAND_SECONDS, COMMANDS
from sidecars.core.kits.ratelimit import TokenBucket


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Transport(Protocol):
    """How scheduler commands reach the site (local processes, or an SSH channel)."""

    async def run(self, argv: list[str], *, timeout: float = 30.0) -> CommandResult: ...

    def as_account(self, account: str | None) -> Transport: ...


class TransportError(Unreachable):
    """The command could not be run at all (missing binary, timeout, lost connection); a caller
    waiting on it is answered `the site cannot be reached: ...`."""


# sudo resets the environment: these, when set, are handed to the command explicitly.
SUDO_PASSTHROUGH = ("SLURM_CONF", "PATH")


@dataclass
class Meter:
    """What the carrier of a command reports back to `metered`: did the command succeed?"""

    outcome: str = "ok"

    def exit_status(self, ok: bool) -> None:
        self.outcome = "ok" if ok else "failed"


@asynccontextmanager
async def metered(command: str, limiter: TokenBucket | None) -> AsyncIterator[Meter]:
    """Every scheduler command, whatever carries it: a token from the site's bucket first, then
    counted by outcome (ok, failed = non-zero exit or HTTP error, error = not run at all),
    timed, and traced as a child of the pod's span."""
    if limiter is not None:
        await limiter.acquire()
    meter = Meter()
    started = time.monotonic()
    with tracing.span(f"scheduler {command}", {"ilp.scheduler.command": command}) as span:
        try:
            yield meter
        except BaseException:
            meter.outcome = "error"
            raise
        finally:
            COMMANDS.labels(command, meter.outcome).inc()
            COMMAND_SECONDS.labels(command).observe(time.monotonic() - started)
            span.set_attribute("ilp.scheduler.outcome", meter.outcome)


class LocalTransport:
    def __init__(
        self, env: dict[str, str] | None = None, sudo_user: str | None = None, limiter: TokenBucket | None = None
    ) -> None:
        self.extra_env = dict(env or {})
        self.env = {**os.environ, **self.extra_env}
        self.sudo_user = sudo_user
        self.limiter = limiter

    def as_account(self, account: str | None) -> LocalTransport:
        """The same transport (and rate limit) acting as another local account (`sudo -n -u ACCOUNT`).
        None, or the sidecar's own login, runs commands as the sidecar: its own queries, and the
        jobs of a single-account site. Which account a pod's job may run as is decided before
        (sidecars.core.domain.accounts: never uid 0 unless the site opted in)."""
        if not account or account == current_user():
            return self
        return LocalTransport(self.extra_env, sudo_user=account, limiter=self.limiter)

    def _argv(self, argv: list[str]) -> list[str]:
        if not self.sudo_user:
            return list(argv)
        keep = {k: self.env[k] for k in SUDO_PASSTHROUGH if k in self.env}
        keep.update(self.extra_env)
        return ["sudo", "-n", "-u", self.sudo_user, "--", "env", *(f"{k}={v}" for k, v in keep.items()), *argv]

    async def run(self, argv: list[str], *, timeout: float = 30.0) -> CommandResult:
        command = os.path.basename(argv[0])
        full = self._argv(argv)
        async with metered(command, self.limiter) as meter:
            try:
                returncode, out, err = await run_bounded(full, self.env, timeout)
            except OSError as exc:
                raise TransportError(f"cannot run {command}: {exc}") from exc
            except TimeoutError as exc:
                raise TransportError(f"{command} did not answer within {timeout:.0f}s") from exc
            meter.exit_status(returncode == 0)
        return CommandResult(argv=tuple(full), returncode=returncode, stdout=text(out), stderr=text(err))


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name
