"""Where staging tokens go and how they are kept: URL rewriting, endpoint matching, token files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from interlink_provider.staging.config import StorageTokensConfig
from interlink_provider.staging.credentials import TokenBroker, ignore_ambient_tokens, plain, with_token
from interlink_provider.staging.transfer import explain


@pytest.fixture
def broker(tmp_path: Path) -> TokenBroker:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = StorageTokensConfig(
        issuer="https://idp.example/",
        client_id="stager",
        client_secret_file=str(secret),
        storage_audience="https://store.example:1094",
        storage_endpoints=["store.example:1094", "[::1]:11096"],
    )
    return TokenBroker(config, tmp_path / "state")


def test_only_the_configured_storages_get_a_token(broker: TokenBroker, tmp_path: Path):
    token_file = tmp_path / "t"
    assert broker.covers("root://store.example:1094//rucio/a")
    assert broker.covers("root://store.example//rucio/a")  # the default port
    assert broker.covers("roots://[::1]:11096//x")
    assert not broker.covers("root://store.example:1095//rucio/a")
    assert not broker.covers("root://evil.example:1094//rucio/a")
    assert not broker.covers("https://store.example:1094/rucio/a")
    assert broker.authorize("root://evil.example:1094//f", token_file) == "root://evil.example:1094//f"


def test_a_token_url_has_its_own_login_and_shows_without_it(tmp_path: Path):
    first = with_token("root://store.example:1094//rucio/a?x=1", tmp_path / "one")
    second = with_token("root://someone@store.example:1094//rucio/a", tmp_path / "two")
    assert first.startswith("root://z") and "@store.example:1094//rucio/a?" in first
    assert f"xrd.ztn={tmp_path / 'one'}" in first and "x=1" in first
    assert first.split("@")[0] != second.split("@")[0]  # another token, another login
    assert len(first.split("://")[1].split("@")[0]) == 8  # XRootD user names are at most 8 characters
    assert plain(first) == "root://store.example:1094//rucio/a?x=1"
    assert plain(second) == "root://store.example:1094//rucio/a"
    assert plain("/local/file") == "/local/file"


def test_token_files_are_private_reused_and_pruned_after_expiry(broker: TokenBroker):
    path = broker.token_file("header.payload.signature")
    assert path.read_text() == "header.payload.signature"
    assert path.stat().st_mode & 0o777 == 0o600
    assert broker.token_file("header.payload.signature") == path
    stale = broker.token_dir / f"{int(time.time()) - 10}-deadbeef"
    stale.write_text("old")
    broker.token_file("another.token.value")
    assert not stale.exists() and path.exists()


def test_write_scopes_follow_each_outputs_rucio_scope(broker: TokenBroker):
    assert broker.write("user.alice").scopes == ("storage.create:/user.alice", "storage.read:/user.alice")
    assert broker.read().audience == "https://store.example:1094"
    assert broker.rucio().scope == "openid profile"


def test_grants_survive_a_restart_and_are_dropped_for_finished_pods(broker: TokenBroker, tmp_path: Path):
    broker._grants.update({"pod-1": "r1", "pod-2": "r2"})
    broker._save_grants()
    assert broker.grants_file.stat().st_mode & 0o777 == 0o600
    again = TokenBroker(broker.config, tmp_path / "state")
    assert again.enrolled("pod-1") and again.enrolled("pod-2")
    again.keep_only({"pod-2"})
    assert not again.enrolled("pod-1") and "r1" not in again.grants_file.read_text()


def test_ambient_tokens_are_not_left_for_xrootd_to_find(monkeypatch):
    monkeypatch.setenv("BEARER_TOKEN", "x")
    monkeypatch.setenv("BEARER_TOKEN_FILE", "/nowhere")
    ignore_ambient_tokens()
    assert "BEARER_TOKEN" not in os.environ and "BEARER_TOKEN_FILE" not in os.environ


def test_copy_errors_name_what_went_wrong():
    refused = "[ERROR] Server responded with an error: [3010] Unable to checksum /rucio/x; permission denied"
    assert explain(refused).startswith("refused by the storage")
    assert explain("[ERROR] Checksum mismatch").startswith("checksum mismatch")
    assert explain("[FATAL] Auth failed: No protocols left to try").startswith("refused by the storage")
