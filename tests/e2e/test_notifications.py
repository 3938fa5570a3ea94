"""Notifications over the live stack (bff serve, a worker and beat on PostgreSQL, Redis and the simulators):
the account's own events reach the simulated WeChat and SMS inboxes and the message list; a scheduled test
reminder fires when the clock moves (issue: notifications)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from bootstrap.sandbox_accounts import WECHAT_TEMPLATE_IDS
from sandbox.wechat import DEMO_APPID
from tests.support.live import LiveServer, operator_token

client = httpx.Client(headers={"X-Forwarded-For": "198.51.100.99"}, timeout=30)
TEMPLATE_ID = WECHAT_TEMPLATE_IDS["security_notice"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for(predicate: Any, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def wechat_login(live: LiveServer, openid: str | None = None) -> tuple[dict[str, Any], str]:
    body = {"appid": DEMO_APPID} | ({"openid": openid} if openid else {})
    issued = client.post(live.base_url + "/sandbox/wechat/test/login-code", json=body).json()
    tokens = client.post(
        live.base_url + "/api/v1/auth/wechat/login", json={"appid": DEMO_APPID, "code": issued["code"]}
    ).json()
    return tokens, issued["openid"]


def subscribe_inbox(live: LiveServer, openid: str) -> list[dict[str, Any]]:
    records = client.get(live.base_url + "/sandbox/admin/wechat/requests", params={"stream": "subscribe"}).json()
    return [r for r in records["entries"] if openid in str(r)]


def sms_inbox(live: LiveServer, phone: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for provider in ("aliyun-sms", "tencent-sms"):
        messages += client.get(live.base_url + f"/sandbox/{provider}/test/inbox", params={"phone": phone}).json()[
            "messages"
        ]
    return messages


def test_a_new_device_login_reaches_wechat_and_the_message_list(live: LiveServer) -> None:
    first, openid = wechat_login(live)
    # The mini-program asked wx.requestSubscribeMessage and the resident accepted: both sides record it.
    client.post(
        live.base_url + "/sandbox/wechat/test/subscribe-grant",
        json={"openid": openid, "templateId": TEMPLATE_ID, "count": 1},
    )
    recorded = client.post(
        live.base_url + "/api/v1/patient/notification-subscriptions",
        json={"appid": DEMO_APPID, "templateIds": [TEMPLATE_ID]},
        headers=bearer(first["accessToken"]),
    )
    assert recorded.json() == {"recorded": 1}
    second, _ = wechat_login(live, openid)  # a second device: a security notice
    assert wait_for(lambda: subscribe_inbox(live, openid)), "the subscribe message reached WeChat"
    listed = wait_for(
        lambda: client.get(live.base_url + "/api/v1/patient/messages", headers=bearer(second["accessToken"])).json()[
            "items"
        ]
    )
    assert listed[0]["eventType"] == "account.logged_in"
    assert "新设备" in listed[0]["body"]


def test_an_app_only_resident_gets_the_notice_by_sms(live: LiveServer) -> None:
    phone = "13700005555"
    for _ in range(2):
        client.post(live.base_url + "/api/v1/auth/sms/code", json={"phone": phone})
        code = sms_inbox(live, phone)[0]["message"]["params"]
        value = code.get("code") or code.get("1")
        client.post(live.base_url + "/api/v1/auth/sms/login", json={"phone": phone, "code": value})
        # The resend limit counts wall-clock time (the e2e server sets it to 1 s); the shared clock cannot move it.
        time.sleep(1.1)

    def notice() -> bool:
        return any("新设备" in m["message"]["text"] for m in sms_inbox(live, phone))

    assert wait_for(notice), "the new-device notice went by SMS, the only channel this resident has"

    # The worker process serves its own counters (the server's /metrics cannot see another process's).
    assert live.worker_metrics_url is not None

    def sms_sent() -> float:
        text = client.get(live.worker_metrics_url).text  # type: ignore[arg-type]
        sample = 'hsp_notification_deliveries_total{channel="sms",outcome="sent"} '
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample))

    assert wait_for(lambda: sms_sent() >= 1), "the worker's metrics count the SMS it sent"


def test_a_scheduled_test_reminder_fires_when_the_clock_moves(live: LiveServer) -> None:
    phone = "13700006666"
    client.post(live.base_url + "/api/v1/auth/sms/code", json={"phone": phone})
    params = sms_inbox(live, phone)[0]["message"]["params"]
    login = client.post(
        live.base_url + "/api/v1/auth/sms/login", json={"phone": phone, "code": params.get("code") or params.get("1")}
    ).json()
    scheduled = client.post(
        live.base_url + "/api/v1/patient/notification-test-reminders",
        json={"inMinutes": 5, "text": "该吃药了"},
        headers=bearer(login["accessToken"]),
    )
    assert scheduled.status_code == 201, scheduled.text
    token = operator_token(live, "op.notify", client)
    early = client.post(
        live.admin_url + "/api/v1/admin/notifications/scheduled/run", params={"dryRun": "true"}, headers=bearer(token)
    ).json()
    assert not any("test:" in k for k in early["wouldSend"]), "not due yet"
    client.post(live.base_url + "/sandbox/admin/clock", json={"advanceSeconds": 6 * 60})
    ran = client.post(
        live.admin_url + "/api/v1/admin/notifications/scheduled/run", params={"dryRun": "false"}, headers=bearer(token)
    ).json()
    assert ran["sent"] >= 1

    def fired() -> bool:
        return any("该吃药了" in m["message"]["text"] for m in sms_inbox(live, phone))

    assert wait_for(fired), "the reminder reached the phone"
    log = client.get(live.admin_url + "/api/v1/admin/notifications/deliveries", headers=bearer(token)).json()
    assert any(d["eventType"] == "notification.test" and d["state"] == "sent" for d in log["items"])


def test_a_resident_with_a_registered_phone_gets_app_push(live: LiveServer) -> None:
    token = "jpush-reg-" + str(int(time.time() * 1000))
    registered = client.post(
        live.base_url + "/sandbox/jpush/test/device",
        params={"appKey": "demo0jpush0app0key0000001"},
        json={"token": token},
    )
    assert registered.status_code in (200, 201), registered.text
    first, openid = wechat_login(live)
    added = client.post(
        live.base_url + "/api/v1/patient/push-devices",
        json={"provider": "jpush", "token": token},
        headers=bearer(first["accessToken"]),
    )
    assert added.status_code == 204
    wechat_login(live, openid)  # a new device: push reaches the registered phone (no subscribe authorisation left)

    def pushed() -> bool:
        records = client.get(live.base_url + "/sandbox/admin/jpush/requests", params={"stream": "inbox"}).json()
        return any(token in str(r) for r in records["entries"])

    assert wait_for(pushed), "the notice reached the phone through JPush"
