"""Scopes, identity mapping, exchange policies and bearer-token discovery (no network)."""

from __future__ import annotations

import os

import pytest

from interlink_provider.auth import discovery, errors
from interlink_provider.auth.identity import Identity
from interlink_provider.auth.mapping import IdentityPolicy, MappingRule
from interlink_provider.auth.scopes import Scope, covered, parse_scopes
from interlink_provider.devidp.config import ClientMatch, ExchangePolicy, ScopePolicy
from interlink_provider.devidp.policy import decide


@pytest.mark.parametrize(
    "granted,wanted,ok",
    [
        ("storage.read:/a", "storage.read:/a/b", True),
        ("storage.read:/a", "storage.read:/a", True),
        ("storage.read:/a", "storage.read:/ab", False),
        ("storage.read:/a/", "storage.read:/a/b", True),
        ("storage.read:/", "storage.read:/anything/at/all", True),
        ("storage.read:/a", "storage.create:/a", False),
        ("storage.modify:/a/b", "storage.modify:/a", False),
        ("storage.read:/a/../b", "storage.read:/b/c", True),
        ("compute.create", "compute.create", True),
        ("compute.create", "compute.cancel", False),
    ],
)
def test_wlcg_scope_paths(granted, wanted, ok):
    assert covered(parse_scopes(granted), wanted) is ok


def test_scope_parsing():
    assert [str(s) for s in parse_scopes("openid storage.read:/x  compute.read")] == [
        "openid",
        "storage.read:/x",
        "compute.read",
    ]
    assert Scope.parse("storage.read").path is None and Scope.parse("storage.read").missing_path  # not "/"
    assert Scope.parse("storage.read:").missing_path and not Scope.parse("compute.read").missing_path
    assert not covered(parse_scopes("storage.read"), "storage.read:/x")  # a pathless scope grants no path
    assert str(Scope.parse("storage.read:x/y/")) == "storage.read:/x/y"  # relative: normalised
    assert parse_scopes(None) == [] and parse_scopes(["a b", "c"]) == parse_scopes("a b c")


def identity(sub="alice", iss="https://iam/", groups=(), scopes="compute.create compute.read"):
    return Identity(issuer=iss, subject=sub, groups=tuple(groups), scopes=tuple(parse_scopes(scopes)))


def test_first_matching_rule_gives_the_account():
    policy = IdentityPolicy(
        rules=[
            MappingRule(issuer="https://iam/", groups=["/atlas/prod"], account="atlasprd"),
            MappingRule(issuer="https://iam/", sub="a*", scopes=["compute.create"], account="guest"),
        ]
    )
    assert policy.account_for(identity(groups=["/atlas/prod/sub"])) == "atlasprd"
    assert policy.account_for(identity(groups=["/atlas/production"])) == "guest"  # not a subgroup
    with pytest.raises(errors.NoAccount) as info:
        policy.account_for(identity(sub="bob"))
    assert "no account on this site for bob" in info.value.message
    with pytest.raises(errors.NoAccount):
        policy.account_for(identity(iss="https://other/"))


def test_operations_need_their_scopes():
    policy = IdentityPolicy()
    policy.check(identity(), "create")
    with pytest.raises(errors.MissingScope) as info:
        policy.check(identity(), "cancel")
    assert "cancel needs scope compute.cancel" in info.value.message and info.value.status == 403


def test_exchange_policies_rank_and_deny():
    allow_all = ExchangePolicy(description="all")
    deny_m = ExchangePolicy(description="no m", rule="DENY", origin=ClientMatch(type="BY_ID", match="m"))
    limited = ExchangePolicy(
        description="b",
        origin=ClientMatch(type="BY_ID", match="b"),
        destination=ClientMatch(type="BY_ID", match="gw"),
        scopes=[
            ScopePolicy(type="PATH", match="storage.read:/pub"),
            ScopePolicy(rule="DENY", type="EQ", match="storage.read:/pub/secret"),
        ],
    )
    policies = [allow_all, deny_m, limited]
    assert decide(policies, ("a", []), ("gw", []), ["compute.read"]) is None
    assert "denied" in decide(policies, ("m", []), ("gw", []), ["compute.read"])
    assert decide(policies, ("b", []), ("gw", []), ["storage.read:/pub/x"]) is None
    assert "not permitted" in decide(policies, ("b", []), ("gw", []), ["storage.read:/priv"])
    assert "not permitted" in decide(policies, ("b", []), ("gw", []), ["storage.read:/pub/secret"])
    assert decide([deny_m], ("a", []), ("gw", []), ["x"]) == "no exchange policy applies"
    tie = [ExchangePolicy(description="p"), ExchangePolicy(description="d", rule="DENY")]
    assert "denied" in decide(tie, ("a", []), ("b", []), [])  # equal rank: DENY wins


def test_bearer_token_discovery_order(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir()
    (runtime / "bt_u42").write_text("  from-xdg\n")
    os.chown(runtime / "bt_u42", 42, -1)  # a well-known token file counts only as its owner's
    token_file = tmp_path / "file"
    token_file.write_text("from-file\n")
    env = {"XDG_RUNTIME_DIR": str(runtime), "BEARER_TOKEN_FILE": str(token_file), "BEARER_TOKEN": "inline"}
    assert discovery.discover(env, 42).token == "inline"
    assert discovery.discover({**env, "BEARER_TOKEN": "  "}, 42).token == "from-file"
    found = discovery.discover({"XDG_RUNTIME_DIR": str(runtime), "BEARER_TOKEN_FILE": str(tmp_path / "no")}, 42)
    assert (found.token, found.source) == ("from-xdg", str(runtime / "bt_u42"))
    with pytest.raises(errors.MissingToken) as info:
        discovery.discover({"XDG_RUNTIME_DIR": str(tmp_path)}, 10**9)
    assert "/tmp/bt_u1000000000" in info.value.message


def test_site_admins_match_like_rules_without_an_account():
    policy = IdentityPolicy(site_admins=[{"issuer": "https://iam/", "groups": ["/site/admins"]}])
    assert policy.is_site_admin(identity(groups=["/site/admins/oncall"]))
    assert not policy.is_site_admin(identity(groups=["/site/users"]))
    assert not policy.is_site_admin(identity(iss="https://other/", groups=["/site/admins"]))
    assert not IdentityPolicy().is_site_admin(identity())  # none by default


def test_naming_one_operations_scopes_keeps_the_others_defaults():
    policy = IdentityPolicy(required_scopes={"create": ["compute.create", "storage.read:/"]})
    reader = identity(scopes="compute.create")  # no compute.cancel
    with pytest.raises(errors.MissingScope):
        policy.check(reader, "cancel")  # not opened by naming `create` alone
    with pytest.raises(errors.MissingScope):
        policy.check(reader, "create")  # the named operation's own list
    IdentityPolicy(required_scopes={"read": []}).check(identity(scopes="compute.create"), "read")  # [] opens it


class KeyCacheWithFakeIdP:
    """Test double: a KeyCache whose IdP is a dict of key sets (no network); counts fetches."""

    @staticmethod
    def make(published: dict[str, list[str]], clock):
        import jwt

        from interlink_provider.auth.validate import KeyCache, TrustedIssuer, ValidationConfig

        config = ValidationConfig(issuers=[TrustedIssuer(issuer="https://iam/")], jwks_cooldown_seconds=30)
        cache = KeyCache(config, clock=clock)

        async def fetch(issuer):
            cache.fetches += 1
            return {
                kid: jwt.PyJWK({"kty": "oct", "k": "c2VjcmV0", "kid": kid}, algorithm="HS256")
                for kid in published[issuer]
            }

        cache._fetch = fetch
        return cache


@pytest.mark.parametrize("uptime", [5.0, 120.0, 100_000.0])
async def test_a_rotated_key_is_fetched_at_once_on_a_host_booted_minutes_ago(uptime):
    """The monotonic clock starts near 0 at boot: "never fetched" must not read as "just forced"."""
    published = {"https://iam/": ["k1"]}
    clock = [uptime]
    cache = KeyCacheWithFakeIdP.make(published, clock=lambda: clock[0])
    assert (await cache.key("https://iam/", "k1")).key_id == "k1"
    assert cache.fetches == 1
    clock[0] += 1
    published["https://iam/"] = ["k1", "k2"]  # the IdP rotates
    assert (await cache.key("https://iam/", "k2")).key_id == "k2"  # one forced re-fetch, not 401
    assert cache.fetches == 2
    with pytest.raises(errors.BadSignature):  # a forged kid within the cooldown: no third fetch
        await cache.key("https://iam/", "forged")
    assert cache.fetches == 2


def test_well_known_token_files_count_only_when_they_are_the_callers_own(tmp_path):
    """/tmp/bt_u$UID and $XDG_RUNTIME_DIR/bt_u$UID sit where others may write: a file planted there
    by another account, or a link, is ignored (with a note), never sent as the caller's token."""
    mine = os.geteuid()
    runtime = tmp_path / "run"
    runtime.mkdir()
    planted = runtime / f"bt_u{mine}"
    planted.write_text("someone-elses-token")
    os.chown(planted, 65534, -1)  # nobody's
    with pytest.raises(errors.MissingToken, match=r"bt_u\d+ \(ignored: not a file of yours\)"):
        discovery.discover({"XDG_RUNTIME_DIR": str(runtime)}, uid=mine)
    planted.unlink()
    real = tmp_path / "real-token"
    real.write_text("my-token")
    planted.symlink_to(real)
    with pytest.raises(errors.MissingToken, match="ignored"):
        discovery.discover({"XDG_RUNTIME_DIR": str(runtime)}, uid=mine)
    planted.unlink()
    planted.write_text("my-token\n")
    found = discovery.discover({"XDG_RUNTIME_DIR": str(runtime)}, uid=mine)
    assert (found.token, found.source) == ("my-token", str(planted))
    # A file the caller names explicitly is theirs to choose.
    assert discovery.discover({"BEARER_TOKEN_FILE": str(real)}, uid=mine).token == "my-token"
