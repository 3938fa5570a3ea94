"""Alipay notifications, trade request signing and yuan/fen conversion (protocols §3.4-§3.6, §9).

Vectors
    * The real Alipay-signed ``trade_status_sync`` notification, its public key, a second (unverifiable) one
      published as a failing case, and a servicemarket notification signed with ``sign_type``: all from
      alipay/alipay-sdk-nodejs-all ``test/alipay.test.ts``, ``describe('checkNotifySign')`` (the trade
      notification's key is given inline there as ``notifyAlipayPublicKeyV1``; the servicemarket key is
      ``test/fixtures/alipay-notify-sign-public-key-v2.pem``). ``tests/unit/test_alipay_signing.py`` holds the
      same data; they are repeated here on purpose, each test stating its source.
    * The official alipay-sdk-python (``alipay.aop.api``) as an independent oracle for request signing: its
      ``SignatureUtils.get_sign_content`` / ``sign_with_rsa2`` and ``DefaultAlipayClient`` request builder
      (which wants PKCS#1 private keys: the test keys are converted with ``cryptography``).
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, date, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.constant.CommonConstants import THREAD_LOCAL
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.domain.AlipayTradeAppPayModel import AlipayTradeAppPayModel
from alipay.aop.api.domain.AlipayTradeCreateModel import AlipayTradeCreateModel
from alipay.aop.api.domain.AlipayTradeRefundModel import AlipayTradeRefundModel
from alipay.aop.api.request.AlipayTradeAppPayRequest import AlipayTradeAppPayRequest
from alipay.aop.api.request.AlipayTradeCreateRequest import AlipayTradeCreateRequest
from alipay.aop.api.request.AlipayTradeRefundRequest import AlipayTradeRefundRequest
from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2, verify_with_rsa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from domain.kernel.errors import ValidationError
from integrations.alipay import (
    AlipayAmountError,
    AlipayBadResponseError,
    AlipayClient,
    AlipayNotificationError,
    AlipayNotificationMismatchError,
    AlipayTradeClient,
    AlipayTradeRequestError,
    notify_sign_content,
    parse_notification,
    parse_trade_bill,
    rsa2_sign,
    rsa2_verify,
    sign_content,
    sign_params,
    verify_notify,
)
from integrations.alipay.trade import MAX_FEN, parse_alipay_time, to_fen, to_yuan
from tests.support.clock import ManualClock
from tests.unit.test_alipay_signing import NODE_SDK_NOTIFY_KEY, NODE_SDK_SERVICEMARKET_NOTIFY, NODE_SDK_TRADE_NOTIFY

# -- keys ----------------------------------------------------------------------------------------------------------


@cache
def _key(label: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pkcs8(label: str) -> bytes:
    return _key(label).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pkcs1(label: str) -> bytes:
    return _key(label).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def spki(label: str) -> bytes:
    return (
        _key(label)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


# -- published vectors ---------------------------------------------------------------------------------------------

# The published vectors of alipay/alipay-sdk-nodejs-all (test/alipay.test.ts, describe('checkNotifySign')): the
# key and the trade_status_sync notification are the ones the signing tests use.
NODE_TRADE_NOTIFY_KEY = NODE_SDK_NOTIFY_KEY
NODE_TRADE_NOTIFY: dict[str, str] = NODE_SDK_TRADE_NOTIFY

# Same describe, it('verify fail'): another real-looking notification the SDK publishes as NOT verifying under
# notifyAlipayPublicKeyV1 (it was signed for another app).
NODE_FOREIGN_NOTIFY: dict[str, str] = {
    "app_id": "2018121762595097",
    "auth_app_id": "2018121762595097",
    "buyer_id": "2088512613526436",
    "buyer_logon_id": "152****6706",
    "buyer_pay_amount": "0.01",
    "charset": "utf-8",
    "fund_bill_list": '[{"amount":"0.01","fundChannel":"PCREDIT"}]',
    "gmt_create": "2019-05-23 14:13:56",
    "gmt_payment": "2019-05-23 14:17:13",
    "invoice_amount": "0.01",
    "notify_id": "2019052300222141714026431019971405",
    "notify_time": "2019-05-23 14:17:14",
    "notify_type": "trade_status_sync",
    "out_trade_no": "tpxy23962362669658",
    "point_amount": "0.00",
    "receipt_amount": "0.01",
    "seller_email": "myapp@alitest.com",
    "seller_id": "2088331578818800",
    "sign": (
        "T946S2qyNFAXLhAaRgNMmatxH6SO3MyWYFnTamQOgW1iAcheL/Zz+VoizwvEc6mTEwYewvvKS1wNkMQ1oEajMUHv9+cXQ9IFvU/qKS9Ktv"
        "w5xHvCaK0fj7LsVcQ7VxfyT3kSvXUDfKDP4cHSPuSZKwM2ybkzr53bIH9OUTpTQd2d3J0rbdf76OoUt+XF9vwqj7OVE7AGjH2HPWp842D"
        "gL/YVy4qeA9N2uFKRevT3YUskjaRxuI/E66reNjTMFhbjEqGLKvMcDD4BaQXnibq9ojAj60589fBwzKk3yWsVQmqGfksMQoheVMtZ3lAw4"
        "o2ty3TFngbVFFLwgx8FDpBZ9Q=="
    ),
    "sign_type": "RSA2",
    "subject": "tpxy2222896485",
    "total_amount": "0.01",
    "trade_no": "111111112019052322001426431037869358",
    "trade_status": "TRADE_SUCCESS",
    "version": "1.0",
}

# alipay/alipay-sdk-nodejs-all test/fixtures/alipay-notify-sign-public-key-v2.pem
NODE_SERVICEMARKET_KEY = (
    b"-----BEGIN PUBLIC KEY-----\n"
    b"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAk6DCsBIUhWriFohzRV8F\n"
    b"ic6oQWNnLKKILNk97VU5qcHEuxYzCujKoyva5gy1170mFJw4IcgJF8AyS7iDUwzA\n"
    b"wF4Pp9CpWxDhUhe7mdQJhjBmvTcPLGFFrzlj6unO5lAcbdwaxPUtSxOaNxPJGrTK\n"
    b"/wnKQSbjTMMltp1J68q2Tfgrsn/NdZ6lrxO9rvmky8kowqaH5NjntyHO59jCGabM\n"
    b"j5sI14z8N61wB/QuIJrDuzIPMPrSNbq0cOWcSCDG09oUHTp9fk7suDB8UiFcmVTX\n"
    b"OvK3d4HbeX8V9YsEMxrwxEoYgRRj6K2qrC6oxw480cqf2ueumCmHg6xrcgkyXK81\n"
    b"hwIDAQAB\n"
    b"-----END PUBLIC KEY-----"
)

NODE_SERVICEMARKET_NOTIFY: dict[str, str] = NODE_SDK_SERVICEMARKET_NOTIFY  # same file, 'should not delete sign_type'


def _without(params: dict[str, str], *keys: str) -> dict[str, str]:
    return {key: value for key, value in params.items() if key not in keys}


# -- verify_notify: the published vectors --------------------------------------------------------------------------


def test_published_trade_notify_verifies() -> None:
    # alipay-sdk-nodejs-all test/alipay.test.ts: 'with sign_type arguments verify success'
    assert verify_notify(NODE_TRADE_NOTIFY, alipay_public_key_pem=NODE_TRADE_NOTIFY_KEY)
    assert verify_notify(NODE_TRADE_NOTIFY, alipay_public_key_pem=NODE_TRADE_NOTIFY_KEY, try_with_sign_type=False)


def test_published_trade_notify_verifies_without_sign_type() -> None:
    # alipay-sdk-nodejs-all test/alipay.test.ts: 'without sign_type arguments verify success'
    params = _without(NODE_TRADE_NOTIFY, "sign_type")
    assert verify_notify(params, alipay_public_key_pem=NODE_TRADE_NOTIFY_KEY, try_with_sign_type=False)


def test_published_trade_notify_sign_string_leaves_out_sign_type() -> None:
    # alipay-sdk-nodejs-all test/alipay.test.ts: the trade notify verifies only when sign_type is left out.
    signature = NODE_TRADE_NOTIFY["sign"]
    assert rsa2_verify(notify_sign_content(NODE_TRADE_NOTIFY), signature, NODE_TRADE_NOTIFY_KEY)
    assert not rsa2_verify(
        notify_sign_content(NODE_TRADE_NOTIFY, include_sign_type=True), signature, NODE_TRADE_NOTIFY_KEY
    )
    assert not rsa2_verify(sign_content(NODE_TRADE_NOTIFY), signature, NODE_TRADE_NOTIFY_KEY), "request rule"


def test_published_foreign_notify_does_not_verify() -> None:
    # alipay-sdk-nodejs-all test/alipay.test.ts: it('verify fail') under notifyAlipayPublicKeyV1.
    assert not verify_notify(NODE_FOREIGN_NOTIFY, alipay_public_key_pem=NODE_TRADE_NOTIFY_KEY)


def test_published_servicemarket_notify_is_signed_with_sign_type() -> None:
    # alipay-sdk-nodejs-all test/alipay.test.ts: describe('verify sign should not delete sign_type').
    key = NODE_SERVICEMARKET_KEY
    assert verify_notify(NODE_SERVICEMARKET_NOTIFY, alipay_public_key_pem=key)
    assert verify_notify(_without(NODE_SERVICEMARKET_NOTIFY, "sign_type"), alipay_public_key_pem=key), (
        "'without sign_type arguments verify success': sign_type=RSA2 is put back, as the Node SDK does"
    )
    assert not verify_notify(NODE_SERVICEMARKET_NOTIFY, alipay_public_key_pem=key, try_with_sign_type=False)
    tampered = {**NODE_SERVICEMARKET_NOTIFY, "service_code": "58621634111"}  # its it('verify fail')
    assert not verify_notify(tampered, alipay_public_key_pem=key)


@pytest.mark.parametrize("field", sorted(set(NODE_TRADE_NOTIFY) - {"sign", "sign_type"}))
def test_tampering_any_signed_field_of_the_published_notify_fails(field: str) -> None:
    # alipay-sdk-nodejs-all test/alipay.test.ts vector, one field changed, then removed.
    changed = {**NODE_TRADE_NOTIFY, field: NODE_TRADE_NOTIFY[field] + "0"}
    assert not verify_notify(changed, alipay_public_key_pem=NODE_TRADE_NOTIFY_KEY)
    assert not verify_notify(_without(NODE_TRADE_NOTIFY, field), alipay_public_key_pem=NODE_TRADE_NOTIFY_KEY)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"extra_field": "1"}, id="added-field"),
        pytest.param({"sign_type": "RSA"}, id="rsa1"),
        pytest.param({"sign_type": "rsa2"}, id="lowercase-sign-type"),
        pytest.param({"sign": ""}, id="empty-sign"),
        pytest.param({"sign": "not base64!"}, id="garbled-sign"),
        pytest.param({"sign": NODE_FOREIGN_NOTIFY["sign"]}, id="another-signature"),
    ],
)
def test_other_tampering_fails(change: dict[str, str]) -> None:
    # alipay-sdk-nodejs-all test/alipay.test.ts vector.
    assert not verify_notify({**NODE_TRADE_NOTIFY, **change}, alipay_public_key_pem=NODE_TRADE_NOTIFY_KEY)


def test_sign_type_is_excluded_and_empty_values_dropped() -> None:
    # alipay-sdk-nodejs-all test/alipay.test.ts vector: an empty value anywhere is not part of the sign string.
    padded = {**NODE_TRADE_NOTIFY, "passback_params": "", "body": "", "sign_type": ""}
    assert verify_notify(padded, alipay_public_key_pem=NODE_TRADE_NOTIFY_KEY, try_with_sign_type=False)
    assert notify_sign_content(padded) == notify_sign_content(_without(NODE_TRADE_NOTIFY, "sign_type"))


def test_the_notify_needs_the_alipay_key() -> None:
    # alipay-sdk-nodejs-all vectors: neither the other published key nor an app key verifies it.
    assert not verify_notify(NODE_TRADE_NOTIFY, alipay_public_key_pem=NODE_SERVICEMARKET_KEY)
    assert not verify_notify(NODE_TRADE_NOTIFY, alipay_public_key_pem=spki("app"))


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", id="garbled-pem"),
        pytest.param(b"not base64 at all!", id="not-base64"),
    ],
)
def test_an_unusable_key_is_false_not_an_exception(key: bytes) -> None:
    assert verify_notify(NODE_TRADE_NOTIFY, alipay_public_key_pem=key) is False


def test_non_string_values_are_false() -> None:
    params: dict[str, Any] = {**NODE_TRADE_NOTIFY, "fund_bill_list": [{"amount": "0.10"}]}
    assert verify_notify(params, alipay_public_key_pem=NODE_TRADE_NOTIFY_KEY) is False
    assert verify_notify({}, alipay_public_key_pem=NODE_TRADE_NOTIFY_KEY) is False


def test_our_own_notify_signature_round_trip() -> None:
    params = {"out_trade_no": "B1", "total_amount": "25.00", "passback_params": "a%20b%zz", "empty": ""}
    params["sign"] = rsa2_sign(notify_sign_content(params), pkcs8("alipay"))
    params["sign_type"] = "RSA2"
    assert verify_notify(params, alipay_public_key_pem=spki("alipay"), try_with_sign_type=False)
    assert not verify_notify(params, alipay_public_key_pem=spki("app"))


# -- parse_notification --------------------------------------------------------------------------------------------


def test_the_published_notify_parses_into_fen() -> None:
    # alipay-sdk-nodejs-all test/alipay.test.ts vector.
    parsed = parse_notification(
        NODE_TRADE_NOTIFY,
        alipay_public_key_pem=NODE_TRADE_NOTIFY_KEY,
        app_id="2019073166072302",
        seller_id="2088531891668739",
    )
    assert parsed.trade_status == "TRADE_SUCCESS"
    assert (parsed.total_fen, parsed.receipt_fen, parsed.buyer_pay_fen, parsed.refund_fen) == (10, 10, 10, None)
    assert parsed.out_trade_no == "20190815155618536-564-57"
    assert parsed.trade_no == "2019081522001468450512505578"
    assert parsed.notify_id == "2019081500222155624068450559358070"
    assert parsed.gmt_payment == datetime(2019, 8, 15, 7, 56, 24, tzinfo=UTC), "Beijing time, as UTC"
    assert parsed.notify_time == datetime(2019, 8, 15, 7, 56, 25, tzinfo=UTC)
    assert parsed.buyer_id == "2088102534368455"
    assert "2088102534368455" not in repr(parsed), "buyer ids stay out of logs"
    assert parsed.matches("20190815155618536-564-57", 10)
    assert not parsed.matches("20190815155618536-564-57", 100)
    assert not parsed.is_refund


def test_parse_notification_refuses() -> None:
    # alipay-sdk-nodejs-all test/alipay.test.ts vectors.
    key = NODE_TRADE_NOTIFY_KEY
    with pytest.raises(AlipayNotificationMismatchError) as other_app:
        parse_notification(NODE_TRADE_NOTIFY, alipay_public_key_pem=key, app_id="2021000000000001")
    assert other_app.value.code == "alipay.notify_mismatch"
    with pytest.raises(AlipayNotificationMismatchError):
        parse_notification(NODE_TRADE_NOTIFY, alipay_public_key_pem=key, seller_id="2088000000000001")
    with pytest.raises(AlipayNotificationError) as forged:
        parse_notification({**NODE_TRADE_NOTIFY, "total_amount": "1000.10"}, alipay_public_key_pem=key)
    assert forged.value.code == "alipay.notify_invalid"
    assert isinstance(forged.value, ValidationError)
    with pytest.raises(AlipayNotificationError):
        parse_notification(NODE_SERVICEMARKET_NOTIFY, alipay_public_key_pem=NODE_SERVICEMARKET_KEY)


def test_parse_notification_of_a_partial_refund() -> None:
    params = {
        "notify_time": "2025-03-02 10:00:01",
        "notify_type": "trade_status_sync",
        "notify_id": "2025030200222100000000000000000001",
        "app_id": "2021000000000001",
        "trade_no": "2025030122001400000000000001",
        "out_trade_no": "B1",
        "out_biz_no": "R1",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "25.00",
        "refund_fee": "5.5",
        "gmt_refund": "2025-03-02 10:00:00.320",
        "sign_type": "RSA2",
    }
    params["sign"] = rsa2_sign(notify_sign_content(params), pkcs8("alipay"))
    parsed = parse_notification(params, alipay_public_key_pem=spki("alipay"), app_id="2021000000000001")
    assert parsed.is_refund
    assert (parsed.refund_fen, parsed.out_biz_no) == (550, "R1")
    assert parsed.gmt_refund == datetime(2025, 3, 2, 2, 0, 0, 320000, tzinfo=UTC)
    broken = {**params, "refund_fee": "5.555"}
    broken["sign"] = rsa2_sign(notify_sign_content(broken), pkcs8("alipay"))
    with pytest.raises(AlipayNotificationError):
        parse_notification(broken, alipay_public_key_pem=spki("alipay"))


# -- yuan and fen --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fen", "yuan"),
    [(1, "0.01"), (10, "0.10"), (100, "1.00"), (2500, "25.00"), (12345, "123.45"), (MAX_FEN, "100000000.00")],
)
def test_fen_to_yuan_is_exact(fen: int, yuan: str) -> None:
    assert to_yuan(fen) == yuan
    assert to_fen(yuan) == fen


@pytest.mark.parametrize(
    ("yuan", "fen"),
    [
        pytest.param("1", 100, id="no-decimals-accepted"),
        pytest.param("1.5", 150, id="one-decimal-accepted"),
        pytest.param("0", 0, id="zero"),
        pytest.param("0.00", 0, id="zero-two-decimals"),
        pytest.param("007.10", 710, id="leading-zeros"),
    ],
)
def test_exact_amounts_with_fewer_decimals_are_accepted(yuan: str, fen: int) -> None:
    """Decision: an Alipay ``Price`` with 0-2 decimals is an exact amount and is accepted ("1" is 100 fen)."""
    assert to_fen(yuan) == fen


@pytest.mark.parametrize(
    "yuan",
    [
        "1.005",
        "1.000",
        "0.001",
        "-1.00",
        "+1.00",
        "1e2",
        "1E-2",
        " 1.00",
        "1.00 ",
        "1.",
        ".5",
        "",
        "NaN",
        "Infinity",
        "１.００",
        "١",
        "1,000.00",
        "1_000",
        "1234567890123.00",
    ],
)
def test_anything_else_is_refused(yuan: str) -> None:
    with pytest.raises(ValueError, match="yuan"):
        to_fen(yuan)


def test_signed_amounts_only_where_asked() -> None:
    assert to_fen("-5.50", signed=True) == -550
    with pytest.raises(ValueError, match="yuan"):
        to_fen("-5.50")


@pytest.mark.parametrize("bad", [True, 1.0, "100", None])
def test_to_yuan_takes_integer_fen_only(bad: Any) -> None:
    with pytest.raises(TypeError):
        to_yuan(bad)
    with pytest.raises(ValueError, match="negative"):
        to_yuan(-1)


@given(st.integers(min_value=0, max_value=10**14 - 1))
def test_round_trip(fen: int) -> None:
    assert to_fen(to_yuan(fen)) == fen


def test_alipay_times_with_milliseconds() -> None:
    assert parse_alipay_time("2025-03-02 10:00:00.320") == datetime(2025, 3, 2, 2, 0, 0, 320000, tzinfo=UTC)
    with pytest.raises(ValueError, match="fraction"):
        parse_alipay_time("2025-03-02 10:00:00.x")


# -- our requests against the official SDK -------------------------------------------------------------------------

APP_ID = "2021000000000001"
NOTIFY_URL = "https://hsp.example.cn/callbacks/alipay/notify"
EXPIRE = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
"""16:30 Beijing time."""


def _trade_client(clock_at: datetime = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)) -> AlipayTradeClient:
    client = AlipayClient(
        app_id=APP_ID,
        app_private_key_pem=pkcs8("app"),
        alipay_public_key_pem=spki("alipay"),
        gateway_url="http://127.0.0.1:9/gateway.do",
        http=httpx.AsyncClient(trust_env=False),
        clock=ManualClock(clock_at),
    )
    return AlipayTradeClient(client, alipay_public_key_pem=spki("alipay"), http=httpx.AsyncClient(trust_env=False))


def _official_client() -> Any:
    config = AlipayClientConfig()
    config.app_id = APP_ID
    config.app_private_key = pkcs1("app").decode("ascii")  # the official SDK loads PKCS#1 only
    config.alipay_public_key = spki("alipay").decode("ascii")
    THREAD_LOCAL.logger = None
    return DefaultAlipayClient(config)


def test_create_request_signature_equals_the_official_sdk() -> None:
    ours = _trade_client().create_biz_content(
        "B20250301-0001", 2500, "挂号费 内科 张医生", buyer_id="2088000000000042", time_expire=EXPIRE
    )
    model = AlipayTradeCreateModel()
    model.out_trade_no = "B20250301-0001"
    model.total_amount = "25.00"
    model.subject = "挂号费 内科 张医生"
    model.product_code = "JSAPI_PAY"
    model.buyer_id = "2088000000000042"
    model.time_expire = "2025-03-01 16:30:00"
    assert ours == model.to_alipay_dict()

    request = AlipayTradeCreateRequest(biz_model=model)
    request.notify_url = NOTIFY_URL
    common, rest = _official_client()._DefaultAlipayClient__prepare_request_params(request)
    everything = {**common, **rest}
    assert sign_content(everything) == get_sign_content(_without(everything, "sign"))
    assert sign_params(everything, pkcs8("app"))["sign"] == common["sign"], "same params, same RSA2 signature"
    assert common["sign"] == sign_with_rsa2(pkcs1("app").decode("ascii"), sign_content(everything), "utf-8")


def test_open_id_buyers_name_the_mini_program() -> None:
    content = _trade_client().create_biz_content(
        "B1", 1, "挂号费", buyer_open_id="074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5", time_expire=None
    )
    assert content["op_app_id"] == APP_ID
    assert "buyer_id" not in content
    assert "time_expire" not in content
    model = AlipayTradeCreateModel.from_alipay_dict(content)
    assert model.to_alipay_dict() == content, "every field is one the official model knows"


def test_refund_biz_content_is_what_the_official_model_builds() -> None:
    model = AlipayTradeRefundModel()
    model.out_trade_no = "B1"
    model.refund_amount = "5.50"
    model.out_request_no = "R1"
    model.refund_reason = "停诊退费"
    request = AlipayTradeRefundRequest(biz_model=model)
    theirs = json.loads(request.get_params()["biz_content"])
    assert theirs == {
        "out_trade_no": "B1",
        "refund_amount": "5.50",
        "out_request_no": "R1",
        "refund_reason": "停诊退费",
    }
    assert to_yuan(550) == theirs["refund_amount"]


def test_app_order_string_matches_the_official_sdk_execute() -> None:
    ours = _trade_client().app_pay_order_string(
        "B20250301-0002", 2500, "挂号费 内科", time_expire=EXPIRE, notify_url=NOTIFY_URL
    )
    mine = dict(parse_qsl(ours, keep_blank_values=True, strict_parsing=True))
    assert rsa2_verify(sign_content(mine), mine["sign"], spki("app")), "verifies with the app public key"
    assert verify_with_rsa(spki("app").decode("ascii"), sign_content(mine).encode("utf-8"), mine["sign"])
    assert mine["method"] == "alipay.trade.app.pay"
    assert mine["timestamp"] == "2025-03-01 16:00:00"
    assert mine["notify_url"] == NOTIFY_URL

    model = AlipayTradeAppPayModel()
    model.out_trade_no = "B20250301-0002"
    model.total_amount = "25.00"
    model.subject = "挂号费 内科"
    model.product_code = "QUICK_MSECURITY_PAY"
    model.time_expire = "2025-03-01 16:30:00"
    request = AlipayTradeAppPayRequest(biz_model=model)
    request.notify_url = NOTIFY_URL
    theirs = dict(parse_qsl(_official_client().sdk_execute(request), keep_blank_values=True, strict_parsing=True))
    assert set(theirs) - {"format"} == set(mine) - {"format"}
    assert theirs["format"].upper() == mine["format"] == "JSON"
    assert json.loads(theirs["biz_content"]) == json.loads(mine["biz_content"])
    assert sign_params(theirs, pkcs8("app"))["sign"] == theirs["sign"], "their order string under our rule"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"total_fen": 0}, AlipayAmountError, id="zero"),
        pytest.param({"total_fen": MAX_FEN + 1}, AlipayAmountError, id="over-the-maximum"),
        pytest.param({"total_fen": True}, AlipayAmountError, id="bool"),
        pytest.param({"out_trade_no": ""}, AlipayTradeRequestError, id="empty-order-no"),
        pytest.param({"out_trade_no": "B" * 65}, AlipayTradeRequestError, id="long-order-no"),
        pytest.param({"out_trade_no": "B 1"}, AlipayTradeRequestError, id="space-in-order-no"),
        pytest.param({"subject": "a&b"}, AlipayTradeRequestError, id="subject-with-ampersand"),
        pytest.param({"subject": " "}, AlipayTradeRequestError, id="blank-subject"),
        pytest.param({"buyer_id": None}, AlipayTradeRequestError, id="no-buyer"),
        pytest.param({"buyer_open_id": "x"}, AlipayTradeRequestError, id="two-buyers"),
        pytest.param({"buyer_id": "2099000000000042"}, AlipayTradeRequestError, id="not-a-2088-id"),
        pytest.param({"op_app_id": APP_ID}, AlipayTradeRequestError, id="op-app-id-with-buyer-id"),
    ],
)
def test_bad_requests_are_refused_before_sending(kwargs: dict[str, Any], error: type[Exception]) -> None:
    arguments: dict[str, Any] = {
        "out_trade_no": "B1",
        "total_fen": 2500,
        "subject": "挂号费",
        "buyer_id": "2088000000000042",
        "time_expire": None,
        **kwargs,
    }
    with pytest.raises(error):
        _trade_client().create_biz_content(
            arguments.pop("out_trade_no"), arguments.pop("total_fen"), arguments.pop("subject"), **arguments
        )


async def test_bad_refunds_and_bill_dates_are_refused_before_sending() -> None:
    trade = _trade_client()
    with pytest.raises(AlipayAmountError):
        await trade.refund("B1", 0, "R1", "reason")
    with pytest.raises(AlipayTradeRequestError):
        await trade.refund("B1", 100, "R 1", "reason")
    with pytest.raises(AlipayTradeRequestError):
        await trade.refund("B1", 100, "R1", "x" * 257)
    with pytest.raises(AlipayTradeRequestError):
        await trade.bill_download_url(datetime(2025, 3, 1, tzinfo=UTC))
    with pytest.raises(AlipayTradeRequestError):
        await trade.bill_download_url(date(2025, 3, 1), "fund")  # type: ignore[arg-type]
    with pytest.raises(AlipayTradeRequestError):
        trade.app_pay_order_string("B1", 100, "挂号费", time_expire=None, notify_url="ftp://x")


# -- the bill parser -----------------------------------------------------------------------------------------------


def _zip(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_the_bill_parser_reads_the_published_sample_layout() -> None:
    """The layout of a public sample of a daily trade bill (gxitsky.com, "对账-支付宝交易账单数据解析"): ``#``
    lines around the list, half-width brackets, ids padded, one payment. The refund row is our own addition."""
    detail = (
        "#支付宝业务明细查询\r\n#账号：[2088000000000001]\r\n"
        "#起始日期：[2020年07月22日 00:00:00]   终止日期：[2020年07月23日 00:00:00]\r\n"
        "#-----------------------------------------业务明细列表----------------------------------------\r\n"
        "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
        "订单金额(元),商家实收(元),支付宝红包(元),集分宝(元),支付宝优惠(元),商家优惠(元),券核销金额(元),券名称,"
        "商家红包消费金额(元),卡消费金额(元),退款批次号/请求号,服务费(元),分润(元),备注\r\n"
        "2020072222001446491404144491\t,411735000000000000000720\t,交易\t,院内充值,2020-07-22 16:13:11,"
        "2020-07-22 16:14:24, , , , ,**佳(yan***@163.com)\t,1.00,1.00,0.96,0.00,0.00,0.00,0.00,花呗红包,0.00\t,0.00,"
        " ,-0.01,0.00,\r\n"
        "2020072222001446491404144491\t,411735000000000000000720\t,退款\t,院内充值,2020-07-22 16:13:11,"
        "2020-07-22 18:00:00, , , , ,**佳(yan***@163.com)\t,1.00,-0.40,0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,"
        "R1\t,0.00,0.00,\r\n"
        "#-----------------------------------------业务明细列表结束------------------------------------\r\n"
        "#交易合计：1笔，退款合计：1笔\r\n#导出时间：[2020年07月23日 09:00:00]\r\n"
    ).encode("gbk")
    summary = "#支付宝业务汇总查询\r\n门店编号,门店名称,交易订单总笔数\r\n合计,,1\r\n".encode("gbk")
    entries = parse_trade_bill(_zip(**{"a_业务明细(汇总).csv": summary, "a_业务明细.csv": detail}))
    payment, refund = entries
    assert payment.trade_no == "2020072222001446491404144491"
    assert payment.out_trade_no == "411735000000000000000720"
    assert (payment.kind, payment.total_fen, payment.received_fen, payment.service_fee_fen) == ("交易", 100, 100, -1)
    assert payment.finished_at == datetime(2020, 7, 22, 8, 14, 24, tzinfo=UTC)
    assert (refund.kind, refund.received_fen, refund.out_request_no) == ("退款", -40, "R1")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"not a zip", id="not-a-zip"),
        pytest.param(_zip(**{"x.csv": "#只有注释\r\n".encode("gbk")}), id="no-detail-list"),
        pytest.param(
            _zip(**{"x.csv": "支付宝交易号,订单金额(元),商家实收(元)\r\n1,1.005,1.00\r\n".encode("gbk")}),
            id="bad-amount",
        ),
    ],
)
def test_the_bill_parser_refuses_broken_files(data: bytes) -> None:
    with pytest.raises(AlipayBadResponseError):
        parse_trade_bill(data)
