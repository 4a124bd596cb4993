"""The HTCondor backend: one condor_submit per pod, one condor_q per status cycle for all pods.

Same JobSpec and pod runner as Slurm; only the scheduler part differs. Each pod directory
gets two files: `job.sh` (the site's prologue and the shared pod runner: the job's
executable) and `job.sub` (its submit description). Job ids are "ClusterId.ProcId"
("123.0"), exactly what condor_submit -terse prints and condor_rm takes.

Deletion: condor_rm sends the job's kill_sig (SIGUSR1) to job.sh alone, which stops the pod
gracefully (preStop hooks, grace period); HTCondor hard-kills what is left after
job_max_vacate_time (grace + 5 s, at most the execute node's MachineMaxVacateTime). So
`signal(job, "USR1")` is a condor_rm, and the service's later `cancel` of the same job is a
harmless second condor_rm ("already marked for removal").
"""

from __future__ import annotations

import logging
import math
import posixpath
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from interlink_provider.pods.annotations import FLAGS
from interlink_provider.pods.jobspec import JobSpec
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.pods.validate import PodRejected
from interlink_provider.runtimes import Runtime
from sidecars.core.kits.backend import (
    Capacity,
    Command,
    CommandBackend,
    JobInfo,
    ListsOwnJobs,
    PollError,
    ReportsCapacity,
    Signals,
    Submission,
    SubmitCommand,
    ignore_output,
)
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.ratelimit import TokenBucket
from sidecars.core.kits.script import RenderOptions, make_environment, render, runner_context
from sidecars.core.kits.transport import CommandResult, LocalTransport, Transport
from sidecars.htcondor import parse
from sidecars.htcondor.submitlang import (
    DescriptionError,
    SubmitQuoteError,
    SubmitText,
    check_description,
    classad_string,
    environment,
    file_list,
    normal_key,
    parse_site_command,
    plain_value,
    site_command,
)

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
SUBMIT_FILE = "job.sub"
LOG_FILE = "job.log"
# The pod runner records the job id it ran as (job_started) from this variable.
JOB_ID_ENVIRONMENT = {"ILP_JOB_ID": SubmitText("$(Cluster).$(Process)")}
# A job may be matched only before its first start: like sbatch --no-requeue.
RUN_ONCE = "(MY.NumJobStarts =?= undefined || MY.NumJobStarts == 0)"
# Commands the backend writes itself: site commands (extra_submit, flavors) may not set them.
FIXED_COMMANDS = frozenset(
    normal_key(k)
    for k in (
        "universe",
        "executable",
        "arguments",
        "initialdir",
        "output",
        "error",
        "log",
        "batch_name",
        "+InterLinkJobName",
        "+InterLinkPod",
        "+InterLinkUID",
        "request_cpus",
        "request_memory",
        "request_gpus",
        "environment",
        "getenv",
        "notification",
        "kill_sig",
        "want_graceful_removal",
        "job_max_vacate_time",
        "periodic_remove",
        "should_transfer_files",
        "when_to_transfer_output",
        "transfer_input_files",
        "transfer_output_files",
        "transfer_executable",
        "input",
        "queue",
    )
)


CONDOR_SUBMIT = SubmitCommand(parse.parse_submit, parse.submit_error_message, parse.submit_error_is_transient)


class StaticCapacity(BaseModel):
    """What the Virtual Kubelet's node offers when the pool's slots are not (or cannot be) asked."""

    model_config = ConfigDict(extra="forbid")

    cpus: int = Field(ge=0, description="CPUs offered")
    memory_mib: int = Field(ge=0, description="memory offered, MiB")
    gpus: int = Field(0, ge=0, description="GPUs offered")
    nodes: int = Field(0, ge=0, description="execute nodes (informational)")


class HTCondorConfig(BaseModel):
    """`htcondor:` section of a site config."""

    model_config = ConfigDict(extra="forbid")

    condor_submit: str = Field("condor_submit", description="condor_submit executable (name or path)")
    condor_q: str = Field("condor_q", description="condor_q executable")
    condor_history: str = Field("condor_history", description="condor_history executable")
    condor_rm: str = Field("condor_rm", description="condor_rm executable")
    condor_status: str = Field("condor_status", description="condor_status executable")
    environment: dict[str, str] = Field(
        default_factory=dict,
        description="environment for the HTCondor commands, e.g. CONDOR_CONFIG or _CONDOR_<KNOB> overrides",
    )
    pool: str | None = Field(
        None,
        description="central manager (collector) to find the schedd and the slots in (-pool); "
        "none: the local configuration's COLLECTOR_HOST",
    )
    schedd: str | None = Field(
        None,
        description="name of the schedd to submit to and query (-name); none: the local schedd. "
        "Submissions are not spooled: the schedd must read the pod directories (same host or shared)",
    )
    token_directory: str | None = Field(
        None,
        description="directory of IDTOKENS the commands authenticate with "
        "(_CONDOR_SEC_TOKEN_DIRECTORY; HTCondor takes tokens from a directory, not a single file). "
        "Leave unset when jobs run as mapped local accounts, which must authenticate as themselves",
    )
    scitoken_file: str | None = Field(
        None,
        description="file holding a SciToken the commands authenticate with (_CONDOR_SCITOKENS_FILE; "
        "unset: HTCondor's WLCG bearer token discovery, e.g. BEARER_TOKEN_FILE)",
    )
    authentication_methods: list[str] = Field(
        default_factory=list,
        description="client authentication methods, in order, e.g. [IDTOKENS, FS] "
        "(_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS); empty: the local configuration's",
    )
    shared_filesystem: bool = Field(
        True,
        description="pods_root is shared with the execute nodes. When false, HTCondor transfers "
        "volumes/ to the job and containers/ (state, logs) back when it ends or is evicted; the pod "
        "directory is rebuilt at the same path on the execute node, which must be able to create it, "
        "and container status and logs appear only once the job has ended",
    )
    hold_timeout_seconds: float = Field(
        600.0,
        ge=0,
        description="a job held before it ever started shows as Pending (Held: <reason>) "
        "so that an admin can release it; held longer than this it fails (HoldTimeout) and is removed",
    )
    commands_per_second: float = Field(
        2.0,
        gt=0,
        description="average HTCondor commands per second (every condor_q/submit/rm is a schedd query or transaction)",
    )
    command_burst: int = Field(10, ge=1, description="commands that may run back to back before the rate applies")
    cancel_batch_seconds: float = Field(
        0.2, ge=0, description="deletions arriving within this window share one condor_rm (per account)"
    )
    command_timeout: float = Field(60.0, gt=0, description="seconds before a command counts as failed")
    use_history: bool = Field(
        True, description="resolve jobs that left the queue with condor_history (else only the runner's files)"
    )
    history_match_slack: int = Field(
        10, ge=0, description="condor_history -match: records read beyond one per job asked for"
    )
    prologue: list[str] = Field(
        default_factory=list,
        description="shell lines written by the site admin, run first in every job (e.g. 'module load apptainer')",
    )
    extra_submit: dict[str, str] = Field(
        default_factory=dict,
        description="further submit commands for every job, written verbatim by the site admin, e.g. "
        "{'+AccountingGroup': '\"group_physics.svc\"', 'request_disk': '4GB'}; commands the backend sets "
        "itself (executable, output, requirements, ...) are refused",
    )
    requirements: str | None = Field(
        None, description="a ClassAd expression every job's slot must satisfy, e.g. 'HasSingularity'"
    )
    universe: Literal["vanilla"] = Field("vanilla", description="job universe (the pod runner needs vanilla)")
    query_capacity: bool = Field(
        True, description="report the pool's free slots (condor_status) as the node's capacity"
    )
    static_capacity: StaticCapacity | None = Field(
        None, description="capacity reported when query_capacity is false, or when condor_status fails"
    )

    @field_validator("extra_submit")
    @classmethod
    def _site_commands(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            try:
                site_command(key, text, "extra_submit")
            except SubmitQuoteError as exc:
                raise ValueError(str(exc)) from exc
            norm = normal_key(key)
            if norm in FIXED_COMMANDS or norm == "requirements":
                raise ValueError(
                    f"extra_submit may not set {key}: the backend sets it "
                    "(for requirements use `htcondor.requirements`)"
                )
        return value

    @field_validator("requirements")
    @classmethod
    def _one_expression(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                site_command("requirements", value, "requirements")
            except SubmitQuoteError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @model_validator(mode="after")
    def _capacity_source(self) -> HTCondorConfig:
        if not self.query_capacity and self.static_capacity is None:
            raise ValueError("query_capacity is false: set static_capacity")
        return self


def _submit_value(value: object) -> str:
    """The submit template's finalize: only quoted text and integers are written."""
    if isinstance(value, SubmitText):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"unquoted value {value!r} in a submit description (quote it with submitlang)")


def _numeric(job_id: str) -> tuple[int, int, str]:
    pair = parse.split_id(job_id)
    return (*pair, job_id) if pair else (0, 0, job_id)


def _only_gone(stderr: str) -> bool:
    """condor_rm's complaints are all about jobs already gone or being removed: nothing is wrong."""
    return bool(stderr.strip()) and not parse.rm_problems(stderr)


def _rm_problems(result: CommandResult) -> str:
    return "; ".join(parse.rm_problems(result.stderr)) or str(result.returncode)


class HTCondorBackend(CommandBackend, Signals, ReportsCapacity, ListsOwnJobs):
    name = "htcondor"
    display_name = "HTCondor"
    submit_answers = CONDOR_SUBMIT
    job_order = staticmethod(_numeric)

    def __init__(self, config: HTCondorConfig, policy: TranslationPolicy, transport: Transport | None = None) -> None:
        self.config = config
        self.policy = policy
        super().__init__(
            transport or LocalTransport(env=self.command_environment(config), limiter=self.rate_limit(config)),
            command_timeout=config.command_timeout,
            batch_seconds=config.cancel_batch_seconds,
        )

    @staticmethod
    def rate_limit(config: HTCondorConfig) -> TokenBucket:
        """The site's bucket: every HTCondor command takes a token, whatever the transport."""
        return TokenBucket(config.commands_per_second, config.command_burst)

    @staticmethod
    def command_environment(config: HTCondorConfig) -> dict[str, str]:
        """Environment of every HTCondor command: the configured one plus the credentials."""
        env = dict(config.environment)
        if config.token_directory:
            env["_CONDOR_SEC_TOKEN_DIRECTORY"] = config.token_directory
        if config.scitoken_file:
            env["_CONDOR_SCITOKENS_FILE"] = config.scitoken_file
        if config.authentication_methods:
            env["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] = ",".join(config.authentication_methods)
        return env

    # ------------------------------------------------------------------ rendering

    def site_commands(self, spec: JobSpec) -> tuple[dict[str, tuple[SubmitText, SubmitText]], list[str]]:
        """extra_submit, then the flavor's scheduler_flags read as `command = value` lines
        (a flavor's command replaces the site's). Flavor `requirements` are ANDed with ours."""
        commands: dict[str, tuple[SubmitText, SubmitText]] = {}
        for key, value in self.config.extra_submit.items():
            commands[normal_key(key)] = site_command(key, value, "extra_submit")
        requirements: list[str] = []
        where = f"flavor {spec.flavor}"
        for line in self.policy.flavors[spec.flavor].scheduler_flags:
            try:
                key, value = parse_site_command(line, where)
            except SubmitQuoteError as exc:
                raise PodRejected(f"{exc} (an HTCondor site's flavors hold submit commands)", field=where) from exc
            norm = normal_key(key)
            if norm == "requirements":
                requirements.append(value)
            elif norm in FIXED_COMMANDS:
                raise PodRejected(f"{key} is set by the HTCondor backend itself", field=where)
            else:
                commands[norm] = (key, value)
        return commands, requirements

    def requirements(self, extra: list[str]) -> SubmitText:
        parts = [f"({r})" for r in ([self.config.requirements] if self.config.requirements else []) + extra]
        return SubmitText(" && ".join([*parts, RUN_ONCE]))

    def periodic_remove(self, spec: JobSpec) -> SubmitText:
        """The schedd's own safety net: held too long (or after a start), evicted, or running past
        the pod's deadline plus its grace period (the job stops itself at the deadline)."""
        hold = math.ceil(self.config.hold_timeout_seconds)
        parts = [
            f"(JobStatus == 5 && (NumJobStarts > 0 || time() - EnteredCurrentStatus > {hold}))",
            "(JobStatus == 1 && NumJobStarts > 0)",
        ]
        if spec.deadline_seconds:
            limit = spec.deadline_seconds + spec.grace_seconds + 60
            parts.append(f"(JobStatus == 2 && time() - JobCurrentStartDate > {limit})")
        return SubmitText(" || ".join(parts))

    def description_commands(self, spec: JobSpec, paths: PodPaths, job_name: str) -> dict[str, Any]:
        """Every command of the submit description (key as written -> value as written)."""

        def quoted(fn: Callable[[Any, str], SubmitText], value: object, field: str) -> SubmitText:
            try:
                return fn(value, field)
            except SubmitQuoteError as exc:
                raise PodRejected(f"cannot be written into an HTCondor submit description: {exc}", field=field) from exc

        res = spec.resources
        site, flavor_requirements = self.site_commands(spec)
        pod_dir = quoted(plain_value, paths.pod_dir, "metadata.namespace")
        cmd: dict[str, Any] = {
            "universe": SubmitText(self.config.universe),
            "executable": quoted(plain_value, paths.script, "metadata.namespace"),
            "initialdir": pod_dir,
            "output": quoted(plain_value, paths.output, "metadata.namespace"),
            "error": quoted(plain_value, paths.output, "metadata.namespace"),
            "log": quoted(plain_value, posixpath.join(paths.pod_dir, LOG_FILE), "metadata.namespace"),
            "batch_name": quoted(plain_value, job_name, "metadata.uid"),
            f"+{parse.NAME_ATTR}": quoted(classad_string, job_name, "metadata.uid"),
            "+InterLinkPod": quoted(classad_string, f"{spec.namespace}/{spec.name}", "metadata.name"),
            "+InterLinkUID": quoted(classad_string, spec.uid, "metadata.uid"),
            "request_cpus": SubmitText(str(res.cpus)),
            "request_memory": SubmitText(str(res.memory_mib)),
        }
        if res.gpus:
            cmd["request_gpus"] = SubmitText(str(res.gpus))
        cmd.update(
            {
                "environment": environment(JOB_ID_ENVIRONMENT),
                "getenv": SubmitText("false"),
                "notification": SubmitText("never"),
                "kill_sig": SubmitText("SIGUSR1"),
                "want_graceful_removal": SubmitText("true"),
                "job_max_vacate_time": SubmitText(str(spec.grace_seconds + 5)),
                "requirements": self.requirements(flavor_requirements),
                "periodic_remove": self.periodic_remove(spec),
            }
        )
        if self.config.shared_filesystem:
            cmd.update(should_transfer_files=SubmitText("NO"), transfer_executable=SubmitText("false"))
        else:
            cmd.update(should_transfer_files=SubmitText("YES"), when_to_transfer_output=SubmitText("ON_EXIT_OR_EVICT"))
            if any(v.kind != "hostPath" for v in spec.volumes):
                cmd["transfer_input_files"] = quoted(
                    file_list, [posixpath.join(paths.pod_dir, "volumes")], "metadata.namespace"
                )
            cmd["transfer_output_files"] = SubmitText("containers")
        for key, value in site.values():
            cmd[key] = value
        return {SubmitText(key): value for key, value in cmd.items()}  # keys are ours or checked

    def render_description(self, spec: JobSpec, paths: PodPaths, job_name: str, options: RenderOptions) -> str:
        cmd = self.description_commands(spec, paths, job_name)
        dirs: list[str | Path] = [options.template_dir] if options.template_dir else []
        template = make_environment(*dirs, TEMPLATES, finalize=_submit_value).get_template("job.sub.j2")
        site = [(k, v) for k, v in cmd.items() if normal_key(k) not in FIXED_COMMANDS and k != "requirements"]
        text = template.render(cmd=cmd, site_commands=site, staged=not self.config.shared_filesystem)
        try:
            check_description(text, cmd)
        except DescriptionError as exc:
            raise PodRejected(
                f"the HTCondor submit description did not come out as meant: {exc}", field="metadata"
            ) from exc
        return text

    def prepare(
        self, spec: JobSpec, paths: PodPaths, runtime: Runtime, options: RenderOptions, job_name: str
    ) -> Submission:
        warnings = list(spec.warnings)
        if spec.pod_options.scheduler_flags:
            warnings.append(f"{FLAGS} is ignored: this site runs HTCondor")
        description = self.render_description(spec, paths, job_name, options)
        context = runner_context(spec, runtime, paths, options)
        context.update(
            namespace=spec.namespace,
            uid=spec.uid,
            site_prologue=self.config.prologue,
            deadline_seconds=spec.deadline_seconds or 0,
            staged=not self.config.shared_filesystem,
        )
        script = render("job.sh.j2", TEMPLATES, context, options)
        return Submission(script=script, warnings=warnings, files={SUBMIT_FILE: description})

    # ------------------------------------------------------------------ commands

    def _where(self, *, schedd: bool = True) -> list[str]:
        """-pool / -name: which pool and schedd the command talks to."""
        words = ["-pool", self.config.pool] if self.config.pool else []
        if schedd and self.config.schedd:
            words += ["-name", self.config.schedd]
        return words

    async def _ads(self, argv: list[str], what: str, **kwargs: Any) -> dict[str, JobInfo]:
        return await self.ask(Command(argv, lambda out: parse.parse_jobs(out, **kwargs), name=what))

    def _attributes(self) -> list[str]:
        return ["-attributes", ",".join(parse.JOB_ATTRIBUTES)]

    def submit_command(self, paths: PodPaths, job_name: str, options: Mapping[str, Any]) -> list[str]:
        return [self.config.condor_submit, "-terse", *self._where(), posixpath.join(paths.pod_dir, SUBMIT_FILE)]

    def cancel_command(self) -> tuple[str, ...]:
        """condor_rm; jobs already gone or already being removed are fine (idempotent)."""
        return self._rm("interlink-provider: pod deleted")

    def batch_answer(self, argv: list[str]) -> Command[None]:
        return Command(argv, ignore_output, harmless=_only_gone, problem=_rm_problems)

    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """One condor_q for every job of ours (any owner); jobs HTCondor still holds after they
        failed (held too long, evicted) are removed as well."""
        if not job_ids:
            return {}
        argv = [
            self.config.condor_q,
            "-allusers",
            *self._where(),
            "-json",
            "-constraint",
            f"{parse.NAME_ATTR} =!= undefined",
            *self._attributes(),
        ]
        jobs = await self._ads(argv, "condor_q", now=time.time(), hold_timeout=self.config.hold_timeout_seconds)
        wanted = set(job_ids)
        found = {k: v for k, v in jobs.items() if k in wanted}
        stuck = sorted((j.job_id for j in found.values() if parse.needs_removal(j)), key=_numeric)
        if stuck:
            try:
                await self.batches.add(
                    self._rm("interlink-provider: the job failed while held or evicted"), stuck, None
                )
            except PollError as exc:  # the job's own periodic_remove does it too
                log.warning("cannot remove failed jobs %s: %s", ", ".join(stuck), exc)
        return found

    async def completed(self, job_ids: list[str]) -> dict[str, JobInfo]:
        if not job_ids or not self.config.use_history:
            return {}
        argv = [
            self.config.condor_history,
            *self._where(),
            "-json",
            "-constraint",
            parse.ids_constraint(job_ids),
            *self._attributes(),
            "-match",
            str(len(set(job_ids)) + self.config.history_match_slack),
        ]
        try:
            jobs = await self._ads(argv, "condor_history", in_queue=False)
        except PollError as exc:
            log.warning("condor_history failed, relying on the runner's files: %s", exc)
            return {}
        wanted = set(job_ids)
        return {k: v for k, v in jobs.items() if k in wanted}

    async def find_by_name(self, job_names: list[str]) -> dict[str, JobInfo]:
        """Queued or finished jobs with these names; a queued one wins over history, the newest
        (highest cluster) over older ones."""
        if not job_names:
            return {}
        wanted = set(job_names)
        constraint = parse.names_constraint(wanted)
        found: dict[str, JobInfo] = {}

        def keep(jobs: dict[str, JobInfo]) -> None:
            for job in sorted(jobs.values(), key=lambda j: _numeric(j.job_id)):
                if job.name in wanted:
                    found[job.name] = job

        if self.config.use_history:
            try:
                keep(
                    await self._ads(
                        [
                            self.config.condor_history,
                            *self._where(),
                            "-json",
                            "-constraint",
                            constraint,
                            *self._attributes(),
                            "-match",
                            str(2 * len(wanted) + self.config.history_match_slack),
                        ],
                        "condor_history",
                        in_queue=False,
                    )
                )
            except PollError as exc:
                log.warning("condor_history failed, looking in the queue only: %s", exc)
        keep(
            await self._ads(
                [
                    self.config.condor_q,
                    "-allusers",
                    *self._where(),
                    "-json",
                    "-constraint",
                    constraint,
                    *self._attributes(),
                ],
                "condor_q",
                now=time.time(),
                hold_timeout=self.config.hold_timeout_seconds,
            )
        )
        return found

    async def list_own(self, prefix: str) -> list[JobInfo]:
        """The sidecar's own queued jobs (condor_q without -allusers) named with `prefix`."""
        jobs = await self._ads(
            [
                self.config.condor_q,
                *self._where(),
                "-json",
                "-constraint",
                parse.prefix_constraint(prefix),
                *self._attributes(),
            ],
            "condor_q",
            now=time.time(),
            hold_timeout=self.config.hold_timeout_seconds,
        )
        return [job for job in jobs.values() if job.name.startswith(prefix)]

    def _rm(self, reason: str) -> tuple[str, ...]:
        return (self.config.condor_rm, *self._where(), "-reason", reason)

    async def signal(self, job_id: str, signal: str, account: str | None = None) -> None:
        """Graceful stop: condor_rm, which sends the job's kill_sig (SIGUSR1) to job.sh only and
        SIGKILL after job_max_vacate_time. HTCondor has no command to send other signals."""
        if signal.upper().removeprefix("SIG") not in ("USR1", "TERM"):
            raise PollError(f"HTCondor jobs cannot be sent SIG{signal.upper().removeprefix('SIG')}")
        await self.batches.add(self.cancel_command(), [job_id], account)

    async def capacity(self) -> Capacity:
        static = self.config.static_capacity
        if not self.config.query_capacity and static is not None:
            return Capacity(
                cpus=static.cpus,
                memory_mib=static.memory_mib,
                gpus=static.gpus,
                gpus_total=static.gpus,
                nodes=static.nodes,
            )
        argv = [
            self.config.condor_status,
            *self._where(schedd=False),
            "-json",
            "-constraint",
            "DynamicSlot =!= true",
            "-attributes",
            ",".join(parse.SLOT_ATTRIBUTES),
        ]
        try:
            return await self.ask(Command(argv, parse.parse_status))
        except PollError as exc:
            if static is None:
                raise
            log.warning("condor_status failed, reporting the configured capacity: %s", exc)
            return Capacity(
                cpus=static.cpus,
                memory_mib=static.memory_mib,
                gpus=static.gpus,
                gpus_total=static.gpus,
                nodes=static.nodes,
            )
