"""`interlink-provider site check-state` and `site rebuild-state`: a sidecar's state database,
read without writing to it, or its records of live jobs rebuilt from the scheduler.

Before a damaged database is restored or moved aside, an admin needs to know what it holds; and
after a restore, that the sidecar will start over it (the same checks as its start). Where no
copy exists, the scheduler still knows the live jobs: rebuilt records keep them followed, and
not cancelled as strays, until their owners' clients claim them (sidecars.core.domain.rebuild)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from pathlib import Path

from sidecars.core.domain import rebuild
from sidecars.core.domain.store import DamagedStore, Store, examine
from sidecars.core.kits.backend import ListsOwnJobs, PollError
from sidecars.core.kits.transport import TransportError, current_user
from sidecars.daemon.config import SiteConfig
from sidecars.daemon.site import make_site


def database_of(config: SiteConfig) -> Path:
    return Path(config.state_dir) / "sidecar.db"


def check_state(config: SiteConfig) -> int:
    """Print what the database holds (pods by stage) or why it cannot be read; 0 readable, 1 not."""
    path = database_of(config)
    if not path.exists():
        print(f"{path}: no state database yet (a sidecar starts with no pods and creates it)")
        return 0
    _become_owner_of(path)
    try:
        records = examine(path)
    except DamagedStore as exc:
        print(exc)
        return 1
    stages = Counter(record.stage.value for record in records)
    summary = ", ".join(f"{count} {stage}" for stage, count in sorted(stages.items())) or "no pods"
    print(f"{path}: readable, {len(records)} pods ({summary})")
    return 0


def rebuild_state(config: SiteConfig) -> int:
    """Records for the live jobs the database lacks (a damaged one is moved aside first); 0 when
    every live job of the sidecar has a record afterwards, 1 when some could not get one."""
    path = database_of(config)
    if _serving(config):
        print(f"the sidecar of {config.site_name} is running ({config.listen.socket}): stop it first")
        return 1
    _become_owner_of(path if path.exists() else Path(config.state_dir))
    if path.exists():
        try:
            examine(path)
        except DamagedStore as exc:
            print(f"{exc}\nmoved aside to {_move_aside(path)}; a new database is made")
    try:
        report = asyncio.run(_rebuild(config, path))
    except (PollError, TransportError) as exc:
        print(f"cannot list the sidecar's jobs: {exc}")
        return 3
    for record in report.rebuilt:
        who = f" as {record.account}" if record.account else ""
        print(f"job {record.job_id}: pod {record.uid} in {record.namespace}{who}: rebuilt")
    for job_id, why in report.skipped.items():
        print(f"job {job_id}: not rebuilt: {why}")
    print(
        f"{path}: {len(report.rebuilt)} records rebuilt, {len(report.known)} jobs already known, "
        f"{len(report.ended)} ended, {len(report.skipped)} not rebuilt"
    )
    return 1 if report.skipped else 0


async def _rebuild(config: SiteConfig, path: Path) -> rebuild.RebuildReport:
    site = make_site(config)
    store = Store(path)
    try:
        if not isinstance(site.backend, ListsOwnJobs):
            raise PollError(f"{site.backend.display_name} cannot list its jobs")
        jobs = await site.backend.list_own(config.job_name_prefix)
        await store.open()
        known = {record.uid for record in await store.all()}
        report = rebuild.rebuild(jobs, known, config.job_name_prefix, config.pods_root, current_user())
        for record in report.rebuilt:
            await store.insert(record)
        return report
    finally:
        await store.close()
        await site.close()


def _serving(config: SiteConfig) -> bool:
    """Someone answers on the sidecar's unix socket: the daemon holds the database."""
    if not config.listen.socket:
        return False
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(config.listen.socket)
        except OSError:
            return False
    return True


def _move_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        companion = Path(str(path) + suffix)
        if companion.exists():
            companion.rename(str(aside) + suffix)
    return aside


def _become_owner_of(path: Path) -> None:
    """As root, read as the database's owner: SQLite leaves its -wal and -shm files beside it
    even when reading, and root's would lock the sidecar's account out of its own database."""
    owner = path.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.setgroups([])
        os.setgid(owner.st_gid)
        os.setuid(owner.st_uid)
