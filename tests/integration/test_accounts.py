"""Accounts, logins and sessions over HTTP on the real PostgreSQL (SEC-A-01..05, SEC-C-01/02, SEC-L-01/02)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from domain.account.model import StaffRole
from domain.account.ports import AlipayIdentity
from domain.account.use_cases import ClientContext
from domain.kernel.ids import new_id
from persistence.db import ConnectionSource
from persistence.ephemeral.ratelimit import LimitsRateLimiter
from persistence.ephemeral.redis_store import RedisEphemeralStore
from tests.support.accounts import ALIPAY_APPID, WECHAT_APPID, AccountHarness, build_account_harness
from tests.support.app import asgi_client

PHONE = "13912345678"
STRONG = "Correct-Horse-9-Battery"


@pytest.fixture
async def h(committed_source: ConnectionSource, redis_url: str, redis_prefix: str) -> AsyncIterator[AccountHarness]:
    """The account service on the real PostgreSQL and the real Redis (sessions cache, counters, limits)."""
    prefix = f"{redis_prefix}acct:{new_id()}:"
    store = RedisEphemeralStore.from_url(redis_url, prefix=prefix)
    yield build_account_harness(
        committed_source, store=store, limiter=LimitsRateLimiter.redis(redis_url, prefix=prefix)
    )
    keys = [k async for k in store.client.scan_iter(match=prefix + "*")]
    if keys:
        await store.client.delete(*keys)
    await store.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wechat_login(client: httpx.AsyncClient, h: AccountHarness, openid: str = "o-alice") -> dict[str, object]:
    response = await client.post(
        "/api/v1/auth/wechat/login", json={"appid": WECHAT_APPID, "code": h.wechat.mint(openid)}
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def sms_login(client: httpx.AsyncClient, h: AccountHarness, phone: str = PHONE) -> dict[str, object]:
    sent = await client.post("/api/v1/auth/sms/code", json={"phone": phone})
    assert sent.status_code == 201, sent.text
    response = await client.post("/api/v1/auth/sms/login", json={"phone": phone, "code": h.sms.last_code(phone)})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


# ----------------------------------------------------------------------------- residents


async def test_wechat_login_creates_an_account_once_and_me_shows_it(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        first = await wechat_login(client, h)
        again = await wechat_login(client, h)
        me = await client.get("/api/v1/patient/me", headers=bearer(str(again["accessToken"])))
    assert first["newAccount"] is True
    assert again["newAccount"] is False
    assert first["accountId"] == again["accountId"]
    assert first["audience"] == "wechat-mp"
    assert me.status_code == 200
    assert me.json()["identities"] == [{"provider": "wechat", "appId": WECHAT_APPID}]
    assert "sessionKey" not in json.dumps(first), "the WeChat session_key never leaves the server"


async def test_a_reused_wechat_code_is_refused_and_audited(
    h: AccountHarness, committed_source: ConnectionSource
) -> None:
    code = h.wechat.mint("o-bob")
    async with asgi_client(h.public) as client:
        ok = await client.post("/api/v1/auth/wechat/login", json={"appid": WECHAT_APPID, "code": code})
        reused = await client.post("/api/v1/auth/wechat/login", json={"appid": WECHAT_APPID, "code": code})
        unknown_app = await client.post("/api/v1/auth/wechat/login", json={"appid": "wx-other", "code": "x"})
    assert ok.status_code == 201
    assert reused.status_code == 400
    assert reused.json()["code"] == "auth.login_code_invalid"
    assert reused.json()["message"] == "登录凭证无效或已过期，请重新登录"
    assert unknown_app.json()["code"] == "auth.unknown_app"
    async with committed_source.engine.connect() as conn:
        outcomes = (
            (await conn.execute(sa.text("SELECT outcome FROM audit_log WHERE action = 'auth.login' ORDER BY id")))
            .scalars()
            .all()
        )
    assert "failure" in outcomes, "SEC-L-01: a failed login is audited"


async def test_alipay_login_in_user_id_and_open_id_modes(h: AccountHarness) -> None:
    h.alipay.codes["c1"] = AlipayIdentity(user_id="2088000000000001", open_id=None)
    h.alipay.codes["c2"] = AlipayIdentity(user_id=None, open_id="074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5")
    async with asgi_client(h.public) as client:
        one = await client.post("/api/v1/auth/alipay/login", json={"appId": ALIPAY_APPID, "authCode": "c1"})
        two = await client.post("/api/v1/auth/alipay/login", json={"appId": ALIPAY_APPID, "authCode": "c2"})
    assert one.status_code == two.status_code == 201
    assert one.json()["accountId"] != two.json()["accountId"]
    assert one.json()["audience"] == "alipay-mp"


async def test_sms_login_and_the_phone_is_stored_encrypted(
    h: AccountHarness, committed_source: ConnectionSource
) -> None:
    async with asgi_client(h.public) as client:
        body = await sms_login(client, h)
        me = await client.get("/api/v1/patient/me", headers=bearer(str(body["accessToken"])))
    assert me.json()["phoneMasked"] == "139****5678"
    assert h.sms.sent[0][1] == "login_code"
    async with committed_source.engine.connect() as conn:
        dump = json.dumps([list(map(str, r)) for r in (await conn.execute(sa.text("SELECT * FROM resident_accounts")))])
        codes = json.dumps([list(map(str, r)) for r in (await conn.execute(sa.text("SELECT * FROM sms_codes")))])
    assert PHONE not in dump, "SEC-K-02: no clear phone number in the database"
    assert h.sms.last_code(PHONE) not in codes, "codes are stored hashed"


async def test_sec_a_03_a_wrong_sms_code_five_times_locks_the_code(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        await client.post("/api/v1/auth/sms/code", json={"phone": PHONE})
        right = h.sms.last_code(PHONE)
        wrong = "000000" if right != "000000" else "111111"
        answers = [
            (await client.post("/api/v1/auth/sms/login", json={"phone": PHONE, "code": wrong})).json() for _ in range(5)
        ]
        sixth = await client.post("/api/v1/auth/sms/login", json={"phone": PHONE, "code": right})
    assert [a["code"] for a in answers] == ["auth.sms_code_wrong"] * 5
    assert [a["attemptsLeft"] for a in answers] == [4, 3, 2, 1, 0]
    assert sixth.status_code == 400
    assert sixth.json()["code"] == "auth.sms_code_locked"


async def test_sec_a_03_sms_codes_expire_after_five_minutes(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        await client.post("/api/v1/auth/sms/code", json={"phone": PHONE})
        h.clock.advance(301)
        late = await client.post("/api/v1/auth/sms/login", json={"phone": PHONE, "code": h.sms.last_code(PHONE)})
    assert late.json()["code"] == "auth.sms_code_invalid"


async def test_sec_a_03_one_sms_per_minute_per_phone(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        first = await client.post("/api/v1/auth/sms/code", json={"phone": PHONE})
        second = await client.post("/api/v1/auth/sms/code", json={"phone": PHONE})
    assert first.status_code == 201
    assert first.json()["resendAfterSeconds"] == 60
    assert second.status_code == 429
    assert second.json()["code"] == "auth.sms_too_frequent"
    assert int(second.headers["retry-after"]) >= 1
    assert len(h.sms.sent) == 1


async def test_sms_limits_fail_closed_when_redis_is_down(committed_source: ConnectionSource) -> None:
    """D1: a security limit whose store is down refuses rather than lets through."""
    h = build_account_harness(committed_source, limiter=LimitsRateLimiter.redis("redis://127.0.0.1:1/0"))
    async with asgi_client(h.public) as client:
        response = await client.post("/api/v1/auth/sms/code", json={"phone": PHONE})
    assert response.status_code == 503
    assert response.json()["code"] == "auth.limits_unavailable"
    assert h.sms.sent == []


@pytest.mark.parametrize("phone", ["12345", "23912345678", "1391234567x", "+1 415 555 0100", ""])
async def test_malformed_phone_numbers_are_refused(h: AccountHarness, phone: str) -> None:
    async with asgi_client(h.public) as client:
        response = await client.post("/api/v1/auth/sms/code", json={"phone": phone})
    assert response.status_code == 400
    assert response.json()["code"] == "auth.phone_invalid"
    assert response.json()["message"] == "请输入正确的11位手机号码"


async def test_full_width_and_prefixed_phones_are_normalised(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        response = await client.post("/api/v1/auth/sms/code", json={"phone": "+86 １３９-１２３４-５６７８"})
    assert response.status_code == 201
    assert h.sms.sent[-1][0] == PHONE


async def test_a_verified_phone_joins_the_wechat_login_to_the_app_account(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        app = await sms_login(client, h)
        wx = await wechat_login(client, h, "o-carol")
        h.wechat.phone_codes["pc1"] = PHONE
        joined = await client.post(
            "/api/v1/auth/wechat/phone",
            json={"appid": WECHAT_APPID, "code": "pc1"},
            headers=bearer(str(wx["accessToken"])),
        )
        old_token_me = await client.get("/api/v1/patient/me", headers=bearer(str(wx["accessToken"])))
        tokens = joined.json()["tokens"]
        me = await client.get("/api/v1/patient/me", headers=bearer(tokens["accessToken"]))
        later = await wechat_login(client, h, "o-carol")
    assert joined.status_code == 201, joined.text
    assert joined.json()["joined"] is True
    assert tokens["accountId"] == app["accountId"]
    assert tokens["restricted"] is False
    assert old_token_me.status_code == 401, "the merged account's sessions end"
    assert {i["provider"] for i in me.json()["identities"]} == {"phone", "wechat"}
    assert later["accountId"] == app["accountId"], "the next WeChat login lands on the same account"


async def test_a_phone_join_onto_a_dormant_account_opens_no_patient_data(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        await sms_login(client, h)
        h.clock.advance(timedelta(days=181).total_seconds())
        wx = await wechat_login(client, h, "o-new-holder-of-the-number")
        h.wechat.phone_codes["pc2"] = PHONE
        joined = (
            await client.post(
                "/api/v1/auth/wechat/phone",
                json={"appid": WECHAT_APPID, "code": "pc2"},
                headers=bearer(str(wx["accessToken"])),
            )
        ).json()
        me = await client.get("/api/v1/patient/me", headers=bearer(joined["tokens"]["accessToken"]))
        h.clock.advance(1)
        again = await wechat_login(client, h, "o-new-holder-of-the-number")
    assert joined["tokens"]["restricted"] is True
    assert me.json()["restriction"] == "dormant_account"
    assert again["accountId"] == joined["tokens"]["accountId"]
    assert again["restricted"] is False, "the account is active again after the join"


async def test_binding_a_new_phone_keeps_the_account(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        wx = await wechat_login(client, h, "o-dave")
        h.wechat.phone_codes["pc3"] = "13700000001"
        bound = await client.post(
            "/api/v1/auth/wechat/phone",
            json={"appid": WECHAT_APPID, "code": "pc3"},
            headers=bearer(str(wx["accessToken"])),
        )
        me = await client.get("/api/v1/patient/me", headers=bearer(str(wx["accessToken"])))
    assert bound.json() == {"joined": False}
    assert me.json()["phoneMasked"] == "137****0001"


# ----------------------------------------------------------------------------- tokens and sessions


def _forge(token: str, header: dict[str, str]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    _, payload, _ = token.split(".")
    return f"{b64(json.dumps(header).encode())}.{payload}."


async def test_jwt_with_alg_none_or_unknown_kid_is_refused(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        body = await wechat_login(client, h)
        token = str(body["accessToken"])
        none_alg = await client.get("/api/v1/patient/me", headers=bearer(_forge(token, {"alg": "none", "typ": "JWT"})))
        header, payload, signature = token.split(".")
        unknown = json.loads(base64.urlsafe_b64decode(header + "=="))
        unknown["kid"] = "k-unknown"
        relabelled = base64.urlsafe_b64encode(json.dumps(unknown).encode()).rstrip(b"=").decode()
        bad_kid = await client.get("/api/v1/patient/me", headers=bearer(f"{relabelled}.{payload}.{signature}"))
        tampered = await client.get("/api/v1/patient/me", headers=bearer(f"{header}.{payload}x.{signature}"))
    for response in (none_alg, bad_kid, tampered):
        assert response.status_code == 401
        assert response.json()["code"] == "auth.token_invalid"


async def test_an_expired_access_token_is_refused_and_refresh_gives_a_new_one(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        body = await wechat_login(client, h)
        h.clock.advance(11 * 60)
        expired = await client.get("/api/v1/patient/me", headers=bearer(str(body["accessToken"])))
        h.clock.advance(-11 * 60 + 5 * 60)  # back inside the idle window for the refresh itself
        h.clock.advance(6 * 60)
        refreshed = await client.post("/api/v1/auth/refresh", json={"refreshToken": body["refreshToken"]})
    assert expired.status_code == 401
    assert expired.json()["code"] == "auth.token_expired"
    assert refreshed.status_code == 201, refreshed.text
    assert refreshed.json()["refreshToken"] != body["refreshToken"]


async def test_a_refresh_token_used_twice_ends_the_session(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        body = await wechat_login(client, h)
        first = await client.post("/api/v1/auth/refresh", json={"refreshToken": body["refreshToken"]})
        replay = await client.post("/api/v1/auth/refresh", json={"refreshToken": body["refreshToken"]})
        newest = await client.post("/api/v1/auth/refresh", json={"refreshToken": first.json()["refreshToken"]})
        me = await client.get("/api/v1/patient/me", headers=bearer(first.json()["accessToken"]))
    assert first.status_code == 201
    assert replay.status_code == 401
    assert replay.json()["code"] == "auth.refresh_reused"
    assert newest.status_code == 401, "the whole family is revoked"
    assert me.status_code == 401
    assert me.json()["code"] == "auth.session_revoked"


async def test_sec_a_04_a_resident_session_ends_after_30_idle_minutes(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        body = await wechat_login(client, h)
        h.clock.advance(9 * 60)
        assert (await client.get("/api/v1/patient/me", headers=bearer(str(body["accessToken"])))).status_code == 200
        h.clock.advance(31 * 60)
        idle = await client.post("/api/v1/auth/refresh", json={"refreshToken": body["refreshToken"]})
    assert idle.status_code == 401
    assert idle.json()["code"] == "auth.refresh_invalid"


async def test_logout_revokes_server_side_and_logout_all_ends_every_device(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        one = await wechat_login(client, h, "o-erin")
        two = await wechat_login(client, h, "o-erin")
        three = await wechat_login(client, h, "o-erin")
        listed = await client.get("/api/v1/auth/sessions", headers=bearer(str(one["accessToken"])))
        out = await client.post("/api/v1/auth/logout", headers=bearer(str(one["accessToken"])))
        after = await client.get("/api/v1/patient/me", headers=bearer(str(one["accessToken"])))
        still = await client.get("/api/v1/patient/me", headers=bearer(str(two["accessToken"])))
        everything = await client.post("/api/v1/auth/logout-all", headers=bearer(str(two["accessToken"])))
        gone = await client.get("/api/v1/patient/me", headers=bearer(str(three["accessToken"])))
    assert len(listed.json()["items"]) == 3
    assert sum(1 for s in listed.json()["items"] if s["current"]) == 1
    assert out.status_code == 204
    assert after.status_code == 401
    assert still.status_code == 200
    assert everything.json() == {"revoked": 2}
    assert gone.status_code == 401


async def test_sec_c_01_another_accounts_session_id_answers_404(h: AccountHarness) -> None:
    async with asgi_client(h.public) as client:
        alice = await wechat_login(client, h, "o-alice2")
        mallory = await wechat_login(client, h, "o-mallory")
        attempt = await client.delete(
            f"/api/v1/auth/sessions/{alice['sessionId']}", headers=bearer(str(mallory["accessToken"]))
        )
        alive = await client.get("/api/v1/patient/me", headers=bearer(str(alice["accessToken"])))
    assert attempt.status_code == 404
    assert alive.status_code == 200


# ----------------------------------------------------------------------------- staff


async def make_staff(
    h: AccountHarness, name: str = "dr.wang", roles: frozenset[StaffRole] = frozenset({StaffRole.DOCTOR})
) -> str:
    """Create and activate a staff account; returns its TOTP secret."""
    activation = await h.service.create_staff(
        login_name=name, display_name="王医生", roles=roles, actor=None, ctx=ClientContext()
    )
    enrolment = await h.service.start_staff_activation(
        login_name=name, token=activation.token, new_password=STRONG, ctx=ClientContext()
    )
    await h.service.finish_staff_activation(
        login_name=name,
        token=activation.token,
        totp_code=h.totp.code_at(enrolment.secret, h.clock.now()),
        ctx=ClientContext(),
    )
    h.clock.advance(31)  # the next TOTP step: a code is never accepted twice
    return enrolment.secret


async def staff_login(
    client: httpx.AsyncClient, h: AccountHarness, name: str, secret: str, password: str = STRONG
) -> httpx.Response:
    h.clock.advance(30)
    return await client.post(
        "/api/v1/auth/staff/login",
        json={"loginName": name, "password": password, "totp": h.totp.code_at(secret, h.clock.now())},
    )


async def test_staff_login_needs_password_and_totp_and_me_shows_roles(h: AccountHarness) -> None:
    secret = await make_staff(h)
    async with asgi_client(h.public) as client:
        ok = await staff_login(client, h, "dr.wang", secret)
        me = await client.get("/api/v1/staff/me", headers=bearer(ok.json()["accessToken"]))
        no_totp = await client.post(
            "/api/v1/auth/staff/login", json={"loginName": "dr.wang", "password": STRONG, "totp": "000000"}
        )
    assert ok.status_code == 201, ok.text
    assert ok.json()["audience"] == "staff-app"
    assert me.json()["roles"] == ["doctor"]
    assert no_totp.status_code == 401
    assert no_totp.json()["code"] == "auth.login_failed"


async def test_sec_a_03_failures_never_reveal_whether_the_account_exists(h: AccountHarness) -> None:
    await make_staff(h)
    async with asgi_client(h.public) as client:
        wrong = await client.post(
            "/api/v1/auth/staff/login", json={"loginName": "dr.wang", "password": "Wrong-Pass-123", "totp": "123456"}
        )
        missing = await client.post(
            "/api/v1/auth/staff/login", json={"loginName": "nobody", "password": "Wrong-Pass-123", "totp": "123456"}
        )
    assert wrong.status_code == missing.status_code == 401
    assert {k: v for k, v in wrong.json().items() if k != "requestId"} == {
        k: v for k, v in missing.json().items() if k != "requestId"
    }


async def test_sec_a_03_five_failures_in_15_minutes_lock_for_30_minutes(h: AccountHarness) -> None:
    secret = await make_staff(h)
    async with asgi_client(h.public) as client:
        for _ in range(5):
            await staff_login(client, h, "dr.wang", secret, password="Wrong-Pass-123")
        locked = await staff_login(client, h, "dr.wang", secret)
        h.clock.advance(31 * 60)
        unlocked = await staff_login(client, h, "dr.wang", secret)
    assert locked.status_code == 401
    assert unlocked.status_code == 201


async def test_a_totp_code_is_accepted_once(h: AccountHarness) -> None:
    secret = await make_staff(h)
    async with asgi_client(h.public) as client:
        h.clock.advance(30)
        code = h.totp.code_at(secret, h.clock.now())
        body = {"loginName": "dr.wang", "password": STRONG, "totp": code}
        first = await client.post("/api/v1/auth/staff/login", json=body)
        replay = await client.post("/api/v1/auth/staff/login", json=body)
    assert first.status_code == 201
    assert replay.status_code == 401


async def test_sec_a_02_an_expired_staff_password_forces_a_change(h: AccountHarness) -> None:
    secret = await make_staff(h)
    h.clock.advance(timedelta(days=91).total_seconds())
    async with asgi_client(h.public) as client:
        expired = await staff_login(client, h, "dr.wang", secret)
        h.clock.advance(30)
        weak = await client.post(
            "/api/v1/auth/staff/password",
            json={
                "loginName": "dr.wang",
                "password": STRONG,
                "totp": h.totp.code_at(secret, h.clock.now()),
                "newPassword": "Abc12345",
            },
        )
        h.clock.advance(30)
        reused = await client.post(
            "/api/v1/auth/staff/password",
            json={
                "loginName": "dr.wang",
                "password": STRONG,
                "totp": h.totp.code_at(secret, h.clock.now()),
                "newPassword": STRONG,
            },
        )
        h.clock.advance(30)
        changed = await client.post(
            "/api/v1/auth/staff/password",
            json={
                "loginName": "dr.wang",
                "password": STRONG,
                "totp": h.totp.code_at(secret, h.clock.now()),
                "newPassword": "Another-Strong-Pass-7",
            },
        )
        after = await staff_login(client, h, "dr.wang", secret, password="Another-Strong-Pass-7")
    assert expired.status_code == 403
    assert expired.json()["code"] == "auth.password_expired"
    assert weak.json()["code"] == "auth.password_weak", "SEC-A-02: 'Abc12345' is too weak for staff"
    assert reused.json()["code"] == "auth.password_reused"
    assert changed.status_code == 204
    assert after.status_code == 201


async def test_a_resident_token_on_a_staff_route_is_403_and_staff_on_resident_is_403(h: AccountHarness) -> None:
    secret = await make_staff(h)
    async with asgi_client(h.public) as client:
        resident = await wechat_login(client, h)
        staff = await staff_login(client, h, "dr.wang", secret)
        on_staff = await client.get("/api/v1/staff/me", headers=bearer(str(resident["accessToken"])))
        on_patient = await client.get("/api/v1/patient/me", headers=bearer(staff.json()["accessToken"]))
    assert on_staff.status_code == on_patient.status_code == 403
    assert on_staff.json()["code"] == "auth.wrong_audience"


async def test_sec_a_04_a_staff_session_ends_after_15_idle_minutes(h: AccountHarness) -> None:
    secret = await make_staff(h)
    async with asgi_client(h.public) as client:
        staff = await staff_login(client, h, "dr.wang", secret)
        h.clock.advance(16 * 60)
        idle = await client.get("/api/v1/staff/me", headers=bearer(staff.json()["accessToken"]))
    assert idle.status_code == 401
    assert idle.json()["code"] in ("auth.session_expired", "auth.token_expired")


async def test_sec_a_01_login_names_are_unique_and_activation_is_single_use(h: AccountHarness) -> None:
    activation = await h.service.create_staff(
        login_name="ph.li",
        display_name="李药师",
        roles=frozenset({StaffRole.PHARMACIST}),
        actor=None,
        ctx=ClientContext(),
    )
    async with asgi_client(h.public) as client:
        started = await client.post(
            "/api/v1/auth/staff/activate",
            json={"loginName": "ph.li", "activationToken": activation.token, "newPassword": STRONG},
        )
        secret = started.json()["totpSecret"]
        confirm = await client.post(
            "/api/v1/auth/staff/activate/confirm",
            json={
                "loginName": "ph.li",
                "activationToken": activation.token,
                "totp": h.totp.code_at(secret, h.clock.now()),
            },
        )
        again = await client.post(
            "/api/v1/auth/staff/activate",
            json={"loginName": "ph.li", "activationToken": activation.token, "newPassword": STRONG},
        )
    assert started.status_code == 201
    assert confirm.status_code == 204
    assert again.status_code == 401
    assert again.json()["code"] == "auth.activation_invalid"
    with pytest.raises(Exception) as dup:
        await h.service.create_staff(
            login_name="PH.LI", display_name="x", roles=frozenset({StaffRole.DOCTOR}), actor=None, ctx=ClientContext()
        )
    assert getattr(dup.value, "code", "") == "staff.login_taken"


async def test_sec_c_02_only_the_security_admin_changes_roles_and_it_is_audited(
    h: AccountHarness, committed_source: ConnectionSource
) -> None:
    op_secret = await make_staff(h, "op.zhao", frozenset({StaffRole.OPERATOR}))
    sec_secret = await make_staff(h, "sec.qian", frozenset({StaffRole.SECURITY_ADMIN}))
    async with asgi_client(h.public) as public:
        op = (await staff_login(public, h, "op.zhao", op_secret)).json()
        sec = (await staff_login(public, h, "sec.qian", sec_secret)).json()
    async with asgi_client(h.admin) as admin:
        created = await admin.post(
            "/api/v1/admin/staff",
            json={"loginName": "dr.sun", "displayName": "孙医生", "roles": ["doctor"]},
            headers=bearer(op["accessToken"]),
        )
        escalate = await admin.post(
            "/api/v1/admin/staff",
            json={"loginName": "evil", "displayName": "x", "roles": ["secadmin"]},
            headers=bearer(op["accessToken"]),
        )
        staff_id = created.json()["staffId"]
        by_operator = await admin.put(
            f"/api/v1/admin/staff/{staff_id}/roles", json={"roles": ["pharmacist"]}, headers=bearer(op["accessToken"])
        )
        by_secadmin = await admin.put(
            f"/api/v1/admin/staff/{staff_id}/roles", json={"roles": ["pharmacist"]}, headers=bearer(sec["accessToken"])
        )
        listed = await admin.get("/api/v1/admin/staff", headers=bearer(op["accessToken"]))
    assert created.status_code == 201
    assert created.json()["activationToken"]
    assert escalate.status_code == 403
    assert by_operator.status_code == 403
    assert by_secadmin.status_code == 200
    assert by_secadmin.json()["roles"] == ["pharmacist"]
    assert {s["loginName"] for s in listed.json()["items"]} >= {"op.zhao", "sec.qian", "dr.sun"}
    async with committed_source.engine.connect() as conn:
        rows = (
            await conn.execute(sa.text("SELECT actor, details FROM audit_log WHERE action = 'staff.role_change'"))
        ).all()
    assert len(rows) == 1
    assert rows[0][1]["after"] == "pharmacist"


class AlwaysAllow:
    """A fake of the rate-limiter port, to reach the CAPTCHA rule without waiting out the resend window."""

    async def hit(self, limit: object, key: str) -> object:
        from domain.kernel.ratelimit import RateDecision

        return RateDecision(allowed=True, remaining=1, retry_after_seconds=0)

    async def reset(self, limit: object, key: str) -> None:
        return None


class Captcha:
    async def verify(self, token: str, *, client_ip: str) -> bool:
        return token == "solved"


async def test_a_captcha_is_required_after_repeated_sends(committed_source: ConnectionSource) -> None:
    h = build_account_harness(committed_source, limiter=AlwaysAllow(), extra_deps={"captcha": Captcha()})  # type: ignore[arg-type]
    async with asgi_client(h.public) as client:
        answers = [(await client.post("/api/v1/auth/sms/code", json={"phone": PHONE})).status_code for _ in range(3)]
        fourth = await client.post("/api/v1/auth/sms/code", json={"phone": PHONE})
        wrong = await client.post("/api/v1/auth/sms/code", json={"phone": PHONE, "captchaToken": "guess"})
        solved = await client.post("/api/v1/auth/sms/code", json={"phone": PHONE, "captchaToken": "solved"})
    assert answers == [201, 201, 201]
    assert fourth.status_code == 429
    assert fourth.json()["code"] == "auth.captcha_required"
    assert wrong.json()["code"] == "auth.captcha_required"
    assert solved.status_code == 201
    assert len(h.sms.sent) == 4


async def test_operators_link_doctors_to_practitioners_and_me_shows_them(h: AccountHarness) -> None:
    op_secret = await make_staff(h, "op.links", frozenset({StaffRole.OPERATOR}))
    dr_secret = await make_staff(h, "dr.zhou", frozenset({StaffRole.DOCTOR}))
    async with asgi_client(h.public) as public:
        op = (await staff_login(public, h, "op.links", op_secret)).json()
        dr = (await staff_login(public, h, "dr.zhou", dr_secret)).json()
        dr_me = (await public.get("/api/v1/staff/me", headers=bearer(dr["accessToken"]))).json()
    async with asgi_client(h.admin) as admin:
        ok = await admin.put(
            f"/api/v1/admin/staff/{dr_me['accountId']}/links",
            headers=bearer(op["accessToken"]),
            json={
                "links": [
                    {"hospitalCode": "H001", "practitionerId": "P-778", "roles": ["doctor"]},
                    {"hospitalCode": "H002", "practitionerId": "P-12", "roles": ["doctor"]},
                ]
            },
        )
        not_held = await admin.put(
            f"/api/v1/admin/staff/{dr_me['accountId']}/links",
            headers=bearer(op["accessToken"]),
            json={"links": [{"hospitalCode": "H001", "practitionerId": "P-1", "roles": ["pharmacist"]}]},
        )
        by_doctor = await admin.put(
            f"/api/v1/admin/staff/{dr_me['accountId']}/links", headers=bearer(dr["accessToken"]), json={"links": []}
        )
    async with asgi_client(h.public) as public:
        me = (await public.get("/api/v1/staff/me", headers=bearer(dr["accessToken"]))).json()
    assert ok.status_code == 200, ok.text
    assert not_held.json()["code"] == "staff.link_roles_invalid"
    assert by_doctor.status_code == 403
    assert [(x["hospitalCode"], x["practitionerId"]) for x in sorted(me["links"], key=lambda x: x["hospitalCode"])] == [
        ("H001", "P-778"),
        ("H002", "P-12"),
    ]
