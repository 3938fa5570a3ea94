"""The e-health-card request sign (protocols §6.1), pinned by the goairix/wx Go SDK's published vectors and
cross-checked against the sandbox's independent implementation of the rule."""

from __future__ import annotations

import base64
import hashlib
import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integrations.healthcard.signing import (
    render_value,
    request_fields,
    response_fields,
    sign,
    sign_request,
    sign_response,
    sign_string,
    verify,
    verify_response,
)
from sandbox.healthcard import platform_sign

# --- the published vectors ---------------------------------------------------------------------------------

# Source: github.com/goairix/wx, healthcard/signature_test.go (commit 78de001c5ab194b6fc71625b99e24158dd2f7e8c),
# TestSignSortsAndOmitsEmptyValues: "sign" is never signed and the empty appToken is dropped.
GO_VECTOR_FIELDS: dict[str, object] = {
    "sign": "old",
    "appToken": "",
    "requestId": "DB4D975748A84309977EA25224C0F5CF",
    "hospitalId": "90003",
    "timestamp": "1525392000",
    "appId": "a1a2e0bde41574ad8ea9a4bb58022oop",
}
GO_VECTOR_SECRET = "8c8e763f443ef983ac33aef1c7085cfb"
GO_VECTOR_SIGN = "TsccMUMTHfOiEovR2hMlRXcQqctRFmPbpPIZdxXCJ/o="

# Source: the same file, TestSignIncludesNumericZero: a numeric 0 is kept.
GO_ZERO_FIELDS: dict[str, object] = {"channelNum": 0}
GO_ZERO_SECRET = "secret"
GO_ZERO_SIGN = "izPY5tjxkXETiFSV03ck5ImGpUv2fvK8aHcFrDebzc4="


def test_goairix_vector_sorts_and_omits_empty_values() -> None:
    """goairix/wx healthcard/signature_test.go, TestSignSortsAndOmitsEmptyValues."""
    assert sign_string(GO_VECTOR_FIELDS) == (
        "appId=a1a2e0bde41574ad8ea9a4bb58022oop&hospitalId=90003"
        "&requestId=DB4D975748A84309977EA25224C0F5CF&timestamp=1525392000"
    )
    assert sign(GO_VECTOR_FIELDS, app_secret=GO_VECTOR_SECRET) == GO_VECTOR_SIGN
    assert verify(GO_VECTOR_FIELDS, GO_VECTOR_SIGN, app_secret=GO_VECTOR_SECRET)
    assert platform_sign(GO_VECTOR_FIELDS, GO_VECTOR_SECRET) == GO_VECTOR_SIGN


def test_goairix_vector_as_a_get_app_token_request() -> None:
    """The same vector (goairix/wx healthcard/signature_test.go) split the way getAppToken sends it: commonIn
    (with its own stale sign) and ``req = {"appId": ...}``."""
    common_in = {key: value for key, value in GO_VECTOR_FIELDS.items() if key != "appId"}
    req = {"appId": GO_VECTOR_FIELDS["appId"]}
    assert sign_request(common_in, req, app_secret=GO_VECTOR_SECRET) == GO_VECTOR_SIGN


def test_goairix_vector_includes_numeric_zero() -> None:
    """goairix/wx healthcard/signature_test.go, TestSignIncludesNumericZero."""
    assert sign_string(GO_ZERO_FIELDS) == "channelNum=0"
    assert sign(GO_ZERO_FIELDS, app_secret=GO_ZERO_SECRET) == GO_ZERO_SIGN
    assert platform_sign(GO_ZERO_FIELDS, GO_ZERO_SECRET) == GO_ZERO_SIGN


# --- the rule ----------------------------------------------------------------------------------------------


def _manual(text: str, secret: str) -> str:
    return base64.b64encode(hashlib.sha256((text + secret).encode("utf-8")).digest()).decode("ascii")


def test_empty_and_none_values_are_dropped_but_zero_and_false_are_kept() -> None:
    fields: dict[str, object] = {"b": "", "a": None, "c": 0, "d": False, "e": "x", "f": [], "g": {}}
    assert sign_string(fields) == "c=0&d=false&e=x&f=[]&g={}"
    assert sign(fields, app_secret="s") == _manual("c=0&d=false&e=x&f=[]&g={}", "s")


def test_nested_values_are_compact_json_with_non_ascii_unescaped_in_given_order() -> None:
    fields: dict[str, object] = {
        "childInfo": {"name": "张小三", "birthday": "2020-01-01", "twins": False, "order": 1},
        "items": [{"z": 1, "a": "乙"}, "x", None],
        "name": "张三",
    }
    assert sign_string(fields) == (
        'childInfo={"name":"张小三","birthday":"2020-01-01","twins":false,"order":1}'
        '&items=[{"z":1,"a":"乙"},"x",null]&name=张三'
    )
    assert platform_sign(fields, "k") == sign(fields, app_secret="k")


def test_keys_sort_by_ascii_so_upper_case_comes_first() -> None:
    assert sign_string({"b": "1", "B": "2", "a": "3", "_": "4", "A1": "5"}) == "A1=5&B=2&_=4&a=3&b=1"


def test_values_render_like_the_go_sdk() -> None:
    assert render_value("  spaced  ") == "  spaced  "
    assert render_value(True) == "true"
    assert render_value(-7) == "-7"
    assert render_value(7.0) == "7"
    assert render_value(0.25) == "0.25"
    assert render_value(("a", 1)) == '["a",1]'
    assert render_value(None) is None
    with pytest.raises(ValueError, match="NaN"):
        render_value(math.nan)
    with pytest.raises(TypeError):
        render_value(object())


def test_sign_request_leaves_out_the_sign_and_lets_req_win_a_shared_key() -> None:
    common_in = {"appToken": "t", "sign": "whatever", "time": "common"}
    req = {"time": "req", "qrCodeText": "Q:1"}
    assert request_fields(common_in, req) == {"appToken": "t", "time": "req", "qrCodeText": "Q:1"}
    assert sign_request(common_in, req, app_secret="s") == _manual("appToken=t&qrCodeText=Q:1&time=req", "s")


def test_verify_refuses_other_signatures_without_raising() -> None:
    fields = {"a": "1"}
    good = sign(fields, app_secret="s")
    assert verify(fields, good, app_secret="s")
    assert not verify(fields, good, app_secret="t")
    assert not verify({"a": "2"}, good, app_secret="s")
    assert not verify(fields, "", app_secret="s")
    assert not verify(fields, "签名", app_secret="s")


def test_response_signature_covers_common_out_and_rsp_separately() -> None:
    """rsp may carry its own resultCode (reportHISData): it cannot shadow commonOut's."""
    common_out: dict[str, object] = {"requestId": "R", "resultCode": 0, "errMsg": "", "sign": "ignored"}
    rsp: dict[str, object] = {"resultCode": 0, "time": "2025-03-01 16:00:00", "name": "张三", "result": True}
    signature = sign_response(common_out, rsp, app_secret="s")
    assert response_fields(common_out, rsp) == {
        "commonOut": {"requestId": "R", "resultCode": 0, "errMsg": ""},
        "rsp": rsp,
    }
    assert verify_response(common_out, rsp, signature, app_secret="s")
    assert platform_sign({"commonOut": {"requestId": "R", "resultCode": 0, "errMsg": ""}, "rsp": rsp}, "s") == (
        signature
    )
    assert not verify_response({**common_out, "resultCode": -1}, rsp, signature, app_secret="s")
    assert not verify_response(common_out, {**rsp, "name": "李四"}, signature, app_secret="s")
    assert verify_response(common_out, None, sign_response(common_out, None, app_secret="s"), app_secret="s")


# --- properties --------------------------------------------------------------------------------------------

_keys = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12).filter(
    lambda key: key != "sign"
)
_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.booleans(),
    st.none(),
)
_nested = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_fields = st.dictionaries(_keys, _nested, max_size=8)


@given(fields=_fields, seed=st.integers())
def test_the_order_of_top_level_keys_does_not_matter(fields: dict[str, Any], seed: int) -> None:
    items = list(fields.items())
    random.Random(seed).shuffle(items)
    assert sign(dict(items), app_secret="s") == sign(fields, app_secret="s")


@given(fields=_fields, extra=st.dictionaries(_keys, st.sampled_from(["", None]), max_size=4))
def test_empty_fields_never_change_the_sign(fields: dict[str, Any], extra: dict[str, Any]) -> None:
    merged = {**extra, **fields}
    assert sign(merged, app_secret="s") == sign(fields, app_secret="s")
    assert sign({**merged, "sign": "stale"}, app_secret="s") == sign(fields, app_secret="s")


@given(fields=_fields, secret=st.text(max_size=40))
def test_our_client_and_the_sandbox_agree(fields: dict[str, Any], secret: str) -> None:
    signature = sign(fields, app_secret=secret)
    assert platform_sign(fields, secret) == signature
    assert verify(fields, signature, app_secret=secret)


@given(fields=_fields, key=_keys, value=st.text(min_size=1, max_size=10))
def test_changing_a_value_breaks_the_signature(fields: dict[str, Any], key: str, value: str) -> None:
    signature = sign(fields, app_secret="s")
    changed = {**fields, key: value}
    if sign_string(changed) != sign_string(fields):
        assert not verify(changed, signature, app_secret="s")
