"""Patient routes over HTTP on the real PostgreSQL and Redis (issue: patients): a restricted session (a dormant
account signing in again) opens no patient data until the real-name re-check passes; masking on output;
problem+json codes. Registry and SMS are fakes of their ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from domain.kernel.ids import new_id
from domain.kernel.ratelimit import RateLimit
from domain.patient.rules import PatientPolicy
from domain.patient.use_cases import PatientDeps, PatientService
from persistence.db import ConnectionSource
from persistence.ephemeral.ratelimit import LimitsRateLimiter
from persistence.ephemeral.redis_store import RedisEphemeralStore
from persistence.uow import unit_of_work_factory
from tests.support.accounts import WECHAT_APPID, AccountHarness, build_account_harness
from tests.support.app import asgi_client
from tests.support.patients import FakeVerifier, citizen_id

PHONE = "13800002468"
NAME = "陈明"
NUMBER = citizen_id("310104", "19850505", "031")
CONSENT = PatientPolicy().consent_version


@pytest.fixture
async def h(committed_source: ConnectionSource, redis_url: str, redis_prefix: str) -> AsyncIterator[AccountHarness]:
    prefix = f"{redis_prefix}patient-routes:{new_id()}:"
    store = RedisEphemeralStore.from_url(redis_url, prefix=prefix)
    harness = build_account_harness(committed_source, store=store, limiter=LimitsRateLimiter.memory())
    d = harness.service.d
    harness.deps.patients = PatientService(
        PatientDeps(
            uow_factory=unit_of_work_factory(committed_source, cipher=d.cipher),
            clock=harness.clock,
            cipher=d.cipher,
            blind_index=d.blind_index,
            mac=d.mac,
            verifier=FakeVerifier({(NAME, NUMBER): PHONE}),
            store=store,
            rate_limiter=LimitsRateLimiter.memory(),
            sms=harness.sms,
            verification_cache_secret=b"r" * 32,
        )
    )
    yield harness
    await store.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wechat_session(client: httpx.AsyncClient, h: AccountHarness, openid: str) -> dict[str, Any]:
    answer = await client.post("/api/v1/auth/wechat/login", json={"appid": WECHAT_APPID, "code": h.wechat.mint(openid)})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def step_up(client: httpx.AsyncClient, h: AccountHarness, headers: dict[str, str]) -> None:
    sent = await client.post("/api/v1/patient/step-up/code", headers=headers)
    assert sent.status_code == 200, sent.text
    passed = await client.post("/api/v1/patient/step-up", json={"code": h.sms.last_code(PHONE)}, headers=headers)
    assert passed.status_code == 200, passed.text


async def test_a_restricted_session_sees_no_patient_data_until_the_recheck(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        first = await wechat_session(client, h, "o-chen")
        headers = bearer(first["accessToken"])
        h.wechat.phone_codes["pc-chen"] = PHONE
        bound = await client.post(
            "/api/v1/auth/wechat/phone", json={"appid": WECHAT_APPID, "code": "pc-chen"}, headers=headers
        )
        assert bound.status_code == 201, bound.text
        await step_up(client, h, headers)
        added = await client.post(
            "/api/v1/patient/patients",
            json={"relationship": "self", "name": NAME, "docNumber": NUMBER, "consentVersion": CONSENT},
            headers=headers,
        )
        assert added.status_code == 201, added.text
        assert added.json()["docNumber"] == NUMBER[:3] + "*" * 11 + NUMBER[-4:], "SEC-P-08 masking"
        assert added.json()["name"] == "陈*"

        h.clock.advance(timedelta(days=181).total_seconds())
        later = await wechat_session(client, h, "o-chen")
        assert later["restricted"] is True
        headers = bearer(later["accessToken"])
        closed = await client.get("/api/v1/patient/patients", headers=headers)
        assert closed.status_code == 403
        assert closed.json()["code"] == "auth.recheck_required"
        assert closed.headers["content-type"].startswith("application/problem+json")

        h.sms.sent.clear()
        # The one-code-a-minute limit counts wall-clock time; the test's clock cannot move it.
        service = h.deps.patients
        assert service is not None
        assert service.d.rate_limiter is not None
        await service.d.rate_limiter.reset(RateLimit("step-up-send", 1, 60, fail_closed=True), later["accountId"])
        await step_up(client, h, headers)
        wrong = await client.post(
            "/api/v1/patient/recheck",
            json={"name": NAME, "docNumber": citizen_id("310104", "19850505", "051")},
            headers=headers,
        )
        assert wrong.status_code == 400
        assert wrong.json()["code"] == "patient.verification_failed"
        assert (await client.get("/api/v1/patient/patients", headers=headers)).status_code == 403

        passed = await client.post("/api/v1/patient/recheck", json={"name": NAME, "docNumber": NUMBER}, headers=headers)
        assert passed.status_code == 200, passed.text
        opened = await client.get("/api/v1/patient/patients", headers=headers)
        assert opened.status_code == 200, opened.text
        assert [p["relationship"] for p in opened.json()["items"]] == ["self"]


async def test_unknown_fields_and_bad_bodies_are_refused_with_their_codes(h: AccountHarness) -> None:
    """SEC-P-01: the schema is closed; nothing is written for a refused body."""
    async with asgi_client(h.public) as client:
        headers = bearer((await wechat_session(client, h, "o-lin"))["accessToken"])
        extra = await client.post(
            "/api/v1/patient/patients",
            json={"relationship": "self", "name": NAME, "docNumber": NUMBER, "consentVersion": CONSENT, "x": 1},
            headers=headers,
        )
        assert extra.status_code == 422
        bad = await client.post(
            "/api/v1/patient/patients",
            json={"relationship": "cousin", "name": NAME, "consentVersion": CONSENT},
            headers=headers,
        )
        assert bad.status_code == 422
        no_phone = await client.post("/api/v1/patient/step-up/code", headers=headers)
        assert no_phone.status_code == 403
        assert no_phone.json()["code"] == "auth.phone_required"
        listed = await client.get("/api/v1/patient/patients", headers=headers)
        assert listed.json() == {"items": []}
