"""Test doubles of the service core's two collaborators on the site side, for unit tests only:
`InMemoryBackend` (a batch system that keeps its jobs in a dict) and `InMemoryFiles` (the site's
files in memory). Integration tests use the real Slurm, HTCondor emulator and filesystem."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interlink_provider.pods.jobspec import JobSpec
from interlink_provider.runtimes import Runtime
from sidecars.core.kits import backend as b
from sidecars.core.kits.backend import (
    Backend,
    Capacity,
    Gangs,
    JobInfo,
    ListsOwnJobs,
    PollError,
    ReportsCapacity,
    Signals,
    Submission,
    SubmitError,
)
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.script import RenderOptions
from sidecars.core.kits.sitefs import SiteFiles
from sidecars.core.kits.workdir import ContainerFiles, DirectoryPlan, WorkdirError


@dataclass
class InMemoryBackend(Backend, Signals, ReportsCapacity, ListsOwnJobs):
    """Jobs in a dict, with every optional capability; every call is recorded in `calls` as
    (method, arguments)."""

    name: str = "memory"
    display_name: str = "Memory"
    jobs: dict[str, JobInfo] = field(default_factory=dict)  # job id -> what `query` answers
    history: dict[str, JobInfo] = field(default_factory=dict)  # job id -> what `completed` answers
    calls: list[tuple[str, Any]] = field(default_factory=list)
    submit_error: SubmitError | None = None  # raised by the next submit
    poll_error: PollError | None = None  # raised by every query while set
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    def prepare(
        self, spec: JobSpec, paths: PodPaths, runtime: Runtime, options: RenderOptions, job_name: str
    ) -> Submission:
        return Submission(script=f"#!/bin/bash\n# {job_name}\n", warnings=list(spec.warnings))

    async def submit(
        self, paths: PodPaths, job_name: str, account: str | None = None, options: Mapping[str, Any] | None = None
    ) -> str:
        self.calls.append(("submit", (job_name, account)))
        return self.new_job(job_name)

    def new_job(self, job_name: str) -> str:
        """A pending job of that name, or the submit error set for it."""
        if self.submit_error is not None:
            error, self.submit_error = self.submit_error, None
            raise error
        job_id = str(next(self._ids))
        self.jobs[job_id] = JobInfo(job_id, b.PENDING, name=job_name, raw_state="PENDING")
        return job_id

    def set_state(self, job_id: str, state: str) -> None:
        self.jobs[job_id] = JobInfo(job_id, state, name=self.jobs[job_id].name, raw_state=state)

    def leave_queue(self, job_id: str, final: str | None = None) -> None:
        """The job is gone from the queue; accounting knows how it ended (or nothing, with None)."""
        job = self.jobs.pop(job_id)
        if final is not None:
            self.history[job_id] = JobInfo(job_id, final, name=job.name, raw_state=final)

    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        self.calls.append(("query", tuple(job_ids)))
        if self.poll_error is not None:
            raise self.poll_error
        return {i: self.jobs[i] for i in job_ids if i in self.jobs}

    async def completed(self, job_ids: list[str]) -> dict[str, JobInfo]:
        self.calls.append(("completed", tuple(job_ids)))
        return {i: self.history[i] for i in job_ids if i in self.history}

    async def find_by_name(self, job_names: list[str]) -> dict[str, JobInfo]:
        self.calls.append(("find_by_name", tuple(job_names)))
        every = {**self.history, **self.jobs}
        return {job.name: job for job in every.values() if job.name in job_names}

    async def list_own(self, prefix: str) -> list[JobInfo]:
        return [job for job in self.jobs.values() if job.name.startswith(prefix)]

    async def signal(self, job_id: str, signal: str, account: str | None = None) -> None:
        self.calls.append(("signal", (job_id, signal, account)))

    async def cancel(self, job_ids: list[str], account: str | None = None) -> None:
        self.calls.append(("cancel", (tuple(job_ids), account)))
        for job_id in job_ids:
            if job_id in self.jobs:
                self.set_state(job_id, b.CANCELLED)

    async def capacity(self) -> Capacity:
        return Capacity(cpus=8, memory_mib=16384, gpus=0, nodes=1)

    def called(self, method: str) -> list[Any]:
        return [args for name, args in self.calls if name == method]


@dataclass
class InMemoryGangBackend(InMemoryBackend, Gangs):
    """InMemoryBackend that also runs gangs: `submit_gang` records (job name, member
    directories, account) and makes one job."""

    async def submit_gang(self, members: list[PodPaths], job_name: str, account: str | None = None) -> str:
        self.calls.append(("submit_gang", (job_name, tuple(m.pod_dir for m in members), account)))
        return self.new_job(job_name)


@dataclass
class InMemoryFiles(SiteFiles):
    """Pod directories as dicts: what was written, what the runner "wrote", what was removed."""

    written: dict[str, str] = field(default_factory=dict)  # pod_dir -> job script
    runner: dict[str, dict[str, ContainerFiles]] = field(default_factory=dict)  # pod_dir -> container files
    logs: dict[str, bytes] = field(default_factory=dict)  # log path -> content
    removed: list[str] = field(default_factory=list)
    scrubbed: dict[str, list[str]] = field(default_factory=dict)
    fail_writes: bool = False

    async def materialize(self, paths: PodPaths, plan: DirectoryPlan) -> None:
        if self.fail_writes:
            raise WorkdirError("disk full (test double)")
        self.written[paths.pod_dir] = next(f.content.decode() for f in plan.scripts if f.path == "job.sh")

    async def remove(self, paths: PodPaths) -> None:
        self.removed.append(paths.pod_dir)
        self.written.pop(paths.pod_dir, None)

    async def scrub(self, paths: PodPaths, volume_names: list[str]) -> None:
        self.scrubbed[paths.pod_dir] = list(volume_names)

    async def read_pod(self, paths: PodPaths, containers: list[str]) -> dict[str, ContainerFiles]:
        found = self.runner.get(paths.pod_dir, {})
        return {name: found.get(name, ContainerFiles()) for name in containers}

    async def link_inputs(self, paths: PodPaths, volume: str, links: Sequence[tuple[Path, str]]) -> None:
        raise WorkdirError("no staging in this test double")

    async def volume_files(self, paths: PodPaths, volume: str) -> list[tuple[str, Path]]:
        raise WorkdirError("no staging in this test double")

    async def read_tail(self, path: str, lines: int) -> tuple[bytes, int, Any]:
        return self.logs.get(path, b""), 0, path

    async def read_from(self, path: str, offset: int, identity: Any) -> tuple[bytes, int, Any]:
        return self.logs.get(path, b"")[offset:], offset, path
