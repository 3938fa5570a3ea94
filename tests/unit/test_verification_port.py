"""The real-name verification port: cache keys that hide the data, value types and error categories."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.identity.verification import (
    FaceCheckPendingError,
    FaceSessionInvalidError,
    VerificationOutcome,
    VerificationRateLimitedError,
    VerificationResult,
    VerificationUnavailableError,
    verification_cache_key,
)
from domain.kernel.errors import ConflictError, RateLimitedError, UpstreamError

SECRET = b"0123456789abcdef-cache-key-secret"
NAME, ID_NUMBER, PHONE = "张三", "110101199003070011", "13800000001"


def test_the_key_is_an_hmac_in_hex_that_hides_the_data() -> None:
    key = verification_cache_key("id", NAME, ID_NUMBER, secret=SECRET)

    assert re.fullmatch(r"[0-9a-f]{64}", key)
    for value in (NAME, ID_NUMBER, ID_NUMBER[:6], ID_NUMBER[-8:], PHONE):
        assert value not in key


def test_the_key_is_stable() -> None:
    assert verification_cache_key("id", NAME, ID_NUMBER, secret=SECRET) == verification_cache_key(
        "id", NAME, ID_NUMBER, secret=bytes(SECRET)
    )
    # Pinned, so that a change of the encoding (which would orphan every cached entry) is noticed.
    assert verification_cache_key("phone", NAME, ID_NUMBER, PHONE, secret=SECRET) == (
        "9a1088e5e42b212b807a124f308f0b4e9fb9431c80ef5fd2f93083e06d3954e4"
    )


def test_the_key_depends_on_the_kind_every_part_and_the_secret() -> None:
    base = verification_cache_key("id", NAME, ID_NUMBER, secret=SECRET)
    others = {
        verification_cache_key("face", NAME, ID_NUMBER, secret=SECRET),
        verification_cache_key("id", "李四", ID_NUMBER, secret=SECRET),
        verification_cache_key("id", NAME, "44030519850615002X", secret=SECRET),
        verification_cache_key("id", NAME, ID_NUMBER, PHONE, secret=SECRET),
        verification_cache_key("id", NAME, ID_NUMBER, secret=SECRET + b"!"),
    }
    assert base not in others
    assert len(others) == 5


def test_part_boundaries_are_unambiguous() -> None:
    assert verification_cache_key("k", "ab", "c", secret=SECRET) != verification_cache_key(
        "k", "a", "bc", secret=SECRET
    )
    assert verification_cache_key("k", "a", "", secret=SECRET) != verification_cache_key("k", "a", secret=SECRET)
    assert verification_cache_key("ka", "b", secret=SECRET) != verification_cache_key("k", "ab", secret=SECRET)


@given(
    st.lists(st.text(max_size=20), max_size=4),
    st.lists(st.text(max_size=20), max_size=4),
)
def test_distinct_parts_give_distinct_keys(left: list[str], right: list[str]) -> None:
    same = verification_cache_key("id", *left, secret=SECRET) == verification_cache_key("id", *right, secret=SECRET)
    assert same == (left == right)


def test_a_short_secret_or_an_empty_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        verification_cache_key("id", NAME, ID_NUMBER, secret=b"short")
    with pytest.raises(ValueError, match="kind"):
        verification_cache_key("", NAME, ID_NUMBER, secret=SECRET)


def test_results_are_frozen_values() -> None:
    result = VerificationResult(
        outcome=VerificationOutcome.MATCH, provider="tencent-faceid", reference="r-1", checked_at=datetime.now(UTC)
    )
    assert result.passed
    assert not dataclasses.replace(result, outcome=VerificationOutcome.NO_RECORD).passed
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.outcome = VerificationOutcome.MISMATCH  # type: ignore[misc]
    assert [o.value for o in VerificationOutcome] == ["match", "mismatch", "no_record", "invalid_input"]


def test_errors_have_stable_codes_categories_and_chinese_messages() -> None:
    unavailable = VerificationUnavailableError("tencent-faceid IdCardVerification: Result -4")
    limited = VerificationRateLimitedError("tencent-faceid: RequestLimitExceeded", retry_after=3)

    assert isinstance(unavailable, UpstreamError)
    assert (unavailable.code, unavailable.status) == ("verification.unavailable", 503)
    assert isinstance(limited, RateLimitedError)
    assert (limited.code, limited.status, limited.retry_after) == ("verification.rate_limited", 429, 3)
    assert isinstance(FaceCheckPendingError(), ConflictError)
    assert FaceSessionInvalidError().code == "verification.face_session_invalid"
    for error in (unavailable, limited, FaceCheckPendingError(), FaceSessionInvalidError()):
        assert re.search(r"[\u4e00-\u9fff]", error.message)
