"""Accounts jobs run as: POSIX login names, never root unless a site opts in loudly, and a tokenless
unix socket must name its account. Checked when the config is loaded (and, for an account that
is root under another name, when a pod is created)."""

from __future__ import annotations

import asyncio
import logging

import pytest
import yaml
from pydantic import ValidationError

from sidecars.core.domain.accounts import JobAccounts
from sidecars.core.domain.errors import Forbidden
from sidecars.daemon.config import load_config
from tests.doubles import InMemoryFiles

ISSUER = "https://iam.example.org/"
# Each refused name and the words of its reason.
BAD = {
    "root": "jobs never run as root",
    "#0": "is a uid",
    "#1000": "is a uid",
    "": "empty",
    "-x": "starts with '-'",
    "Alice": "not a POSIX login name",
    "a b": "not a POSIX login name",
    "x" * 33: "not a POSIX login name",
    "bob;id": "not a POSIX login name",
    "../etc": "not a POSIX login name",
}


def config_file(tmp_path, auth: dict) -> str:
    path = tmp_path / "site.yaml"
    raw = {"listen": {"socket": "/tmp/s.sock"}, "state_dir": "s", "pods_root": "p", "auth": auth}
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def token_auth(account: str, **more) -> dict:
    return {
        "token": {"issuers": [{"issuer": ISSUER}], "audiences": ["https://site"]},
        "identities": {"rules": [{"issuer": ISSUER, "sub": "alice", "account": account}]},
        **more,
    }


def refusal(tmp_path, auth: dict) -> str:
    with pytest.raises(ValidationError) as info:
        load_config(config_file(tmp_path, auth), {})
    return str(info.value)


@pytest.mark.parametrize("name", BAD)
def test_a_rule_mapping_to_a_bad_account_is_refused_at_load(tmp_path, name):
    message = refusal(tmp_path, token_auth(name))
    assert "identities.rules.0.account" in message or "identities.rules[0].account" in message
    assert BAD[name] in message


@pytest.mark.parametrize("name", BAD)
def test_a_bad_tokenless_account_is_refused_at_load(tmp_path, name):
    message = refusal(tmp_path, {"unix_socket_without_token": True, "unix_socket_account": name})
    assert "unix_socket_account" in message and BAD[name] in message


def test_the_tokenless_socket_needs_its_account(tmp_path):
    message = refusal(tmp_path, {"unix_socket_without_token": True})
    assert "auth.unix_socket_without_token needs auth.unix_socket_account" in message


@pytest.mark.parametrize("name", ["ilp-local", "_svc", "a", "atlas_prd-01", "x" * 32])
def test_login_names_load(tmp_path, name):
    loaded = load_config(config_file(tmp_path, {"unix_socket_without_token": True, "unix_socket_account": name}), {})
    assert loaded.auth.unix_socket_account == name and loaded.auth.allow_jobs_as_root is False
    assert load_config(config_file(tmp_path, token_auth(name)), {}).auth.identities.rules[0].account == name


def test_root_loads_only_with_the_explicit_opt_in(tmp_path):
    for auth in (
        token_auth("root"),
        {"unix_socket_without_token": True, "unix_socket_account": "root"},
    ):
        assert "auth.allow_jobs_as_root" in refusal(tmp_path, auth)
        loaded = load_config(config_file(tmp_path, {**auth, "allow_jobs_as_root": True}), {})
        assert loaded.auth.allow_jobs_as_root is True
    # the opt-in lets root be named, not names that are no names at all
    assert "is a uid" in refusal(tmp_path, token_auth("#0", allow_jobs_as_root=True))


def test_pre_exec_and_runtime_options_are_off_unless_the_site_says_so(tmp_path):
    auth = {"unix_socket_without_token": True, "unix_socket_account": "jobs"}
    loaded = load_config(config_file(tmp_path, auth), {})
    assert (loaded.render.allow_pre_exec, loaded.render.allow_runtime_options) == (False, False)
    options = loaded.render_options()
    assert (options.allow_pre_exec, options.allow_runtime_options) == (False, False)


def test_the_local_site_maps_to_unprivileged_accounts():
    from tests.helpers import REPO

    for name in ("sidecar.yaml", "sidecar-b.yaml"):
        config = load_config(REPO / "deploy" / "local" / name, {"ILP_SITE_DIR": "/tmp/site"})
        accounts = {config.auth.unix_socket_account} | {r.account for r in config.auth.identities.rules}
        assert "root" not in accounts and None not in accounts and not config.auth.allow_jobs_as_root


class Uids(InMemoryFiles):
    """Pod directories in memory; accounts and their uids as given."""

    def __init__(self, uids: dict[str | None, int]) -> None:
        super().__init__()
        self.uids = uids
        self.asked: list[str | None] = []

    async def account_uid(self, account: str | None) -> int | None:
        self.asked.append(account)
        return self.uids.get(account)


def test_an_account_with_uid_0_is_refused_and_logged_once(caplog):
    files = Uids({"toor": 0, "alice": 1000, None: 0})
    accounts = JobAccounts(files)

    async def go() -> list[str]:
        reasons = []
        for account in ("toor", "toor", "alice", None, "nobody-here"):
            try:
                await accounts.check(account)
            except Forbidden as exc:
                reasons.append(str(exc))
        return reasons

    with caplog.at_level(logging.ERROR, logger="sidecars.core.domain.accounts"):
        reasons = asyncio.run(go())
    assert len(reasons) == 3 and "'toor' has uid 0" in reasons[0] and reasons[0] == reasons[1]
    assert "no local account is named" in reasons[2] and "the sidecar runs as root" in reasons[2]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "refusing jobs as toor",
        "refusing jobs as the sidecar's own account",
    ]
    assert files.asked.count("toor") == 1  # looked up once, then remembered


def test_the_opt_in_lets_uid_0_run():
    asyncio.run(JobAccounts(Uids({"toor": 0, None: 0}), allow_root=True).check("toor"))
    asyncio.run(JobAccounts(Uids({None: 0}), allow_root=True).check(None))


def test_a_sidecar_that_is_not_root_may_run_jobs_as_itself():
    """Single-account mode: the sidecar runs as one login and every pod runs as that login."""
    asyncio.run(JobAccounts(Uids({None: 1000, "hpcuser": 1000})).check("hpcuser"))
    asyncio.run(JobAccounts(Uids({None: 1000})).check(None))
