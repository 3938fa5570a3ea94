"""Login journeys over real HTTP against ``bff serve`` with the simulators mounted (issue: accounts and logins).

Each journey plays the front end: it asks the simulator for what the platform's client SDK would hand the
mini-program (a wx.login code, a getPhoneNumber code, an Alipay authCode, the SMS in the phone's inbox), then
calls our API, then ``me``, refresh and logout.
"""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime
from typing import Any

import httpx
import pyotp

from sandbox.wechat import DEMO_APPID
from tests.support.live import BFF, ROOT, LiveServer

# This module's residents and staff come from their own address, so that per-address login limits spent by
# other test modules (the schemathesis run) do not touch them.
client = httpx.Client(headers={"X-Forwarded-For": "198.51.100.77"}, timeout=30)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def clock_now(live: LiveServer) -> datetime:
    return datetime.fromisoformat(client.get(live.base_url + "/sandbox/admin/clock").json()["now"])


def advance(live: LiveServer, seconds: float) -> None:
    assert client.post(live.base_url + "/sandbox/admin/clock", json={"advanceSeconds": seconds}).status_code in (
        200,
        201,
    )


def wechat_code(live: LiveServer, openid: str | None = None) -> dict[str, Any]:
    body = {"appid": DEMO_APPID} | ({"openid": openid} if openid else {})
    response = client.post(live.base_url + "/sandbox/wechat/test/login-code", json=body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


def test_wechat_login_me_refresh_logout(live: LiveServer) -> None:
    code = wechat_code(live)["code"]
    login = client.post(live.base_url + "/api/v1/auth/wechat/login", json={"appid": DEMO_APPID, "code": code})
    assert login.status_code == 201, login.text
    tokens = login.json()
    me = client.get(live.base_url + "/api/v1/patient/me", headers=bearer(tokens["accessToken"]))
    assert me.status_code == 200
    assert me.json()["identities"][0]["provider"] == "wechat"
    refreshed = client.post(live.base_url + "/api/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    assert refreshed.status_code == 201
    out = client.post(live.base_url + "/api/v1/auth/logout", headers=bearer(refreshed.json()["accessToken"]))
    assert out.status_code == 204
    after = client.get(live.base_url + "/api/v1/patient/me", headers=bearer(refreshed.json()["accessToken"]))
    assert after.status_code == 401


def test_a_reused_or_expired_wechat_code_is_refused(live: LiveServer) -> None:
    code = wechat_code(live)["code"]
    first = client.post(live.base_url + "/api/v1/auth/wechat/login", json={"appid": DEMO_APPID, "code": code})
    reused = client.post(live.base_url + "/api/v1/auth/wechat/login", json={"appid": DEMO_APPID, "code": code})
    late_code = wechat_code(live)["code"]
    advance(live, 6 * 60)
    expired = client.post(live.base_url + "/api/v1/auth/wechat/login", json={"appid": DEMO_APPID, "code": late_code})
    assert first.status_code == 201
    for response in (reused, expired):
        assert response.status_code == 400
        assert response.json()["code"] == "auth.login_code_invalid"


def test_wechat_phone_binding_through_the_simulator(live: LiveServer) -> None:
    issued = wechat_code(live)
    tokens = client.post(
        live.base_url + "/api/v1/auth/wechat/login", json={"appid": DEMO_APPID, "code": issued["code"]}
    ).json()
    phone_code = client.post(
        live.base_url + "/sandbox/wechat/test/phone-code",
        json={"appid": DEMO_APPID, "openid": issued["openid"], "phone": "13600001111"},
    ).json()["code"]
    bound = client.post(
        live.base_url + "/api/v1/auth/wechat/phone",
        json={"appid": DEMO_APPID, "code": phone_code},
        headers=bearer(tokens["accessToken"]),
    )
    assert bound.status_code == 201, bound.text
    me = client.get(live.base_url + "/api/v1/patient/me", headers=bearer(tokens["accessToken"])).json()
    assert me["phoneMasked"] == "136****1111"


def _cli_env(live: LiveServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSP_")}
    env.update(live.env)
    return env


def test_first_operator_from_the_command_line_activates_with_totp_and_logs_in(live: LiveServer) -> None:
    created = subprocess.run(
        [BFF, "admin", "create-operator", "--login-name", "op.first", "--display-name", "首位运营"],
        cwd=ROOT,
        env=_cli_env(live),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    match = re.search(r"one-time activation token \(valid until [^)]*\): (\S+)", created.stdout)
    assert match, created.stdout
    token = match.group(1)
    password = "Operator-Pass-2026!"
    started = client.post(
        live.base_url + "/api/v1/auth/staff/activate",
        json={"loginName": "op.first", "activationToken": token, "newPassword": password},
    )
    assert started.status_code == 201, started.text
    totp = pyotp.TOTP(started.json()["totpSecret"])
    confirm = client.post(
        live.base_url + "/api/v1/auth/staff/activate/confirm",
        json={"loginName": "op.first", "activationToken": token, "totp": totp.at(clock_now(live))},
    )
    assert confirm.status_code == 204, confirm.text
    advance(live, 31)
    login = client.post(
        live.base_url + "/api/v1/auth/staff/login",
        json={"loginName": "op.first", "password": password, "totp": totp.at(clock_now(live))},
    )
    assert login.status_code == 201, login.text
    me = client.get(live.base_url + "/api/v1/staff/me", headers=bearer(login.json()["accessToken"]))
    assert me.json()["roles"] == ["operator"]
    staff_list = client.get(live.admin_url + "/api/v1/admin/staff", headers=bearer(login.json()["accessToken"]))
    assert staff_list.status_code == 200
    assert "op.first" in [s["loginName"] for s in staff_list.json()["items"]]
    # No default accounts exist (SEC-A-01): a well-known admin/admin login fails like any other.
    default = client.post(
        live.base_url + "/api/v1/auth/staff/login", json={"loginName": "admin", "password": "admin", "totp": "000000"}
    )
    assert default.status_code == 401


def latest_sms_code(live: LiveServer, phone: str) -> str:
    for provider in ("aliyun-sms", "tencent-sms"):
        inbox = client.get(live.base_url + f"/sandbox/{provider}/test/inbox", params={"phone": phone}).json()
        for entry in inbox["messages"]:  # newest first
            params = entry["message"]["params"]
            return str(params.get("code") or params["1"])
    raise AssertionError(f"no SMS for {phone}")


def test_app_login_by_sms_code_through_the_sms_simulator(live: LiveServer) -> None:
    phone = "13500002222"
    sent = client.post(live.base_url + "/api/v1/auth/sms/code", json={"phone": phone})
    assert sent.status_code == 201, sent.text
    code = latest_sms_code(live, phone)
    assert re.fullmatch(r"\d{6}", code)
    login = client.post(live.base_url + "/api/v1/auth/sms/login", json={"phone": phone, "code": code})
    assert login.status_code == 201, login.text
    assert login.json()["audience"] == "patient-app"
    me = client.get(live.base_url + "/api/v1/patient/me", headers=bearer(login.json()["accessToken"]))
    assert me.json()["phoneMasked"] == "135****2222"


def test_sms_fails_over_to_tencent_when_aliyun_is_down(live: LiveServer) -> None:
    phone = "13500003333"
    faults = {"inbound": {"errorRate": 1.0, "errorStatus": 500}}
    assert httpx.put(live.base_url + "/sandbox/admin/aliyun-sms/faults", json=faults).status_code in (200, 201)
    try:
        sent = client.post(live.base_url + "/api/v1/auth/sms/code", json={"phone": phone})
    finally:
        httpx.delete(live.base_url + "/sandbox/admin/aliyun-sms/faults")
    assert sent.status_code == 201, sent.text
    tencent = client.get(live.base_url + "/sandbox/tencent-sms/test/inbox", params={"phone": phone}).json()
    aliyun = client.get(live.base_url + "/sandbox/aliyun-sms/test/inbox", params={"phone": phone}).json()
    assert len(tencent["messages"]) == 1, "delivered by the second provider"
    assert aliyun["messages"] == []


def test_alipay_login_through_the_alipay_simulator(live: LiveServer) -> None:
    from bootstrap.sandbox_accounts import ALIPAY_APP_ID

    issued = client.post(live.base_url + "/sandbox/alipay/test/auth-code", json={"appId": ALIPAY_APP_ID}).json()
    login = client.post(
        live.base_url + "/api/v1/auth/alipay/login", json={"appId": ALIPAY_APP_ID, "authCode": issued["authCode"]}
    )
    assert login.status_code == 201, login.text
    assert login.json()["audience"] == "alipay-mp"
    reused = client.post(
        live.base_url + "/api/v1/auth/alipay/login", json={"appId": ALIPAY_APP_ID, "authCode": issued["authCode"]}
    )
    assert reused.status_code == 400
    assert reused.json()["code"] == "auth.login_code_invalid"
    me = client.get(live.base_url + "/api/v1/patient/me", headers=bearer(login.json()["accessToken"]))
    assert me.json()["identities"] == [{"provider": "alipay", "appId": ALIPAY_APP_ID}]
