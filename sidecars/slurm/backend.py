"""The Slurm backend: one sbatch per pod, one squeue per status cycle for all pods."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from interlink_provider.pods.jobspec import JobSpec
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.runtimes import Runtime
from sidecars.core.kits.backend import Backend, Capacity, JobInfo, PollError, Submission, SubmitCommand, run_submit
from sidecars.core.kits.batching import CommandBatches
from sidecars.core.kits.ratelimit import TokenBucket
from sidecars.core.kits.script import PodPaths, RenderOptions, render, runner_context
from sidecars.core.kits.transport import LocalTransport, Transport, TransportError
from sidecars.slurm import parse
from sidecars.slurm.flags import FLAGS_ANNOTATION, Flag, FlagPolicy, annotation_flags, merge, parse_flags, sbatch_word

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
# Above this many ids a --jobs list would not fit one argument: list our own jobs instead.
MAX_JOBS_ARGUMENT = 4000


class SlurmConfig(BaseModel):
    """`slurm:` section of a site config."""

    model_config = ConfigDict(extra="forbid")

    sbatch: str = Field("sbatch", description="sbatch executable (name or path)")
    squeue: str = Field("squeue", description="squeue executable")
    sacct: str = Field("sacct", description="sacct executable")
    scancel: str = Field("scancel", description="scancel executable")
    sinfo: str = Field("sinfo", description="sinfo executable (the site's capacity)")
    environment: dict[str, str] = Field(
        default_factory=dict, description="environment for Slurm commands, e.g. SLURM_CONF"
    )
    partition: str | None = Field(
        None,
        description="--partition of every job, unless a flavor or the pod's flags name another; "
        "null: Slurm's default partition",
    )
    commands_per_second: float = Field(
        1.5, gt=0, description="average scheduler commands per second (Slurm's default per-user RPC limit is 2)"
    )
    command_burst: int = Field(10, ge=1, description="commands that may run back to back before the rate applies")
    cancel_batch_seconds: float = Field(
        0.2, ge=0, description="deletions arriving within this window share one scancel (per account)"
    )
    flags: FlagPolicy = Field(
        FlagPolicy(), description="which sbatch options pods may set with the slurm-job.vk.io/flags annotation"
    )
    use_sacct: bool = Field(True, description="resolve jobs that left the queue with `sacct -c`")
    command_timeout: float = Field(30.0, gt=0, description="seconds before a Slurm command counts as failed")
    export: str = Field("NONE", description="sbatch --export: NONE keeps the sidecar's environment out of jobs")
    prologue: list[str] = Field(
        default_factory=list,
        description="shell lines written by the site admin, run first in every job (e.g. 'module load apptainer')",
    )


SBATCH = SubmitCommand(parse.parse_sbatch, parse.sbatch_error_message, parse.sbatch_error_is_transient)


def _numeric(job_id: str) -> tuple[int, str]:
    head = job_id.split("_")[0]
    return (int(head) if head.isdigit() else 0, job_id)


class SlurmBackend(Backend):
    name = "slurm"
    display_name = "Slurm"

    def __init__(self, config: SlurmConfig, policy: TranslationPolicy, transport: Transport | None = None) -> None:
        self.config = config
        self.policy = policy
        self.transport = transport or LocalTransport(env=config.environment, limiter=self.rate_limit(config))
        self._batches = CommandBatches(config.cancel_batch_seconds, self._scancel, _numeric)

    @staticmethod
    def rate_limit(config: SlurmConfig) -> TokenBucket:
        """The site's bucket: every scheduler command takes a token, whatever the transport."""
        return TokenBucket(config.commands_per_second, config.command_burst)

    # ------------------------------------------------------------------ rendering

    def sbatch_flags(self, spec: JobSpec, job_name: str, paths: PodPaths) -> tuple[list[Flag], list[str]]:
        """All directives in precedence order: fixed < defaults < flavor < annotation < pod."""
        res = spec.resources
        base = [Flag("--partition", self.config.partition)] if self.config.partition else []
        defaults: list[Flag] = []
        explicit: list[Flag] = []
        (explicit if res.cpus_from_pod else defaults).append(Flag("--cpus-per-task", str(res.cpus)))
        (explicit if res.memory_from_pod else defaults).append(Flag("--mem", f"{res.memory_mib}M"))
        if res.gpus:
            explicit.append(Flag("--gres", f"gpu:{res.gpus}"))
        if spec.deadline_seconds:
            explicit.append(Flag("--time", str(math.ceil(spec.deadline_seconds / 60))))
        flavor = self.policy.flavors[spec.flavor]
        flavor_flags = parse_flags(flavor.scheduler_flags, f"flavor {spec.flavor}")
        pod_flags, warnings = annotation_flags(spec.annotation(FLAGS_ANNOTATION), self.config.flags)
        fixed = [
            Flag("--job-name", job_name),
            Flag("--output", paths.output),
            Flag("--open-mode", "append"),
            Flag("--chdir", paths.pod_dir),
            Flag("--export", self.config.export),
            Flag("--no-requeue", None),
            # Before a time limit, the batch script alone gets USR2: it stops the containers
            # itself (preStop, grace) and records DeadlineExceeded as their reason.
            Flag("--signal", f"B:USR2@{max(30, spec.grace_seconds + 10)}"),
        ]
        return merge(base, defaults, flavor_flags, pod_flags, explicit, fixed), warnings

    def prepare(
        self, spec: JobSpec, paths: PodPaths, runtime: Runtime, options: RenderOptions, job_name: str
    ) -> Submission:
        flags, warnings = self.sbatch_flags(spec, job_name, paths)
        context = runner_context(spec, runtime, paths, options)
        context.update(
            sbatch_lines=[sbatch_word(flag.render()) for flag in flags],
            namespace=spec.namespace,
            uid=spec.uid,
            site_prologue=self.config.prologue,
        )
        script = render("job.sbatch.j2", TEMPLATES, context, options)
        return Submission(script=script, warnings=[*spec.warnings, *warnings])

    # ------------------------------------------------------------------ commands

    async def _run(self, argv: list[str], account: str | None = None):
        try:
            return await self.transport.as_account(account).run(argv, timeout=self.config.command_timeout)
        except TransportError as exc:
            raise PollError(str(exc)) from exc

    async def submit(self, paths: PodPaths, job_name: str, account: str | None = None) -> str:
        return await run_submit(
            self.transport.as_account(account),
            [self.config.sbatch, "--parsable", paths.script],
            self.config.command_timeout,
            SBATCH,
        )

    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        if not job_ids:
            return {}
        argv = [self.config.squeue, "-h", "--states=all", "-o", parse.SQUEUE_FORMAT]
        wanted = set(job_ids)
        if len(job_ids) <= MAX_JOBS_ARGUMENT:
            argv.append("--jobs=" + ",".join(job_ids))
        else:
            argv.append("--me")
        result = await self._run(argv)
        if not result.ok:
            if "Invalid job id" in result.stderr:
                return {}  # every one of them has left the queue
            raise PollError(f"squeue failed: {result.stderr.strip() or result.returncode}")
        return {k: v for k, v in parse.parse_squeue(result.stdout).items() if k in wanted}

    async def completed(self, job_ids: list[str]) -> dict[str, JobInfo]:
        if not job_ids or not self.config.use_sacct:
            return {}
        result = await self._run(
            [self.config.sacct, "-c", "-P", "-n", "-j", ",".join(job_ids), f"--format={parse.SACCT_FORMAT}"]
        )
        if not result.ok:
            log.warning("sacct -c failed, relying on exit-code files: %s", result.stderr.strip())
            return {}
        wanted = set(job_ids)
        return {k: v for k, v in parse.parse_sacct(result.stdout).items() if k in wanted}

    async def find_by_name(self, job_names: list[str]) -> dict[str, JobInfo]:
        if not job_names:
            return {}
        wanted = set(job_names)
        found: dict[str, JobInfo] = {}
        if self.config.use_sacct:
            result = await self._run([self.config.sacct, "-c", "-P", "-n", f"--format={parse.SACCT_FORMAT}"])
            if result.ok:
                found.update({job.name: job for job in parse.parse_sacct(result.stdout).values() if job.name in wanted})
        result = await self._run(
            [self.config.squeue, "-h", "--states=all", "-o", parse.SQUEUE_FORMAT, "--name=" + ",".join(sorted(wanted))]
        )
        if not result.ok:
            raise PollError(f"squeue failed: {result.stderr.strip() or result.returncode}")
        found.update({job.name: job for job in parse.parse_squeue(result.stdout).values()})
        return found

    async def list_own(self, prefix: str) -> list[JobInfo]:
        result = await self._run([self.config.squeue, "-h", "--states=all", "--me", "-o", parse.SQUEUE_FORMAT])
        if not result.ok:
            raise PollError(f"squeue failed: {result.stderr.strip() or result.returncode}")
        return [job for job in parse.parse_squeue(result.stdout).values() if job.name.startswith(prefix)]

    async def signal(self, job_id: str, signal: str, account: str | None = None) -> None:
        """Signal a job's batch script; signals arriving together share one scancel."""
        await self._batches.add((self.config.scancel, "--batch", f"--signal={signal}"), [job_id], account)

    async def cancel(self, job_ids: list[str], account: str | None = None) -> None:
        """Cancel jobs; calls arriving within `cancel_batch_seconds` share one scancel per account."""
        await self._batches.add((self.config.scancel,), job_ids, account)

    async def _scancel(self, argv: list[str], account: str | None) -> None:
        result = await self._run(argv, account)
        if not result.ok and "Invalid job id" not in result.stderr:
            raise PollError(f"scancel failed: {result.stderr.strip()}")

    async def capacity(self) -> Capacity:
        result = await self._run([self.config.sinfo, "-h", "-N", "-O", parse.SINFO_FIELDS])
        if not result.ok:
            raise PollError(f"sinfo failed: {result.stderr.strip()}")
        return parse.parse_sinfo(result.stdout)
