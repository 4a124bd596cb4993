"""`interlink-provider site check-state`: read a sidecar's state database without writing to it.

Before a damaged database is restored or moved aside, an admin needs to know what it holds; and
after a restore, that the sidecar will start over it (the same checks as its start)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from sidecars.core.domain.store import DamagedStore, examine
from sidecars.daemon.config import SiteConfig


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


def _become_owner_of(path: Path) -> None:
    """As root, read as the database's owner: SQLite leaves its -wal and -shm files beside it
    even when reading, and root's would lock the sidecar's account out of its own database."""
    owner = path.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.setgroups([])
        os.setgid(owner.st_gid)
        os.setuid(owner.st_uid)
