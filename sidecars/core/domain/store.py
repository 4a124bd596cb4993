"""Durable pod state in SQLite (WAL), keyed by pod UID.

Every transition is committed before the action it announces is visible to
anyone, and the "submitting" stage is committed *before* sbatch runs: a sidecar
killed at any moment restarts knowing which pods may have a job it has not
recorded, and looks for them by job name instead of submitting twice.

All access goes through one worker thread: sqlite3 connections are not shared
across threads, and one writer is all SQLite allows anyway.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

from sidecars.core.domain.records import PodRecord, PodStatuses, PodSummary, Stage

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS pods (
    uid TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    actor TEXT NOT NULL DEFAULT '',
    account TEXT NOT NULL DEFAULT '',
    pod_dir TEXT NOT NULL,
    job_name TEXT NOT NULL,
    job_id TEXT NOT NULL DEFAULT '',
    stage TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT 'Pending',
    summary TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{}',
    job_state TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    submit_attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    submitted_at REAL,
    finished_at REAL,
    delete_requested_at REAL,
    hard_cancel_at REAL,
    missing_since REAL,
    revision INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pods_stage ON pods(stage);
CREATE INDEX IF NOT EXISTS pods_name ON pods(namespace, name);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


_COLUMNS = [f.name for f in fields(PodRecord)]


def _column(name: str, value: Any) -> Any:
    """A record field as its column holds it: the summary and statuses as JSON, the stage by value."""
    if isinstance(value, PodSummary | PodStatuses):
        return json.dumps(value.to_json(), separators=(",", ":"))
    if isinstance(value, Stage):
        return value.value
    return value


def _to_row(record: PodRecord) -> dict[str, Any]:
    return {name: _column(name, getattr(record, name)) for name in _COLUMNS}


class DamagedStore(Exception):
    """The state database cannot be read whole: the sidecar must not start over it (pods it could
    not read would be forgotten while their jobs run on, and created again by the Virtual Kubelet)."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"the state database {path} is damaged ({detail}); it was left as it is. Restore it from a copy "
            f"(or `sqlite3 {path} .recover`; `interlink-provider site check-state` reads it again), or, with no "
            "copy, run `interlink-provider site rebuild-state` (it moves it aside and rebuilds the records of the "
            "live jobs from the scheduler)"
        )


def _quick_check(path: Path) -> None:
    """Refuse a file SQLite finds damaged, before anything (WAL mode, the schema) writes to it."""
    with closing(_read_only(path)) as db:
        problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise DamagedStore(path, "; ".join(problems))


def _read_only(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db


def _read_all(db: sqlite3.Connection, path: Path) -> list[PodRecord]:
    """Every record, or DamagedStore naming those that cannot be read (a pod must not be skipped)."""
    records, unreadable = [], []
    for row in db.execute("SELECT * FROM pods ORDER BY created_at"):
        try:
            records.append(_from_row(row))
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            unreadable.append(f"pod {row['uid']}: {type(exc).__name__}: {exc}")
    if unreadable:
        raise DamagedStore(path, f"{len(unreadable)} unreadable records: " + "; ".join(unreadable[:3]))
    return records


def examine(path: Path) -> list[PodRecord]:
    """Every record of the database at `path`, read without writing anything (DamagedStore if
    SQLite or a record cannot be read): what `interlink-provider site check-state` shows."""
    try:
        _quick_check(path)
        with closing(_read_only(path)) as db:
            return _read_all(db, path)
    except sqlite3.DatabaseError as exc:
        raise DamagedStore(path, str(exc)) from None


def _from_row(row: sqlite3.Row) -> PodRecord:
    values = {name: row[name] for name in _COLUMNS}
    values["summary"] = PodSummary.from_json(json.loads(values["summary"]))
    values["status"] = PodStatuses.from_json(json.loads(values["status"]))
    values["stage"] = Stage(values["stage"])
    return PodRecord(**values)


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ plumbing

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            raise DamagedStore(self.path, str(exc)) from None

    def _connect(self) -> sqlite3.Connection:
        if self.path.exists() and self.path.stat().st_size:
            _quick_check(self.path)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL survives a crash of the process (not of the machine) without an fsync per commit.
        # The one commit that must survive a power loss, SUBMITTING (else the pod, rolled back to
        # ACCEPTED, is submitted again without the by-name look-up), is made with FULL: _update.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self._migrate(db)
        self.path.chmod(0o600)
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """Columns added after a database was created."""
        present = {row[1] for row in db.execute("PRAGMA table_info(pods)")}
        if "account" not in present:
            db.execute("ALTER TABLE pods ADD COLUMN account TEXT NOT NULL DEFAULT ''")
        if "actor" not in present:
            db.execute("ALTER TABLE pods ADD COLUMN actor TEXT NOT NULL DEFAULT ''")

    async def open(self) -> None:
        await self._call(self._open)

    async def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._call(_close)
        self._executor.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store is not open"
        return self._db

    def _next_revision(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()
        revision = (int(row[0]) if row else 0) + 1
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES('revision', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(revision),),
        )
        return revision

    # ------------------------------------------------------------------ operations

    @contextmanager
    def _durable(self, wanted: bool) -> Iterator[None]:
        """Commits inside are synced to disk (synchronous=FULL) when `wanted`: they survive a power loss."""
        if not wanted:
            yield
            return
        self.db.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            self.db.execute("PRAGMA synchronous=NORMAL")

    def _insert(self, record: PodRecord) -> tuple[PodRecord, bool]:
        with self._durable(record.stage == Stage.SUBMITTING):
            return self._write_insert(record)

    def _write_insert(self, record: PodRecord) -> tuple[PodRecord, bool]:
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            existing = self.db.execute("SELECT * FROM pods WHERE uid=?", (record.uid,)).fetchone()
            if existing is not None:
                self.db.execute("COMMIT")
                return _from_row(existing), False
            record = replace(record, created_at=now, updated_at=now, revision=self._next_revision())
            row = _to_row(record)
            names = ", ".join(row)
            marks = ", ".join(f":{name}" for name in row)
            self.db.execute(f"INSERT INTO pods ({names}) VALUES ({marks})", row)
            self.db.execute("COMMIT")
            return record, True
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    async def insert(self, record: PodRecord) -> tuple[PodRecord, bool]:
        """Insert unless the UID exists; returns (the stored record, whether it is new)."""
        return await self._call(self._insert, record)

    def _update(self, uid: str, changes: dict[str, Any]) -> PodRecord | None:
        if not changes:
            return self._get(uid)
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown columns {sorted(unknown)}")
        with self._durable(changes.get("stage") == Stage.SUBMITTING):
            self._write_update(uid, changes)
        return self._get(uid)

    def _write_update(self, uid: str, changes: dict[str, Any]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            values = {name: _column(name, value) for name, value in changes.items()}
            values["updated_at"] = time.time()
            values["revision"] = self._next_revision()
            assignments = ", ".join(f"{name}=:{name}" for name in values)
            values["uid"] = uid
            self.db.execute(f"UPDATE pods SET {assignments} WHERE uid=:uid", values)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    async def update(self, uid: str, **changes: Any) -> PodRecord | None:
        return await self._call(self._update, uid, changes)

    def _get(self, uid: str) -> PodRecord | None:
        row = self.db.execute("SELECT * FROM pods WHERE uid=?", (uid,)).fetchone()
        return _from_row(row) if row else None

    async def get(self, uid: str) -> PodRecord | None:
        return await self._call(self._get, uid)

    def _by_stage(self, stages: tuple[str, ...]) -> list[PodRecord]:
        marks = ",".join("?" for _ in stages)
        rows = self.db.execute(f"SELECT * FROM pods WHERE stage IN ({marks}) ORDER BY created_at", stages).fetchall()
        return [_from_row(row) for row in rows]

    async def by_stage(self, *stages: Stage) -> list[PodRecord]:
        return await self._call(self._by_stage, tuple(s.value for s in stages))

    def _all(self) -> list[PodRecord]:
        return _read_all(self.db, self.path)

    async def all(self) -> list[PodRecord]:
        return await self._call(self._all)

    def _delete(self, uid: str) -> None:
        self.db.execute("DELETE FROM pods WHERE uid=?", (uid,))

    async def delete(self, uid: str) -> None:
        await self._call(self._delete, uid)
