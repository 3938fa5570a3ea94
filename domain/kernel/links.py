"""Signed, expiring links to blobs, bound to one account (DESIGN D5).

A token is ``base64url(payload) "." base64url(tag)`` without padding, where the payload is
``version (1 byte) | expiry in Unix seconds (8 bytes, big endian) | blob key (ASCII)`` and the tag is the
:class:`~domain.kernel.crypto.Mac` of the payload together with the account. The account is bound by the
MAC, never carried: a link handed to someone else does not verify for them. The blob key is readable by
whoever holds the link, so keys must be opaque ids.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta

from domain.kernel.blobs import BlobKeyError, validate_blob_key
from domain.kernel.crypto import Mac
from domain.kernel.errors import ForbiddenError, NotFoundError

LINK_TTL = timedelta(minutes=5)
"""How long a freshly issued link stays valid unless the caller chooses otherwise."""

MAC_CONTEXT = "blob.link"
"""The MAC context of link tags; links never verify as any other MAC'd value."""

MAX_TOKEN_LENGTH = 2048

_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DOMAIN = b"hsp.blob-link\x00"
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class LinkInvalidError(NotFoundError):
    """Malformed, tampered with, or issued to another account: indistinguishable on purpose (404, D7)."""

    code = "blob.link_invalid"
    message = "链接无效，请重新获取"


class LinkExpiredError(ForbiddenError):
    """Genuine and for this account, but past its expiry."""

    code = "blob.link_expired"
    message = "链接已过期，请重新获取"


def sign_link(*, blob_key: str, account: str, expires_at: datetime, mac: Mac) -> str:
    """A URL-safe token granting ``account`` access to ``blob_key`` until ``expires_at`` (exclusive).

    The expiry is rounded down to the second.
    """
    validate_blob_key(blob_key)
    seconds = _unix_seconds(expires_at, "expires_at")
    if seconds < 0:
        raise ValueError("expires_at is before 1970")
    payload = bytes((_VERSION,)) + seconds.to_bytes(8, "big") + blob_key.encode("ascii")
    tag = mac.mac(_account_prefix(account) + payload, context=MAC_CONTEXT)
    return f"{_encode(payload)}.{_encode(tag)}"


def verify_link(token: str, *, account: str, now: datetime, mac: Mac) -> str:
    """Return the blob key ``token`` grants ``account`` at ``now``.

    Raises :class:`LinkInvalidError` for anything not signed for this account and
    :class:`LinkExpiredError` for a genuine link at or past its expiry.
    """
    now_seconds = _unix_seconds(now, "now")
    prefix = _account_prefix(account)
    if len(token) > MAX_TOKEN_LENGTH or _TOKEN.fullmatch(token) is None:
        raise LinkInvalidError("malformed link token")
    encoded_payload, encoded_tag = token.split(".")
    payload = _decode(encoded_payload)
    tag = _decode(encoded_tag)
    if payload is None or tag is None:
        raise LinkInvalidError("malformed link token")
    if not mac.verify(prefix + payload, tag, context=MAC_CONTEXT):
        raise LinkInvalidError("link signature does not match")
    if len(payload) < 10 or payload[0] != _VERSION:
        raise LinkInvalidError("unknown link version")
    try:
        blob_key = validate_blob_key(payload[9:].decode("ascii"))
    except (UnicodeDecodeError, BlobKeyError) as exc:
        raise LinkInvalidError("bad blob key in link") from exc
    if now_seconds >= int.from_bytes(payload[1:9], "big"):
        raise LinkExpiredError("link expired")
    return blob_key


def _account_prefix(account: str) -> bytes:
    """What the MAC covers before the payload: a domain label and the length-prefixed account."""
    if not account:
        raise ValueError("account must not be empty")
    encoded = account.encode("utf-8")
    return _DOMAIN + len(encoded).to_bytes(4, "big") + encoded


def _unix_seconds(instant: datetime, name: str) -> int:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime for {name}: every instant inside the system is aware")
    return (instant - _EPOCH) // timedelta(seconds=1)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes | None:
    """Decode unpadded base64url, accepting only the canonical spelling (unused bits must be zero)."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _encode(data) == text else None
