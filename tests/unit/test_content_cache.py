"""The content cache's temporary downloads: sidecars sharing a cache never remove each other's
downloads in progress, and what a crashed sidecar left is removed by the next one to start."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time

from interlink_provider.staging.cache import NEW, STALE_NEW_SECONDS, ContentCache
from tests.helpers import account_environment, account_prefix, account_workdir


def test_a_second_sidecar_keeps_the_first_ones_downloads(tmp_path):
    first = ContentCache(tmp_path, 1 << 20)
    downloading = first.temporary()
    downloading.write_bytes(b"half a file")
    second = ContentCache(tmp_path, 1 << 20)  # starts while the first downloads
    assert downloading.read_bytes() == b"half a file"
    assert second.temporary().parent != downloading.parent
    first.close()
    assert not downloading.exists() and not first.downloads.exists()
    second.close()


def test_a_crashed_sidecars_downloads_are_removed_by_the_next(tmp_path):
    # A real process claims an area, starts a download and dies without closing anything.
    script = (
        "import sys; from pathlib import Path; from interlink_provider.staging.cache import ContentCache;"
        "c = ContentCache(Path(sys.argv[1]), 1 << 20); c.temporary().write_bytes(b'x'); print(c.downloads)"
    )
    crashed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert os.path.isdir(crashed) and os.listdir(crashed)
    (tmp_path / ".partial" / "0123abcd").write_bytes(b"old layout")  # a file of the old single directory
    restarted = ContentCache(tmp_path, 1 << 20)
    assert not os.path.exists(crashed)
    assert [p.name for p in (tmp_path / ".partial").iterdir()] == [restarted.downloads.name]
    restarted.close()


def test_an_area_being_claimed_is_left_alone_unless_old(tmp_path):
    partial = tmp_path / ".partial"
    partial.mkdir()
    fresh, old = partial / f"{NEW}1-fresh", partial / f"{NEW}2-old"
    fresh.mkdir()
    old.mkdir()
    long_ago = time.time() - STALE_NEW_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    cache = ContentCache(tmp_path, 1 << 20)
    assert fresh.exists() and not old.exists()
    cache.close()


def test_a_download_area_of_another_account_is_left_alone(service_account, tmp_path):
    """A sidecar running as the service account starts on a cache where a root sidecar downloads
    (its area 0700, root's): it neither stops on it (PermissionError) nor removes it."""
    root = account_workdir(service_account, tmp_path) / "cache"
    holder = ContentCache(root, 1 << 20)  # this (root) process's area, held
    holder.temporary().write_bytes(b"half a file")
    entry = pwd.getpwnam(service_account)
    for path in (root, root / ".partial"):  # the cache is the service account's, as federation.sh makes it
        os.chown(path, entry.pw_uid, entry.pw_gid)
    script = "import sys; from pathlib import Path; from interlink_provider.staging.cache import ContentCache;"
    script += "ContentCache(Path(sys.argv[1]), 1 << 20).close(); print('started')"
    started = subprocess.run(
        [*account_prefix(service_account), sys.executable, "-c", script, str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, **account_environment(service_account)},
    )
    assert started.returncode == 0 and started.stdout.strip() == "started", started.stderr
    assert holder.downloads.is_dir() and os.listdir(holder.downloads)
    holder.close()
