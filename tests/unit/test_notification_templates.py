"""Templates render in Chinese with their variables, and WeChat's keyword rules hold before sending
(a value breaking them would be refused with 47003)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.notification.model import Channel, EventClass
from domain.notification.templates import (
    REGISTRY,
    FieldKind,
    NotificationTemplate,
    TemplateValueError,
    WechatField,
    fit_field,
)


def test_the_new_device_notice_renders_for_every_channel() -> None:
    values = {"time": "2026-11-22 09:30", "device": "iPhone 15 微信"}
    wechat = REGISTRY.render("account.logged_in", Channel.WECHAT_SUBSCRIBE, values)
    sms = REGISTRY.render("account.logged_in", Channel.SMS, values)
    push = REGISTRY.render("account.logged_in", Channel.APP_PUSH, values)
    assert wechat.fields == {"thing1": "新设备登录", "time2": "2026-11-22 09:30", "thing3": "iPhone 15 微信"}
    assert sms.fields == {"time": "2026-11-22 09:30", "device": "iPhone 15 微信"}
    assert push.title == "账号登录提醒"
    assert "iPhone 15 微信" in push.body
    assert REGISTRY.get("account.logged_in").event_class is EventClass.TRANSACTIONAL


@given(st.text(min_size=1, max_size=80).filter(lambda s: s.strip()))
def test_a_thing_is_always_at_most_20_characters(value: str) -> None:
    assert len(fit_field(FieldKind.THING, value)) <= 20


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (FieldKind.TIME, "25:00"),
        (FieldKind.NUMBER, "12a"),
        (FieldKind.AMOUNT, "12.345"),
        (FieldKind.PHRASE, "已经完成预约了"),
        (FieldKind.NAME, "欧阳诸葛司马慕容上官复姓"),
        (FieldKind.CHARACTER_STRING, "x" * 33),
        (FieldKind.THING, "   "),
    ],
)
def test_values_that_break_a_keyword_rule_are_refused(kind: FieldKind, value: str) -> None:
    with pytest.raises(TemplateValueError):
        fit_field(kind, value)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (FieldKind.TIME, "2026年11月22日 09:30"),
        (FieldKind.DATE, "2026-11-22"),
        (FieldKind.AMOUNT, "¥25.00"),
        (FieldKind.PHRASE, "已签到"),
        (FieldKind.NAME, "张三"),
        (FieldKind.PHONE_NUMBER, "138-0013-8000"),
    ],
)
def test_values_within_the_rules_pass(kind: FieldKind, value: str) -> None:
    assert fit_field(kind, value) == value


def test_missing_variables_and_undeclared_placeholders_are_caught() -> None:
    with pytest.raises(TemplateValueError):
        REGISTRY.render("account.logged_in", Channel.SMS, {"time": "09:30"})
    with pytest.raises(ValueError, match="undeclared"):
        NotificationTemplate(event="x", event_class=EventClass.NORMAL, variables=("a",), title="{a}", body="{b}")
    with pytest.raises(ValueError, match="undeclared"):
        NotificationTemplate(
            event="y",
            event_class=EventClass.NORMAL,
            variables=(),
            title="t",
            body="b",
            wechat_template="w",
            wechat_fields=(WechatField("thing1", FieldKind.THING, "who"),),
        )
