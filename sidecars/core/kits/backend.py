"""What the service core needs from a batch system, whatever it is (Slurm, HTCondor)."""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from interlink_provider.pods.jobspec import JobSpec
from interlink_provider.runtimes import Runtime
from sidecars.core.kits.script import PodPaths, RenderOptions
from sidecars.core.kits.transport import Transport, TransportError
from sidecars.core.kits.workdir import check_extra_file

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

    def __post_init__(self) -> None:
        for name in self.files:
            check_extra_file(name)


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
    name: str = ""
    display_name: str = ""  # in messages users read: "Slurm job 123 is pending: Resources"

    @abstractmethod
    def prepare(
        self, spec: JobSpec, paths: PodPaths, runtime: Runtime, options: RenderOptions, job_name: str
    ) -> Submission:
        """Validate site policy and render the batch script (pure; may raise PodRejected)."""

    @abstractmethod
    async def submit(self, paths: PodPaths, job_name: str, account: str | None = None) -> str:
        """Submit the script written at paths.script as `account` (None: the sidecar's own);
        return the job id (SubmitError)."""

    @abstractmethod
    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """One scheduler command for all these jobs; absent ids have left the queue (PollError)."""

    @abstractmethod
    async def completed(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """Completion data for jobs that left the queue (PollError)."""

    @abstractmethod
    async def find_by_name(self, job_names: list[str]) -> dict[str, JobInfo]:
        """Jobs (queued or completed) carrying these names, for recovery after a crash."""

    @abstractmethod
    async def list_own(self, prefix: str) -> list[JobInfo]:
        """All queued jobs whose name starts with prefix (re-adoption at start-up)."""

    @abstractmethod
    async def signal(self, job_id: str, signal: str, account: str | None = None) -> None:
        """Send a signal to the job's batch script only (graceful deletion)."""

    @abstractmethod
    async def cancel(self, job_ids: list[str], account: str | None = None) -> None:
        """Cancel these jobs (idempotent)."""

    @abstractmethod
    async def capacity(self) -> Capacity:
        """Free resources, for the Virtual Kubelet's node (PollError)."""

    async def close(self) -> None:
        """Release connections the backend holds itself (slurmrestd's HTTP pool); most hold none."""
        return None
