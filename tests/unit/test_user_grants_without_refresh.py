"""Per-user mode where the IdP gives no refresh token on exchange (RFC 8693 makes it optional, #17):
the gateway exchanges the owner's token again for each site audience while it lasts, then says
exactly what the IdP must allow. The IdP is ScriptedIdP's token endpoint (a test double)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from interlink_provider.auth.exchange import TOKEN_EXCHANGE, OAuthClient
from interlink_provider.gateway.identities import IdentityRefused, UserCredential, UserGrants
from tests.scripted_idp import AUDIENCE, ScriptedIdP

SCOPE = "compute.create compute.read compute.cancel"


@pytest.fixture
async def idp() -> AsyncIterator[ScriptedIdP]:
    idp = await ScriptedIdP().start()
    idp.token_answer = {"access_token": idp.token(scope=SCOPE), "expires_in": 600, "scope": SCOPE}  # no refresh
    yield idp
    await idp.close()


async def test_no_refresh_token_the_owners_token_is_exchanged_again_while_it_lasts(idp, tmp_path):
    client = OAuthClient(idp.issuer, "gateway", "secret")
    grants = UserGrants(client, SCOPE, str(tmp_path / "grants.json"))
    owner = idp.token(exp=int(time.time()) + 3600)
    try:
        assert await grants.enroll("pod-1", UserCredential("team-a/alice", access_token=owner), AUDIENCE)
        [grant] = grants.grants.values()
        grant.access.clear()  # the site token ran out: a new one is needed
        assert await grants.token_for("pod-1", AUDIENCE)
        exchanges = [form for form in idp.token_forms if form["grant_type"] == TOKEN_EXCHANGE]
        assert len(exchanges) == 3 and all(form["subject_token"] == owner for form in exchanges)
        assert exchanges[-1]["audience"] == AUDIENCE

        grant.subject_token = idp.token(exp=int(time.time()) - 10)  # the owner's token is over
        grant.access.clear()
        with pytest.raises(IdentityRefused) as refused:
            await grants.token_for("pod-1", AUDIENCE)
        assert "the IdP must issue refresh tokens on exchange to the client gateway" in str(refused.value)
    finally:
        await client.close()
