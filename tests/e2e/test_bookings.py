"""Booking over the live stack (issue: booking), as the demo shows it: a WeChat resident adds themself as a
verified patient, books a slot synced from the sandbox HIS (the same Idempotency-Key twice gives one booking),
pays in the WeChat Pay sandbox, sees the booking confirmed at the HIS by the worker, cancels, and is refunded."""

from __future__ import annotations

import time
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import httpx

from domain.kernel.clock import to_shanghai
from sandbox.wechat import DEMO_APPID
from tests.support.live import LiveServer
from tests.support.patients import citizen_id

client = httpx.Client(headers={"X-Forwarded-For": "198.51.100.83"}, timeout=30)
CAT = "/api/v1/patient/catalogue"
PHONE = "13800000083"
NUMBER = citizen_id("110108", "19860214", "047")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sms_code(live: LiveServer, phone: str) -> str:
    for provider in ("aliyun-sms", "tencent-sms"):
        inbox = client.get(live.base_url + f"/sandbox/{provider}/test/inbox", params={"phone": phone}).json()
        for message in reversed(inbox["messages"]):
            params = message["message"]["params"]
            if "code" in params or "1" in params:
                return str(params.get("code") or params.get("1"))
    raise AssertionError(f"no SMS for {phone}")


def resident_with_patient(live: LiveServer) -> tuple[dict[str, str], str]:
    # The resident exists in the population registry the verification simulator answers from.
    registered = client.post(
        live.base_url + "/sandbox/tencent-faceid/test/persons",
        json={"name": "赵敏", "idNumber": NUMBER, "phone": PHONE},
    )
    assert registered.status_code == 200, registered.text
    issued = client.post(live.base_url + "/sandbox/wechat/test/login-code", json={"appid": DEMO_APPID}).json()
    tokens = client.post(
        live.base_url + "/api/v1/auth/wechat/login", json={"appid": DEMO_APPID, "code": issued["code"]}
    ).json()
    headers = bearer(tokens["accessToken"])
    phone_code = client.post(
        live.base_url + "/sandbox/wechat/test/phone-code",
        json={"appid": DEMO_APPID, "openid": issued["openid"], "phone": PHONE},
    ).json()["code"]
    bound = client.post(
        live.base_url + "/api/v1/auth/wechat/phone", json={"appid": DEMO_APPID, "code": phone_code}, headers=headers
    )
    assert bound.status_code == 201, bound.text
    assert client.post(live.base_url + "/api/v1/patient/step-up/code", headers=headers).status_code == 200
    passed = client.post(
        live.base_url + "/api/v1/patient/step-up", json={"code": sms_code(live, PHONE)}, headers=headers
    )
    assert passed.status_code == 200, passed.text
    me = client.post(
        live.base_url + "/api/v1/patient/patients",
        json={"relationship": "self", "name": "赵敏", "docNumber": NUMBER, "consentVersion": "2026-11"},
        headers=headers,
    )
    assert me.status_code == 201, me.text
    return headers, str(me.json()["id"])


def bookable_slots(live: LiveServer) -> tuple[str, str, int]:
    """Two open slots of one session with a number left, on a day inside H001's booking window (tomorrow .. +6
    days), once the first catalogue sync has brought them; and the session's fee."""
    found: tuple[str, str, int] | None = wait_for(lambda: _bookable_slots(live), lambda f: f is not None, seconds=40)
    assert found is not None, "no bookable session at H001"
    return found


def _bookable_slots(live: LiveServer) -> tuple[str, str, int] | None:
    now = datetime.fromisoformat(client.get(live.base_url + "/sandbox/admin/clock").json()["now"])
    today = to_shanghai(now).date()
    doctors = client.get(live.base_url + f"{CAT}/doctors", params={"hospital": "H001", "limit": 50}).json()["items"]
    for doctor in doctors:
        if doctor["onLeave"]:
            continue
        sessions = client.get(live.base_url + f"{CAT}/hospitals/H001/doctors/{doctor['code']}/sessions").json()
        for session in sessions["items"]:
            day = date.fromisoformat(session["day"])
            if session["status"] != "open" or not today < day <= today + timedelta(days=6) or session["feeFen"] <= 0:
                continue
            free = [str(slot["slotId"]) for slot in session["slots"] if slot["remaining"] > 0]
            if len(free) >= 2:
                return free[0], free[1], int(session["feeFen"])
    return None


def wait_for(fetch: Any, done: Any, *, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = fetch()
    return value


def test_a_resident_books_pays_is_confirmed_cancels_and_is_refunded(live: LiveServer) -> None:
    headers, patient = resident_with_patient(live)
    slot, other_slot, fee = bookable_slots(live)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"patientId": patient, "hospitalCode": "H001", "slotId": slot}
    held = client.post(live.base_url + "/api/v1/patient/bookings", json=body, headers=headers | key)
    assert held.status_code == 201, held.text
    booking = held.json()
    assert booking["state"] == "held"
    assert booking["feeFen"] == fee
    again = client.post(live.base_url + "/api/v1/patient/bookings", json=body, headers=headers | key)
    assert again.json()["id"] == booking["id"], "the same Idempotency-Key answers the same booking"
    # A second hold of the same person the same day in the same department is refused (APT-005).
    second = client.post(
        live.base_url + "/api/v1/patient/bookings", json=body | {"slotId": other_slot}, headers=headers
    )
    assert second.status_code == 409, second.text
    assert second.json()["code"] == "booking.limit_department_day"

    pay = client.post(
        live.base_url + f"/api/v1/patient/payment-orders/{booking['paymentOrderId']}/pay",
        json={"channel": "wechat", "appId": DEMO_APPID},
        headers=headers,
    )
    assert pay.status_code == 200, pay.text
    prepay_id = pay.json()["clientParams"]["params"]["package"].removeprefix("prepay_id=")
    paid = client.post(live.base_url + "/sandbox/wechatpay/test/pay", json={"prepayId": prepay_id})
    assert paid.status_code == 200, paid.text

    url = live.base_url + f"/api/v1/patient/bookings/{booking['id']}"
    confirmed = wait_for(lambda: client.get(url, headers=headers).json(), lambda b: b["state"] == "confirmed")
    assert confirmed["state"] == "confirmed", confirmed
    assert confirmed["queueNumber"] is not None
    listed = client.get(live.base_url + "/api/v1/patient/bookings", headers=headers).json()["items"]
    assert [b["id"] for b in listed] == [booking["id"]]

    cancelled = client.post(url + "/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    # WeChat Pay settles refunds after a minute of its clock; its notification (or our sweep) confirms it. The
    # clock moves on while we wait, as it would in real time.
    order_url = live.base_url + f"/api/v1/patient/payment-orders/{booking['paymentOrderId']}"

    moved = [0]

    def order_now() -> Any:
        if moved[0] < 300:  # five minutes of the shared clock at most: the access token stays valid
            client.post(live.base_url + "/sandbox/admin/clock", json={"advanceSeconds": 10})
            moved[0] += 10
        return client.get(order_url, headers=headers).json()

    order = wait_for(order_now, lambda o: o.get("refundedFen") == fee, seconds=40)
    assert order.get("refundedFen") == fee, order
    assert order["state"] == "refunded"
