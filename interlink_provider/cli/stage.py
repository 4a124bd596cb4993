"""`interlink-provider stage ...`: diagnose and use the datalake the way the sidecar does.

Every subcommand takes a Rucio DID (`scope:name`) or an XRootD URL (`root://...`),
uses the same resolution, copy and registration code as the sidecar's staging, and
says plainly what failed, in one line. Exit codes (cli/exits.py): 0 done or healthy;
1 the data is wrong (missing, corrupt, refused, already registered with other content);
2 usage or configuration error, or no [staging] extra; 3 a server cannot be reached;
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import logging
import os
import re
import shutil
import signal
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from ..pods.staging import parse_did
from ..staging import storage
from ..staging.catalog import CatalogFile, RucioCatalog
from ..staging.config import RucioConfig
from ..staging.credentials import ignore_ambient_tokens, with_token
from ..staging.errors import Cancelled, StagingError
from ..staging.refs import FileRef, adler32_of
from ..staging.transfer import Progress as TransferProgress
from ..staging.transfer import RetryPolicy, Transfer, configure_client, copy_with_retries, human_bytes
from .exits import Exit, Refusal, load_config

out = Console(highlight=False, soft_wrap=True)  # paths and tokens must not be cut by wrapping
err = Console(stderr=True, highlight=False, soft_wrap=True)
EXTRA = "pip install 'interlink-provider[staging]'"
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKMGT]?)i?B?$")
# copy_with_retries' answer: the transfers done (with the file each wrote) and those failed (with why).
Copied = tuple[list[tuple[Transfer, str]], list[tuple[Transfer, str]]]


# ---------------------------------------------------------------------- configuration


def _rucio_config(args: argparse.Namespace) -> tuple[RucioConfig | None, str]:
    """Rucio settings from a site config (--config) and/or flags; flags win."""
    rucio, site = None, args.site
    if args.config:
        from sidecars.daemon.config import load_config as load_site

        staging = load_config(load_site, args.config).staging
        if staging is not None:
            rucio, site = staging.rucio, site or staging.site
    if args.rucio_host:
        base = rucio.model_dump() if rucio else {}
        base.update(host=args.rucio_host)
        rucio = RucioConfig.model_validate(base)
    if rucio is not None:
        overrides = {
            "account": args.rucio_account,
            "username": args.rucio_username,
            "password_file": args.rucio_password_file,
            "auth_type": args.rucio_auth_type,
        }
        rucio = rucio.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        if rucio.auth_type == "userpass" and not (rucio.username and rucio.password_file):
            raise Refusal(
                "Rucio's userpass login needs --rucio-username and --rucio-password-file "
                "(or staging.rucio.username and password_file in --config)"
            )
    return rucio, site or "LOCAL"


def _catalog(args: argparse.Namespace) -> RucioCatalog:
    rucio, site = _rucio_config(args)
    if rucio is None:
        raise Refusal("no Rucio configured: pass --config SITE.yaml (its staging section) or --rucio-host URL")
    state = Path(os.environ.get("XDG_RUNTIME_DIR") or Path.home() / ".cache") / "interlink-provider" / "stage"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    return RucioCatalog(rucio, state, site)


def _is_url(target: str) -> bool:
    """A URL (checked to be XRootD's) or else a DID; what is neither is a usage error."""
    if "://" in target:
        try:
            storage.split_url(target)
        except StagingError as exc:
            raise Refusal(exc.message) from exc
        return True
    return False


def _did(target: str) -> tuple[str, str]:
    try:
        return parse_did(target)
    except ValueError as exc:
        raise Refusal(f"{exc}; or give an XRootD URL (root://host//path)") from exc


_token_file: Path | None = None  # --token-file: a bearer token every XRootD URL presents


def _authorized(url: str) -> str:
    """The URL presenting --token-file's token (XRootD's ztn), when one was given."""
    return with_token(url, _token_file) if _token_file is not None and "://" in url else url


def _policy(args: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(args.parallel, args.retries, args.backoff)


def parse_size(text: str) -> int:
    """'100M', '1.5G', '4096' -> bytes (powers of 1024)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise Refusal(f"not a size: {text!r} (e.g. 64M, 1G)")
    factor = {"": 1, "k": 1024, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[match.group(2)]
    return int(float(match.group(1)) * factor)


def command(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Map the ways a staging command can fail onto exit codes and one clear line (a Refusal)."""

    def wrapper(args: argparse.Namespace) -> int:
        logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
        # rucio-clients logs each failed call on a handler of its own, in colour: the Refusal says it once
        logging.getLogger("baseclient").disabled = not args.verbose
        global _token_file
        try:
            configure_client(args.connection_window, args.connection_retry)
            _token_file = _use_token_file(args.token_file)
            return run(args)
        except ImportError as exc:  # XRootD's bindings or rucio-clients: the optional extra
            raise Refusal(f"stage needs the [staging] extra: {EXTRA} ({exc})") from exc
        except (Cancelled, KeyboardInterrupt) as exc:
            raise Refusal("interrupted: partial files were removed", Exit.INTERRUPTED) from exc
        except StagingError as exc:
            raise Refusal(exc.message, Exit.UNREACHABLE if exc.transient else Exit.BAD) from exc

    wrapper.__name__ = run.__name__
    return wrapper


def _use_token_file(path: str | None) -> Path | None:
    if path is None:
        return None
    file = Path(path).resolve()
    if not file.is_file():
        raise Refusal(f"--token-file {path}: no such file")
    if file.stat().st_mode & 0o077:
        raise Refusal(f"--token-file {path} is readable by others: chmod 600 it (a token is a secret)")
    for name in ignore_ambient_tokens():
        err.print(f"[yellow]{name} exists: XRootD may present it instead of --token-file[/]")
    return file


# ---------------------------------------------------------------------- resolve


def _url_file(url: str, adler32: str | None = None) -> FileRef:
    return FileRef("", url.rsplit("/", 1)[-1], None, adler32, (url,))


@command
def resolve_cmd(args: argparse.Namespace) -> int:
    if _is_url(args.target):
        return _print_checks([_Check(args.target, storage.probe(_authorized(args.target)))], args.json)
    scope, name = _did(args.target)
    files = _catalog(args).describe(scope, name)
    if args.json:
        print(json.dumps([_file_json(f) for f in files], indent=2))
        return Exit.OK
    table = Table(title=f"{args.target}: {len(files)} files, {human_bytes(sum(f.ref.size or 0 for f in files))}")
    for column in ("file", "size", "adler32", "replicas (best first)", "chosen source"):
        table.add_column(column, overflow="fold")
    for entry in files:
        replicas = "\n".join(f"{r.rse} ({'local' if r.domain == 'lan' else 'remote'})" for r in entry.replicas)
        table.add_row(
            entry.ref.did, human_bytes(entry.ref.size or 0), entry.ref.adler32 or "-", replicas, entry.replicas[0].pfn
        )
    out.print(table)
    return Exit.OK


def _file_json(entry: CatalogFile) -> dict[str, Any]:
    return {
        "did": entry.ref.did,
        "bytes": entry.ref.size,
        "adler32": entry.ref.adler32,
        "replicas": [{"rse": r.rse, "pfn": r.pfn, "local": r.domain == "lan"} for r in entry.replicas],
        "chosen": entry.replicas[0].pfn,
    }


# ---------------------------------------------------------------------- get


@command
def get_cmd(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if directory.exists() and not directory.is_dir():
        raise Refusal(f"{directory} exists and is not a directory")
    if _is_url(args.target):
        files = [_url_file(args.target, args.adler32)]
    else:
        files = _catalog(args).resolve(*_did(args.target))
    names = [f.basename for f in files]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise StagingError(f"{args.target}: two files are named {clash!r}; they cannot share {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    todo, present = [], []
    for ref in files:
        local = directory / ref.basename
        if local.is_file() and ref.adler32 and adler32_of(local) == ref.adler32:
            present.append(ref)  # already here and verified: nothing to move
        else:
            todo.append(ref)
    transfers = [
        Transfer(ref, tuple(map(_authorized, ref.sources)), _partial_target(directory, ref), ref.adler32)
        for ref in todo
    ]
    started = time.monotonic()
    try:
        done, failed = _copy_with_bar(transfers, _policy(args), f"get {args.target}") if transfers else ([], [])
    except BaseException:
        for ref in todo:  # an interrupted copy leaves no partial file behind
            for partial in directory.glob(f".{glob.escape(ref.basename)}.*.part"):
                partial.unlink(missing_ok=True)
        raise
    for transfer, target in done:
        os.replace(target, directory / transfer.ref.basename)
    elapsed = time.monotonic() - started
    moved = sum(Path(directory / t.ref.basename).stat().st_size for t, _ in done)
    err.print(
        f"{len(done)} files ({human_bytes(moved)}) in {elapsed:.1f} s"
        + (f", {len(present)} already present and verified" if present else "")
        + f" -> {directory}"
    )
    if failed:  # each failure on a line of its own, the first one last: the command's answer
        for transfer, message in failed[1:]:
            err.print(f"[red]{transfer.ref.did or transfer.sources[0]}: {message}[/]")
        transfer, message = failed[0]
        more = f" ({len(failed) - 1} more failed: above)" if len(failed) > 1 else ""
        raise Refusal(f"{transfer.ref.did or transfer.sources[0]}: {message}{more}", _failure_code(failed))
    return Exit.OK


def _failure_code(failed: list[tuple[Transfer, str]]) -> Exit:
    """3 when every failure was a server that did not answer (trying again may help), else 1."""
    return Exit.UNREACHABLE if all(transfer.transient for transfer, _ in failed) else Exit.BAD


def _partial_target(directory: Path, ref: FileRef) -> Callable[[], str]:
    return lambda: str(directory / f".{ref.basename}.{uuid.uuid4().hex[:8]}.part")


def _copy_with_bar(transfers: list[Transfer], policy: RetryPolicy, label: str) -> Copied:
    """copy_with_retries with a progress bar fed from the shared Progress counters."""
    progress = TransferProgress()
    progress.add(len(transfers), sum(t.ref.size or 0 for t in transfers))
    cancel = threading.Event()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[files]}"),
        TimeRemainingColumn(),
    )

    async def run() -> Copied:
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task(label, total=progress.bytes_total or None, files="")
            copying = asyncio.create_task(copy_with_retries(transfers, policy, progress, cancel))
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):  # stop the copy, remove partial files, exit 130
                loop.add_signal_handler(signum, cancel.set)
            try:
                while not copying.done():
                    bar.update(
                        task, completed=progress.bytes_done, files=f"{progress.files_done}/{progress.files_total} files"
                    )
                    await asyncio.wait({copying}, timeout=0.2)
            except asyncio.CancelledError:  # Ctrl-C: stop the copy thread before the loop closes
                cancel.set()
                raise
            bar.update(task, completed=progress.bytes_done, files=f"{progress.files_done}/{progress.files_total} files")
            return copying.result()

    return asyncio.run(run())


# ---------------------------------------------------------------------- put


@command
def put_cmd(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise Refusal(f"{path} is not a file")
    scope, name = _did(args.did)
    dataset = _did(args.dataset) if args.dataset else None
    catalog = _catalog(args)
    ref = FileRef(scope, name, path.stat().st_size, adler32_of(path))
    known = catalog.existing_adler32(scope, name)
    if known == ref.adler32:
        catalog.register(args.rse, [ref], dataset, args.lifetime)
        err.print(f"{ref.did} is already registered with the same content (adler32 {known}); rules checked")
        return Exit.OK
    if known is not None:
        raise StagingError(
            f"{ref.did} already exists with other content (adler32 {known}, the file's "
            f"{ref.adler32}); DIDs are immutable: choose another name"
        )
    pfn = catalog.pfn(args.rse, scope, name)
    transfer = Transfer(ref, (str(path),), lambda: _authorized(pfn), None)
    _, failed = _copy_with_bar([transfer], _policy(args), f"put {ref.did}")
    if failed:
        raise Refusal(f"upload of {ref.did} to {args.rse} failed: {failed[0][1]}", _failure_code(failed))
    catalog.register(args.rse, [ref], dataset, args.lifetime)
    where = f", attached to {args.dataset}" if dataset else ""
    err.print(f"registered {ref.did} ({human_bytes(ref.size or 0)}, adler32 {ref.adler32}) at {args.rse}{where}")
    return Exit.OK


# ---------------------------------------------------------------------- check


@dataclass
class _Check:
    """One replica to check, and what the catalog (or the user) says it should be."""

    label: str
    probe: storage.FileProbe
    size: int | None = None
    adler32: str | None = None

    @property
    def verdict(self) -> str:
        if self.probe.verdict != "ok":
            return self.probe.verdict
        if self.size is not None and self.probe.size != self.size:
            return "size mismatch"
        if self.adler32 and self.probe.adler32 and self.probe.adler32 != self.adler32.lower():
            return "checksum mismatch"
        return "ok"


@command
def check_cmd(args: argparse.Namespace) -> int:
    """Every replica: reachable, permitted, present, same size and checksum as the catalog."""
    if _is_url(args.target):
        return _print_checks(
            [_Check(args.target, storage.probe(_authorized(args.target)), None, args.adler32)], args.json
        )
    scope, name = _did(args.target)
    checks = [
        _Check(
            f"{entry.ref.did} @ {replica.rse}",
            storage.probe(_authorized(replica.pfn)),
            entry.ref.size,
            entry.ref.adler32,
        )
        for entry in _catalog(args).describe(scope, name)
        for replica in entry.replicas
    ]
    return _print_checks(checks, args.json)


def _print_checks(checks: list[_Check], as_json: bool) -> int:
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "replica": c.label,
                        "url": c.probe.url,
                        "verdict": c.verdict,
                        "bytes": c.probe.size,
                        "adler32": c.probe.adler32,
                        "expected_bytes": c.size,
                        "expected_adler32": c.adler32,
                        "error": c.probe.error,
                    }
                    for c in checks
                ],
                indent=2,
            )
        )
    else:
        table = Table()
        for column in ("replica", "verdict", "size", "adler32", "catalog says", "detail"):
            table.add_column(column, overflow="fold")
        for check in checks:
            colour = "green" if check.verdict == "ok" else "red"
            expected = " ".join(
                x for x in (human_bytes(check.size) if check.size is not None else "", check.adler32 or "") if x
            )
            table.add_row(
                check.label,
                f"[{colour}]{check.verdict}[/]",
                human_bytes(check.probe.size) if check.probe.size is not None else "-",
                check.probe.adler32 or "-",
                expected or "-",
                check.probe.error or "",
            )
        out.print(table)
    wrong = [check for check in checks if check.verdict != "ok"]
    if not wrong:
        return Exit.OK
    first = wrong[0]
    more = f" ({len(wrong) - 1} more not ok)" if len(wrong) > 1 else ""
    detail = f" ({first.probe.error})" if first.probe.error else ""
    unreachable = any(check.verdict == "unreachable" for check in wrong)
    raise Refusal(f"{first.label}: {first.verdict}{detail}{more}", Exit.UNREACHABLE if unreachable else Exit.BAD)


# ---------------------------------------------------------------------- bench


@command
def bench_cmd(args: argparse.Namespace) -> int:
    """Read throughput of a file, or write + read of a generated one under a directory URL."""
    if not _is_url(args.url):
        raise Refusal(
            f"{args.url!r}: bench measures an XRootD URL (root://host//path); "
            "`stage resolve DID` shows a DID's replicas"
        )
    scratch = Path(tempfile.mkdtemp(prefix="ilp-stage-bench-"))
    written = None
    try:
        url = args.url
        rows = []
        if args.write_size:
            size = parse_size(args.write_size)
            local = scratch / "payload"
            _random_file(local, size)
            written = url.rstrip("/") + f"/ilp-bench-{uuid.uuid4().hex[:12]}"
            for _ in range(args.repeat):
                rows.append(("write", *_timed_copy(str(local), written, size, args)))
            url = written
        for _ in range(args.repeat):
            target = scratch / f"read-{uuid.uuid4().hex[:8]}"
            rows.append(("read", *_timed_copy(url, str(target), None, args)))
            target.unlink(missing_ok=True)
        _print_bench(url, rows)
    finally:
        if written:
            try:
                storage.remove(_authorized(written))
            except StagingError as exc:
                err.print(f"[yellow]{exc.message}[/]")
        shutil.rmtree(scratch, ignore_errors=True)
    return Exit.OK


def _random_file(path: Path, size: int) -> None:
    chunk = os.urandom(min(size, 4 * 1024 * 1024)) or b""
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            handle.write(chunk[:left])
            left -= len(chunk[:left])


def _timed_copy(source: str, target: str, size: int | None, args: argparse.Namespace) -> tuple[int, float]:
    ref = FileRef("", Path(target).name, size, None, (source,))
    transfer = Transfer(ref, (_authorized(source),), lambda: _authorized(target), None)
    started = time.monotonic()
    _, failed = asyncio.run(
        copy_with_retries([transfer], RetryPolicy(1, args.retries, args.backoff), TransferProgress(), threading.Event())
    )
    elapsed = time.monotonic() - started
    if failed:
        raise Refusal(f"{source} -> {target}: {failed[0][1]}", _failure_code(failed))
    moved = size if size is not None else Path(target).stat().st_size
    return moved, elapsed


def _print_bench(url: str, rows: list[tuple[str, int, float]]) -> None:
    table = Table(title=f"throughput of {url}")
    for column in ("direction", "bytes", "seconds", "MB/s"):
        table.add_column(column, justify="right")
    for direction, size, seconds in rows:
        table.add_row(direction, human_bytes(size), f"{seconds:.3f}", f"{size / seconds / 1e6:.1f}")
    out.print(table)
    for direction in ("write", "read"):
        rates = [size / seconds / 1e6 for d, size, seconds in rows if d == direction]
        if rates:
            out.print(f"{direction}: median {statistics.median(rates):.1f} MB/s over {len(rates)} runs")


# ---------------------------------------------------------------------- parser


def _common(parser: argparse.ArgumentParser, rucio: bool = True) -> None:
    if rucio:
        parser.add_argument(
            "--config",
            default=os.environ.get("ILP_SITE_CONFIG"),
            help="a site configuration (its staging section); default $ILP_SITE_CONFIG",
        )
        parser.add_argument("--rucio-host", help="Rucio server URL (instead of or over --config)")
        parser.add_argument("--rucio-account")
        parser.add_argument("--rucio-username")
        parser.add_argument("--rucio-password-file")
        parser.add_argument("--rucio-auth-type", choices=["userpass", "oidc"])
        parser.add_argument("--site", help="this site's name, to prefer its replicas (default LOCAL)")
    parser.add_argument("--token-file", help="bearer token (0600 file) for token-authorized XRootD storage")
    parser.add_argument("--parallel", type=int, default=4, help="concurrent transfers")
    parser.add_argument("--retries", type=int, default=2, help="retries after a transient error")
    parser.add_argument("--backoff", type=float, default=1.0, help="first back-off in seconds")
    parser.add_argument("--connection-window", type=int, default=10, help="seconds to reach a server")
    parser.add_argument("--connection-retry", type=int, default=1, help="attempts to reach a server")
    parser.add_argument("-v", "--verbose", action="store_true", help="show every retry")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stage = sub.add_parser(
        "stage",
        help="resolve, move, check and measure datalake data (Rucio, XRootD)",
        description="Use and diagnose the datalake the way the sidecar's staging does, with "
        "a Rucio DID (scope:name) or an XRootD URL (root://...). Exit codes: 0 done or "
        "healthy, 1 the data is wrong, 2 usage or configuration error, 3 a server is "
        "unreachable.",
    )
    commands = stage.add_subparsers(dest="stage_command", required=True)

    resolve = commands.add_parser(
        "resolve",
        help="a DID's files, sizes, checksums, replicas and chosen source",
        description="List a DID's files with their sizes, checksums and replicas (local "
        "first) and the source staging would read; for a URL, probe the file.",
    )
    resolve.add_argument("target", metavar="DID|URL")
    resolve.add_argument("--json", action="store_true")
    _common(resolve)
    resolve.set_defaults(func=resolve_cmd)

    get = commands.add_parser(
        "get",
        help="download a DID or URL into a directory, checksums verified",
        description="Download the files of a DID, or one URL, into a directory as "
        "stage-in does, verifying adler32 checksums (a URL's with --adler32); files already "
        "there and verified are kept.",
    )
    get.add_argument("target", metavar="DID|URL")
    get.add_argument("directory", metavar="DIR")
    get.add_argument("--adler32", help="expected checksum of a URL (DIDs carry their own)")
    _common(get)
    get.set_defaults(func=get_cmd)

    put = commands.add_parser(
        "put",
        help="upload a file to an RSE and register it (and its dataset)",
        description="Upload a file to an RSE and register it in Rucio under a new DID, "
        "optionally attached to a dataset (created if missing), as stage-out does.",
    )
    put.add_argument("file", metavar="FILE")
    put.add_argument("--rse", required=True)
    put.add_argument("--did", required=True, help="scope:name of the new file")
    put.add_argument("--dataset", help="scope:name of a dataset to attach it to (created if missing)")
    put.add_argument("--lifetime", type=int, help="rule lifetime in seconds")
    _common(put)
    put.set_defaults(func=put_cmd)

    check = commands.add_parser(
        "check",
        help="reachability, permission, size and checksum of a URL or of every replica of a DID",
        description="Check that a URL, or every replica of a DID, is reachable, "
        "readable, present, and has the size and checksum the catalog (or --adler32) "
        "says.",
    )
    check.add_argument("target", metavar="DID|URL")
    check.add_argument("--adler32", help="expected checksum of a URL")
    check.add_argument("--json", action="store_true")
    _common(check)
    check.set_defaults(func=check_cmd)

    bench = commands.add_parser(
        "bench",
        help="throughput: read a file URL, or write+read under a directory URL",
        description="Measure XRootD throughput: read a file URL, or write a generated "
        "file (--write-size) under a directory URL and read it back, --repeat times.",
    )
    bench.add_argument("url", metavar="URL")
    bench.add_argument("--write-size", help="write a generated file of this size first (e.g. 256M)")
    bench.add_argument("--repeat", type=int, default=3)
    _common(bench, rucio=False)
    bench.set_defaults(func=bench_cmd)
