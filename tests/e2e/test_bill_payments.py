"""Paying outpatient bills (诊间支付) over the live stack, as the demo shows it (docs/payments.md, "Outpatient
bills"): a WeChat resident adds themself as a verified patient; the hospital registered them on site before, so
its HIS already has their record and issues them a bill; the bill shows in our list without any record being
created; the resident pays it with WeChat Pay, WeChat Pay's notification reaches ``/callbacks/wechat-pay`` on its
own and the worker settles the bill at the HIS through the outbox. A second bill is paid with Alipay from the
patient app (same account, SMS login with the same phone: an Alipay mini-program session cannot bind a phone, so
it cannot pass the step-up check nor add a patient); a third is refused by the HIS after payment and refunded in
full.

The simulators play everyone else: the hospital's window (a FHIR ``POST Patient``, the sandbox HIS's bill and
billing-switch test routes) and the resident's "pay now" (the payment sandboxes' test routes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from sandbox.wechat import DEMO_APPID
from tests.support.live import LiveServer
from tests.support.patients import citizen_id

T = TypeVar("T")

# This module's resident comes from its own address and has its own phone and ID number (other e2e modules
# share the live server).
client = httpx.Client(headers={"X-Forwarded-For": "198.51.100.131"}, timeout=30)
CONSENT = "2026-11"
HOSPITAL = "H001"
RESIDENT = {"name": "周建华", "number": citizen_id("320102", "19870415", "131"), "phone": "13911300131"}
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
FHIR_JSON = "application/fhir+json"
SETTLE_SECONDS = 20.0
"""The worker settles a paid bill through the outbox within this (a relay tick, a task, the HIS call)."""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ok(response: httpx.Response, *statuses: int) -> Any:
    assert response.status_code in (statuses or (200,)), (response.request.url, response.status_code, response.text)
    return response.json() if response.content else None


def wait_for(probe: Callable[[], T | None], *, seconds: float, what: str) -> T:
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"not within {seconds:.0f} s: {what}"
        time.sleep(0.3)


def latest_sms_code(live: LiveServer, phone: str) -> str:
    for provider in ("aliyun-sms", "tencent-sms"):
        inbox = ok(client.get(live.base_url + f"/sandbox/{provider}/test/inbox", params={"phone": phone}))
        for entry in inbox["messages"]:  # newest first
            params = entry["message"]["params"]
            return str(params.get("code") or params["1"])
    raise AssertionError(f"no SMS for {phone}")


# --- the resident ------------------------------------------------------------------------------------------


def wechat_resident(live: LiveServer, phone: str) -> dict[str, str]:
    """wx.login, then the phone behind getPhoneNumber bound to the account."""
    issued = ok(client.post(live.base_url + "/sandbox/wechat/test/login-code", json={"appid": DEMO_APPID}))
    tokens = ok(
        client.post(live.base_url + "/api/v1/auth/wechat/login", json={"appid": DEMO_APPID, "code": issued["code"]}),
        201,
    )
    headers = bearer(tokens["accessToken"])
    phone_code = ok(
        client.post(
            live.base_url + "/sandbox/wechat/test/phone-code",
            json={"appid": DEMO_APPID, "openid": issued["openid"], "phone": phone},
        )
    )["code"]
    bound = ok(
        client.post(
            live.base_url + "/api/v1/auth/wechat/phone", json={"appid": DEMO_APPID, "code": phone_code}, headers=headers
        ),
        201,
    )
    return bearer(bound["tokens"]["accessToken"]) if bound.get("tokens") else headers


def add_self(live: LiveServer, headers: dict[str, str]) -> str:
    """Step-up (a code to the bound phone), then the resident adds themself: verified by the FaceID simulator,
    whose population registry learns the resident first."""
    person = {"name": RESIDENT["name"], "idNumber": RESIDENT["number"], "phone": RESIDENT["phone"]}
    ok(client.post(live.base_url + "/sandbox/tencent-faceid/test/persons", json=person))
    ok(client.post(live.base_url + "/api/v1/patient/step-up/code", headers=headers))
    code = latest_sms_code(live, RESIDENT["phone"])
    ok(client.post(live.base_url + "/api/v1/patient/step-up", json={"code": code}, headers=headers))
    me = ok(
        client.post(
            live.base_url + "/api/v1/patient/patients",
            json={
                "relationship": "self",
                "name": RESIDENT["name"],
                "docNumber": RESIDENT["number"],
                "consentVersion": CONSENT,
            },
            headers=headers,
        ),
        201,
    )
    assert (me["verified"], me["state"]) == (True, "active"), me
    return str(me["id"])


def app_session(live: LiveServer, phone: str) -> dict[str, str]:
    """The same resident in the patient app: an SMS login with the same phone opens the same account."""
    ok(client.post(live.base_url + "/api/v1/auth/sms/code", json={"phone": phone}), 201)
    login = ok(
        client.post(
            live.base_url + "/api/v1/auth/sms/login", json={"phone": phone, "code": latest_sms_code(live, phone)}
        ),
        201,
    )
    assert login["audience"] == "patient-app"
    return bearer(login["accessToken"])


# --- the hospital (sandbox HIS) -----------------------------------------------------------------------------


def fhir(live: LiveServer, path: str) -> str:
    return f"{live.base_url}/sandbox/his/{HOSPITAL}/fhir/{path}"


def his_test(live: LiveServer, path: str) -> str:
    return f"{live.base_url}/sandbox/his/test/{HOSPITAL}/{path}"


def register_on_site(live: LiveServer) -> str:
    """The resident registers at the hospital's window: the HIS creates its own record (its patid)."""
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": RESIDENT["number"]}],
        "name": [{"text": RESIDENT["name"]}],
        "gender": "male",
        "birthDate": "1987-04-15",
        "telecom": [{"system": "phone", "value": RESIDENT["phone"], "use": "mobile"}],
    }
    answer = client.post(
        fhir(live, "Patient"),
        json=patient,
        headers={"Content-Type": FHIR_JSON, "If-None-Exist": f"identifier={RESIDENT_ID_SYSTEM}|{RESIDENT['number']}"},
    )
    created = ok(answer, 201)
    return next(str(i["value"]) for i in created["identifier"] if i["system"] == "urn:hsp:patid")


def his_records(live: LiveServer, hospital: str = HOSPITAL) -> int:
    """How many records the hospital's HIS holds for the resident's ID number."""
    bundle = ok(
        client.get(
            f"{live.base_url}/sandbox/his/{hospital}/fhir/Patient",
            params={"identifier": f"{RESIDENT_ID_SYSTEM}|{RESIDENT['number']}"},
        )
    )
    return int(bundle["total"])


def issue_bill(live: LiveServer, patid: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A doctor orders tests or drugs: the HIS issues a bill (catalogue items need only their code)."""
    bill: dict[str, Any] = ok(client.post(his_test(live, "bills"), json={"patid": patid, "items": items}), 201)
    return bill


def his_bill(live: LiveServer, patid: str, bill_id: str) -> dict[str, Any]:
    bills = ok(client.get(his_test(live, "bills"), params={"patid": patid}))["bills"]
    found: dict[str, Any] = next(b for b in bills if b["id"] == bill_id)
    return found


# --- paying ------------------------------------------------------------------------------------------------


def bills_of(live: LiveServer, headers: dict[str, str], patient_id: str, hospital: str = HOSPITAL) -> list[Any]:
    path = f"/api/v1/patient/patients/{patient_id}/hospitals/{hospital}/bills"
    items: list[Any] = ok(client.get(live.base_url + path, headers=headers))["items"]
    return items


def order_for(live: LiveServer, headers: dict[str, str], patient_id: str, bill_id: str) -> dict[str, Any]:
    path = f"/api/v1/patient/patients/{patient_id}/hospitals/{HOSPITAL}/bills/{bill_id}/payment-order"
    order: dict[str, Any] = ok(client.post(live.base_url + path, headers=headers), 201)
    return order


def pay(live: LiveServer, headers: dict[str, str], order_id: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = ok(
        client.post(live.base_url + f"/api/v1/patient/payment-orders/{order_id}/pay", json=body, headers=headers)
    )
    assert answer["orderId"] == order_id
    params: dict[str, Any] = answer["clientParams"]
    return params


def pay_with_wechat(live: LiveServer, headers: dict[str, str], order_id: str) -> None:
    """``wx.requestPayment`` with the signed parameters; the resident pays in WeChat."""
    params = pay(live, headers, order_id, {"channel": "wechat", "appId": DEMO_APPID})
    assert params["kind"] == "requestPayment"
    assert {"timeStamp", "nonceStr", "package", "signType", "paySign"} <= set(params["params"])
    package: str = params["params"]["package"]
    assert package.startswith("prepay_id=")
    paid = ok(client.post(live.base_url + "/sandbox/wechatpay/test/pay", json={"prepayId": package.split("=", 1)[1]}))
    assert paid["tradeState"] == "SUCCESS"


def bill_payment(live: LiveServer, headers: dict[str, str], order_id: str) -> dict[str, Any] | None:
    items = ok(client.get(live.base_url + "/api/v1/patient/bill-payments", headers=headers))["items"]
    found: dict[str, Any] | None = next((p for p in items if p["orderId"] == order_id), None)
    return found


def payment_in(live: LiveServer, headers: dict[str, str], order_id: str, *states: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = bill_payment(live, headers, order_id)
        return found if found is not None and found["state"] in states else None

    return wait_for(probe, seconds=SETTLE_SECONDS, what=f"the bill payment of {order_id} {'/'.join(states)}")


def order(live: LiveServer, headers: dict[str, str], order_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ok(
        client.get(live.base_url + f"/api/v1/patient/payment-orders/{order_id}", headers=headers)
    )
    return found


# --- the journey -------------------------------------------------------------------------------------------


def hospital_listed(live: LiveServer) -> bool | None:
    hospitals = ok(client.get(live.base_url + "/api/v1/patient/catalogue/hospitals"))["items"]
    return True if any(h["code"] == HOSPITAL for h in hospitals) else None


def test_a_resident_known_at_the_hospital_pays_bills_with_wechat_and_alipay_and_a_refused_one_is_refunded(
    live: LiveServer,
) -> None:
    wait_for(lambda: hospital_listed(live), seconds=45, what=f"{HOSPITAL} registered")
    headers = wechat_resident(live, RESIDENT["phone"])
    patient_id = add_self(live, headers)

    # Registered on site at H001 before: the HIS has a record (and, in the sandbox, a bill or two already).
    patid = register_on_site(live)
    lab = issue_bill(live, patid, [{"code": "250102001", "quantity": 1}, {"code": "310701001", "quantity": 1}])
    assert lab["totalFen"] == 4500
    assert lab["status"] == "issued"

    # The bill shows without our ever having booked or paid there: found at the HIS, nothing created.
    listed = {b["billId"]: b for b in bills_of(live, headers, patient_id)}
    assert lab["id"] in listed, listed
    shown = listed[lab["id"]]
    assert (shown["totalFen"], shown["selfPayFen"], shown["insuredFen"]) == (4500, 4500, 0)
    assert [i["name"] for i in shown["items"]] == ["血常规", "常规心电图"]
    assert (shown["paymentState"], shown["orderId"]) == (None, None)
    assert his_records(live) == 1, "finding is not creating"
    # Elsewhere the resident is unknown: no bills, and still no record made there.
    assert bills_of(live, headers, patient_id, "H002") == []
    assert his_records(live, "H002") == 0

    # 1. WeChat Pay.
    first = order_for(live, headers, patient_id, lab["id"])
    assert (first["totalFen"], first["state"], first["created"]) == (4500, "created", True)
    again = order_for(live, headers, patient_id, lab["id"])
    assert (again["orderId"], again["created"]) == (first["orderId"], False), "asked again: the same open order"
    pay_with_wechat(live, headers, first["orderId"])
    settled = payment_in(live, headers, first["orderId"], "settled")
    assert settled["hisReceiptNo"]
    assert (settled["billId"], settled["amountFen"], settled["hospitalCode"]) == (lab["id"], 4500, HOSPITAL)
    at_his = his_bill(live, patid, lab["id"])
    assert (at_his["status"], at_his["receiptNo"], at_his["channel"]) == ("balanced", settled["hisReceiptNo"], "wechat")
    assert order(live, headers, first["orderId"])["state"] == "paid"
    assert lab["id"] not in {b["billId"] for b in bills_of(live, headers, patient_id)}, "a paid bill is gone"

    # 2. Alipay, from the patient app (the same account: the same phone).
    drugs = issue_bill(live, patid, [{"code": "XY0001", "quantity": 2}])
    app = app_session(live, RESIDENT["phone"])
    assert drugs["id"] in {b["billId"] for b in bills_of(live, app, patient_id)}
    second = order_for(live, app, patient_id, drugs["id"])
    assert second["totalFen"] == 3160
    params = pay(live, app, second["orderId"], {"channel": "alipay"})
    assert params["kind"] == "app"
    assert "alipay.trade.app.pay" in params["params"]["orderStr"]
    paid = ok(
        client.post(
            live.base_url + "/sandbox/alipay/test/trade/app-pay", json={"orderString": params["params"]["orderStr"]}
        )
    )
    assert (paid["resultStatus"], paid["tradeStatus"]) == ("9000", "TRADE_SUCCESS")
    alipaid = payment_in(live, app, second["orderId"], "settled")
    at_his = his_bill(live, patid, drugs["id"])
    assert (at_his["status"], at_his["receiptNo"], at_his["channel"]) == ("balanced", alipaid["hisReceiptNo"], "alipay")

    # 3. The HIS refuses the settlement after the resident paid: refunded in full.
    exam = issue_bill(live, patid, [{"code": "220201001", "quantity": 1}])
    ok(client.put(his_test(live, "billing"), json={"refuseNext": 1}))
    third = order_for(live, headers, patient_id, exam["id"])
    pay_with_wechat(live, headers, third["orderId"])
    refused = payment_in(live, headers, third["orderId"], "refused", "refunded")
    assert refused["refusal"] == "refused"
    assert refused["hisReceiptNo"] is None
    # WeChat Pay refunds settle after its processing time: the shared clock moves on while we wait (the refund may
    # reach WeChat Pay only after a first move); the refund notification, or the beat's payment.sweep querying
    # the refund, confirms it.
    moved = [0]

    def refunded() -> dict[str, Any] | None:
        if moved[0] < 300:  # five minutes at most: the access token stays valid
            ok(client.post(live.base_url + "/sandbox/admin/clock", json={"advanceSeconds": 10}), 200, 201)
            moved[0] += 10
        found = order(live, headers, third["orderId"])
        return found if found["refundedFen"] == 15000 else None

    refunded_order = wait_for(refunded, seconds=90, what="the refused bill's order refunded")
    assert refunded_order["totalFen"] == 15000
    assert payment_in(live, headers, third["orderId"], "refunded")["refusal"] == "refused"
    assert his_bill(live, patid, exam["id"])["status"] == "issued", "the HIS still has the bill unpaid"
    assert exam["id"] in {b["billId"] for b in bills_of(live, headers, patient_id)}

    # The account's bill payments, newest first.
    history = ok(client.get(live.base_url + "/api/v1/patient/bill-payments", headers=headers))["items"]
    assert [(p["orderId"], p["state"]) for p in history[:3]] == [
        (third["orderId"], "refunded"),
        (second["orderId"], "settled"),
        (first["orderId"], "settled"),
    ]
