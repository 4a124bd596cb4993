"""The Slurm backend: one sbatch per pod (per gang: one job of a node per member), one squeue per
status cycle for all pods."""

from __future__ import annotations

import logging
import math
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from interlink_provider.pods.jobspec import JobSpec
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.runtimes import Runtime
from interlink_provider.shell import Raw
from sidecars.core.kits.backend import (
    Capacity,
    Command,
    CommandBackend,
    Gangs,
    JobInfo,
    ListsOwnJobs,
    ReportsCapacity,
    Signals,
    Submission,
    SubmitCommand,
    ignore_output,
)
from sidecars.core.kits.podpaths import GANG_SCRIPT, PodPaths
from sidecars.core.kits.ratelimit import TokenBucket
from sidecars.core.kits.script import RenderOptions, render, runner_context
from sidecars.core.kits.transport import CommandResult, LocalTransport, Transport
from sidecars.slurm import parse
from sidecars.slurm.flags import Flag, FlagPolicy, annotation_flags, merge, parse_flags, sbatch_word

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
# Above this many ids a --jobs list would not fit one argument: list the whole queue instead
# (not --me: in the multi-account mode our pods' jobs belong to the mapped accounts). squeue
# loads the whole job table from slurmctld either way and filters on the client.
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

# Options the sidecar manages itself: literal lines of job.sbatch.j2, after the pod's own, so
# that they win; a flavor naming one of them is overridden.
FIXED_OPTIONS = frozenset({"--job-name", "--output", "--open-mode", "--chdir", "--export", "--no-requeue", "--signal"})


def _numeric(job_id: str) -> tuple[int, str]:
    head = job_id.split("_")[0]
    return (int(head) if head.isdigit() else 0, job_id)


def _invalid_job_id(stderr: str) -> bool:
    """squeue/scancel of jobs that have all left the queue: nothing is wrong."""
    return "Invalid job id" in stderr


def _no_accounting(result: CommandResult) -> dict[str, JobInfo]:
    log.warning("sacct -c failed, relying on exit-code files: %s", result.stderr.strip())
    return {}


def sbatch_option(name: str, value: object) -> Raw:
    """One `#SBATCH` word of the template, quoted for sbatch's own parser (flags.sbatch_word)."""
    return Raw(sbatch_word(Flag(name, str(value)).render()))


class SlurmCommon(CommandBackend, Signals, ReportsCapacity, ListsOwnJobs):
    """What every Slurm backend does, whether it submits with sbatch or through slurmrestd."""

    name = "slurm"
    display_name = "Slurm"
    submit_answers = SBATCH
    job_order = staticmethod(_numeric)

    def __init__(self, config: SlurmConfig, policy: TranslationPolicy, transport: Transport | None = None) -> None:
        self.config = config
        self.policy = policy
        super().__init__(
            transport or LocalTransport(env=config.environment, limiter=self.rate_limit(config)),
            command_timeout=config.command_timeout,
            batch_seconds=config.cancel_batch_seconds,
        )

    @staticmethod
    def rate_limit(config: SlurmConfig) -> TokenBucket:
        """The site's bucket: every scheduler command takes a token, whatever the transport."""
        return TokenBucket(config.commands_per_second, config.command_burst)

    # ------------------------------------------------------------------ rendering

    def sbatch_options(self, spec: JobSpec) -> tuple[list[Flag], list[str]]:
        """The pod's directives in precedence order: site partition < defaults < flavor <
        annotation < the pod's own resources. The sidecar's own (FIXED_OPTIONS) are the
        template's."""
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
        pod_flags, warnings = annotation_flags(spec.pod_options.scheduler_flags, self.config.flags)
        merged = merge(base, defaults, flavor_flags, pod_flags, explicit)
        return [flag for flag in merged if flag.name not in FIXED_OPTIONS], warnings

    def prepare(
        self, spec: JobSpec, paths: PodPaths, runtime: Runtime, options: RenderOptions, job_name: str
    ) -> Submission:
        flags, warnings = self.sbatch_options(spec)
        context = runner_context(spec, runtime, paths, options)
        context.update(
            sbatch_options=[sbatch_word(flag.render()) for flag in flags],
            sbatch=sbatch_option,
            job_name=job_name,
            output=paths.output,
            export=self.config.export,
            # Before a time limit, the batch script alone gets USR2: it stops the containers
            # itself (preStop, grace) and records DeadlineExceeded as their reason.
            usr2_seconds=max(30, spec.grace_seconds + 10),
            namespace=spec.namespace,
            uid=spec.uid,
            site_prologue=self.config.prologue,
        )
        script = render("job.sbatch.j2", TEMPLATES, context, options)
        files = {}
        if spec.gang is not None:
            context.update(gang_size=spec.gang.size, gang_output=posixpath.join(paths.pod_dir, "gang.out"))
            files[GANG_SCRIPT] = render("gang.sbatch.j2", TEMPLATES, context, options)
        return Submission(script=script, warnings=[*spec.warnings, *warnings], files=files)

    # ------------------------------------------------------------------ commands

    def submit_command(self, paths: PodPaths, job_name: str, options: Mapping[str, Any]) -> list[str]:
        return [self.config.sbatch, "--parsable", paths.script]

    def cancel_command(self) -> tuple[str, ...]:
        return (self.config.scancel,)

    def batch_answer(self, argv: list[str]) -> Command[None]:
        return Command(argv, ignore_output, harmless=_invalid_job_id)

    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        if not job_ids:
            return {}
        argv = [self.config.squeue, "-h", "--states=all", "-o", parse.SQUEUE_FORMAT]
        wanted = set(job_ids)
        if len(job_ids) <= MAX_JOBS_ARGUMENT:
            argv.append("--jobs=" + ",".join(job_ids))
        # All of them gone is an error to squeue, an answer to us.
        jobs = await self.ask(Command(argv, parse.parse_squeue, harmless=_invalid_job_id))
        return {k: v for k, v in jobs.items() if k in wanted}

    async def completed(self, job_ids: list[str]) -> dict[str, JobInfo]:
        if not job_ids or not self.config.use_sacct:
            return {}
        argv = [self.config.sacct, "-c", "-P", "-n", "-j", ",".join(job_ids), f"--format={parse.SACCT_FORMAT}"]
        jobs = await self.ask(Command(argv, parse.parse_sacct, fallback=_no_accounting))
        wanted = set(job_ids)
        return {k: v for k, v in jobs.items() if k in wanted}

    async def find_by_name(self, job_names: list[str]) -> dict[str, JobInfo]:
        if not job_names:
            return {}
        wanted = set(job_names)
        found: dict[str, JobInfo] = {}
        if self.config.use_sacct:
            argv = [self.config.sacct, "-c", "-P", "-n", f"--format={parse.SACCT_FORMAT}"]
            ended = await self.ask(Command(argv, parse.parse_sacct, fallback=lambda _: {}))
            found.update({job.name: job for job in ended.values() if job.name in wanted})
        argv = [
            self.config.squeue,
            "-h",
            "--states=all",
            "-o",
            parse.SQUEUE_FORMAT,
            "--name=" + ",".join(sorted(wanted)),
        ]
        found.update({job.name: job for job in (await self.ask(Command(argv, parse.parse_squeue))).values()})
        return found

    async def list_own(self, prefix: str) -> list[JobInfo]:
        """Every user's jobs, not --me: pods' jobs run as their mapped accounts."""
        argv = [self.config.squeue, "-h", "--states=all", "-o", parse.OWNED_FORMAT]
        jobs = await self.ask(Command(argv, parse.parse_owned))
        return [job for job in jobs if job.name.startswith(prefix)]

    async def signal(self, job_id: str, signal: str, account: str | None = None) -> None:
        """Signal a job's batch script; signals arriving together share one scancel."""
        await self.batches.add((self.config.scancel, "--batch", f"--signal={signal}"), [job_id], account)

    async def capacity(self) -> Capacity:
        return await self.ask(Command([self.config.sinfo, "-h", "-N", "-O", parse.SINFO_FIELDS], parse.parse_sinfo))


class SlurmBackend(SlurmCommon, Gangs):
    """Slurm driven by its commands; gangs too (their script takes arguments: sbatch only)."""

    async def submit_gang(self, members: list[PodPaths], job_name: str, account: str | None = None) -> str:
        """sbatch the first member's gang script with every member's directory, in rank order."""
        argv = [self.config.sbatch, "--parsable", f"--job-name={job_name}", members[0].gang_script]
        return await self.submit_argv([*argv, *(member.pod_dir for member in members)], account)
