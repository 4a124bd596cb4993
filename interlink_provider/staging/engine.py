"""Stage-in before a job and stage-out after it, for one pod at a time, many pods at once.

Stage-in resolves every input to files, takes what the content cache already has,
downloads the rest once (a file several pods need is downloaded by the first and
awaited by the others), and gives the pod hard links in its staging volumes.
Stage-out copies the files the containers wrote to the output RSE, verifies them
end to end, and registers replicas, dataset and rule. Transient errors are retried
with back-off, then the next replica is tried; permanent ones fail at once.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..pods.staging import StageInput, StageOutput, StagingSpec, parse_did
from ..telemetry.metrics import CACHE_HITS, DOWNLOADS
from .cache import ContentCache
from .catalog import RucioCatalog
from .config import StagingConfig
from .credentials import PodCredentials, TokenBroker, plain
from .errors import Cancelled, StagingError
from .refs import FileRef, adler32_of
from .storage import probe
from .transfer import Progress, RetryPolicy, Transfer, configure_client, copy_with_retries
from .volumes import PodVolumes

_RUCIO_NAME = re.compile(r"^[/A-Za-z0-9][/A-Za-z0-9._\-]{0,249}$")


@dataclass
class PodStaging:
    """One pod's staging: its declaration and where its staging volumes are."""

    spec: StagingSpec
    volumes: PodVolumes
    namespace: str
    name: str
    uid: str
    progress: Progress = field(default_factory=Progress)
    cancel: threading.Event = field(default_factory=threading.Event)
    credentials: PodCredentials | None = None  # tokens for storage and Rucio (None: site credentials)


class Stager:
    def __init__(self, config: StagingConfig, state_dir: Path) -> None:
        self.config = config
        self.cache = ContentCache(Path(config.cache_dir), config.cache_max_bytes)
        self.catalog = RucioCatalog(config.rucio, state_dir, config.site) if config.rucio else None
        self.tokens = TokenBroker(config.tokens, state_dir) if config.tokens else None
        self._inflight: dict[Path, asyncio.Future[Path]] = {}
        self.downloads = 0  # files actually transferred
        self.cache_hits = 0  # files a pod got from the cache or from another pod's download
        self.retry_policy = RetryPolicy(config.parallel, config.retries, config.retry_backoff_seconds)
        configure_client(config.connection_window, config.connection_retry)

    def credentials_for(self, uid: str) -> PodCredentials | None:
        return PodCredentials(self.tokens, uid) if self.tokens else None

    async def close(self) -> None:
        if self.tokens is not None:
            await self.tokens.close()
        self.cache.close()

    def output_scopes(self, spec: StagingSpec) -> list[str]:
        """The Rucio scopes the pod's outputs are registered in (their storage paths)."""
        scopes = []
        for output in spec.outputs:
            scope = output.scope or (parse_did(output.dataset)[0] if output.dataset else self.config.default_scope)
            if scope:
                scopes.append(scope)
        return list(dict.fromkeys(scopes))

    # ------------------------------------------------------------------ policy checks (at create)

    def check(self, spec: StagingSpec) -> str | None:
        """Why this site cannot stage what the pod declares, or None."""
        if any(i.did for i in spec.inputs) and self.catalog is None:
            return "this site has no Rucio configured: inputs must be root:// URLs"
        for output in spec.outputs:
            if self.catalog is None:
                return "this site has no Rucio configured: outputs cannot be registered"
            if not (output.rse or self.config.default_rse):
                return f"output {output.mount}: no `rse` and the site has no default"
            if not (output.scope or output.dataset or self.config.default_scope):
                return f"output {output.mount}: no `scope` and the site has no default"
        return None

    # ------------------------------------------------------------------ stage-in

    async def resolve(self, item: StageInput, rucio_token: str | None = None) -> list[FileRef]:
        if item.did:
            if self.catalog is None:
                raise StagingError("this site has no Rucio configured")
            scope, name = parse_did(item.did)
            return await asyncio.to_thread(self.catalog.resolve, scope, name, rucio_token)
        assert item.url is not None
        path = item.url.split("//", 2)[-1]
        checksum = item.adler32.lower() if item.adler32 else None
        return [FileRef("", path.rsplit("/", 1)[-1], None, checksum, (item.url,))]

    async def stage_in(self, pod: PodStaging) -> None:
        rucio_token = await pod.credentials.rucio_token() if pod.credentials else None
        plan: list[tuple[int, FileRef]] = []
        for index, item in enumerate(pod.spec.inputs):
            files = await self.resolve(item, rucio_token)
            names = [f.basename for f in files]
            duplicate = next((n for n in names if names.count(n) > 1), None)
            if duplicate:
                raise StagingError(f"{item.label}: two files are named {duplicate!r}")
            plan += [(index, f) for f in files]
        pod.progress.add(len(plan), sum(f.size or 0 for _, f in plan))
        unique = list(dict.fromkeys(ref for _, ref in plan))
        cached = await asyncio.to_thread(lambda: {ref: self.cache.lookup(ref) for ref in unique})
        loop = asyncio.get_running_loop()
        waiting: dict[FileRef, asyncio.Future[Path]] = {}
        mine: list[FileRef] = []
        for ref in unique:
            key = self.cache.path(ref)
            hit = cached[ref]
            if hit is not None:
                waiting[ref] = loop.create_future()
                waiting[ref].set_result(hit)
            elif ref.adler32 and key in self._inflight:
                waiting[ref] = self._inflight[key]  # another pod is downloading it
            else:
                mine.append(ref)
        if pod.credentials is not None and len(mine) < len(unique):
            await self._check_readable([ref for ref in unique if ref not in mine], pod)
        if mine:
            waiting.update(await self._download(mine, pod))
        sources: dict[FileRef, Path] = {}
        for ref in unique:
            try:
                sources[ref] = await asyncio.shield(waiting[ref])
            except Cancelled:
                if pod.cancel.is_set():
                    raise
                sources[ref] = (await self._download([ref], pod))[ref].result()  # the other pod gave up
                mine.append(ref)
        counted = set(mine)  # a download counted its own progress, once
        for _, ref in plan:
            if ref in counted:
                counted.discard(ref)
            else:
                self.cache_hits += 1
                CACHE_HITS.inc()
                pod.progress.finish(ref, ref.size or 0)
        await pod.volumes.link_inputs([(sources[ref], index, ref.basename) for index, ref in plan])

    async def _download(self, refs: list[FileRef], pod: PodStaging) -> dict[FileRef, asyncio.Future[Path]]:
        loop = asyncio.get_running_loop()
        futures = {ref: loop.create_future() for ref in refs}
        for ref, future in futures.items():
            if ref.adler32:
                self._inflight[self.cache.path(ref)] = future
        reader = await pod.credentials.reader() if pod.credentials else _unchanged
        transfers = [
            Transfer(ref, tuple(map(reader, ref.sources)), lambda: str(self.cache.temporary()), ref.adler32)
            for ref in refs
        ]
        try:
            done, failed = await copy_with_retries(transfers, self.retry_policy, pod.progress, pod.cancel)
            admitted = await asyncio.to_thread(
                lambda: [(t.ref, self._admit(t.ref, Path(target))) for t, target in done]
            )
            for ref, path in admitted:
                self.downloads += 1
                DOWNLOADS.inc()
                futures[ref].set_result(path)
            for transfer, message in failed:
                futures[transfer.ref].set_exception(StagingError(f"{transfer.ref.did}: {message}"))
        except BaseException as exc:
            error = exc if isinstance(exc, StagingError) else Cancelled()
            for future in futures.values():
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # seen: pods waiting on it get it, an unawaited one must not log it
            raise
        finally:
            for ref in refs:
                self._inflight.pop(self.cache.path(ref), None)
        for future in futures.values():
            failure = future.exception()
            if failure is not None:
                raise failure
        return futures

    async def _check_readable(self, refs: list[FileRef], pod: PodStaging) -> None:
        """A pod gets a cached (or another pod's) copy only if its own token may read the original.

        Otherwise the cache would hand data to whoever names its DID. Files only on
        storages that take no tokens are readable by anyone. The storage must answer:
        when it cannot, the pod waits for it rather than being trusted blindly.
        """
        assert self.tokens is not None and pod.credentials is not None
        reader = await pod.credentials.reader()
        guarded = [(ref, [s for s in ref.sources if self.tokens.covers(s)]) for ref in refs]
        guarded = [(ref, sources) for ref, sources in guarded if sources]
        if guarded:
            await asyncio.to_thread(self._probe_access, guarded, reader)

    @staticmethod
    def _probe_access(guarded: list[tuple[FileRef, list[str]]], reader: Callable[[str], str]) -> None:
        for ref, sources in guarded:
            answers = []
            for source in sources:
                answer = probe(reader(source), with_checksum=False)
                if answer.verdict == "ok":
                    break
                if answer.verdict == "refused":
                    raise StagingError(f"{ref.did}: the pod's token may not read {plain(source)} ({answer.error})")
                answers.append(f"{plain(source)}: {answer.verdict} ({answer.error})")
            else:
                raise StagingError(
                    f"{ref.did}: cannot confirm the pod may read it: {'; '.join(answers)}", transient=True
                )

    def _admit(self, ref: FileRef, downloaded: Path) -> Path:
        if not ref.adler32:  # a URL without a declared checksum: verified end to end, keyed by its own
            ref = FileRef(ref.scope, ref.name, downloaded.stat().st_size, adler32_of(downloaded), ref.sources)
        return self.cache.admit(ref, downloaded)

    # ------------------------------------------------------------------ stage-out

    async def stage_out(self, pod: PodStaging) -> list[str]:
        """Copy and register every file the containers wrote; returns the dataset DIDs."""
        assert self.catalog is not None
        rucio_token = await pod.credentials.rucio_token() if pod.credentials else None
        datasets = []
        for index, output in enumerate(pod.spec.outputs):
            rse, dataset, scope = self._destination(output, pod)
            writer = await pod.credentials.writer(scope) if pod.credentials else _unchanged
            found = await pod.volumes.outputs(index)
            files = await asyncio.to_thread(self._describe_outputs, found, scope, dataset[1])
            pod.progress.add(len(files), sum(f.size or 0 for f, _ in files))
            transfers, already = [], []
            for ref, path in files:
                # DIDs are immutable: the same content is already there (a retried stage-out),
                # different content under the same name is an error, never an overwrite.
                known = await asyncio.to_thread(self.catalog.existing_adler32, ref.scope, ref.name, rucio_token)
                if known == ref.adler32:
                    already.append(ref)
                    pod.progress.finish(ref, ref.size or 0)
                    continue
                if known is not None:
                    raise StagingError(
                        f"output {ref.did} already exists in Rucio with other content "
                        f"(adler32 {known}, ours {ref.adler32})"
                    )
                pfn = writer(await asyncio.to_thread(self.catalog.pfn, rse, ref.scope, ref.name, rucio_token))
                transfers.append(Transfer(ref, (str(path),), _fixed(pfn), None))
            done, failed = await copy_with_retries(transfers, self.retry_policy, pod.progress, pod.cancel)
            if failed:
                transfer, message = failed[0]
                raise StagingError(f"stage-out of {transfer.ref.did} failed: {message}")
            await asyncio.to_thread(
                self.catalog.register,
                rse,
                [*already, *(t.ref for t, _ in done)],
                dataset,
                output.lifetime or self.config.default_lifetime,
                rucio_token,
            )
            datasets.append(f"{dataset[0]}:{dataset[1]}")
        return datasets

    def _destination(self, output: StageOutput, pod: PodStaging) -> tuple[str, tuple[str, str], str]:
        """Where an output goes: its RSE, its dataset's DID, its files' scope (the pod's or the site's)."""
        rse = output.rse or self.config.default_rse
        if rse is None:
            raise StagingError(f"output {output.mount}: no RSE named, and the site has no default_rse")
        if output.dataset:
            dataset = parse_did(output.dataset)
        else:
            dataset_scope = output.scope or self.config.default_scope
            if dataset_scope is None:
                raise StagingError(
                    f"output {output.mount}: no scope or dataset named, and the site has no default_scope"
                )
            dataset = (dataset_scope, f"{pod.namespace}.{pod.name}.{pod.uid[:8]}")
        return rse, dataset, output.scope or dataset[0]

    @staticmethod
    def _describe_outputs(found: list[tuple[str, Path]], scope: str, dataset_name: str) -> list[tuple[FileRef, Path]]:
        files = []
        for relative, path in found:
            name = f"{dataset_name}/{relative}"
            if not _RUCIO_NAME.fullmatch(name):
                raise StagingError(f"output {relative!r} is not a valid Rucio name ({_RUCIO_NAME.pattern})")
            files.append((FileRef(scope, name, path.stat().st_size, adler32_of(path)), path))
        return files


def _unchanged(url: str) -> str:
    return url


def _fixed(target: str) -> Callable[[], str]:
    """A target that every attempt writes again (a new file's PFN: Rucio names it, not we)."""
    return lambda: target
