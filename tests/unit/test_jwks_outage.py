"""Signing keys while the IdP is down: validations share one fetch, back off between tries, and
keep using the last keys for a grace period (against ScriptedIdP, a real HTTP server answering 503)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from interlink_provider.auth import errors
from interlink_provider.auth.keystate import IssuerKeys, Timing
from tests.scripted_idp import DISCOVERY, JWKS, ScriptedIdP

MAX_AGE, GRACE, RETRY_MAX = 3600.0, 86400.0, 60.0


@pytest.fixture
async def idp():
    server = await ScriptedIdP().start()
    yield server
    await server.close()


@pytest.fixture
async def validator(idp):
    v = idp.validator(jwks_max_age_seconds=MAX_AGE, jwks_grace_seconds=GRACE, jwks_retry_max_seconds=RETRY_MAX)
    v.clock = [1000.0]  # the key cache's monotonic clock, moved by the test
    v.keys.clock = lambda: v.clock[0]
    yield v
    await v.close()


async def validate_many(validator, token: str, n: int = 100) -> list:
    return await asyncio.gather(*(validator.validate(token) for _ in range(n)), return_exceptions=True)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_concurrent_validations_share_one_fetch(idp, validator):
    idp.status = 503  # down before the first token: nothing to fall back on
    token = idp.token()
    outcomes = await validate_many(validator, token)
    assert all(isinstance(o, errors.IdPUnreachable) for o in outcomes), outcomes[:3]
    assert "HTTP 503" in outcomes[0].message and "next try in 1 s" in outcomes[-1].message
    assert idp.requests == {DISCOVERY: 1}  # not 100 in a row
    validator.clock[0] += 1.5  # the back-off has passed, the IdP is back
    idp.status = 200
    outcomes = await validate_many(validator, token)
    assert {o.subject for o in outcomes} == {"alice"}
    assert idp.requests == {DISCOVERY: 2, JWKS: 1}


async def test_last_keys_serve_through_an_outage_for_the_grace_period(idp, validator, caplog):
    caplog.set_level(logging.DEBUG)
    token = idp.token()
    await validator.validate(token)
    assert idp.requests == {DISCOVERY: 1, JWKS: 1}
    idp.status = 503
    validator.clock[0] += MAX_AGE + 1  # the keys are stale: a refresh is due, and fails
    outcomes = await validate_many(validator, token)
    assert {o.subject for o in outcomes} == {"alice"}, outcomes[:3]
    assert idp.requests == {DISCOVERY: 2, JWKS: 1}  # one try for the hundred
    (warning,) = warnings_of(caplog)
    assert "cannot refresh the signing keys of " + idp.issuer in warning and "jwks_grace_seconds" in warning
    assert (await validator.validate(token)).subject == "alice"  # within the 1 s back-off: no request
    assert idp.requests[DISCOVERY] == 2
    validator.clock[0] += 1.5
    await validator.validate(token)  # the next try fails too, with no second warning
    assert idp.requests[DISCOVERY] == 3 and len(warnings_of(caplog)) == 1
    validator.clock[0] += 1.5  # the back-off has doubled to 2 s
    await validator.validate(token)
    assert idp.requests[DISCOVERY] == 3
    ok, detail = validator.keys.state()[idp.issuer]
    assert not ok and "HTTP 503" in detail and "in use" in detail
    with pytest.raises(errors.IdPUnreachable, match="cannot be asked for new ones"):
        await validator.validate(idp.token(header={"kid": "rotated-meanwhile"}))
    assert token not in caplog.text


async def test_past_the_grace_period_tokens_are_refused_until_the_idp_answers(idp, validator, caplog):
    caplog.set_level(logging.INFO)
    token = idp.token()
    await validator.validate(token)
    idp.status = 503
    validator.clock[0] += MAX_AGE + GRACE + 1
    with pytest.raises(errors.IdPUnreachable) as info:
        await validator.validate(token)
    refusal = info.value
    assert refusal.code == "idp_unreachable" and "\n" not in refusal.message
    assert "past the" in refusal.message and "jwks_grace_seconds" in refusal.message and "HTTP 503" in refusal.message
    assert token not in refusal.message and token not in caplog.text
    idp.status = 200  # the IdP recovers: after the back-off, fresh keys
    validator.clock[0] += 1.5
    assert (await validator.validate(token)).subject == "alice"
    assert idp.requests == {DISCOVERY: 3, JWKS: 2}
    assert validator.keys.state()[idp.issuer][0] is True
    recovered = [r for r in caplog.records if "fetched again, after 1 failed tries" in r.getMessage()]
    assert [r.levelno for r in recovered] == [logging.INFO]
    assert len(warnings_of(caplog)) == 1  # the outage's one WARNING; its end is INFO


def test_back_off_doubles_up_to_its_cap_and_ends_with_a_success():
    timing = Timing(max_age=MAX_AGE, cooldown=30, grace=GRACE, retry_max=RETRY_MAX)
    entry = IssuerKeys()
    waits = []
    for _ in range(9):
        starts_episode = entry.failed("HTTP 503", 0.0, timing)
        assert starts_episode is (entry.failures == 1)
        waits.append(entry.retry_in(0.0))
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert not entry.due("kid", 59.0, timing) and entry.due("kid", 60.0, timing)
    assert entry.fetched({}, 60.0, forced=False) == 9
    assert (entry.failures, entry.error, entry.retry_at) == (0, None, None)


@pytest.mark.parametrize("body", [["not", "a", "set"], {"keys": ["not-a-key", 5]}])
async def test_a_broken_jwks_is_the_idps_fault_not_a_crash(idp, validator, body):
    """A list for a JWK set (or for a key) raised AttributeError, a 500; now the IdP is reported, or the key skipped."""
    idp.jwks_body = body
    with pytest.raises(errors.IdPUnreachable if isinstance(body, list) else errors.BadSignature):
        await validator.validate(idp.token())
