"""The Tencent Cloud FaceID verifier against the FaceID simulator, over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.identity.verification import (
    FaceCheckPendingError,
    FaceSessionInvalidError,
    RealNameVerifier,
    VerificationOutcome,
    VerificationRateLimitedError,
    VerificationUnavailableError,
)
from domain.kernel.errors import DomainError
from integrations.sms import tc3_authorization
from integrations.verification import TencentFaceIdVerifier
from sandbox.framework import SandboxContext, build_sandbox_app, run_standalone
from sandbox.verification import DEMO_RULE_ID, TencentFaceIdSimulator, faceid_simulator
from tests.support.clock import ManualClock

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
SECRET_ID = "AKIDsandboxfaceidsecretid"
SECRET_KEY = "sandbox-faceid-secret-key"
SIM = "tencent-faceid"

NAME, ID_NUMBER, PHONE = "张三", "110101199003070011", "13800000001"
OTHER_NAME, OTHER_ID, OTHER_PHONE = "李四", "44030519850615002X", "13600000002"
UNKNOWN_ID = "420102199505050060"
"""A valid number nobody in the registry holds."""
BAD_CHECK_DIGIT_ID = "110101199003070012"
UNKNOWN_PHONE = "13912345678"
VIRTUAL_OPERATOR_PHONE = "17000000004"
CLEAR_VALUES = (NAME, ID_NUMBER, PHONE, OTHER_NAME, OTHER_ID, OTHER_PHONE, UNKNOWN_ID, BAD_CHECK_DIGIT_ID)


@dataclass
class FaceIdServer:
    url: str
    admin: httpx.AsyncClient
    http: httpx.AsyncClient
    shared_clock: ManualClock
    simulator: TencentFaceIdSimulator


@dataclass
class FaceIdSandbox:
    url: str
    admin: httpx.AsyncClient
    http: httpx.AsyncClient
    shared_clock: ManualClock
    client_clock: ManualClock
    simulator: TencentFaceIdSimulator

    def verifier(self, **overrides: Any) -> TencentFaceIdVerifier:
        config: dict[str, Any] = {
            "secret_id": SECRET_ID,
            "secret_key": SECRET_KEY,
            "rule_id": DEMO_RULE_ID,
            "endpoint": f"{self.url}/sandbox/{SIM}",
            "http": self.http,
            "clock": self.client_clock,
            "timeout_seconds": 2.0,
            **overrides,
        }
        return TencentFaceIdVerifier(**config)

    async def switches(self, **switches: Any) -> None:
        response = await self.admin.put(f"/sandbox/{SIM}/test/switches", json=switches)
        assert response.status_code == 200, response.text

    async def set_faults(self, plan: dict[str, Any]) -> None:
        response = await self.admin.put(f"/sandbox/admin/{SIM}/faults", json=plan)
        assert response.status_code == 200, response.text

    async def complete(self, token: str, **body: Any) -> httpx.Response:
        return await self.admin.post(f"/sandbox/{SIM}/test/face/{token}/complete", json=body)

    async def calls(self) -> list[dict[str, Any]]:
        response = await self.admin.get(f"/sandbox/admin/{SIM}/requests", params={"stream": "calls"})
        assert response.status_code == 200, response.text
        return [entry["data"] for entry in response.json()["entries"]]

    async def recorded_requests(self) -> str:
        response = await self.admin.get(f"/sandbox/admin/{SIM}/requests")
        assert response.status_code == 200, response.text
        return response.text


@pytest.fixture(scope="module")
async def faceid_server() -> AsyncIterator[FaceIdServer]:
    """One sandbox serving the FaceID simulator for the module; ``faceid`` resets it before each test."""
    shared = ManualClock(START)
    ctx = SandboxContext(shared)
    simulator = faceid_simulator(secret_id=SECRET_ID, secret_key=SECRET_KEY)
    app = build_sandbox_app([simulator], ctx, pump_interval=None)
    async with (
        run_standalone(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0) as admin,
        httpx.AsyncClient(trust_env=False) as http,
    ):
        yield FaceIdServer(url, admin, http, shared, simulator)


@pytest.fixture
async def faceid(faceid_server: FaceIdServer) -> FaceIdSandbox:
    server = faceid_server
    server.shared_clock.reset()
    for method, path, body in (
        ("DELETE", f"/sandbox/admin/{SIM}/faults", None),
        ("DELETE", f"/sandbox/admin/{SIM}/requests", None),
        ("POST", f"/sandbox/admin/{SIM}/seed", {"seed": 0}),
    ):
        response = await server.admin.request(method, path, json=body)
        assert response.is_success, response.text
    return FaceIdSandbox(
        url=server.url,
        admin=server.admin,
        http=server.http,
        shared_clock=server.shared_clock,
        client_clock=ManualClock(START),
        simulator=server.simulator,
    )


def assert_no_personal_data(exc: DomainError) -> None:
    for text in (str(exc), exc.detail, exc.message, repr(exc), repr(exc.extra)):
        for value in CLEAR_VALUES:
            assert value not in text


async def test_the_adapter_implements_the_port(faceid_server: FaceIdServer) -> None:
    verifier: RealNameVerifier = TencentFaceIdVerifier(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, rule_id="1", http=faceid_server.http, clock=ManualClock(START)
    )
    assert SECRET_KEY not in repr(verifier)


# --- two factors: IdCardVerification -----------------------------------------------------------------------


async def test_two_factor_match(faceid: FaceIdSandbox) -> None:
    result = await faceid.verifier().verify_id(NAME, ID_NUMBER)

    assert result.outcome is VerificationOutcome.MATCH
    assert result.passed
    assert result.provider == "tencent-faceid"
    assert result.checked_at == START
    (call,) = await faceid.calls()
    assert call["action"] == "IdCardVerification"
    assert call["result"] == "0"
    assert result.reference == call["requestId"]


async def test_two_factor_mismatch(faceid: FaceIdSandbox) -> None:
    result = await faceid.verifier().verify_id(OTHER_NAME, ID_NUMBER)
    assert result.outcome is VerificationOutcome.MISMATCH
    assert not result.passed


async def test_two_factor_no_record(faceid: FaceIdSandbox) -> None:
    result = await faceid.verifier().verify_id(NAME, UNKNOWN_ID)
    assert result.outcome is VerificationOutcome.NO_RECORD


@pytest.mark.parametrize(
    ("name", "id_number", "vendor_result"),
    [
        (NAME, BAD_CHECK_DIGIT_ID, "-2"),
        (NAME, "11010119900307001", "-2"),  # 17 characters
        (NAME, "110101199002300016", "-2"),  # 30 February
        ("Zhang3", ID_NUMBER, "-3"),
        ("张", ID_NUMBER, "-3"),
    ],
)
async def test_two_factor_invalid_input(faceid: FaceIdSandbox, name: str, id_number: str, vendor_result: str) -> None:
    result = await faceid.verifier().verify_id(name, id_number)

    assert result.outcome is VerificationOutcome.INVALID_INPUT
    assert [call["result"] for call in await faceid.calls()] == [vendor_result]


async def test_a_person_added_to_the_registry_is_known(faceid: FaceIdSandbox) -> None:
    response = await faceid.admin.post(
        f"/sandbox/{SIM}/test/persons", json={"name": "周七", "idNumber": UNKNOWN_ID, "phone": UNKNOWN_PHONE}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "name": "周*",
        "idNumber": "420***********0060",
        "phone": "139****5678",
        "replaced": False,
    }

    verifier = faceid.verifier()
    assert (await verifier.verify_id("周七", UNKNOWN_ID)).outcome is VerificationOutcome.MATCH
    assert (await verifier.verify_phone("周七", UNKNOWN_ID, UNKNOWN_PHONE)).outcome is VerificationOutcome.MATCH
    assert UNKNOWN_ID not in await faceid.recorded_requests()


async def test_the_daily_limit_per_id_number_is_rate_limiting(faceid: FaceIdSandbox) -> None:
    await faceid.switches(dailyLimitPerId=1)
    verifier = faceid.verifier()
    assert (await verifier.verify_id(NAME, ID_NUMBER)).outcome is VerificationOutcome.MATCH

    with pytest.raises(VerificationRateLimitedError) as caught:
        await verifier.verify_id(NAME, ID_NUMBER)
    assert caught.value.code == "verification.rate_limited"
    assert caught.value.retry_after == 8 * 3600  # 16:00 in Beijing: eight hours to midnight
    assert "Result -7" in caught.value.detail
    assert_no_personal_data(caught.value)


# --- three factors: PhoneVerification -----------------------------------------------------------------------


async def test_three_factor_match(faceid: FaceIdSandbox) -> None:
    result = await faceid.verifier().verify_phone(NAME, ID_NUMBER, f"+86{PHONE}")

    assert result.outcome is VerificationOutcome.MATCH
    (call,) = await faceid.calls()
    assert (call["action"], call["result"], result.reference) == ("PhoneVerification", "0", call["requestId"])


@pytest.mark.parametrize(
    ("name", "id_number", "phone"),
    [
        (NAME, ID_NUMBER, OTHER_PHONE),  # the number belongs to someone else
        (OTHER_NAME, ID_NUMBER, PHONE),  # wrong name
        (NAME, OTHER_ID, PHONE),  # wrong ID number
    ],
)
async def test_three_factor_mismatch(faceid: FaceIdSandbox, name: str, id_number: str, phone: str) -> None:
    result = await faceid.verifier().verify_phone(name, id_number, phone)

    assert result.outcome is VerificationOutcome.MISMATCH
    assert [call["result"] for call in await faceid.calls()] == ["-4"]


@pytest.mark.parametrize(
    ("phone", "id_number", "outcome", "vendor_result"),
    [
        (UNKNOWN_PHONE, ID_NUMBER, VerificationOutcome.NO_RECORD, "-9"),
        (VIRTUAL_OPERATOR_PHONE, ID_NUMBER, VerificationOutcome.NO_RECORD, "-13"),
        ("1380000000", ID_NUMBER, VerificationOutcome.INVALID_INPUT, "-6"),
        (PHONE, BAD_CHECK_DIGIT_ID, VerificationOutcome.INVALID_INPUT, "-7"),
    ],
)
async def test_three_factor_other_outcomes(
    faceid: FaceIdSandbox, phone: str, id_number: str, outcome: VerificationOutcome, vendor_result: str
) -> None:
    result = await faceid.verifier().verify_phone(NAME, id_number, phone)

    assert result.outcome is outcome
    assert [call["result"] for call in await faceid.calls()] == [vendor_result]


async def test_three_factor_detailed_mode_says_what_disagrees(faceid: FaceIdSandbox) -> None:
    """``VerifyMode`` 1 (详版) explains a ``-4`` in ``ResultDetail``; sent raw, as the adapter uses the short mode."""
    answer = await signed_post(
        faceid, "PhoneVerification", {"IdCard": OTHER_ID, "Name": NAME, "Phone": PHONE, "VerifyMode": "1"}
    )

    assert answer["Result"] == "-4"
    assert answer["ResultDetail"] == "PhoneIdCardMismatch"
    assert answer["Isp"] == "移动"


# --- the face check: DetectAuth + GetDetectInfoEnhanced -------------------------------------------------------


async def test_face_check_passes(faceid: FaceIdSandbox) -> None:
    verifier = faceid.verifier()
    session = await verifier.start_face(NAME, ID_NUMBER, redirect_url="https://app.example/verified?from=faceid")

    assert session.url == f"{faceid.url}/sandbox/{SIM}/face/{session.token}"
    assert session.expires_at == START + timedelta(hours=2)
    with pytest.raises(FaceCheckPendingError):
        await verifier.face_result(session.token)

    page = await faceid.http.get(session.url)
    assert page.status_code == 200
    assert "张*" in page.text
    assert NAME not in page.text
    assert ID_NUMBER not in page.text
    done = await faceid.http.post(session.url, data={"result": "pass"})
    assert done.status_code == 303
    assert done.headers["location"] == f"https://app.example/verified?from=faceid&token={session.token}"

    result = await verifier.face_result(session.token)
    assert result.outcome is VerificationOutcome.MATCH
    assert result.reference == session.token
    assert [call["result"] for call in await faceid.calls()] == ["BizToken", "ErrCode 17", "ErrCode 0"]


async def test_face_check_fails_when_the_face_does_not_match(faceid: FaceIdSandbox) -> None:
    verifier = faceid.verifier()
    session = await verifier.start_face(NAME, ID_NUMBER, redirect_url=None)
    response = await faceid.complete(session.token, result="fail")
    assert response.json() == {"bizToken": session.token, "errCode": 2016, "errMsg": response.json()["errMsg"]}

    result = await verifier.face_result(session.token)
    assert result.outcome is VerificationOutcome.MISMATCH


@pytest.mark.parametrize(
    ("name", "id_number", "outcome"),
    [
        (OTHER_NAME, ID_NUMBER, VerificationOutcome.MISMATCH),  # 2006
        (NAME, UNKNOWN_ID, VerificationOutcome.NO_RECORD),  # 2005
        (NAME, BAD_CHECK_DIGIT_ID, VerificationOutcome.INVALID_INPUT),  # 2003
    ],
)
async def test_a_passing_face_still_needs_the_registry_to_agree(
    faceid: FaceIdSandbox, name: str, id_number: str, outcome: VerificationOutcome
) -> None:
    verifier = faceid.verifier()
    session = await verifier.start_face(name, id_number, redirect_url=None)
    assert (await faceid.complete(session.token, result="pass")).status_code == 200

    assert (await verifier.face_result(session.token)).outcome is outcome


async def test_face_session_expiry_and_unknown_tokens(faceid: FaceIdSandbox) -> None:
    verifier = faceid.verifier()
    session = await verifier.start_face(NAME, ID_NUMBER, redirect_url=None)
    await faceid.shared_clock.advance(7201)
    await faceid.client_clock.advance(7201)

    assert (await faceid.complete(session.token)).status_code == 409
    with pytest.raises(FaceSessionInvalidError):  # ErrCode 15: the token expired unfinished
        await verifier.face_result(session.token)
    with pytest.raises(FaceSessionInvalidError) as caught:  # InvalidParameterValue.BizTokenIllegal
        await verifier.face_result("00000000-0000-0000-0000-000000000000")
    assert "BizTokenIllegal" in caught.value.detail


async def test_face_check_when_the_photo_registry_is_down(faceid: FaceIdSandbox) -> None:
    verifier = faceid.verifier()
    session = await verifier.start_face(NAME, ID_NUMBER, redirect_url=None)
    await faceid.switches(registryUnavailable=True)
    assert (await faceid.complete(session.token)).json()["errCode"] == 1006
    await faceid.switches()

    with pytest.raises(VerificationUnavailableError):
        await verifier.face_result(session.token)


# --- throttling and outages ---------------------------------------------------------------------------------


async def _each_call(verifier: TencentFaceIdVerifier, call: str) -> object:
    if call == "verify_id":
        return await verifier.verify_id(NAME, ID_NUMBER)
    if call == "verify_phone":
        return await verifier.verify_phone(NAME, ID_NUMBER, PHONE)
    if call == "start_face":
        return await verifier.start_face(NAME, ID_NUMBER, redirect_url=None)
    return await verifier.face_result("00000000-0000-0000-0000-000000000000")


CALLS = ["verify_id", "verify_phone", "start_face", "face_result"]


@pytest.mark.parametrize("call", CALLS)
async def test_request_limit_exceeded_is_rate_limiting(faceid: FaceIdSandbox, call: str) -> None:
    await faceid.switches(requestLimitExceeded=True)

    with pytest.raises(VerificationRateLimitedError) as caught:
        await _each_call(faceid.verifier(), call)
    assert caught.value.code == "verification.rate_limited"
    assert caught.value.status == 429
    assert caught.value.retry_after == 1
    assert "RequestLimitExceeded" in caught.value.detail
    assert_no_personal_data(caught.value)


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("switch", ["internalError", "serverError"], ids=["InternalError", "HTTP 502"])
async def test_provider_errors_are_unavailable(faceid: FaceIdSandbox, call: str, switch: str) -> None:
    await faceid.switches(**{switch: True})

    with pytest.raises(VerificationUnavailableError) as caught:
        await _each_call(faceid.verifier(), call)
    assert caught.value.code == "verification.unavailable"
    assert caught.value.status == 503
    assert_no_personal_data(caught.value)


@pytest.mark.parametrize(("call", "vendor_result"), [("verify_id", "-4"), ("verify_phone", "-11")])
async def test_a_registry_outage_is_unavailable(faceid: FaceIdSandbox, call: str, vendor_result: str) -> None:
    await faceid.switches(registryUnavailable=True)

    with pytest.raises(VerificationUnavailableError) as caught:
        await _each_call(faceid.verifier(), call)
    assert f"Result {vendor_result}" in caught.value.detail
    assert_no_personal_data(caught.value)


async def test_http_errors_and_timeouts_are_unavailable(faceid: FaceIdSandbox) -> None:
    verifier = faceid.verifier(timeout_seconds=0.3)
    await faceid.set_faults({"inbound": {"errorRate": 1.0, "errorStatus": 503, "errorBody": "busy"}})
    with pytest.raises(VerificationUnavailableError) as caught:
        await verifier.verify_id(NAME, ID_NUMBER)
    assert "HTTP 503" in caught.value.detail

    await faceid.set_faults({"inbound": {"timeoutRate": 1.0, "timeoutSeconds": 2.0}})
    with pytest.raises(VerificationUnavailableError) as caught:
        await verifier.verify_phone(NAME, ID_NUMBER, PHONE)
    assert "timed out" in caught.value.detail
    assert_no_personal_data(caught.value)


async def test_nothing_listens(faceid: FaceIdSandbox) -> None:
    verifier = faceid.verifier(endpoint="http://127.0.0.1:9/sandbox/tencent-faceid")
    with pytest.raises(VerificationUnavailableError):
        await verifier.verify_id(NAME, ID_NUMBER)


# --- signatures ---------------------------------------------------------------------------------------------


async def test_a_wrong_secret_is_refused_by_the_sandbox(faceid: FaceIdSandbox) -> None:
    with pytest.raises(VerificationUnavailableError) as caught:
        await faceid.verifier(secret_key="not-the-secret-key").verify_id(NAME, ID_NUMBER)

    assert "AuthFailure.SignatureFailure" in caught.value.detail
    assert_no_personal_data(caught.value)
    assert [call["result"] for call in await faceid.calls()] == ["Error AuthFailure.SignatureFailure"]


async def test_unknown_secret_ids_and_stale_timestamps_are_refused(faceid: FaceIdSandbox) -> None:
    with pytest.raises(VerificationUnavailableError) as caught:
        await faceid.verifier(secret_id="AKIDsomeoneelse").verify_id(NAME, ID_NUMBER)
    assert "AuthFailure.SecretIdNotFound" in caught.value.detail

    await faceid.client_clock.advance(301)
    with pytest.raises(VerificationUnavailableError) as caught:
        await faceid.verifier().verify_id(NAME, ID_NUMBER)
    assert "AuthFailure.SignatureExpire" in caught.value.detail


async def test_a_tampered_body_fails_the_signature(faceid: FaceIdSandbox) -> None:
    signed = json.dumps({"IdCard": ID_NUMBER, "Name": NAME}, ensure_ascii=False).encode()
    sent = json.dumps({"IdCard": ID_NUMBER, "Name": OTHER_NAME}, ensure_ascii=False).encode()
    answer = await signed_post(faceid, "IdCardVerification", body=sent, signed_body=signed)
    assert answer["Error"]["Code"] == "AuthFailure.SignatureFailure"


# --- recordings ---------------------------------------------------------------------------------------------


async def test_calls_are_counted_and_recorded_without_clear_id_numbers(faceid: FaceIdSandbox) -> None:
    verifier = faceid.verifier()
    await verifier.verify_id(NAME, ID_NUMBER)
    await verifier.verify_id(NAME, ID_NUMBER)
    await verifier.verify_phone(OTHER_NAME, OTHER_ID, OTHER_PHONE)
    await faceid.set_faults({"inbound": {"errorRate": 1.0}})
    with pytest.raises(VerificationUnavailableError):
        await verifier.verify_id(NAME, UNKNOWN_ID)  # answered by the framework, masked at the next call
    await faceid.set_faults({})
    await verifier.start_face(NAME, ID_NUMBER, redirect_url=None)

    calls = await faceid.calls()
    assert [call["action"] for call in calls] == [
        "IdCardVerification",
        "IdCardVerification",
        "PhoneVerification",
        "DetectAuth",
    ]
    assert len(faceid.simulator.calls("IdCardVerification")) == 2
    assert calls[0]["idNumber"] == "110***********0011"
    recordings = json.dumps(calls, ensure_ascii=False) + await faceid.recorded_requests()
    for value in CLEAR_VALUES:
        assert value not in recordings
    assert "110***********0011" in await faceid.recorded_requests()


# --- helpers ------------------------------------------------------------------------------------------------


async def signed_post(
    faceid: FaceIdSandbox,
    action: str,
    fields: dict[str, str] | None = None,
    *,
    body: bytes | None = None,
    signed_body: bytes | None = None,
) -> dict[str, Any]:
    """One raw API call signed with the test credentials; ``signed_body`` is what the signature covers."""
    payload = body if body is not None else json.dumps(fields, ensure_ascii=False).encode()
    host = faceid.url.removeprefix("http://")
    timestamp = int(faceid.client_clock.now().timestamp())
    authorization = tc3_authorization(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        service="faceid",
        host=host,
        timestamp=timestamp,
        payload=signed_body if signed_body is not None else payload,
    )
    response = await faceid.http.post(
        f"{faceid.url}/sandbox/{SIM}/",
        content=payload,
        headers={
            "Authorization": authorization,
            "Content-Type": "application/json; charset=utf-8",
            "X-TC-Action": action,
            "X-TC-Version": "2018-03-01",
            "X-TC-Timestamp": str(timestamp),
        },
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()["Response"]
    return answer
