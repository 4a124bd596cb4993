"""The devidp's registry tokens (Distribution's token auth): who gets which actions, and tokens a
registry accepts. The real registry checks them in tests/integration/test_registry_tokens.py."""

from __future__ import annotations

import base64
import os
import stat

import jwt
import pytest
from cryptography import x509

from interlink_provider.devidp.config import IdPConfig
from interlink_provider.devidp.registry import RegistryRefusal, RegistryTokens, Scope, libtrust_key_id

SERVICE = "ilp-local-registry"
ISSUER = "https://127.0.0.1:8480/"


@pytest.fixture
def tokens(tmp_path) -> RegistryTokens:
    config = IdPConfig.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "clients": {"builder": {"secret": "builder-secret"}},
            "users": {"demo": {"sub": "demo", "password": "demo"}, "other": {"sub": "other", "password": "pw"}},
            "registry": {
                "service": SERVICE,
                "rules": [
                    {"repository": "private/*", "pull": ["demo", "builder"], "push": ["builder"]},
                    {"repository": "*", "pull": ["*"], "push": ["builder"]},
                ],
            },
        }
    )
    assert config.registry is not None
    return RegistryTokens(config, ISSUER, config.registry)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def claims(tokens: RegistryTokens, answer: dict) -> dict:
    """The token checked as Distribution checks it: the certificate's key, the kid it derives."""
    certificate = x509.load_pem_x509_certificate(tokens.key.cert_path.read_bytes())
    assert jwt.get_unverified_header(answer["token"])["kid"] == libtrust_key_id(certificate.public_key())
    return jwt.decode(answer["token"], certificate.public_key(), algorithms=["RS256"], audience=SERVICE, issuer=ISSUER)


def test_anonymous_clients_pull_public_images_and_nothing_private(tokens):
    answer = tokens.issue(
        SERVICE, ["repository:library/busybox:pull,push", "repository:private/app:pull"], authorization=None
    )
    granted = claims(tokens, answer)
    assert granted["sub"] == ""
    assert granted["access"] == [
        {"type": "repository", "name": "library/busybox", "actions": ["pull"]},
        {"type": "repository", "name": "private/app", "actions": []},
    ]
    assert answer["expires_in"] == 300 and granted["exp"] - granted["iat"] == 300


def test_the_first_matching_rule_decides_per_account(tokens):
    def actions(authorization: str, scope: str) -> list[str]:
        return claims(tokens, tokens.issue(SERVICE, [scope], authorization))["access"][0]["actions"]

    assert actions(basic("demo", "demo"), "repository:private/app:pull,push") == ["pull"]
    assert actions(basic("builder", "builder-secret"), "repository:private/app:pull,push") == ["pull", "push"]
    assert actions(basic("other", "pw"), "repository:private/app:pull") == []  # a user, not one named
    assert actions(basic("other", "pw"), "repository:library/busybox:pull") == ["pull"]
    # a scope of another type than repository gets nothing; a name with a port-like colon parses
    assert actions(basic("builder", "builder-secret"), "registry:catalog:*") == []
    assert Scope.parse("repository:host:5000/app:pull") == Scope("repository", "host:5000/app", ("pull",))


@pytest.mark.parametrize(
    "authorization",
    [basic("demo", "wrong"), basic("nobody", "demo"), basic("builder", ""), "Bearer abc"],
)
def test_wrong_credentials_are_refused_not_downgraded_to_anonymous(tokens, authorization):
    with pytest.raises(RegistryRefusal) as refused:
        tokens.issue(SERVICE, ["repository:library/busybox:pull"], authorization)
    assert refused.value.status == 401


@pytest.mark.parametrize(
    ("service", "scope", "authorization", "reason"),
    [
        ("another-registry", "repository:a:pull", None, "unknown service"),
        (SERVICE, "repository-without-actions", None, "malformed scope"),
        (SERVICE, "repository:a:pull", "Basic %%%", "malformed Basic credentials"),
    ],
)
def test_bad_requests_get_a_reason(tokens, service, scope, authorization, reason):
    with pytest.raises(RegistryRefusal) as refused:
        tokens.issue(service, [scope], authorization)
    assert refused.value.status == 400 and reason in str(refused.value)


def test_the_signing_key_is_kept_private_and_survives_a_restart(tokens, tmp_path):
    assert stat.S_IMODE(os.stat(tokens.key.key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tokens.key.cert_path).st_mode) == 0o644
    again = RegistryTokens(tokens.config, ISSUER, tokens.settings)
    assert again.key.kid == tokens.key.kid
    # libtrust's form: 12 groups of 4 base32 characters
    groups = tokens.key.kid.split(":")
    assert len(groups) == 12 and all(len(g) == 4 and set(g) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for g in groups)
