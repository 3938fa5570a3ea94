"""Alipay RSA2 signing (protocols §3.1, §3.2, §3.5), cross-checked with the official alipay-sdk-python.

The official SDK is an independent oracle: its ``SignatureUtils`` (sign string, RSA2 with the pure-python
``rsa`` package) and its ``DefaultAlipayClient`` request builder and response parser. It wants PKCS#1 keys,
so the test keys are converted with ``cryptography``.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.constant.CommonConstants import THREAD_LOCAL
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.request.AlipaySystemOauthTokenRequest import AlipaySystemOauthTokenRequest
from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2, verify_with_rsa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from integrations.alipay.signing import (
    MalformedResponseError,
    extract_response_content,
    format_timestamp,
    locate_response,
    notify_sign_content,
    parse_timestamp,
    response_key,
    rsa2_sign,
    rsa2_verify,
    sign_content,
    sign_params,
    verify_notify,
)


@cache
def _key(label: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pkcs8(label: str = "app") -> bytes:
    return _key(label).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pkcs1(label: str = "app") -> bytes:
    return _key(label).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def spki(label: str = "app") -> bytes:
    return (
        _key(label)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def pkcs1_public(label: str = "app") -> bytes:
    return _key(label).public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)


def bare(pem: bytes) -> bytes:
    """The Base64 body without armour, as the Alipay console shows keys."""
    return b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))


REQUEST = {
    "app_id": "2021000000000001",
    "method": "alipay.trade.create",
    "format": "JSON",
    "charset": "utf-8",
    "sign_type": "RSA2",
    "timestamp": "2025-03-01 16:00:00",
    "version": "1.0",
    "notify_url": "https://hsp.example.cn/callbacks/alipay?x=1&y=2",
    "biz_content": '{"out_trade_no":"B20250301-0001","total_amount":"25.00","subject":"挂号费 内科 张医生"}',
    "app_auth_token": "",
    "sign": "should-not-be-signed",
}


# -- the sign string -----------------------------------------------------------------------------------------


def test_sign_content_rule() -> None:
    content = sign_content(REQUEST)
    assert content == (
        "app_id=2021000000000001"
        '&biz_content={"out_trade_no":"B20250301-0001","total_amount":"25.00","subject":"挂号费 内科 张医生"}'
        "&charset=utf-8&format=JSON&method=alipay.trade.create"
        "&notify_url=https://hsp.example.cn/callbacks/alipay?x=1&y=2"
        "&sign_type=RSA2&timestamp=2025-03-01 16:00:00&version=1.0"
    )
    assert "sign=should" not in content, "sign is never signed"
    assert "app_auth_token" not in content, "empty values are dropped"


def test_sign_content_sorts_by_ascii_code() -> None:
    assert sign_content({"b": "1", "B": "2", "a_b": "3", "a": "4", "_": "5"}) == "B=2&_=5&a=4&a_b=3&b=1"


def test_notify_sign_content_also_leaves_out_sign_type() -> None:
    params = {"trade_status": "TRADE_SUCCESS", "sign_type": "RSA2", "sign": "x", "out_trade_no": "1"}
    assert notify_sign_content(params) == "out_trade_no=1&trade_status=TRADE_SUCCESS"
    assert notify_sign_content(params, include_sign_type=True) == (
        "out_trade_no=1&sign_type=RSA2&trade_status=TRADE_SUCCESS"
    )
    assert sign_content(params) == "out_trade_no=1&sign_type=RSA2&trade_status=TRADE_SUCCESS"


def test_sign_content_matches_the_official_sdk() -> None:
    theirs = get_sign_content({k: v for k, v in REQUEST.items() if k != "sign" and v})
    assert sign_content(REQUEST) == theirs


_chars = st.characters(exclude_categories=["Cs"])


@given(st.dictionaries(st.text(_chars, min_size=1, max_size=8), st.text(_chars, max_size=12)))
def test_sign_content_matches_the_official_sdk_on_any_params(params: dict[str, str]) -> None:
    kept = {k: v for k, v in params.items() if k != "sign" and v}
    assert sign_content(params) == get_sign_content(kept)


# -- RSA2 ---------------------------------------------------------------------------------------------------------


def test_rsa2_signature_equals_the_official_sdk() -> None:
    content = sign_content(REQUEST)
    ours = rsa2_sign(content, pkcs8())
    theirs = sign_with_rsa2(pkcs1().decode("ascii"), content, "utf-8")
    assert ours == theirs, "PKCS#1 v1.5 signatures are deterministic"
    assert verify_with_rsa(spki().decode("ascii"), content.encode("utf-8"), ours)
    assert rsa2_verify(content, theirs, spki())


@pytest.mark.parametrize(
    ("private_pem", "public_pem"),
    [
        pytest.param(pkcs8, spki, id="pkcs8+spki"),
        pytest.param(pkcs1, pkcs1_public, id="pkcs1+pkcs1"),
        pytest.param(lambda: bare(pkcs8()), lambda: bare(spki()), id="bare-base64"),
        pytest.param(lambda: bare(pkcs1()), lambda: bare(pkcs1_public()), id="bare-pkcs1"),
    ],
)
def test_every_key_form_is_accepted(private_pem: Any, public_pem: Any) -> None:
    signature = rsa2_sign("a=1&b=中文", private_pem())
    assert signature == rsa2_sign("a=1&b=中文", pkcs8())
    assert rsa2_verify("a=1&b=中文", signature, public_pem())


def test_rsa2_verify_rejects() -> None:
    signature = rsa2_sign("a=1", pkcs8())
    assert rsa2_verify("a=1", signature, spki())
    assert not rsa2_verify("a=2", signature, spki())
    assert not rsa2_verify("a=1", signature, spki("other"))
    assert not rsa2_verify("a=1", "not base64!", spki())
    assert not rsa2_verify("a=1", "", spki())
    assert not rsa2_verify("a=1", base64.b64encode(b"\x00" * 256).decode(), spki())
    with pytest.raises(ValueError):
        rsa2_verify("a=1", signature, b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_sign_params_adds_the_sign() -> None:
    signed = sign_params({k: v for k, v in REQUEST.items() if k != "sign"}, pkcs8())
    assert rsa2_verify(sign_content(signed), signed["sign"], spki())


def _official_client(app_private_pem: bytes | None = None, alipay_public_pem: bytes | None = None) -> Any:
    config = AlipayClientConfig()
    config.app_id = "2021000000000001"
    config.app_private_key = (app_private_pem or pkcs1()).decode("ascii")
    config.alipay_public_key = (alipay_public_pem or spki("alipay")).decode("ascii")
    THREAD_LOCAL.logger = None
    return DefaultAlipayClient(config)


def test_oauth_request_signature_equals_the_official_client() -> None:
    request = AlipaySystemOauthTokenRequest()
    request.grant_type = "authorization_code"
    request.code = "4b203fe6c11548bcabd8da5bb087a83b"
    common, rest = _official_client()._DefaultAlipayClient__prepare_request_params(request)
    assert rest == {"grant_type": "authorization_code", "code": "4b203fe6c11548bcabd8da5bb087a83b"}
    everything = {**common, **rest}
    assert sign_params(everything, pkcs8())["sign"] == common["sign"]


# -- responses -------------------------------------------------------------------------------------------------------

NESTED = (
    '{"code":"10000","msg":"Success","trade_no":"2025030122001400000000000001",'
    '"subject":"挂号费 \\"内科\\" 张医生\\n复诊","path":"a\\\\b\\/c","emoji":"\\ud83d\\ude00 \\u4e2d",'
    '"fund_bill_list":[{"amount":"25.00","fund_channel":"ALIPAYACCOUNT","detail":{"k":[1,2,{"x":null}]}}],'
    '"empty":{},"sign":"inner-not-the-signature","braces":"}{,\\"sign\\":\\"x\\"}"}'
)


def _signed_body(method: str, content: str, signer: str = "alipay", *, spacing: str = "") -> str:
    signature = rsa2_sign(content, pkcs8(signer))
    s = spacing
    return f'{s}{{{s}"{response_key(method)}"{s}:{s}{content}{s},{s}"sign"{s}:{s}"{signature}"{s}}}{s}'


def test_extract_keeps_the_exact_raw_text() -> None:
    body = _signed_body("alipay.trade.query", NESTED)
    content, sign = extract_response_content(body, "alipay.trade.query")
    assert content == NESTED
    assert sign is not None
    assert rsa2_verify(content, sign, spki("alipay"))
    assert json.loads(content)["subject"] == '挂号费 "内科" 张医生\n复诊'


def test_extract_tolerates_whitespace_between_tokens() -> None:
    body = _signed_body("alipay.trade.query", NESTED, spacing=" \r\n\t ")
    content, sign = extract_response_content(body, "alipay.trade.query")
    assert content == NESTED
    assert sign is not None
    assert rsa2_verify(content, sign, spki("alipay"))


def test_extract_matches_the_official_response_parser() -> None:
    body = _signed_body("alipay.trade.query", NESTED)
    theirs = _official_client()._DefaultAlipayClient__parse_response(body.encode("utf-8"))
    assert extract_response_content(body, "alipay.trade.query")[0] == theirs


def test_extract_sign_first_and_error_response() -> None:
    inner = '{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.code-invalid","sub_msg":"授权码code无效"}'
    body = f'{{"sign":"abc","error_response":{inner}}}'
    envelope = locate_response(body, "alipay.system.oauth.token")
    assert (envelope.key, envelope.content, envelope.sign) == ("error_response", inner, "abc")
    assert envelope.is_error_response
    assert extract_response_content(f'{{"error_response":{inner}}}', "alipay.system.oauth.token") == (inner, None)


def test_extract_published_vectors() -> None:
    # alipay/alipay-sdk-nodejs-all test/alipay.test.ts, describe('getSignStr()'): 'normal' and 'include \r\n\s'.
    inner = (
        '{"code":"10000","msg":"Success","image_id":"Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED",'
        '"image_url":"http:\\/\\/oalipay-dl-django.alicdn.com\\/rest\\/1.0\\/image?'
        'fileIds=Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED&zoom=original"}'
    )
    sign = (
        "P8xrBWqZCUv11UrEBjhQ4Sk3hyj4607qehO2VbKIS0hWa4U+NeLlOftqTyhGv+x1lzfqN590Y/8CaNIzEEg06FiNWJlUFM/uEFJLzSKGse4"
        "MjHbblpiSzI3eCV5RzxH26wZbEd9wyVYYi0pHFBf35UrBva47g7b5EuKCHfoVA95/zin9fAyb3xhhiHhmfGaWIDV/1LmE2vtqtOHQnISbY/"
        "deC71U614ySZ3YB97ws8npCcCJ+tgZvhHPkMRGvmyYPCRDB/aIN/sKDSLtfPp0u8DxE8pHLvCHm3wR84MQxqNbKgpd8NTKNvH+obELsbCrq"
        "PhjW7qI48634qx6enDupw=="
    )
    method = "alipay.offline.material.image.upload"
    normal = f'{{"alipay_offline_material_image_upload_response":{inner},"sign":"{sign}"}}'
    spaced = (
        '{"alipay_offline_material_image_upload_response"\n        :\n        '
        f'{inner},\n\n          "sign"  :  "{sign}"}}'
    )
    assert extract_response_content(normal, method) == (inner, sign)
    assert extract_response_content(spaced, method) == (inner, sign)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("", id="empty"),
        pytest.param("[]", id="array"),
        pytest.param("<html>502 Bad Gateway</html>", id="html"),
        pytest.param('{"other_response":{"code":"10000"},"sign":"x"}', id="other-method"),
        pytest.param('{"alipay_trade_query_response":"eyJ9","sign":"x"}', id="not-an-object"),
        pytest.param('{"alipay_trade_query_response":{"code":"10000"},"sign":1}', id="sign-not-a-string"),
        pytest.param('{"alipay_trade_query_response":{"code":"10000"},"sign":"x"} trailing', id="trailing"),
        pytest.param('{"alipay_trade_query_response":{"code":"10000"}', id="truncated"),
        pytest.param('{"alipay_trade_query_response":{"code":"10000"},,"sign":"x"}', id="double-comma"),
        pytest.param(
            '{"alipay_trade_query_response":{"code":"10000"},"alipay_trade_query_response":{"code":"40004"}}',
            id="duplicate",
        ),
        pytest.param('{"alipay_trade_query_response":{},"error_response":{}}', id="both"),
        pytest.param('{"alipay_trade_query_response":{},"sign":"a","sign":"b"}', id="two-signs"),
    ],
)
def test_extract_rejects_malformed_bodies(body: str) -> None:
    with pytest.raises(MalformedResponseError):
        extract_response_content(body, "alipay.trade.query")


def test_response_key() -> None:
    assert response_key("alipay.system.oauth.token") == "alipay_system_oauth_token_response"


# -- notifications ---------------------------------------------------------------------------------------------------

# alipay/alipay-sdk-nodejs-all test/alipay.test.ts, describe('checkNotifySign') > 'verify sign should delete
# sign_type' > 'with sign_type arguments verify success': a trade_status_sync notify and the public key given
# inline there (notifyAlipayPublicKeyV1). The SDK JSON-stringifies the fund_bill_list object of the fixture;
# the string below is what that gives, i.e. the form value Alipay posted.
NODE_SDK_NOTIFY_KEY = (
    b"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqObrdC7hrgAVM98tK0nv3hSQRGGKT4lBsQjHiGjeYZjOPIPHR5knm2jnnz/YGIX"
    b"IofVHkA/tAlBAd5DrY7YpvI4tP5EONLtZKC2ghBMx7McI2wRD0xiqzxOQr1FuhZGJ8/AUokBzJrzY+aGX2xcOrxFYRlFilvVLTXg4LWjR"
    b"1tdPkO6+i7wQZAIVMClPkwVRZEbaERRHlKqTzv2gGv5rDU8gRoe1LeaN+6BlbTqHWkQcNCUNrA8C6l17XAXGKDsm/9TFWwO8EPHHHCaQ"
    b"djtV5/FdcWIt+L8SR1ss7EXTjYDFtxcKVv9rEoY1lX8T4mX+GbXfZHraG5NCF1+XioL5JwIDAQAB"
)
NODE_SDK_TRADE_NOTIFY = {
    "gmt_create": "2019-08-15 15:56:22",
    "charset": "utf-8",
    "seller_email": "z97-yuquerevenue@service.aliyun.com",
    "subject": "语雀空间 500人规模",
    "sign": (
        "QfTb8tqE1BMhS5qAnXtvsF3/jBkEvu9q9en0pdbBUDDjvKycZhQb7h8GDs4FKfi049PynaNuatxSgLb/nLWZpXyyh0LEWdK2S6Ri7nPwr"
        "VgOs08zugLO20vOQz44y3ti2Ncm8/wZts1Fr2gZ7pShnVX3d1B50hbsXnObT1r/U8ONNQjWXd0HIul4TG+Q3fm3svmSvFEy0WnzuhcyH"
        "PX5Gm4ELNctL6Qd5YniGJFNcc7kopHYtI/XD9YCKCH6Ct02rzUs9i11C9CsadtZn+WhxF26Dqt9sGEFajkJ8cxUTLi8+VCpLHsgPE8P"
        "0y095uQcDdK0YjCh4x7wVSov+lrmOQ=="
    ),
    "buyer_id": "2088102534368455",
    "invoice_amount": "0.10",
    "notify_id": "2019081500222155624068450559358070",
    "fund_bill_list": '[{"amount":"0.10","fundChannel":"ALIPAYACCOUNT"}]',
    "notify_type": "trade_status_sync",
    "trade_status": "TRADE_SUCCESS",
    "receipt_amount": "0.10",
    "buyer_pay_amount": "0.10",
    "sign_type": "RSA2",
    "app_id": "2019073166072302",
    "seller_id": "2088531891668739",
    "gmt_payment": "2019-08-15 15:56:24",
    "notify_time": "2019-08-15 15:56:25",
    "version": "1.0",
    "out_trade_no": "20190815155618536-564-57",
    "total_amount": "0.10",
    "trade_no": "2019081522001468450512505578",
    "auth_app_id": "2019073166072302",
    "buyer_logon_id": "xud***@126.com",
    "point_amount": "0.00",
}

# Same file, 'verify sign should not delete sign_type' > 'with sign_type arguments verify success': a
# servicemarket notify signed WITH sign_type, under test/fixtures/alipay-notify-sign-public-key-v2.pem.
NODE_SDK_SERVICEMARKET_KEY = (
    b"-----BEGIN PUBLIC KEY-----\n"
    b"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAk6DCsBIUhWriFohzRV8F\n"
    b"ic6oQWNnLKKILNk97VU5qcHEuxYzCujKoyva5gy1170mFJw4IcgJF8AyS7iDUwzA\n"
    b"wF4Pp9CpWxDhUhe7mdQJhjBmvTcPLGFFrzlj6unO5lAcbdwaxPUtSxOaNxPJGrTK\n"
    b"/wnKQSbjTMMltp1J68q2Tfgrsn/NdZ6lrxO9rvmky8kowqaH5NjntyHO59jCGabM\n"
    b"j5sI14z8N61wB/QuIJrDuzIPMPrSNbq0cOWcSCDG09oUHTp9fk7suDB8UiFcmVTX\n"
    b"OvK3d4HbeX8V9YsEMxrwxEoYgRRj6K2qrC6oxw480cqf2ueumCmHg6xrcgkyXK81\n"
    b"hwIDAQAB\n"
    b"-----END PUBLIC KEY-----\n"
)
NODE_SDK_SERVICEMARKET_NOTIFY = {
    "app_id": "2017122801303261",
    "charset": "UTF-8",
    "commodity_order_id": "2019030800000018079639",
    "contactor": "技术支持测试的公司",
    "merchant_pid": "2088721996721370",
    "method": "alipay.open.servicemarket.order.notify",
    "name": "技术支持测试的公司",
    "notify_id": "2019030800222102023008121054923345",
    "notify_time": "2019-03-08 10:20:23",
    "notify_type": "servicemarket_order_notify",
    "order_item_num": "1",
    "order_ticket": "29b1c37d99ab48c5bd5bdaeaeaefbB37",
    "order_time": "2019-03-08 10:20:08",
    "phone": "17826894615",
    "service_code": "58621634",
    "sign": (
        "MsK5SCw8oqLw4f0hiNSd5OVGXxBY3wnQeT8vn5PklJSZFWSZbK4hQbNvkp4ZezeXQH514cEv0ul6Qow8yh6e6yM06LfEL+EZjcpZ0nxzF"
        "GRNQ5qq2AUc1OaXQdk92AGvxh+Iq4NGpPQFBd4D8EBJa3NJd8+czMfQskceosOQFqUtLQMYa5DPs+VpN7VM5BdXjaVIuKn5d9Wm2B9dI"
        "9ObIM+YRySDkZZPv14DVmUvcrcqJfOR8aHvtSd7B4l92wUQPQgQKNcOQho7xOHS/Bk+Y74AZL2y7TkNmdDoq9OGsThuF5tDW9rI9nVw"
        "XxOtsuB+bstra+W7aw9x9DvkKgdSRw=="
    ),
    "sign_type": "RSA2",
    "timestamp": "2019-03-08 10:20:23",
    "title": "麦禾商城模版",
    "total_price": "0.00",
    "version": "1.0",
}


def test_published_trade_notify_verifies_without_sign_type() -> None:
    assert verify_notify(NODE_SDK_TRADE_NOTIFY, alipay_public_key_pem=NODE_SDK_NOTIFY_KEY)
    without = {k: v for k, v in NODE_SDK_TRADE_NOTIFY.items() if k != "sign_type"}
    assert verify_notify(without, alipay_public_key_pem=NODE_SDK_NOTIFY_KEY)
    assert not rsa2_verify(sign_content(NODE_SDK_TRADE_NOTIFY), NODE_SDK_TRADE_NOTIFY["sign"], NODE_SDK_NOTIFY_KEY), (
        "the request rule (sign_type kept) does not verify a trade notify"
    )


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"total_amount": "100.10"}, id="amount"),
        pytest.param({"trade_status": "TRADE_FINISHED"}, id="status"),
        pytest.param({"extra": "1"}, id="added-field"),
        pytest.param({"sign_type": "RSA"}, id="rsa1"),
        pytest.param({"sign": ""}, id="no-sign"),
    ],
)
def test_published_trade_notify_tampered(change: dict[str, str]) -> None:
    assert not verify_notify({**NODE_SDK_TRADE_NOTIFY, **change}, alipay_public_key_pem=NODE_SDK_NOTIFY_KEY)


def test_published_trade_notify_needs_the_alipay_key() -> None:
    assert not verify_notify(NODE_SDK_TRADE_NOTIFY, alipay_public_key_pem=NODE_SDK_SERVICEMARKET_KEY)


def test_published_servicemarket_notify_is_signed_with_sign_type() -> None:
    assert verify_notify(NODE_SDK_SERVICEMARKET_NOTIFY, alipay_public_key_pem=NODE_SDK_SERVICEMARKET_KEY)
    tampered = {**NODE_SDK_SERVICEMARKET_NOTIFY, "service_code": "58621634111"}
    assert not verify_notify(tampered, alipay_public_key_pem=NODE_SDK_SERVICEMARKET_KEY)


def test_notify_values_are_not_decoded_twice() -> None:
    params = {"passback_params": "a%20b%zz", "out_trade_no": "1", "sign_type": "RSA2"}
    params["sign"] = rsa2_sign(notify_sign_content(params), pkcs8("alipay"))
    assert verify_notify(params, alipay_public_key_pem=spki("alipay"))
    assert not verify_notify(params, alipay_public_key_pem=spki("app")), "the app key must not verify notifies"


# -- timestamps --------------------------------------------------------------------------------------------------------


def test_timestamps_are_beijing_time() -> None:
    instant = datetime(2025, 3, 1, 16, 30, 5, tzinfo=UTC)
    assert format_timestamp(instant) == "2025-03-02 00:30:05"
    assert parse_timestamp("2025-03-02 00:30:05") == instant
    with pytest.raises(ValueError):
        format_timestamp(datetime(2025, 3, 1, 16, 30, 5))
