"""What the service core needs from a batch system, whatever it is (Slurm, HTCondor).

The contract has the shape of virtual-kubelet's providers (a small required interface,
optional capabilities) and of psij-python's batch executors (the base class runs the
commands; a scheduler only builds them and parses their output):

- `Backend`, required of every scheduler: `prepare` (render and refuse, when the pod is
  created), `submit`, `query`, `find_by_name`, `cancel`; `completed` (accounting) and
  `close` have defaults.
- Optional capabilities, discovered with `isinstance` (`supports`): `Signals` (a signal to
  the batch script, for graceful deletion; without it a deleted pod's job is cancelled at
  once), `ReportsCapacity` (the node's free resources; without it the Virtual Kubelet keeps
  the capacity it was configured with), `ListsOwnJobs` (stray jobs cancelled at start-up;
  without it strays are left alone).
- `CommandBackend`, the base of schedulers driven by commands: it runs every command through
  the transport as the account asked, and turns one that could not run or failed into
  PollError (SubmitError for a submission) in one place. A scheduler supplies `Command`s
  (argv and the parser of the output, and which failures are harmless) and its submit and
  cancel commands.
"""

from __future__ import annotations

import json
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from interlink_provider.pods.jobspec import JobSpec
from interlink_provider.runtimes import Runtime
from sidecars.core.kits.batching import CommandBatches
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.script import RenderOptions
from sidecars.core.kits.transport import CommandResult, Transport, TransportError
from sidecars.core.kits.workdir import check_extra_file

T = TypeVar("T")

# Normalised job states. Terminal ones end a pod.
PENDING = "PENDING"
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TIMEOUT = "TIMEOUT"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
NODE_FAIL = "NODE_FAIL"
TERMINAL_STATES = frozenset({COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL})


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str  # one of the constants above
    reason: str = ""  # why it is pending, or the scheduler's word on how it ended
    name: str = ""
    raw_state: str = ""
    user: str = ""  # the account it runs as, where the scheduler said (strays are cancelled as it)
    work_dir: str = ""  # where it runs (the pod's directory), where the scheduler said (state rebuild)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class Capacity:
    cpus: int  # free now
    memory_mib: int  # free now
    gpus: int = 0  # free now
    gpus_total: int = 0
    nodes: int = 0


@dataclass
class Submission:
    """A rendered job ready to be written and submitted."""

    script: str
    warnings: list[str] = field(default_factory=list)
    # Further files written next to job.sh in the pod directory (name -> text), e.g. the
    # HTCondor submit description. Plain names only (workdir.check_extra_file).
    files: dict[str, str] = field(default_factory=dict)
    # The scheduler's options as data, decided here rather than at submission (slurmrestd's job
    # properties): JSON, kept with the pod and handed back to `submit`, also after a restart.
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.files:
            check_extra_file(name)
        try:
            json.dumps(self.options, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"submission options must be JSON data: {exc}") from exc


class SubmitError(Exception):
    """The scheduler refused a job. `permanent` says whether retrying can help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class PollError(Exception):
    """The scheduler could not be asked: pods go Unknown, never Failed."""


@dataclass(frozen=True)
class SubmitCommand:
    """How one scheduler's submit command answers: its job id, its error words, which are transient."""

    job_id: Callable[[str], str | None]  # stdout -> job id
    message: Callable[[str], str]  # stderr -> the scheduler's own words
    transient: Callable[[str], bool]  # stderr -> retrying can help


async def run_submit(transport: Transport, argv: list[str], timeout: float, answers: SubmitCommand) -> str:
    """Run a submit command (sbatch, condor_submit); its job id, or SubmitError saying whether
    a retry can help."""
    try:
        result = await transport.run(argv, timeout=timeout)
    except TransportError as exc:
        # The job may or may not exist now: the caller checks by name before retrying.
        raise SubmitError(str(exc), permanent=False) from exc
    if result.ok:
        job_id = answers.job_id(result.stdout)
        if job_id:
            return job_id
        raise SubmitError(
            f"{posixpath.basename(argv[0])} printed no job id: {result.stdout.strip()!r}", permanent=False
        )
    raise SubmitError(answers.message(result.stderr), permanent=not answers.transient(result.stderr))


class Backend(ABC):
    """What every scheduler offers. Optional capabilities are the mixins below."""

    name: str = ""
    display_name: str = ""  # in messages users read: "Slurm job 123 is pending: Resources"

    @abstractmethod
    def prepare(
        self, spec: JobSpec, paths: PodPaths, runtime: Runtime, options: RenderOptions, job_name: str
    ) -> Submission:
        """Validate site policy, render the batch script and decide the scheduler's options
        (pure; PodRejected refuses the pod when it is created)."""

    @abstractmethod
    async def submit(
        self, paths: PodPaths, job_name: str, account: str | None = None, options: Mapping[str, Any] | None = None
    ) -> str:
        """Submit the job written at `paths` as `account` (None: the sidecar's own), with the
        `options` its Submission carried; return the job id (SubmitError)."""

    @abstractmethod
    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """One scheduler command for all these jobs; absent ids have left the queue (PollError)."""

    async def completed(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """Completion data for jobs that left the queue (PollError). Without accounting: none,
        and the runner's exit-code files decide."""
        return {}

    @abstractmethod
    async def find_by_name(self, job_names: list[str]) -> dict[str, JobInfo]:
        """Jobs (queued or completed) carrying these names, for recovery after a crash."""

    @abstractmethod
    async def cancel(self, job_ids: list[str], account: str | None = None) -> None:
        """Cancel these jobs (idempotent; PollError)."""

    async def close(self) -> None:
        """Release connections the backend holds itself (slurmrestd's HTTP pool); most hold none."""
        return None


# ---------------------------------------------------------------------- optional capabilities


class Signals(ABC):
    """Capability: a signal to the job's batch script alone (graceful deletion)."""

    @abstractmethod
    async def signal(self, job_id: str, signal: str, account: str | None = None) -> None:
        """Send `signal` to the batch script (PollError)."""


class ReportsCapacity(ABC):
    """Capability: the site's free resources, for the Virtual Kubelet's node."""

    @abstractmethod
    async def capacity(self) -> Capacity:
        """Free resources now (PollError)."""


class ListsOwnJobs(ABC):
    """Capability: the sidecar's own queued jobs, to cancel strays at start-up and to rebuild
    lost records (`site rebuild-state`), with the account and directory of each where known."""

    @abstractmethod
    async def list_own(self, prefix: str) -> list[JobInfo]:
        """All queued jobs whose name starts with prefix, whoever they run as (PollError)."""


class Gangs(ABC):
    """Capability: a gang of pods (pods/gang.py) run as one job of one member per node, all
    started together or none. Each member's directory holds its own batch script as usual, and
    the first member's also the gang's (`PodPaths.gang_script`, rendered by `prepare` for every
    member, since which one comes first is known only once the gang is complete). Without this
    capability a pod that declares a gang is refused when it is created."""

    @abstractmethod
    async def submit_gang(self, members: list[PodPaths], job_name: str, account: str | None = None) -> str:
        """Submit the gang whose members live at `members`, in rank order, as `account`; return
        the one job id they share (SubmitError)."""


CAPABILITIES: dict[str, type] = {
    "signal": Signals,
    "capacity": ReportsCapacity,
    "list own jobs": ListsOwnJobs,
    "gangs": Gangs,
}


def supports(backend: Backend) -> list[str]:
    """The optional capabilities this backend has, by name (for reports)."""
    return [name for name, capability in CAPABILITIES.items() if isinstance(backend, capability)]


# ---------------------------------------------------------------------- schedulers driven by commands


def _never(_stderr: str) -> bool:
    return False


def _stderr_or_code(result: CommandResult) -> str:
    return result.stderr.strip() or str(result.returncode)


def ignore_output(_stdout: str) -> None:
    return None


@dataclass(frozen=True)
class Command(Generic[T]):
    """One scheduler command and how to read its answer."""

    argv: list[str]
    parse: Callable[[str], T]  # stdout -> what the caller wants; ValueError: an answer we cannot read
    # A failed run whose stderr means nothing is wrong (the job is already gone): its stdout is
    # parsed as if it had succeeded.
    harmless: Callable[[str], bool] = _never
    # A failed run -> the scheduler's words for the PollError.
    problem: Callable[[CommandResult], str] = _stderr_or_code
    # For a command whose answer is a bonus (accounting): what a failed run stands for, instead
    # of a PollError. A command that could not run at all is a PollError all the same.
    fallback: Callable[[CommandResult], T] | None = None
    name: str = ""  # in messages; default: the command's file name

    @property
    def what(self) -> str:
        return self.name or posixpath.basename(self.argv[0])


class CommandBackend(Backend):
    """A scheduler driven by commands (sbatch, condor_submit, ...): this class runs them; a
    subclass builds them (`submit_command`, `cancel_command`, the `Command`s it `ask`s) and
    parses their output."""

    submit_answers: ClassVar[SubmitCommand]  # how the submit command answers

    def __init__(self, transport: Transport, *, command_timeout: float, batch_seconds: float) -> None:
        self.transport = transport
        self.command_timeout = command_timeout
        # Cancels and signals arriving together share one command per account.
        self.batches = CommandBatches(batch_seconds, self.send_batch, self.job_order, PollError)

    # ------------------------------------------------------------------ what a scheduler supplies

    @abstractmethod
    def submit_command(self, paths: PodPaths, job_name: str, options: Mapping[str, Any]) -> list[str]:
        """The argv that submits the job written at `paths`."""

    @abstractmethod
    def cancel_command(self) -> tuple[str, ...]:
        """The words of the cancel command; the job ids of a batch are appended."""

    def batch_answer(self, argv: list[str]) -> Command[None]:
        """How a batched command (cancel, signal) answers; by default any failure is one."""
        return Command(argv, ignore_output)

    @staticmethod
    def job_order(job_id: str) -> Any:
        """Job ids in a batched command line in this order."""
        return job_id

    # ------------------------------------------------------------------ what this class does

    async def ask(self, command: Command[T], account: str | None = None) -> T:
        """Run one command as `account` (None: the sidecar's own) and parse its answer. The one
        place where a command that could not run, failed or answered unreadably is PollError."""
        try:
            result = await self.transport.as_account(account).run(command.argv, timeout=self.command_timeout)
        except TransportError as exc:
            raise PollError(str(exc)) from exc
        if not result.ok and not command.harmless(result.stderr):
            if command.fallback is not None:
                return command.fallback(result)
            raise PollError(f"{command.what} failed: {command.problem(result)}")
        try:
            return command.parse(result.stdout)
        except ValueError as exc:
            raise PollError(f"{command.what}: {exc}") from exc

    async def submit(
        self, paths: PodPaths, job_name: str, account: str | None = None, options: Mapping[str, Any] | None = None
    ) -> str:
        return await self.submit_argv(self.submit_command(paths, job_name, options or {}), account)

    async def submit_argv(self, argv: list[str], account: str | None = None) -> str:
        """Run a submit command built by the scheduler (a gang's): its job id (SubmitError)."""
        return await run_submit(self.transport.as_account(account), argv, self.command_timeout, self.submit_answers)

    async def cancel(self, job_ids: list[str], account: str | None = None) -> None:
        """Calls arriving within the batch window share one cancel command per account."""
        await self.batches.add(self.cancel_command(), job_ids, account)

    async def send_batch(self, argv: list[str], account: str | None) -> None:
        await self.ask(self.batch_answer(argv), account)
