"""Identity Secrets: what the gateway takes out of a create request, and what it refuses."""

from __future__ import annotations

import base64
import json

import pytest

from interlink_provider.gateway.config import Identities
from interlink_provider.gateway.identities import IdentityProblem, take_identity
from interlink_provider.pods.retrieve import from_create_request
from sidecars.core.kits.changes import ChangeFeed

TOKEN = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."


def secret(name: str, **values: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": "team-a"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def request(*secrets: dict) -> dict:
    identity_volume = {"name": "me", "secret": {"secretName": "alice-id"}}
    projected = {
        "name": "mixed",
        "projected": {"sources": [{"secret": {"name": "alice-id"}}, {"configMap": {"name": "cfg"}}]},
    }
    data_volume = {"name": "data", "secret": {"secretName": "db-password"}}
    container = {
        "name": "c",
        "image": "busybox",
        "volumeMounts": [
            {"name": "me", "mountPath": "/id"},
            {"name": "mixed", "mountPath": "/m"},
            {"name": "data", "mountPath": "/data"},
        ],
        "env": [
            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "alice-id", "key": "access_token"}}},
            {"name": "KEEP", "value": "1"},
        ],
        "envFrom": [{"secretRef": {"name": "alice-id"}}],
    }
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "team-a",
            "uid": "u-1",
            "annotations": {"interlink.provider/identity-secret": "alice-id"},
        },
        "spec": {"containers": [container], "volumes": [identity_volume, projected, data_volume]},
    }
    return {
        "pod": pod,
        "configmaps": [],
        "secrets": list(secrets),
        "projectedvolumesmaps": [{"metadata": {"name": "mixed"}, "data": {"access_token": TOKEN}}],
    }


def test_the_identity_secret_and_every_use_of_it_are_removed():
    body = request(secret("alice-id", access_token=TOKEN), secret("db-password", password="s3cret"))
    credential = take_identity(body, "alice-id")
    assert credential.access_token == TOKEN and credential.source == "team-a/alice-id"
    forwarded = json.dumps(from_create_request(body))
    assert TOKEN not in forwarded and "alice-id" not in forwarded.replace('identity-secret": "alice-id', "")
    assert "db-password" in forwarded  # the pod's other Secret still goes to the site
    assert [s["metadata"]["name"] for s in body["secrets"]] == ["db-password"]
    container = body["pod"]["spec"]["containers"][0]
    assert [m["name"] for m in container["volumeMounts"]] == ["data"]
    assert container["env"] == [{"name": "KEEP", "value": "1"}] and container["envFrom"] == []
    assert body["projectedvolumesmaps"] == []


def test_string_data_and_refresh_tokens_are_read():
    body = request(
        {
            "metadata": {"name": "alice-id"},
            "stringData": {"refresh_token": "r-1", "client_id": "cli", "issuer": "https://idp/"},
        }
    )
    credential = take_identity(body, "alice-id")
    assert (credential.refresh_token, credential.client_id, credential.issuer) == ("r-1", "cli", "https://idp/")


@pytest.mark.parametrize(
    "secrets,text",
    [
        ((), "was not sent with the pod"),
        ((secret("alice-id", user="alice"),), "neither `access_token` nor `refresh_token`"),
        ((secret("alice-id", refresh_token="r-1"),), "needs the `client_id`"),
        (({"metadata": {"name": "alice-id"}, "data": {"access_token": "%%%"}},), "not base64"),
    ],
)
def test_unusable_secrets_are_refused_with_the_reason(secrets, text):
    with pytest.raises(IdentityProblem, match=text) as refused:
        take_identity(request(*secrets), "alice-id")
    assert refused.value.status == 422


def test_namespaces_pick_their_mode():
    policy = Identities(default="service", namespaces={"team-a": "user"})
    assert policy.mode_for("team-a") == "user" and policy.mode_for("ops") == "service"


def test_an_actor_watches_the_pods_it_submitted_for_others():
    feed = ChangeFeed()
    feed.touch("u-alice", "alice@idp", "gateway@idp")
    feed.touch("u-own", "gateway@idp")
    feed.touch("u-bob", "bob@idp")
    assert [uid for _, uid in feed.since(0, "gateway@idp")] == ["u-alice", "u-own"]
    assert [uid for _, uid in feed.since(0, "alice@idp")] == ["u-alice"]
    assert [uid for _, uid in feed.since(0, "bob@idp")] == ["u-bob"]
