"""The slurmrestd transport: Slurm's REST API instead of its command-line tools.

For sites that expose slurmrestd (JWT auth) but no shell. The batch script is the
same one `sbatch` would get; slurmrestd ignores `#SBATCH` lines, so when the pod is
created they are read from the rendered script and translated into job properties
(one table, `PROPERTIES`): an option slurmrestd cannot take refuses the pod then. The
properties are kept with the pod (Submission.options) and sent with the script. Every
call takes a token from the site's bucket like a CLI command does.

Tokens: with `jwt_key_file` (the HS256 key slurmctld has in
`AuthAltParameters=jwt_key=`) the sidecar mints short-lived tokens itself, one per
account, so jobs of mapped identities run as their own accounts; with `token_file`
(e.g. from `scontrol token`) it acts only as that token's user. Neither the key nor
a token is ever logged.

slurmrestd moves no files: the pods' directories must be on a filesystem the
sidecar shares with the site (like the local transport). Without slurmdbd the REST
API knows only jobs slurmctld still holds (MinJobAge); older ones are resolved from
the exit-code files the runner writes, as with `use_sacct: false`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from interlink_provider.pods.jobspec import JobSpec
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.pods.validate import PodRejected
from interlink_provider.runtimes import Runtime
from sidecars.core.kits.backend import Capacity, JobInfo, PollError, Submission, SubmitError
from sidecars.core.kits.logs import READ_LIMIT
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.ratelimit import TokenBucket
from sidecars.core.kits.script import RenderOptions
from sidecars.core.kits.sitefs import SiteFiles
from sidecars.core.kits.transport import TransportError, current_user, metered
from sidecars.core.kits.workdir import WorkdirError
from sidecars.slurm import parse
from sidecars.slurm.backend import SlurmCommon, SlurmConfig
from sidecars.slurm.flags import Flag, parse_flags
from sidecars.slurm.reasons import explain

log = logging.getLogger(__name__)

# API versions whose job and node shapes this module reads, newest first.
SUPPORTED_VERSIONS = ("v0.0.38",)
DEFAULT_JOB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_HELD = re.compile(r"Job is in held state", re.I)
# slurmrestd answers these for jobs that are gone or already ending: nothing to cancel.
_GONE = re.compile(r"Invalid job id|already completing or completed|Job/step already completing", re.I)


class SlurmRestdConfig(BaseModel):
    """`transport.slurmrestd:` section of a site config."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field("http://127.0.0.1:6820", description="slurmrestd's address")
    user: str | None = Field(None, description="account the sidecar acts as (default: the sidecar's own)")
    jwt_key_file: str | None = Field(
        None,
        description="slurmctld's HS256 key (AuthAltParameters=jwt_key): the sidecar mints "
        "short-lived tokens, also for mapped accounts",
    )
    token_file: str | None = Field(
        None, description="a token made elsewhere (scontrol token); re-read when it changes; acts as one user"
    )
    token_lifespan: int = Field(600, ge=60, description="seconds a minted token is valid")
    api_version: str | None = Field(None, description="e.g. v0.0.38; default: discovered from /openapi/v3")
    ca_file: str | None = Field(None, description="CA of slurmrestd's certificate, for https URLs")
    job_environment: dict[str, str] = Field(
        default_factory=lambda: {"PATH": DEFAULT_JOB_PATH},
        description="the batch script's environment (slurmrestd needs one; like sbatch --export=NONE)",
    )
    timeout: float = Field(30.0, gt=0, description="seconds per request")

    @model_validator(mode="after")
    def _one_credential(self) -> SlurmRestdConfig:
        if bool(self.jwt_key_file) == bool(self.token_file):
            raise ValueError("transport.slurmrestd needs exactly one of jwt_key_file or token_file")
        return self


class Tokens:
    """JWTs for slurmrestd, cached until most of their life has passed."""

    def __init__(self, config: SlurmRestdConfig) -> None:
        self.config = config
        self.default_user = config.user or current_user()
        self._minted: dict[str, tuple[str, float]] = {}

    def for_user(self, user: str) -> str:
        if self.config.token_file:
            if user != self.default_user:
                raise TransportError(
                    f"token_file acts only as {self.default_user}: use jwt_key_file to run jobs as {user}"
                )
            return Path(self.config.token_file).read_text().strip()
        token, renew_at = self._minted.get(user, ("", 0.0))
        now = time.time()
        if now >= renew_at:
            key = Path(str(self.config.jwt_key_file)).read_bytes()
            lifespan = self.config.token_lifespan
            token = jwt.encode({"iat": int(now), "exp": int(now) + lifespan, "sun": user}, key, algorithm="HS256")
            self._minted[user] = (token, now + lifespan * 0.8)
        return token


class SlurmRestClient:
    """One HTTP connection pool to slurmrestd; every request metered like a scheduler command."""

    def __init__(self, config: SlurmRestdConfig, limiter: TokenBucket | None) -> None:
        self.config = config
        self.limiter = limiter
        self.tokens = Tokens(config)
        self._session: aiohttp.ClientSession | None = None
        self._version: str | None = config.api_version

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            context = ssl.create_default_context(cafile=self.config.ca_file) if self.config.ca_file else None
            self._session = aiohttp.ClientSession(
                base_url=self.config.url.rstrip("/") + "/",
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                connector=aiohttp.TCPConnector(ssl=context) if context else None,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        command: str,
        *,
        user: str | None = None,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer). Network failures and unreadable answers are TransportError."""
        user = user or self.tokens.default_user
        headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": await asyncio.to_thread(self.tokens.for_user, user)}
        async with metered(command, self.limiter) as meter:
            try:
                async with self.session().request(
                    method, path.lstrip("/"), json=body, params=params, headers=headers
                ) as response:
                    text = await response.text()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise TransportError(
                    f"slurmrestd at {self.config.url} did not answer: {exc or type(exc).__name__}"
                ) from exc
            meter.exit_status(status < 400)
        if status in (401, 403):
            raise TransportError(f"slurmrestd refused our token for {user} (HTTP {status})")
        try:
            payload = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise TransportError(f"slurmrestd answered HTTP {status} with no JSON: {text[:200]!r}") from exc
        return status, payload

    async def version(self) -> str:
        """The newest API version both slurmrestd and this module speak (asked once)."""
        if self._version is None:
            status, spec = await self.request("GET", "/openapi/v3", "slurmrestd-openapi")
            offered = sorted(
                {
                    m.group(1)
                    for p in spec.get("paths", {})
                    if (m := re.match(r"^/slurm/(v\d+\.\d+\.\d+)/job/submit$", p))
                },
                reverse=True,
            )
            usable = [v for v in SUPPORTED_VERSIONS if v in offered]
            if not usable:
                raise TransportError(
                    f"slurmrestd offers {', '.join(offered) or 'no slurm API'} (HTTP {status}); "
                    f"this sidecar speaks {', '.join(SUPPORTED_VERSIONS)}"
                )
            self._version = usable[0]
            log.info("slurmrestd at %s: using API %s (offered: %s)", self.config.url, self._version, ", ".join(offered))
        return self._version

    async def slurm(self, method: str, endpoint: str, command: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        return await self.request(method, f"/slurm/{await self.version()}/{endpoint}", command, **kwargs)


def errors_of(payload: dict[str, Any]) -> str:
    """slurmrestd's own words from an answer's `errors` list."""
    words = []
    for error in payload.get("errors") or []:
        if isinstance(error, dict):
            words.append(str(error.get("description") or error.get("error") or error))
    return "; ".join(w for w in words if w)


# ---------------------------------------------------------------------- #SBATCH -> job properties

_DIRECTIVE = re.compile(r"^#SBATCH\s+(.*)$")


def unquote_word(word: str) -> str:
    """Undo flags.sbatch_word (double quotes, backslash escapes)."""
    if len(word) >= 2 and word[0] == word[-1] == '"':
        return re.sub(r"\\(.)", r"\1", word[1:-1])
    return word


def script_directives(script: str) -> list[Flag]:
    """The `#SBATCH` lines sbatch would read: those before the first command line."""
    words = []
    for line in script.splitlines()[1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        match = _DIRECTIVE.match(stripped)
        if match:
            words.append(unquote_word(match.group(1).strip()))
    return parse_flags(words, "batch script")


def minutes(value: str) -> int:
    """Slurm time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S -> whole minutes (rounded up)."""
    days, _, rest = value.partition("-") if "-" in value else ("0", "", value)
    parts = [int(p) for p in rest.split(":")]
    if "-" in value:
        hours, mins, secs = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, mins, secs = parts
    elif len(parts) == 2:
        hours, mins, secs = 0, parts[0], parts[1]
    else:
        hours, mins, secs = 0, parts[0], 0
    total = ((int(days) * 24 + hours) * 60 + mins) * 60 + secs
    return -(-total // 60)


def megabytes(value: str) -> int:
    """Slurm memory sizes (default unit M): 512, 512M, 2G, 1T, 100K."""
    match = re.fullmatch(r"(\d+)([KMGT]?)B?", value.strip().upper())
    if not match:
        raise ValueError(f"not a memory size: {value!r}")
    number, unit = int(match.group(1)), match.group(2) or "M"
    return {"K": -(-number // 1024), "M": number, "G": number * 1024, "T": number * 1024 * 1024}[unit]


def node_range(value: str) -> list[int]:
    low, _, high = value.partition("-")
    return [int(low), int(high or low)]


def _signal(value: str) -> str | None:
    # v0.0.38 rejects "B:" (signal the batch shell only): the job then ends at its time
    # limit with Slurm's TERM, and the pod's reason comes from the scheduler's TIMEOUT.
    return None if value.startswith("B:") else value


# sbatch option -> (job property, conversion). None as a value drops the flag.
PROPERTIES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--account": ("account", str),
    "--chdir": ("current_working_directory", str),
    "--comment": ("comment", str),
    "--constraint": ("constraints", str),
    "--cpus-per-gpu": ("cpus_per_gpu", int),
    "--cpus-per-task": ("cpus_per_task", int),
    "--dependency": ("dependency", str),
    "--error": ("standard_error", str),
    "--gpus": ("gpus", str),
    "--gpus-per-node": ("gpus_per_node", str),
    "--gpus-per-task": ("gpus_per_task", str),
    "--gres": ("gres", str),
    "--job-name": ("name", str),
    "--licenses": ("licenses", str),
    "--mail-type": ("mail_type", str),
    "--mail-user": ("mail_user", str),
    "--mem": ("memory_per_node", megabytes),
    "--mem-per-cpu": ("memory_per_cpu", megabytes),
    "--mem-per-gpu": ("memory_per_gpu", megabytes),
    "--nice": ("nice", int),
    "--nodes": ("nodes", node_range),
    "--ntasks": ("tasks", int),
    "--ntasks-per-node": ("tasks_per_node", int),
    "--open-mode": ("open_mode", str),
    "--output": ("standard_output", str),
    "--partition": ("partition", str),
    "--qos": ("qos", str),
    "--reservation": ("reservation", str),
    "--signal": ("signal", _signal),
    "--time": ("time_limit", minutes),
    "--time-min": ("time_minimum", minutes),
    "--wckey": ("wckey", str),
}
SWITCHES: dict[str, tuple[str, Any]] = {
    "--exclusive": ("exclusive", "true"),
    "--hold": ("hold", True),
    "--requeue": ("requeue", True),
    "--no-requeue": ("requeue", False),
}


def job_properties(flags: list[Flag], environment: dict[str, str]) -> dict[str, Any]:
    """The job description slurmrestd takes for these sbatch options (PodRejected when one has
    no REST equivalent: the pod must not run with an option silently lost)."""
    job: dict[str, Any] = {"environment": dict(environment)}
    for flag in flags:
        if flag.name == "--export":
            continue  # the environment is job_environment, always
        if flag.name in SWITCHES:
            key, value = SWITCHES[flag.name]
            job[key] = value
            continue
        if flag.name not in PROPERTIES:
            raise PodRejected(f"{flag.name} cannot be passed through slurmrestd", field="batch script")
        key, convert = PROPERTIES[flag.name]
        try:
            value = convert(flag.value or "")
        except ValueError as exc:
            raise PodRejected(f"{flag.render()}: {exc}", field="batch script") from exc
        if value is not None:
            job[key] = value
    return job


# ---------------------------------------------------------------------- the backend


class SlurmRestBackend(SlurmCommon):
    """Slurm through slurmrestd: the same scripts and status semantics as the CLI backend."""

    def __init__(
        self, config: SlurmConfig, policy: TranslationPolicy, restd: SlurmRestdConfig, files: SiteFiles
    ) -> None:
        super().__init__(config, policy)
        self.restd = restd
        self.files = files  # where the pods' scripts are read from
        self.client = SlurmRestClient(restd, self.rate_limit(config))

    async def close(self) -> None:
        await self.client.close()

    async def _call(self, method: str, endpoint: str, command: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        try:
            return await self.client.slurm(method, endpoint, command, **kwargs)
        except TransportError as exc:
            raise PollError(str(exc)) from exc

    async def _get(self, endpoint: str, command: str) -> dict[str, Any]:
        """A GET that must answer 200 (PollError)."""
        status, answer = await self._call("GET", endpoint, command)
        if status != 200:
            raise PollError(f"slurmrestd {endpoint}: HTTP {status}: {errors_of(answer)}")
        return answer

    def prepare(
        self, spec: JobSpec, paths: PodPaths, runtime: Runtime, options: RenderOptions, job_name: str
    ) -> Submission:
        """The Slurm script, and its `#SBATCH` lines as job properties (PodRejected naming an
        option slurmrestd cannot take). The environment is added at submission: it is the
        site's (job_environment), not the pod's. Gangs are refused: their batch script is
        submitted with sbatch."""
        if spec.gang is not None:
            raise PodRejected(f"gang {spec.gang.name}: this site submits through slurmrestd, which does not run gangs")
        submission = super().prepare(spec, paths, runtime, options, job_name)
        job = job_properties(script_directives(submission.script), {})
        del job["environment"]
        return dataclasses.replace(submission, options={"job": job})

    async def _script(self, paths: PodPaths, account: str | None) -> str:
        files = self.files.for_account(account or "")
        try:
            data, chunk = b"", b"-" * READ_LIMIT
            while len(chunk) >= READ_LIMIT:  # reads are bounded: a long script comes in pieces
                chunk, _, _ = await files.read_from(paths.script, len(data), None)
                data += chunk
        except (OSError, TransportError, WorkdirError) as exc:
            raise SubmitError(f"cannot read {paths.script}: {exc}", permanent=False) from exc
        if not data:
            raise SubmitError(f"{paths.script} is missing or empty", permanent=False)
        return data.decode()

    async def submit(
        self, paths: PodPaths, job_name: str, account: str | None = None, options: Mapping[str, Any] | None = None
    ) -> str:
        script = await self._script(paths, account)
        properties = (options or {}).get("job")
        if properties is None:  # a pod accepted before its options were kept with it
            try:
                properties = job_properties(script_directives(script), {})
            except PodRejected as exc:
                raise SubmitError(str(exc), permanent=True) from exc
        job = {**properties, "environment": dict(self.restd.job_environment)}
        try:
            status, answer = await self.client.slurm(
                "POST", "job/submit", "slurmrestd-submit", user=account, body={"script": script, "job": job}
            )
        except TransportError as exc:
            raise SubmitError(str(exc), permanent=False) from exc
        message = errors_of(answer)
        job_id = answer.get("job_id")
        if job_id and ((status == 200 and not message) or _HELD.search(message)):
            return str(job_id)  # a job submitted on hold is answered with an "error" and its id
        if not message:  # no word from Slurm: the service, not the job, is at fault
            raise SubmitError(f"slurmrestd answered HTTP {status} without a job id", permanent=status < 500)
        raise SubmitError(message, permanent=not parse.sbatch_error_is_transient(message))

    async def _jobs(self) -> list[dict[str, Any]]:
        answer = await self._get("jobs", "slurmrestd-jobs")
        return [job for job in answer.get("jobs") or [] if isinstance(job, dict)]

    @staticmethod
    def job_info(job: dict[str, Any]) -> JobInfo:
        raw = str(job.get("job_state") or "")
        reason = str(job.get("state_reason") or "")
        return JobInfo(
            job_id=str(job.get("job_id")),
            state=parse.normalise_state(raw),
            reason="" if reason in ("None", "(null)") else explain(reason),
            name=str(job.get("name") or ""),
            raw_state=raw,
            user=str(job.get("user_name") or ""),
            work_dir=str(job.get("current_working_directory") or ""),
        )

    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        if not job_ids:
            return {}
        wanted = set(job_ids)
        infos = (self.job_info(job) for job in await self._jobs())
        return {info.job_id: info for info in infos if info.job_id in wanted}

    async def completed(self, job_ids: list[str]) -> dict[str, JobInfo]:
        return {}  # no accounting through slurmrestd without slurmdbd: exit-code files decide

    async def find_by_name(self, job_names: list[str]) -> dict[str, JobInfo]:
        wanted = set(job_names)
        if not wanted:
            return {}
        infos = (self.job_info(job) for job in await self._jobs())
        return {info.name: info for info in infos if info.name in wanted}

    async def list_own(self, prefix: str) -> list[JobInfo]:
        """Every user's jobs named with the prefix: pods' jobs run as their mapped accounts (each
        is cancelled as its own user, which a `token_file` that acts only as one user refuses)."""
        return [self.job_info(job) for job in await self._jobs() if str(job.get("name") or "").startswith(prefix)]

    async def send_batch(self, argv: list[str], account: str | None) -> None:
        """The batched scancel of the CLI backend, as one DELETE per job (the API has no list).

        slurmrestd signals the whole job, not the batch shell alone: the graceful stop
        (USR1 for the CLI) is TERM here, which the runner handles the same way and which
        the containers take as Kubernetes' own stop signal."""
        signal = next((word.split("=", 1)[1] for word in argv if word.startswith("--signal=")), None)
        params = {"signal": "TERM" if signal == "USR1" else signal} if signal else None
        job_ids = [word for word in argv[1:] if not word.startswith("-")]
        results = await asyncio.gather(
            *(
                self._call("DELETE", f"job/{job_id}", "slurmrestd-cancel", user=account, params=params)
                for job_id in job_ids
            )
        )
        failures = [
            errors_of(answer) or f"HTTP {status}"
            for status, answer in results
            if status != 200 and not _GONE.search(errors_of(answer))
        ]
        if failures:
            raise PollError(f"slurmrestd cancel failed: {'; '.join(failures)}")

    async def capacity(self) -> Capacity:
        answer = await self._get("nodes", "slurmrestd-nodes")
        return node_capacity(answer.get("nodes") or [])


def node_capacity(nodes: list[dict[str, Any]]) -> Capacity:
    """Free CPUs/memory/GPUs over usable nodes, as parse.parse_sinfo counts them."""
    cpus = memory = gpus = gpus_total = count = 0
    for node in nodes:
        state = " ".join([str(node.get("state") or ""), *map(str, node.get("state_flags") or [])]).lower()
        if any(bad in state for bad in ("down", "drain", "fail", "maint", "unk")):
            continue
        count += 1
        cpus += max(0, int(node.get("cpus") or 0) - int(node.get("alloc_cpus") or 0))
        memory += max(0, int(node.get("real_memory") or 0) - int(node.get("alloc_memory") or 0))
        total = parse.gpu_count(str(node.get("gres") or ""))
        gpus_total += total
        gpus += max(0, total - parse.gpu_count(str(node.get("gres_used") or "")))
    return Capacity(cpus=cpus, memory_mib=memory, gpus=gpus, gpus_total=gpus_total, nodes=count)
