"""Patients over the live stack (issue: patients), as the demo shows them: a WeChat resident passes the step-up
check, adds themself and a child (both verified by the FaceID simulator), gets an e-health card QR code for each
from the card-platform simulator; an adult added by the same account stays invisible until they confirm with
the code sent to their own phone."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.wechat import DEMO_APPID
from tests.support.live import LiveServer

client = httpx.Client(headers={"X-Forwarded-For": "198.51.100.61"}, timeout=30)
CONSENT = "2026-11"
SELF = {"name": "张三", "number": "110101199003070011", "phone": "13800000001"}
CHILD = {"name": "张小明", "number": "110101201905200022"}
MOTHER = {"name": "李秀兰", "number": "440305195810010044", "phone": "13900000006"}


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


def wechat_resident(live: LiveServer, phone: str) -> dict[str, str]:
    issued = client.post(live.base_url + "/sandbox/wechat/test/login-code", json={"appid": DEMO_APPID}).json()
    tokens = client.post(
        live.base_url + "/api/v1/auth/wechat/login", json={"appid": DEMO_APPID, "code": issued["code"]}
    ).json()
    headers = bearer(tokens["accessToken"])
    phone_code = client.post(
        live.base_url + "/sandbox/wechat/test/phone-code",
        json={"appid": DEMO_APPID, "openid": issued["openid"], "phone": phone},
    ).json()["code"]
    bound = client.post(
        live.base_url + "/api/v1/auth/wechat/phone", json={"appid": DEMO_APPID, "code": phone_code}, headers=headers
    )
    assert bound.status_code == 201, bound.text
    if "accessToken" in bound.json():  # the phone already had an account: its session
        headers = bearer(bound.json()["accessToken"])
    return headers


def step_up(live: LiveServer, headers: dict[str, str], phone: str) -> None:
    sent = client.post(live.base_url + "/api/v1/patient/step-up/code", headers=headers)
    assert sent.status_code == 200, sent.text
    passed = client.post(
        live.base_url + "/api/v1/patient/step-up", json={"code": sms_code(live, phone)}, headers=headers
    )
    assert passed.status_code == 200, passed.text


def add(live: LiveServer, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return client.post(
        live.base_url + "/api/v1/patient/patients", json=body | {"consentVersion": CONSENT}, headers=headers
    )


def test_a_resident_adds_themself_and_a_child_and_gets_a_card_for_each(live: LiveServer) -> None:
    headers = wechat_resident(live, SELF["phone"])
    refused = add(live, headers, {"relationship": "self", "name": SELF["name"], "docNumber": SELF["number"]})
    assert refused.status_code == 403
    assert refused.json()["code"] == "auth.step_up_required"
    assert refused.headers["content-type"].startswith("application/problem+json")

    step_up(live, headers, SELF["phone"])
    me = add(live, headers, {"relationship": "self", "name": SELF["name"], "docNumber": SELF["number"]})
    assert me.status_code == 201, me.text
    assert me.json() | {"id": ""} == me.json() | {
        "id": "",
        "name": "张*",
        "docNumber": "110***********0011",
        "phone": "138****0001",
        "verified": True,
        "state": "active",
        "sex": "M",
    }
    child = add(live, headers, {"relationship": "child", "name": CHILD["name"], "docNumber": CHILD["number"]})
    assert child.status_code == 201, child.text
    assert child.json()["verified"] is True

    mother = add(
        live,
        headers,
        {"relationship": "parent", "name": MOTHER["name"], "docNumber": MOTHER["number"], "phone": MOTHER["phone"]},
    )
    assert mother.status_code == 201, mother.text
    assert mother.json()["state"] == "pending_confirmation"
    listed = client.get(live.base_url + "/api/v1/patient/patients", headers=headers).json()["items"]
    assert [p["relationship"] for p in listed] == ["self", "child"], "the adult is invisible until confirmed"

    for patient in (me.json(), child.json()):
        card = client.post(
            live.base_url + f"/api/v1/patient/patients/{patient['id']}/health-card",
            json={"wechatCode": "wx-card-auth-demo"},
            headers=headers,
        )
        assert card.status_code == 200, card.text
        assert card.json()["qrCodeText"].endswith(":1"), "a static code"
        png = client.get(
            live.base_url + f"/api/v1/patient/patients/{patient['id']}/health-card/qr.png", headers=headers
        )
        assert png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
        dynamic = client.post(
            live.base_url + f"/api/v1/patient/patients/{patient['id']}/health-card/dynamic-code", headers=headers
        )
        assert dynamic.status_code == 200, dynamic.text
        assert ":0:" in dynamic.json()["qrCodeText"]

    confirmed = client.post(
        live.base_url + f"/api/v1/patient/patients/{mother.json()['id']}/confirmation",
        json={"code": sms_code(live, MOTHER["phone"])},
        headers=headers,
    )
    assert confirmed.status_code == 200, confirmed.text
    listed = client.get(live.base_url + "/api/v1/patient/patients", headers=headers).json()["items"]
    assert len(listed) == 3

    revealed = client.get(live.base_url + f"/api/v1/patient/patients/{me.json()['id']}/document", headers=headers)
    assert revealed.json() == {"docType": "01", "docNumber": SELF["number"]}

    # Another resident cannot see, reveal or remove these patients: 404, not 403 (no existence oracle).
    stranger = wechat_resident(live, "13700009999")
    for method, path in (
        ("GET", f"/api/v1/patient/patients/{me.json()['id']}"),
        ("DELETE", f"/api/v1/patient/patients/{child.json()['id']}"),
        ("GET", f"/api/v1/patient/patients/{child.json()['id']}/health-card"),
    ):
        answer = client.request(method, live.base_url + path, headers=stranger)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["code"] == "patient.not_found"


def test_an_invalid_id_number_is_refused_with_a_chinese_message(live: LiveServer) -> None:
    headers = wechat_resident(live, "13800000002")
    step_up(live, headers, "13800000002")
    answer = add(live, headers, {"relationship": "self", "name": "王五", "docNumber": "110101199003070012"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "identity.id_checksum"
    assert "校验" in answer.json()["message"] or "身份证" in answer.json()["message"]
    assert "110101199003070012" not in answer.text


def test_an_adult_confirms_by_a_face_check_on_the_simulator(live: LiveServer) -> None:
    phone = "13600000002"
    headers = wechat_resident(live, phone)
    step_up(live, headers, phone)
    me = add(live, headers, {"relationship": "self", "name": "李四", "docNumber": "44030519850615002X"})
    assert me.status_code == 201, me.text
    friend = add(
        live,
        headers,
        {"relationship": "other", "name": "王小明", "docNumber": "310104197211200033", "phone": "18600000003"},
    )
    assert friend.json()["state"] == "pending_confirmation", friend.text
    started = client.post(
        live.base_url + f"/api/v1/patient/patients/{friend.json()['id']}/face", json={}, headers=headers
    )
    assert started.status_code == 200, started.text
    token = started.json()["url"].rstrip("/").split("/")[-1].split("?")[0]
    pending = client.post(
        live.base_url + f"/api/v1/patient/patients/{friend.json()['id']}/face/result", headers=headers
    )
    assert pending.status_code == 409
    assert pending.json()["code"] == "verification.face_pending"
    # The person opens the provider's page on their own phone and passes.
    done = client.post(live.base_url + f"/sandbox/tencent-faceid/test/face/{token}/complete", json={"result": "pass"})
    assert done.status_code in (200, 204), done.text
    confirmed = client.post(
        live.base_url + f"/api/v1/patient/patients/{friend.json()['id']}/face/result", headers=headers
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["state"] == "active"
