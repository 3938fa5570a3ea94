"""Alipay mini-program messages (subscribe templates) over the gateway client (protocols §3, ADR 0007).

The method
    ``alipay.open.app.mini.templatemessage.send`` (OpenAPI v2, ``gateway.do``; v3 path
    ``POST /v3/alipay/open/app/mini/templatemessage/send``). Alipay has no separate "subscribe send" method:
    this one method sends payment, form, face-scan *and* subscribe templates ("以及用户订阅消息模板后的触达").
    For a subscribe template ``form_id`` is left out ("订阅消息模板无需传入本参数"). A one-time template gives
    one send per accept of ``my.requestSubscribeMessage``; a long-term one many. The subscription state can be
    read with ``alipay.open.app.messagetemplate.subscribe.query`` (not used here: our own grant count is the
    gate, ADR 0007).

``biz_content``
    ``to_user_id`` (``2088`` + 12 digits) or ``to_open_id`` (apps switched to open ids), ``user_template_id``,
    ``page`` and ``data``: a *string* holding JSON ``{"keyword1": {"value": "..."}, ...}``. The keywords are
    ``keyword1`` .. ``keywordN`` in the order chosen for the template, all of them present; each ``value`` is at
    most 50 characters.

The answer
    ``{"code": "10000", "msg": "Success"}`` and nothing else: no message id, no trace id in the body. So
    ``send_subscribe_message`` returns a *local receipt id* (a random 32-hex id) that names our attempt in the
    delivery log; it cannot be looked up at Alipay.

Failures (``40004 Business Failed`` unless said otherwise)
    * ``USER_TEMPLATE_ILLEGAL`` 模板非法, ``USER_TEMPLATE_LACK_KEYWORD`` 缺少关键词, ``USER_KEYWORD_LENGTH_ERROR``
      关键词超长 (value over 50 characters), ``FORM_ID_NOT_MATCH_APPID``, ``FORM_ID_OVER_TIME``,
      ``TRADE_NO_NOT_MATCH_USERID``: documented; ``AlipayMessageRejectedError`` (final).
    * No subscription / no one-time authorisation left: **the sub_code is not confirmed** (the method's own
      error table was not available to us). ``ASSUMED_REFUSED_SUB_CODES`` holds the stand-in the sandbox
      answers; pass the real code(s) as ``refused_sub_codes`` once known. Until then a real refusal with
      another code still ends as ``AlipayMessageRejectedError``: final either way, only skip-vs-fail differs.
    * ``40005 Call Limited`` with ``isv.app-call-limited`` / ``isv.method-call-limited`` (gateway-wide):
      ``AlipayRateLimitedError``, an ``AlipayUnavailableError`` (retry later).
    * ``20000`` (``isp.unknow-error``, ``aop.unknow-error``), HTTP errors, timeouts, and any ``isp.*`` /
      ``aop.*`` / ``*SYSTEM_ERROR`` sub_code: ``AlipayUnavailableError`` (retry later).
    * Gateway refusals of our own setup (signature, app id, timestamp, ``40006`` permissions):
      ``AlipayMisconfiguredError`` from the gateway client, unchanged. Bad or unsigned answers:
      ``AlipayBadSignatureError`` / ``AlipayBadResponseError``, unchanged.
    * Any other failure answer (unknown ``40004`` sub_code, ``40002 isv.invalid-parameter``...):
      ``AlipayMessageRejectedError`` (a business failure does not heal by retrying).

Sources (looked up for this module)
    * https://opendocs.alipay.com/mini/02cth2 — the method's reference, which every page below links to (its
      text, and so its full sub_code table, was not retrievable here); its older copy
      https://docs.alipay.com/mini/api/templatemessage (to_user_id, form_id, user_template_id, page, data as
      a JSON string; page marked required)
    * https://opendocs.alipay.com/mini/api/requestSubscribeMessage (AlipayDocs/open-docs
      ``mini/api/开放能力API/消息/my.requestSubscribeMessage.md``): one-time vs long-term templates, sending
      from the server after the user subscribed, ``alipay.open.app.messagetemplate.subscribe.query``
    * Alipay's SDK models ``AlipayOpenAppMiniTemplatemessageSendModel`` (alipay/alipay-sdk-net-all v2 and
      ``v3/docs/AlipayOpenAppMiniTemplatemessageApi.md``, alipay/alipay-sdk-java-all, alipay-sdk-python 3.7):
      ``to_open_id``, no form_id for subscribe templates, "value 最长为 50 个字符"; the response has no fields
    * AlipayDocs/open-docs ``support/支付宝小程序/常见问题/`` pages ``USER_KEYWORD_LENGTH_ERROR（关键词超长）``,
      ``USER_TEMPLATE_LACK_KEYWORD（缺少关键词）``, ``USER_TEMPLATE_ILLEGAL（模板非法）``,
      ``TRADE_NO_NOT_MATCH_USERID``, ``FORM_ID_NOT_MATCH_APPID``, ``FORM_ID_OVER_TIME``
    * the gateway's public codes (mirror: https://open.alitrip.com/docs/doc.htm?articleId=105806&docType=1&treeId=262
      for 20000/20001/40001...); ``40005 Call Limited`` with ``isv.app-call-limited`` /
      ``isv.method-call-limited`` as Alipay's gateway error enum lists them (reproduced in several SDKs; no
      first-party page seen)
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection, Mapping
from typing import Final, Literal

from domain.kernel.errors import ForbiddenError, ValidationError
from integrations.alipay.client import AlipayBusinessError, AlipayClient, AlipayUnavailableError

TEMPLATE_MESSAGE_METHOD: Final = "alipay.open.app.mini.templatemessage.send"
DEFAULT_PAGE: Final = "pages/index/index"
"""Sent when no page is given: the older reference lists ``page`` as required."""
MAX_VALUE_LENGTH: Final = 50
"""Documented maximum of one keyword ``value`` (``USER_KEYWORD_LENGTH_ERROR`` beyond)."""

BUSINESS_FAILED_CODE: Final = "40004"
CALL_LIMITED_CODE: Final = "40005"
CALL_LIMITED_SUB_CODES: Final = frozenset({"isv.app-call-limited", "isv.method-call-limited"})

REJECTED_SUB_CODES: Final = frozenset(
    {
        "USER_TEMPLATE_ILLEGAL",
        "USER_TEMPLATE_LACK_KEYWORD",
        "USER_KEYWORD_LENGTH_ERROR",
        "FORM_ID_NOT_MATCH_APPID",
        "FORM_ID_OVER_TIME",
        "TRADE_NO_NOT_MATCH_USERID",
    }
)
"""Documented sub_codes of the method that mean this message can never be sent as is."""

ASSUMED_REFUSED_SUB_CODES: Final = frozenset({"USER_NOT_SUBSCRIBED"})
"""NOT CONFIRMED against Alipay: the sandbox's stand-in for "no subscription / no authorisation left"."""

RecipientKind = Literal["auto", "user_id", "open_id"]

_USER_ID = re.compile(r"2088\d{12}")
_KEYWORD = re.compile(r"keyword([1-9]\d*)")


class AlipayMessageRefusedError(ForbiddenError):
    """The user has no subscription (or no one-time authorisation left) for this template. Final, like
    WeChat 43101: never retry, count the authorisation as spent."""

    code = "alipay.message_refused"
    message = "用户未订阅该消息或已拒收"


class AlipayMessageRejectedError(ValidationError):
    """The message can never be sent as is: an unknown template, missing or extra keywords, a value over the
    limit, a bad recipient id. Raised before sending when our own checks catch it. Final."""

    code = "alipay.message_rejected"
    message = "支付宝消息内容不符合模板要求"


class AlipayRateLimitedError(AlipayUnavailableError):
    """``40005``: the app or the method is over its call quota. Retry later."""

    code = "alipay.rate_limited"


def recipient_field(recipient: str, kind: RecipientKind = "auto") -> str:
    """``to_user_id`` for a ``2088`` + 12 digit user id, ``to_open_id`` otherwise (or as ``kind`` forces).

    Raises ``AlipayMessageRejectedError`` for an empty id or a forced ``user_id`` of the wrong shape.
    """
    if not recipient or recipient != recipient.strip():
        raise AlipayMessageRejectedError("empty or padded Alipay recipient id")
    is_user_id = _USER_ID.fullmatch(recipient) is not None
    if kind == "user_id" and not is_user_id:
        raise AlipayMessageRejectedError("an Alipay user_id is 2088 followed by 12 digits")
    if kind == "open_id" or (kind == "auto" and not is_user_id):
        return "to_open_id"
    return "to_user_id"


def template_data(fields: Mapping[str, str], *, max_value_length: int = MAX_VALUE_LENGTH) -> dict[str, dict[str, str]]:
    """Check the keyword values and shape them as ``{"keywordN": {"value": ...}}``.

    Keys must be ``keyword1`` .. ``keywordN`` without gaps (Alipay wants every keyword of the template);
    values non-blank strings of at most ``max_value_length`` characters.
    """
    if not fields:
        raise AlipayMessageRejectedError("a message needs at least keyword1")
    numbers: list[int] = []
    for key, value in fields.items():
        match = _KEYWORD.fullmatch(key)
        if match is None:
            raise AlipayMessageRejectedError(f"keys are keyword1..keywordN, not {key!r}")
        numbers.append(int(match.group(1)))
        if not isinstance(value, str) or not value.strip():
            raise AlipayMessageRejectedError(f"{key} is empty")
        if len(value) > max_value_length:
            raise AlipayMessageRejectedError(f"{key} is longer than {max_value_length} characters")
    if sorted(numbers) != list(range(1, len(numbers) + 1)):
        raise AlipayMessageRejectedError("keywords must run from keyword1 without gaps")
    return {key: {"value": fields[key]} for key in sorted(fields, key=lambda k: int(k.removeprefix("keyword")))}


def _transient(sub_code: str | None) -> bool:
    return sub_code is not None and (sub_code.startswith(("isp.", "aop.")) or sub_code.upper().endswith("SYSTEM_ERROR"))


class AlipayMessageClient:
    """Sends subscribe-template messages of one mini-program through its ``AlipayClient``."""

    def __init__(
        self,
        client: AlipayClient,
        *,
        max_value_length: int = MAX_VALUE_LENGTH,
        default_page: str | None = DEFAULT_PAGE,
        refused_sub_codes: Collection[str] = ASSUMED_REFUSED_SUB_CODES,
    ) -> None:
        if max_value_length < 1:
            raise ValueError("max_value_length must be positive")
        self._client = client
        self._max_value_length = max_value_length
        self._default_page = default_page
        self._refused = frozenset(refused_sub_codes)

    @property
    def app_id(self) -> str:
        return self._client.app_id

    def biz_content(
        self,
        open_id_or_user_id: str,
        template_id: str,
        fields: Mapping[str, str],
        *,
        page: str | None = None,
        recipient: RecipientKind = "auto",
    ) -> dict[str, object]:
        """The checked ``biz_content`` of one send (raises ``AlipayMessageRejectedError`` when it cannot go)."""
        if not template_id.strip():
            raise AlipayMessageRejectedError("empty user_template_id")
        data = template_data(fields, max_value_length=self._max_value_length)
        content: dict[str, object] = {
            recipient_field(open_id_or_user_id, recipient): open_id_or_user_id,
            "user_template_id": template_id,
            "data": json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        }
        chosen_page = page or self._default_page
        if chosen_page:
            content["page"] = chosen_page
        return content

    async def send_subscribe_message(
        self,
        open_id_or_user_id: str,
        template_id: str,
        fields: Mapping[str, str],
        *,
        page: str | None = None,
        recipient: RecipientKind = "auto",
    ) -> str:
        """``alipay.open.app.mini.templatemessage.send`` for a subscribe template; returns a local receipt id.

        ``fields`` are ``keyword1``.. values. The recipient field follows the id's shape (``2088`` + 12 digits
        is a user id, anything else an open id) unless ``recipient`` says which. Raises
        ``AlipayMessageRefusedError``, ``AlipayMessageRejectedError`` (both final), ``AlipayRateLimitedError``
        or ``AlipayUnavailableError`` (retry later), and the gateway client's own ``ProviderUnavailableError``
        subclasses (misconfiguration, bad signature, bad response).
        """
        content = self.biz_content(open_id_or_user_id, template_id, fields, page=page, recipient=recipient)
        try:
            await self._client.call(TEMPLATE_MESSAGE_METHOD, biz_content=content)
        except AlipayBusinessError as exc:
            raise self._mapped(exc) from exc
        return uuid.uuid4().hex

    def _mapped(self, exc: AlipayBusinessError) -> Exception:
        extra = {"method": TEMPLATE_MESSAGE_METHOD, "alipay_code": exc.alipay_code, "sub_code": exc.sub_code}
        detail = f"{TEMPLATE_MESSAGE_METHOD}: {exc.alipay_code} {exc.sub_code or ''}".strip()
        if exc.sub_code in self._refused:
            return AlipayMessageRefusedError(detail, extra=extra)
        if exc.alipay_code == CALL_LIMITED_CODE or exc.sub_code in CALL_LIMITED_SUB_CODES:
            return AlipayRateLimitedError(detail, extra=extra)
        if _transient(exc.sub_code):
            return AlipayUnavailableError(detail, extra=extra)
        return AlipayMessageRejectedError(detail, extra=extra)
