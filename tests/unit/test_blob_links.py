"""Signed, expiring, account-bound blob links (DESIGN D5)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.kernel.blobs import BlobKeyError
from domain.kernel.errors import ForbiddenError, NotFoundError
from domain.kernel.links import (
    LINK_TTL,
    LinkExpiredError,
    LinkInvalidError,
    sign_link,
    verify_link,
)

NOW = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
ACCOUNT = "acct-5f1c0e7a"
KEY = "reports/2026/03/9b2d4f.pdf"


class HmacSha256:
    """A stand-in for the suite's Mac port: HMAC-SHA256 over the context and the data."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def mac(self, data: bytes, *, context: str) -> bytes:
        encoded = context.encode()
        message = len(encoded).to_bytes(4, "big") + encoded + data
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def verify(self, data: bytes, tag: bytes, *, context: str) -> bool:
        return hmac.compare_digest(self.mac(data, context=context), tag)


MAC = HmacSha256(b"k" * 32)
VALID_TOKEN = sign_link(blob_key=KEY, account=ACCOUNT, expires_at=NOW + LINK_TTL, mac=MAC)
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/~ %报"


def test_valid_link_verifies_until_just_before_expiry() -> None:
    assert verify_link(VALID_TOKEN, account=ACCOUNT, now=NOW, mac=MAC) == KEY
    last_second = NOW + LINK_TTL - timedelta(seconds=1)
    assert verify_link(VALID_TOKEN, account=ACCOUNT, now=last_second, mac=MAC) == KEY


def test_token_is_url_safe_and_does_not_carry_the_account() -> None:
    account = "wx-openid-oXYZ123"
    token = sign_link(blob_key=KEY, account=account, expires_at=NOW + LINK_TTL, mac=MAC)

    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    assert account not in token
    assert "oXYZ123" not in token


def test_aware_times_in_any_zone_are_accepted() -> None:
    shanghai = timezone(timedelta(hours=8))
    token = sign_link(blob_key=KEY, account=ACCOUNT, expires_at=(NOW + LINK_TTL).astimezone(shanghai), mac=MAC)

    assert verify_link(token, account=ACCOUNT, now=NOW.astimezone(shanghai), mac=MAC) == KEY


@pytest.mark.parametrize("late", [LINK_TTL, LINK_TTL + timedelta(microseconds=1), timedelta(days=365)])
def test_expired_link_is_refused(late: timedelta) -> None:
    with pytest.raises(LinkExpiredError) as caught:
        verify_link(VALID_TOKEN, account=ACCOUNT, now=NOW + late, mac=MAC)

    assert isinstance(caught.value, ForbiddenError)
    assert caught.value.code == "blob.link_expired"
    assert caught.value.message == "链接已过期，请重新获取"


def test_link_of_another_account_is_refused_as_not_found() -> None:
    with pytest.raises(LinkInvalidError) as caught:
        verify_link(VALID_TOKEN, account="acct-someone-else", now=NOW, mac=MAC)

    assert isinstance(caught.value, NotFoundError)
    assert caught.value.code == "blob.link_invalid"


def test_expired_link_of_another_account_does_not_reveal_it_was_genuine() -> None:
    with pytest.raises(LinkInvalidError):
        verify_link(VALID_TOKEN, account="acct-someone-else", now=NOW + timedelta(days=1), mac=MAC)


def test_link_signed_with_another_key_is_refused() -> None:
    with pytest.raises(LinkInvalidError):
        verify_link(VALID_TOKEN, account=ACCOUNT, now=NOW, mac=HmacSha256())


def test_tampered_payload_is_refused() -> None:
    other = sign_link(blob_key="reports/other.pdf", account=ACCOUNT, expires_at=NOW + LINK_TTL, mac=MAC)
    spliced = other.split(".")[0] + "." + VALID_TOKEN.split(".")[1]
    extended = (
        sign_link(blob_key=KEY, account=ACCOUNT, expires_at=NOW + timedelta(days=30), mac=MAC).split(".")[0]
        + "."
        + VALID_TOKEN.split(".")[1]
    )

    for token in (spliced, extended):
        with pytest.raises(LinkInvalidError):
            verify_link(token, account=ACCOUNT, now=NOW, mac=MAC)


@pytest.mark.parametrize(
    "token",
    ["", ".", "abc", "abc.", ".abc", "a.b.c", VALID_TOKEN + "=", VALID_TOKEN + ".x", " " + VALID_TOKEN, "x" * 5000],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(LinkInvalidError):
        verify_link(token, account=ACCOUNT, now=NOW, mac=MAC)


@given(position=st.integers(min_value=0), replacement=st.sampled_from(TOKEN_ALPHABET))
def test_any_single_character_change_is_refused(position: int, replacement: str) -> None:
    position %= len(VALID_TOKEN)
    if VALID_TOKEN[position] == replacement:
        replacement = "A" if replacement != "A" else "B"
    tampered = VALID_TOKEN[:position] + replacement + VALID_TOKEN[position + 1 :]

    with pytest.raises(LinkInvalidError):
        verify_link(tampered, account=ACCOUNT, now=NOW, mac=MAC)


@given(
    # Valid keys only: "." and ".." are not segments a blob key may have (they are refused by design).
    key=st.from_regex(r"[A-Za-z0-9_-]{1,20}(/[A-Za-z0-9._-]{1,20}){0,4}", fullmatch=True).filter(
        lambda k: all(segment not in (".", "..") for segment in k.split("/"))
    ),
    account=st.text(min_size=1, max_size=40),
    ttl_seconds=st.integers(min_value=1, max_value=3600),
    position=st.integers(min_value=0),
    replacement=st.sampled_from(TOKEN_ALPHABET),
)
def test_round_trip_and_single_character_changes_for_any_link(
    key: str, account: str, ttl_seconds: int, position: int, replacement: str
) -> None:
    token = sign_link(blob_key=key, account=account, expires_at=NOW + timedelta(seconds=ttl_seconds), mac=MAC)
    assert verify_link(token, account=account, now=NOW, mac=MAC) == key

    position %= len(token)
    if token[position] == replacement:
        return
    tampered = token[:position] + replacement + token[position + 1 :]
    with pytest.raises(LinkInvalidError):
        verify_link(tampered, account=account, now=NOW, mac=MAC)


@pytest.mark.parametrize("suite_name", ["intl", "sm"])
def test_links_with_each_real_suite_mac(suite_name: Literal["intl", "sm"]) -> None:
    from integrations.crypto.keys import Keyring, generate_keyring_config
    from integrations.crypto.suite import build_suite

    mac = build_suite(suite_name, Keyring.from_config(**generate_keyring_config())).mac
    token = sign_link(blob_key=KEY, account=ACCOUNT, expires_at=NOW + LINK_TTL, mac=mac)

    assert verify_link(token, account=ACCOUNT, now=NOW, mac=mac) == KEY
    with pytest.raises(LinkInvalidError):
        verify_link(token, account="acct-someone-else", now=NOW, mac=mac)
    with pytest.raises(LinkInvalidError):
        verify_link(token, account=ACCOUNT, now=NOW, mac=MAC)
    with pytest.raises(LinkExpiredError):
        verify_link(token, account=ACCOUNT, now=NOW + LINK_TTL, mac=mac)


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 3, 1, 8, 30)
    with pytest.raises(ValueError, match="naive"):
        sign_link(blob_key=KEY, account=ACCOUNT, expires_at=naive, mac=MAC)
    with pytest.raises(ValueError, match="naive"):
        verify_link(VALID_TOKEN, account=ACCOUNT, now=naive, mac=MAC)


def test_bad_blob_key_and_empty_account_cannot_be_signed() -> None:
    with pytest.raises(BlobKeyError):
        sign_link(blob_key="../secrets", account=ACCOUNT, expires_at=NOW, mac=MAC)
    with pytest.raises(ValueError, match="account"):
        sign_link(blob_key=KEY, account="", expires_at=NOW, mac=MAC)
    with pytest.raises(ValueError, match="account"):
        verify_link(VALID_TOKEN, account="", now=NOW, mac=MAC)
