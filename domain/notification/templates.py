"""Message templates per event and channel, in Chinese, with typed variables (issue: notifications).

WeChat subscribe messages refuse values that break their keyword's rule (errcode 47003), so each field is
checked, or fitted where a shorter form keeps the meaning (a ``thing`` is cut to 20 characters with an
ellipsis), before anything is sent. The rules follow WeChat's published keyword table for subscribe messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from string import Formatter

from domain.kernel.errors import ValidationError
from domain.notification.model import Channel, EventClass


class FieldKind(StrEnum):
    THING = "thing"  # <= 20 characters
    NUMBER = "number"  # <= 32 digits, may have a decimal point
    LETTER = "letter"  # <= 32 letters
    SYMBOL = "symbol"  # <= 5 symbols
    CHARACTER_STRING = "character_string"  # <= 32 letters, digits and symbols
    TIME = "time"  # 24-hour time, optionally with a date
    DATE = "date"
    AMOUNT = "amount"  # a number with at most 2 decimals, optional currency sign or 元
    PHONE_NUMBER = "phone_number"  # <= 17 digits and symbols
    NAME = "name"  # <= 10 Chinese characters or 20 letters
    PHRASE = "phrase"  # <= 5 Chinese characters


class TemplateValueError(ValidationError):
    code = "notification.template_value_invalid"
    message = "消息内容不符合模板要求"


_CJK = re.compile(r"^[\u4e00-\u9fff]+$")
_RULES: dict[FieldKind, re.Pattern[str]] = {
    FieldKind.NUMBER: re.compile(r"^\d{1,32}(\.\d+)?$"),
    FieldKind.LETTER: re.compile(r"^[A-Za-z]{1,32}$"),
    FieldKind.SYMBOL: re.compile(r"^[^\w\s]{1,5}$"),
    FieldKind.CHARACTER_STRING: re.compile(r"^[\x21-\x7e]{1,32}$"),
    FieldKind.TIME: re.compile(
        r"^(\d{4}年\d{1,2}月\d{1,2}日 |\d{4}-\d{2}-\d{2} )?([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?$"
    ),
    FieldKind.DATE: re.compile(r"^(\d{4}年\d{1,2}月\d{1,2}日|\d{4}-\d{2}-\d{2})( ([01]?\d|2[0-3]):[0-5]\d)?$"),
    FieldKind.AMOUNT: re.compile(r"^[¥￥]?\d{1,10}(\.\d{1,2})?元?$"),
    FieldKind.PHONE_NUMBER: re.compile(r"^[\d+\-() ]{1,17}$"),
}


def fit_field(kind: FieldKind, value: str) -> str:
    """The value as WeChat will accept it, or TemplateValueError."""
    text = value.strip()
    if not text:
        raise TemplateValueError(f"empty {kind.value}")
    if kind is FieldKind.THING:
        return text if len(text) <= 20 else text[:19] + "…"
    if kind is FieldKind.NAME:
        limit = 10 if _CJK.match(text) else 20
        if len(text) > limit:
            raise TemplateValueError(f"name longer than {limit}")
        return text
    if kind is FieldKind.PHRASE:
        if len(text) > 5 or not _CJK.match(text):
            raise TemplateValueError("a phrase is at most 5 Chinese characters")
        return text
    if not _RULES[kind].match(text):
        raise TemplateValueError(f"not a valid {kind.value}")
    return text


@dataclass(frozen=True, slots=True)
class WechatField:
    key: str
    """The template's keyword, e.g. ``thing1``, ``time2``."""
    kind: FieldKind
    source: str
    """A template variable, or a literal text prefixed ``=``."""


@dataclass(frozen=True, slots=True)
class NotificationTemplate:
    event: str
    event_class: EventClass
    variables: tuple[str, ...]
    title: str
    body: str
    """Chinese text with ``{variable}`` placeholders, used by SMS and push."""
    sms_template: str | None = None
    """Our SMS template name (each provider maps it to its approved template)."""
    wechat_template: str | None = None
    """The name of the WeChat subscribe template in configuration (its id differs per mini-program)."""
    wechat_fields: tuple[WechatField, ...] = ()
    page: str | None = None

    def __post_init__(self) -> None:
        used = {name for _, name, _, _ in Formatter().parse(self.title + self.body) if name}
        sources = {f.source for f in self.wechat_fields if not f.source.startswith("=")}
        unknown = (used | sources) - set(self.variables)
        if unknown:
            raise ValueError(f"template {self.event} uses undeclared variables {sorted(unknown)}")

    @property
    def channels(self) -> frozenset[Channel]:
        found = {Channel.APP_PUSH, Channel.ALIPAY_MESSAGE}
        if self.sms_template:
            found.add(Channel.SMS)
        if self.wechat_template:
            found.add(Channel.WECHAT_SUBSCRIBE)
        return frozenset(found)


@dataclass(frozen=True, slots=True)
class Rendered:
    channel: Channel
    title: str
    body: str
    fields: Mapping[str, str] = field(default_factory=dict)
    """WeChat keyword values, or the SMS template parameters in order."""


class TemplateRegistry:
    def __init__(self) -> None:
        self._templates: dict[str, NotificationTemplate] = {}

    def register(self, template: NotificationTemplate) -> NotificationTemplate:
        if template.event in self._templates:
            raise ValueError(f"a template for {template.event} exists")
        self._templates[template.event] = template
        return template

    def get(self, event: str) -> NotificationTemplate:
        template = self._templates.get(event)
        if template is None:
            raise KeyError(f"no template for {event}")
        return template

    def events(self) -> list[str]:
        return sorted(self._templates)

    def render(self, event: str, channel: Channel, values: Mapping[str, str]) -> Rendered:
        template = self.get(event)
        missing = [v for v in template.variables if v not in values]
        if missing:
            raise TemplateValueError(f"missing variables {missing}")
        text = {k: str(values[k]) for k in template.variables}
        title, body = template.title.format(**text), template.body.format(**text)
        if channel is Channel.WECHAT_SUBSCRIBE:
            if not template.wechat_template:
                raise TemplateValueError(f"{event} has no WeChat template")
            fields = {
                f.key: fit_field(f.kind, f.source[1:] if f.source.startswith("=") else text[f.source])
                for f in template.wechat_fields
            }
            return Rendered(channel, title, body, fields)
        if channel is Channel.SMS:
            if not template.sms_template:
                raise TemplateValueError(f"{event} has no SMS template")
            return Rendered(channel, title, body, {k: text[k] for k in template.variables})
        if channel is Channel.ALIPAY_MESSAGE:
            # One service-notice template per mini-program: keyword1 the title, keyword2 the body, each within
            # Alipay's 50-character keyword limit.
            return Rendered(channel, title, body, {"keyword1": _clip(title), "keyword2": _clip(body)})
        return Rendered(channel, title, body)


def _clip(text: str, limit: int = 50) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


REGISTRY = TemplateRegistry()
"""The product's templates; each feature registers its own events here."""

NEW_DEVICE = REGISTRY.register(
    NotificationTemplate(
        event="account.logged_in",
        event_class=EventClass.TRANSACTIONAL,
        variables=("time", "device"),
        title="账号登录提醒",
        body="您的账号于{time}在新设备（{device}）登录。如非本人操作，请立即退出所有设备并联系客服。",
        sms_template="new_device",
        wechat_template="security_notice",
        wechat_fields=(
            WechatField("thing1", FieldKind.THING, "=新设备登录"),
            WechatField("time2", FieldKind.TIME, "time"),
            WechatField("thing3", FieldKind.THING, "device"),
        ),
        page="pages/account/sessions",
    )
)
PHONE_BOUND = REGISTRY.register(
    NotificationTemplate(
        event="account.phone_bound",
        event_class=EventClass.TRANSACTIONAL,
        variables=("time", "phone"),
        title="手机号绑定成功",
        body="您的账号已于{time}绑定手机号{phone}。",
        sms_template="phone_bound",
        wechat_template="security_notice",
        wechat_fields=(
            WechatField("thing1", FieldKind.THING, "=手机号绑定"),
            WechatField("time2", FieldKind.TIME, "time"),
            WechatField("thing3", FieldKind.THING, "phone"),
        ),
        page="pages/account/index",
    )
)
TEST_REMINDER = REGISTRY.register(
    NotificationTemplate(
        event="notification.test",
        event_class=EventClass.TRANSACTIONAL,
        variables=("time", "text"),
        title="测试提醒",
        body="这是一条{time}的测试提醒：{text}",
        sms_template="test_reminder",
        wechat_template="security_notice",
        wechat_fields=(
            WechatField("thing1", FieldKind.THING, "text"),
            WechatField("time2", FieldKind.TIME, "time"),
            WechatField("thing3", FieldKind.THING, "=测试提醒"),
        ),
    )
)
BILL_SETTLED = REGISTRY.register(
    NotificationTemplate(
        event="bill.settled",
        event_class=EventClass.TRANSACTIONAL,
        variables=("hospital", "amount", "time"),
        title="门诊缴费成功",
        body="您在{hospital}的门诊缴费已完成，金额{amount}（{time}）。请按医嘱前往检查、检验或取药。",
        wechat_template="payment_notice",
        wechat_fields=(
            WechatField("thing1", FieldKind.THING, "hospital"),
            WechatField("amount2", FieldKind.AMOUNT, "amount"),
            WechatField("time3", FieldKind.TIME, "time"),
            WechatField("thing4", FieldKind.THING, "=门诊缴费成功"),
        ),
        page="pages/bills/payments",
    )
)
BILL_REFUNDED = REGISTRY.register(
    NotificationTemplate(
        event="bill.refunded",
        event_class=EventClass.TRANSACTIONAL,
        variables=("hospital", "amount", "time"),
        title="门诊缴费已退款",
        body="您在{hospital}的门诊缴费未能完成，已付{amount}已于{time}原路退回。如需缴费请重新发起或到收费窗口办理。",
        wechat_template="payment_notice",
        wechat_fields=(
            WechatField("thing1", FieldKind.THING, "hospital"),
            WechatField("amount2", FieldKind.AMOUNT, "amount"),
            WechatField("time3", FieldKind.TIME, "time"),
            WechatField("thing4", FieldKind.THING, "=缴费未完成，已退款"),
        ),
        page="pages/bills/payments",
    )
)


def _booking(event: str, event_class: EventClass, title: str, body: str, status: str) -> NotificationTemplate:
    """A booking message: the hospital, the visit time and what happened (one WeChat template, its ``thing``
    keywords at most 20 characters)."""
    return REGISTRY.register(
        NotificationTemplate(
            event=event,
            event_class=event_class,
            variables=("hospital", "time", "amount", "deadline"),
            title=title,
            body=body,
            wechat_template="booking_notice",
            wechat_fields=(
                WechatField("thing1", FieldKind.THING, "hospital"),
                WechatField("time2", FieldKind.TIME, "time"),
                WechatField("thing3", FieldKind.THING, "=" + status),
            ),
            page="pages/bookings/index",
        )
    )


BOOKING_HELD = _booking(
    "booking.held",
    EventClass.TRANSACTIONAL,
    "预约待支付",
    "您已预约{hospital}{time}的号源，挂号费{amount}，请在{deadline}前完成支付，逾期号源将自动释放。",
    "待支付",
)
BOOKING_CONFIRMED = _booking(
    "booking.confirmed",
    EventClass.TRANSACTIONAL,
    "预约成功",
    "您已成功预约{hospital}{time}的号源，请按时就诊并在就诊前签到。",
    "预约成功",
)
BOOKING_CANCELLED = _booking(
    "booking.cancelled",
    EventClass.TRANSACTIONAL,
    "预约已取消",
    "您在{hospital}{time}的预约已取消，已付费用将原路退回。",
    "已取消",
)
BOOKING_EXPIRED = _booking(
    "booking.expired",
    EventClass.TRANSACTIONAL,
    "预约已失效",
    "您在{hospital}{time}的预约未在规定时间内支付，号源已释放。",
    "未支付，已释放",
)
BOOKING_REFUNDED_LATE = _booking(
    "booking.refunded_late",
    EventClass.TRANSACTIONAL,
    "预约未成功，已退款",
    "您在{hospital}{time}的预约支付晚于时限且号源已被预约，已付{amount}将原路退回。",
    "已退款",
)
BOOKING_CONFIRM_FAILED = _booking(
    "booking.confirm_failed",
    EventClass.URGENT,
    "预约未成功，已退款",
    "医院未能确认您在{hospital}{time}的预约，已付{amount}将原路退回，请重新预约。",
    "预约失败，已退款",
)
BOOKING_SESSION_STOPPED = _booking(
    "booking.session_stopped",
    EventClass.URGENT,
    "医生停诊通知",
    "很抱歉，您预约的{hospital}{time}出诊已停诊，预约已取消，已付费用将原路退回，不计爽约。",
    "停诊，已退款",
)
BOOKING_RESCHEDULED = _booking(
    "booking.rescheduled",
    EventClass.TRANSACTIONAL,
    "改约成功",
    "您的预约已改到{hospital}{time}，原时段的号源已释放，请按新的时间到院签到就诊。",
    "改约成功",
)
BOOKING_NO_SHOW = _booking(
    "booking.no_show",
    EventClass.NORMAL,
    "爽约提醒",
    "您预约的{hospital}{time}的号源未在规定时间内签到，已记爽约一次。多次爽约将暂停网上预约。",
    "未签到，已记爽约",
)
BOOKING_REMINDER_EVENING = _booking(
    "booking.reminder_evening",
    EventClass.NORMAL,
    "明日就诊提醒",
    "您预约了{hospital}{time}的号源，请合理安排时间，携带有效证件按时到院签到就诊。",
    "明日就诊",
)
BOOKING_REMINDER_SOON = _booking(
    "booking.reminder_soon",
    EventClass.NORMAL,
    "就诊提醒",
    "您预约的{hospital}{time}的号源即将开始就诊，请按时到院签到，逾时未签到将记为爽约。",
    "即将就诊",
)


def _waitlist(event: str, event_class: EventClass, title: str, body: str, status: str) -> NotificationTemplate:
    """A waitlist (候补) message: the booking template's keywords, with the offer's deadline in the text."""
    return REGISTRY.register(
        NotificationTemplate(
            event=event,
            event_class=event_class,
            variables=("hospital", "time", "deadline", "minutes"),
            title=title,
            body=body,
            wechat_template="booking_notice",
            wechat_fields=(
                WechatField("thing1", FieldKind.THING, "hospital"),
                WechatField("time2", FieldKind.TIME, "time"),
                WechatField("thing3", FieldKind.THING, "=" + status),
            ),
            page="pages/waitlist/index",
        )
    )


BOOKING_WAITLIST_OFFERED = _waitlist(
    "booking.waitlist_offered",
    EventClass.URGENT,  # sent at once, even in quiet hours: the hold time runs from the delivery
    "候补成功，号源已为您保留",
    "您候补的{hospital}{time}的号源已为您保留，请在{deadline}前（收到本消息后{minutes}分钟内）确认预约并完成支付，"
    "逾时将顺延给下一位候补者。",
    "候补成功，请尽快确认",
)
BOOKING_WAITLIST_LAPSED = _waitlist(
    "booking.waitlist_lapsed",
    EventClass.TRANSACTIONAL,
    "候补号源已顺延",
    "您候补的{hospital}{time}的号源未在{deadline}前确认，已顺延给下一位候补者。如仍需就诊，可重新候补或预约其他时段。",
    "未确认，已顺延",
)
