"""Alipay mini-program messages against the Alipay simulator over real HTTP on loopback (ADR 0007).

The client is ``integrations.alipay.messages.AlipayMessageClient`` on the gateway client; the simulator's
``alipay.open.app.mini.templatemessage.send`` consumes one-time authorisations granted by its
``/test/subscribe-grant`` helper and delivers to the ``messages`` stream (the inbox).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import pytest
from alipay.aop.api.domain.AlipayOpenAppMiniTemplatemessageSendModel import AlipayOpenAppMiniTemplatemessageSendModel
from alipay.aop.api.request.AlipayOpenAppMiniTemplatemessageSendRequest import (
    AlipayOpenAppMiniTemplatemessageSendRequest,
)

from domain.account.ports import ProviderUnavailableError
from domain.kernel.errors import ForbiddenError, ValidationError
from integrations.alipay import (
    AlipayBadSignatureError,
    AlipayBusinessError,
    AlipayMessageClient,
    AlipayMessageRefusedError,
    AlipayMessageRejectedError,
    AlipayMisconfiguredError,
    AlipayRateLimitedError,
    AlipayUnavailableError,
)
from integrations.alipay.messages import TEMPLATE_MESSAGE_METHOD
from sandbox.alipay import (
    MESSAGES,
    NOT_SUBSCRIBED_SUB_CODE,
    AlipaySimulator,
    GatewayCall,
    GatewayFailure,
    MethodHandler,
)
from tests.contract import test_alipay
from tests.contract.test_alipay import APP_ID, OTHER_APP_ID, AlipaySandbox, public_pem

TEMPLATE = "MDI4YzIxMDE2M2I5YTQzYjUxNWE4MjA4NmU1MTIyYmM="
USER_ID = "2088000000000042"
OPEN_ID = "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"
FIELDS = {"keyword1": "市第一人民医院 心内科", "keyword2": "2025-03-02 09:30", "keyword3": "请提前15分钟到达"}


served = test_alipay.served
"""test_alipay's fixture: one simulator served over loopback for this module, as for that one."""


@pytest.fixture
async def sandbox(served: AlipaySandbox) -> AlipaySandbox:
    """A fresh simulator per test: one app in user_id mode, no users, grants, faults or records."""
    await served.reset()
    served.simulator.refused_sub_code = NOT_SUBSCRIBED_SUB_CODE
    return served


def messages_client(sandbox: AlipaySandbox, **kwargs: Any) -> AlipayMessageClient:
    options = {key: kwargs.pop(key) for key in ("max_value_length", "default_page") if key in kwargs}
    return AlipayMessageClient(sandbox.client(**kwargs), **options)


async def grant(sandbox: AlipaySandbox, **body: Any) -> dict[str, Any]:
    response = await sandbox.admin.post("/sandbox/alipay/test/subscribe-grant", json={"templateId": TEMPLATE, **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def inbox(sandbox: AlipaySandbox) -> list[dict[str, Any]]:
    response = await sandbox.admin.get("/sandbox/admin/alipay/requests", params={"stream": MESSAGES})
    assert response.status_code == 200, response.text
    return [entry["data"] for entry in response.json()["entries"]]


async def gateway_forms(sandbox: AlipaySandbox) -> list[dict[str, str]]:
    """The merged parameters of every gateway call the simulator received."""
    return [
        dict(parse_qsl(entry["query"])) | dict(parse_qsl(entry["body"]))
        for entry in await sandbox.requests()
        if entry["path"] == "/gateway.do"
    ]


def remaining(sandbox: AlipaySandbox, user_id: str = USER_ID, app_id: str = APP_ID) -> int:
    return sandbox.simulator.remaining_grants(TEMPLATE, app_id=app_id, user_id=user_id)


# -- delivery ---------------------------------------------------------------------------------------------------------


async def test_a_granted_message_reaches_the_inbox_once(sandbox: AlipaySandbox) -> None:
    granted = await grant(sandbox, userId=USER_ID, keywords=3)
    assert granted == {"appId": APP_ID, "templateId": TEMPLATE, "remaining": 1, "userId": USER_ID}
    client = messages_client(sandbox)

    receipt = await client.send_subscribe_message(USER_ID, TEMPLATE, FIELDS, page="pages/booking/detail?id=1")

    assert len(receipt) == 32
    int(receipt, 16)
    assert await inbox(sandbox) == [
        {
            "appId": APP_ID,
            "userId": USER_ID,
            "toUserId": USER_ID,
            "templateId": TEMPLATE,
            "page": "pages/booking/detail?id=1",
            "data": FIELDS,
        }
    ]
    assert remaining(sandbox) == 0
    (form,) = await gateway_forms(sandbox)
    assert form["method"] == "alipay.open.app.mini.templatemessage.send"
    biz = json.loads(form["biz_content"])
    assert set(biz) == {"to_user_id", "user_template_id", "page", "data"}, "no form_id for subscribe templates"
    assert isinstance(biz["data"], str), "data is a JSON string, as Alipay's models declare it"
    assert json.loads(biz["data"]) == {key: {"value": value} for key, value in FIELDS.items()}

    with pytest.raises(AlipayMessageRefusedError) as refused:
        await client.send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert isinstance(refused.value, ForbiddenError), "final: the channel counts the authorisation as spent"
    assert refused.value.extra["sub_code"] == NOT_SUBSCRIBED_SUB_CODE
    assert len(await inbox(sandbox)) == 1
    assert len(await gateway_forms(sandbox)) == 2, "a refusal is not retried by the client"

    assert (await grant(sandbox, userId=USER_ID))["remaining"] == 1
    await client.send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert len(await inbox(sandbox)) == 2


async def test_each_grant_is_one_send(sandbox: AlipaySandbox) -> None:
    await grant(sandbox, userId=USER_ID, count=2)
    client = messages_client(sandbox)
    first = await client.send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    second = await client.send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert first != second, "local receipts are unique"
    with pytest.raises(AlipayMessageRefusedError):
        await client.send_subscribe_message(USER_ID, TEMPLATE, FIELDS)


async def test_without_any_grant_the_message_is_refused(sandbox: AlipaySandbox) -> None:
    await grant(sandbox, userId="2088000000000007")
    with pytest.raises(AlipayMessageRefusedError):
        await messages_client(sandbox).send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert await inbox(sandbox) == []


async def test_the_page_defaults_to_the_home_page(sandbox: AlipaySandbox) -> None:
    await grant(sandbox, userId=USER_ID, count=2)
    await messages_client(sandbox).send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    await messages_client(sandbox, default_page=None).send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert [message["page"] for message in await inbox(sandbox)] == ["pages/index/index", None]


async def test_open_id_apps_are_addressed_by_open_id(sandbox: AlipaySandbox) -> None:
    await sandbox.configure_app(APP_ID, mode="open_id")
    granted = await grant(sandbox, openId=OPEN_ID)
    assert granted["openId"] == OPEN_ID
    assert "userId" not in granted
    login = await sandbox.login().exchange_auth_code((await sandbox.auth_code(openId=OPEN_ID))["authCode"])
    assert login.open_id == OPEN_ID, "the same person the mini-program logged in as"

    await messages_client(sandbox).send_subscribe_message(OPEN_ID, TEMPLATE, FIELDS)

    (message,) = await inbox(sandbox)
    assert message["toOpenId"] == OPEN_ID
    assert "toUserId" not in message
    (form,) = [form for form in await gateway_forms(sandbox) if form["method"] == TEMPLATE_MESSAGE_METHOD]
    assert set(json.loads(form["biz_content"])) == {"to_open_id", "user_template_id", "page", "data"}

    with pytest.raises(AlipayMessageRejectedError) as rejected:
        await messages_client(sandbox).send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert rejected.value.extra["sub_code"] == "isv.invalid-parameter", "user ids are not for open_id apps"


async def test_authorisations_belong_to_their_app(sandbox: AlipaySandbox) -> None:
    await sandbox.configure_app(OTHER_APP_ID, publicKeyPem=public_pem("app2").decode())
    await grant(sandbox, userId=USER_ID, appId=OTHER_APP_ID)
    with pytest.raises(AlipayMessageRejectedError) as rejected:
        await messages_client(sandbox).send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert rejected.value.extra["sub_code"] == "USER_TEMPLATE_ILLEGAL", "the template is the other app's"
    other = messages_client(sandbox, app_id=OTHER_APP_ID, app_key="app2")
    await other.send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert [message["appId"] for message in await inbox(sandbox)] == [OTHER_APP_ID]


async def test_seeding_forgets_authorisations(sandbox: AlipaySandbox) -> None:
    await grant(sandbox, userId=USER_ID)
    assert (await sandbox.admin.post("/sandbox/admin/alipay/seed", json={"seed": 1})).status_code == 200
    with pytest.raises(AlipayMessageRejectedError) as rejected:
        await messages_client(sandbox).send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert rejected.value.extra["sub_code"] == "USER_TEMPLATE_ILLEGAL"


# -- bad template data ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"keyword1": "复" * 51}, id="over-50-characters"),
        pytest.param({"keyword1": "  "}, id="blank"),
        pytest.param({}, id="no-keywords"),
        pytest.param({"keyword1": "a", "keyword3": "c"}, id="gap"),
        pytest.param({"thing1": "a"}, id="wechat-style-key"),
        pytest.param({"keyword0": "a"}, id="keyword0"),
    ],
)
async def test_bad_data_is_rejected_before_sending(sandbox: AlipaySandbox, fields: dict[str, str]) -> None:
    await grant(sandbox, userId=USER_ID)
    with pytest.raises(AlipayMessageRejectedError) as rejected:
        await messages_client(sandbox).send_subscribe_message(USER_ID, TEMPLATE, fields)
    assert isinstance(rejected.value, ValidationError), "final"
    assert await gateway_forms(sandbox) == []
    assert remaining(sandbox) == 1


async def test_fifty_characters_pass_and_the_limit_is_configurable(sandbox: AlipaySandbox) -> None:
    await grant(sandbox, userId=USER_ID)
    with pytest.raises(AlipayMessageRejectedError):
        await messages_client(sandbox, max_value_length=10).send_subscribe_message(
            USER_ID, TEMPLATE, {"keyword1": "复" * 11}
        )
    await messages_client(sandbox).send_subscribe_message(USER_ID, TEMPLATE, {"keyword1": "复" * 50})
    assert (await inbox(sandbox))[0]["data"] == {"keyword1": "复" * 50}


async def test_bad_recipients_and_templates_are_rejected_before_sending(sandbox: AlipaySandbox) -> None:
    client = messages_client(sandbox)
    for recipient, template in [("", TEMPLATE), (f" {USER_ID}", TEMPLATE), (USER_ID, " ")]:
        with pytest.raises(AlipayMessageRejectedError):
            await client.send_subscribe_message(recipient, template, FIELDS)
    with pytest.raises(AlipayMessageRejectedError):
        await client.send_subscribe_message(OPEN_ID, TEMPLATE, FIELDS, recipient="user_id")
    assert await gateway_forms(sandbox) == []


@pytest.mark.parametrize(
    ("keywords", "fields", "sub_code"),
    [
        pytest.param(3, {"keyword1": "a", "keyword2": "b"}, "USER_TEMPLATE_LACK_KEYWORD", id="missing-keyword"),
        pytest.param(1, {"keyword1": "a", "keyword2": "b"}, "USER_TEMPLATE_LACK_KEYWORD", id="extra-keyword"),
        pytest.param(1, {"keyword1": "复" * 51}, "USER_KEYWORD_LENGTH_ERROR", id="over-50-characters"),
    ],
)
async def test_data_breaking_the_template_is_rejected_by_the_sandbox(
    sandbox: AlipaySandbox, keywords: int, fields: dict[str, str], sub_code: str
) -> None:
    await grant(sandbox, userId=USER_ID, keywords=keywords)
    lenient = messages_client(sandbox, max_value_length=500)
    with pytest.raises(AlipayMessageRejectedError) as rejected:
        await lenient.send_subscribe_message(USER_ID, TEMPLATE, fields)
    assert rejected.value.extra == {"method": TEMPLATE_MESSAGE_METHOD, "alipay_code": "40004", "sub_code": sub_code}
    assert remaining(sandbox) == 1, "a rejected message does not use the authorisation"
    assert await inbox(sandbox) == []


async def test_an_unknown_template_is_illegal(sandbox: AlipaySandbox) -> None:
    await grant(sandbox, userId=USER_ID)
    with pytest.raises(AlipayMessageRejectedError) as rejected:
        await messages_client(sandbox).send_subscribe_message(USER_ID, "NOT-A-TEMPLATE", FIELDS)
    assert rejected.value.extra["sub_code"] == "USER_TEMPLATE_ILLEGAL"


async def test_the_sandbox_checks_raw_data_too(sandbox: AlipaySandbox) -> None:
    """What another client might send: data as an object (accepted) or malformed (40002)."""
    await grant(sandbox, userId=USER_ID, count=2)
    client = sandbox.client()
    base = {"to_user_id": USER_ID, "user_template_id": TEMPLATE}
    await client.call(TEMPLATE_MESSAGE_METHOD, biz_content={**base, "data": {"keyword1": {"value": "x"}}})
    for data in ["{not json", json.dumps({"keyword1": "x"}), json.dumps(["keyword1"])]:
        with pytest.raises(AlipayBusinessError) as caught:
            await client.call(TEMPLATE_MESSAGE_METHOD, biz_content={**base, "data": data})
        assert (caught.value.alipay_code, caught.value.sub_code) == ("40002", "isv.invalid-parameter")
    assert remaining(sandbox) == 1


# -- the gateway's own refusals, the transport ----------------------------------------------------------------------


async def test_a_request_signed_with_the_wrong_app_key_is_refused(sandbox: AlipaySandbox) -> None:
    await grant(sandbox, userId=USER_ID)
    with pytest.raises(AlipayMisconfiguredError) as caught:
        await messages_client(sandbox, app_key="not-the-registered-one").send_subscribe_message(
            USER_ID, TEMPLATE, FIELDS
        )
    assert caught.value.sub_code == "isv.invalid-signature"
    assert isinstance(caught.value, ProviderUnavailableError), "our setup: retried later, never sent as is"
    assert remaining(sandbox) == 1, "refused before the method ran"
    assert await inbox(sandbox) == []


async def test_an_unknown_app_is_refused(sandbox: AlipaySandbox) -> None:
    with pytest.raises(AlipayMisconfiguredError) as caught:
        await messages_client(sandbox, app_id="2021999999999999").send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert caught.value.sub_code == "isv.invalid-app-id"


async def test_an_answer_under_another_alipay_key_is_not_trusted(sandbox: AlipaySandbox) -> None:
    await grant(sandbox, userId=USER_ID)
    with pytest.raises(AlipayBadSignatureError):
        await messages_client(sandbox, alipay_public_key_pem=public_pem("impostor")).send_subscribe_message(
            USER_ID, TEMPLATE, FIELDS
        )


async def test_a_server_error_means_unavailable(sandbox: AlipaySandbox) -> None:
    await grant(sandbox, userId=USER_ID)
    await sandbox.set_faults(
        {"inbound": {"errorRate": 1.0, "errorStatus": 502, "errorBody": "bad gateway", "pathPrefix": "/gateway"}}
    )
    with pytest.raises(AlipayUnavailableError) as caught:
        await messages_client(sandbox).send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert caught.value.code == "alipay.unavailable"
    assert remaining(sandbox) == 1


async def test_a_timeout_and_an_unreachable_gateway_mean_unavailable(sandbox: AlipaySandbox) -> None:
    await sandbox.set_faults({"inbound": {"timeoutRate": 1.0, "timeoutSeconds": 3.0, "pathPrefix": "/gateway"}})
    with pytest.raises(AlipayUnavailableError):
        await messages_client(sandbox, timeout_seconds=0.3).send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    with pytest.raises(AlipayUnavailableError):
        await messages_client(sandbox, gateway_url="http://127.0.0.1:9/gateway.do").send_subscribe_message(
            USER_ID, TEMPLATE, FIELDS
        )


def _answering(failure: GatewayFailure) -> MethodHandler:
    async def handler(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
        raise failure

    return handler


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        pytest.param(
            GatewayFailure("20000", "Service Currently Unavailable", "isp.unknow-error", "服务暂不可用"),
            AlipayUnavailableError,
            id="20000",
        ),
        pytest.param(
            GatewayFailure("40004", "Business Failed", "isp.unknow-error", "系统繁忙"),
            AlipayUnavailableError,
            id="40004-isp",
        ),
        pytest.param(
            GatewayFailure("40004", "Business Failed", "SYSTEM_ERROR", "系统错误"),
            AlipayUnavailableError,
            id="40004-system-error",
        ),
        pytest.param(
            GatewayFailure("40005", "Call Limited", "isv.method-call-limited", "API调用次数超限，包含调用频率超限"),
            AlipayRateLimitedError,
            id="40005-method",
        ),
        pytest.param(
            GatewayFailure("40005", "Call Limited", "isv.app-call-limited", "应用调用次数超限，包含调用频率超限"),
            AlipayRateLimitedError,
            id="40005-app",
        ),
        pytest.param(
            GatewayFailure("40006", "Insufficient Permissions", "isv.insufficient-isv-permissions", "ISV权限不足"),
            AlipayMisconfiguredError,
            id="40006-message-product-not-bound",
        ),
        pytest.param(
            GatewayFailure("40004", "Business Failed", "FORM_ID_OVER_TIME", "formId超时"),
            AlipayMessageRejectedError,
            id="40004-documented",
        ),
        pytest.param(
            GatewayFailure("40004", "Business Failed", "SOMETHING_NEW", "未知业务错误"),
            AlipayMessageRejectedError,
            id="40004-unknown",
        ),
    ],
)
async def test_failure_answers_map_to_our_errors(
    sandbox: AlipaySandbox, failure: GatewayFailure, expected: type[Exception]
) -> None:
    sandbox.simulator.methods[TEMPLATE_MESSAGE_METHOD] = _answering(failure)
    with pytest.raises(expected) as caught:
        await messages_client(sandbox).send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert type(caught.value) is expected
    transient = expected in (AlipayUnavailableError, AlipayRateLimitedError, AlipayMisconfiguredError)
    assert isinstance(caught.value, ProviderUnavailableError) is transient


async def test_the_refusal_sub_codes_are_configurable(sandbox: AlipaySandbox) -> None:
    sandbox.simulator.refused_sub_code = "SOME_OTHER_CODE"
    client = AlipayMessageClient(sandbox.client(), refused_sub_codes={"SOME_OTHER_CODE"})
    await grant(sandbox, userId=USER_ID)
    await client.send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    with pytest.raises(AlipayMessageRefusedError) as refused:
        await client.send_subscribe_message(USER_ID, TEMPLATE, FIELDS)
    assert refused.value.extra["sub_code"] == "SOME_OTHER_CODE"


# -- the grant helper, the official SDK as oracle --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"userId": USER_ID, "openId": OPEN_ID}, 400, id="both-ids"),
        pytest.param({}, 400, id="no-id"),
        pytest.param({"userId": "12345"}, 400, id="bad-user-id"),
        pytest.param({"openId": OPEN_ID}, 400, id="open-id-on-a-user-id-app"),
        pytest.param({"userId": USER_ID, "appId": "2021999999999999"}, 404, id="unknown-app"),
        pytest.param({"userId": USER_ID, "count": 0}, 400, id="zero-count"),
        pytest.param({"userId": USER_ID, "templateId": ""}, 400, id="empty-template"),
    ],
)
async def test_the_grant_helper_refuses_nonsense(sandbox: AlipaySandbox, body: dict[str, Any], status: int) -> None:
    response = await sandbox.admin.post("/sandbox/alipay/test/subscribe-grant", json={"templateId": TEMPLATE, **body})
    assert response.status_code == status, response.text


async def test_biz_content_matches_the_official_sdk_model(sandbox: AlipaySandbox) -> None:
    """alipay-sdk-python as oracle: our method name and every biz_content field are the SDK's."""
    assert AlipayOpenAppMiniTemplatemessageSendRequest().get_params()["method"] == TEMPLATE_MESSAGE_METHOD
    client = messages_client(sandbox)
    assert client.app_id == APP_ID
    for recipient in (USER_ID, OPEN_ID):
        content = client.biz_content(recipient, TEMPLATE, FIELDS, page="pages/a/b")
        model = AlipayOpenAppMiniTemplatemessageSendModel.from_alipay_dict(content)
        assert model.to_alipay_dict() == content


# -- the notification channel ----------------------------------------------------------------------------------------


async def test_the_notification_channel_sends_title_and_body_and_treats_a_spent_grant_as_quota(
    sandbox: AlipaySandbox,
) -> None:
    """Issue notifications: an Alipay message once per authorisation; without one it is skipped (and a
    transactional or urgent event falls over to SMS), like WeChat's 43101."""
    from domain.notification.model import Channel
    from domain.notification.ports import Address, ChannelQuotaError
    from domain.notification.templates import REGISTRY
    from integrations.channels import AlipayMessageChannel

    notice = "tmpl-service-notice"
    await grant(sandbox, userId=USER_ID, templateId=notice, keywords=2)
    channel = AlipayMessageChannel({APP_ID: messages_client(sandbox)}, {APP_ID: notice})
    rendered = REGISTRY.render(
        "account.logged_in", Channel.ALIPAY_MESSAGE, {"time": "2026-11-22 10:00", "device": "iPhone 16"}
    )
    provider, receipt = await channel.send(Address(Channel.ALIPAY_MESSAGE, APP_ID, USER_ID), None, rendered)
    assert provider == "alipay"
    assert len(receipt) == 32
    (delivered,) = await inbox(sandbox)
    assert delivered["data"] == dict(rendered.fields)
    assert delivered["data"]["keyword1"] == rendered.title
    assert len(rendered.body) > 50, "this notice is longer than a keyword"
    assert delivered["data"]["keyword2"] == rendered.body[:49] + "…"
    with pytest.raises(ChannelQuotaError):
        await channel.send(Address(Channel.ALIPAY_MESSAGE, APP_ID, USER_ID), None, rendered)
