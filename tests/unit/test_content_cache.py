"""The content cache's temporary downloads: sidecars sharing a cache never remove each other's
downloads in progress, and what a crashed sidecar left is removed by the next one to start."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from interlink_provider.staging.cache import NEW, STALE_NEW_SECONDS, ContentCache


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
