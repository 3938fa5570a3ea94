"""Alipay OpenAPI v2 ("gateway.do") signing, public-key mode, RSA2 only (protocols §3.1, §3.2, §3.5).

Pure functions: no clock reads, no I/O. Keys are PEM bytes in any of the forms Alipay's tools and SDKs hand
out: PKCS#1 (``BEGIN RSA PRIVATE KEY`` / ``BEGIN RSA PUBLIC KEY``), PKCS#8 (``BEGIN PRIVATE KEY``), SPKI
(``BEGIN PUBLIC KEY``), or the bare Base64 body the Alipay console shows without any armour.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from domain.kernel.clock import SHANGHAI, ensure_utc, to_shanghai

SIGN: Final = "sign"
SIGN_TYPE: Final = "sign_type"
RSA2: Final = "RSA2"
ERROR_RESPONSE: Final = "error_response"
TIMESTAMP_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
"""``yyyy-MM-dd HH:mm:ss``, always Beijing time (UTC+8)."""

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class MalformedResponseError(ValueError):
    """A gateway body that is not a JSON object with exactly one ``*_response`` member for the call."""


# -- keys -----------------------------------------------------------------------------------------------------


def _armour_less(key: bytes) -> bytes | None:
    """The DER bytes of a key given as a bare Base64 body, or None when the text is armoured PEM."""
    text = key.strip()
    if text.startswith(b"-----BEGIN"):
        return None
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError("an Alipay key must be PEM or its bare Base64 body") from exc


@lru_cache(maxsize=32)
def load_private_key(private_key_pem: bytes) -> rsa.RSAPrivateKey:
    """An RSA private key from PKCS#1 or PKCS#8 PEM (or the bare Base64 body of either)."""
    der = _armour_less(private_key_pem)
    key = (
        serialization.load_pem_private_key(private_key_pem, password=None)
        if der is None
        else serialization.load_der_private_key(der, password=None)
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("RSA2 needs an RSA private key")
    return key


@lru_cache(maxsize=32)
def load_public_key(public_key_pem: bytes) -> rsa.RSAPublicKey:
    """An RSA public key from SPKI or PKCS#1 PEM (or the bare Base64 body of either)."""
    der = _armour_less(public_key_pem)
    key = serialization.load_pem_public_key(public_key_pem) if der is None else serialization.load_der_public_key(der)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("RSA2 needs an RSA public key")
    return key


# -- the sign string and RSA2 ----------------------------------------------------------------------------------


def _join_sorted(params: Mapping[str, str], excluded: frozenset[str]) -> str:
    items = sorted((key, value) for key, value in params.items() if key not in excluded and value)
    return "&".join(f"{key}={value}" for key, value in items)


_REQUEST_EXCLUDED: Final = frozenset({SIGN})
_NOTIFY_EXCLUDED: Final = frozenset({SIGN, SIGN_TYPE})


def sign_content(params: Mapping[str, str]) -> str:
    """The string a request is signed over (protocols §3.1).

    Every parameter but ``sign`` (``sign_type`` included), empty values dropped, sorted by key in ASCII
    order, ``key=value`` joined with ``&``, values raw (not URL-encoded).
    """
    return _join_sorted(params, _REQUEST_EXCLUDED)


def notify_sign_content(params: Mapping[str, str], *, include_sign_type: bool = False) -> str:
    """The string an asynchronous notification is signed over (protocols §3.5).

    Unlike requests, ``sign_type`` is left out as well as ``sign``; values are taken as received after one
    form decoding. ``include_sign_type`` gives the variant some non-trade notifications are signed with.
    """
    return _join_sorted(params, _REQUEST_EXCLUDED if include_sign_type else _NOTIFY_EXCLUDED)


def rsa2_sign(content: str, private_key_pem: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5) over the UTF-8 bytes of ``content``, Base64."""
    key = load_private_key(private_key_pem)
    signature = key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def rsa2_verify(content: str, signature: str, public_key_pem: bytes) -> bool:
    """Whether ``signature`` (Base64) is a SHA256withRSA signature of ``content`` under the public key.

    A malformed signature is simply not valid; an unusable key raises ``ValueError`` (a misconfiguration).
    """
    key = load_public_key(public_key_pem)
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    if not raw:
        return False
    try:
        key.verify(raw, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def sign_params(params: Mapping[str, str], private_key_pem: bytes) -> dict[str, str]:
    """``params`` plus their ``sign`` (request rule: ``sign_type`` is signed too)."""
    signed = {key: value for key, value in params.items() if key != SIGN}
    signed[SIGN] = rsa2_sign(sign_content(signed), private_key_pem)
    return signed


def verify_notify(params: Mapping[str, str], *, alipay_public_key_pem: bytes, try_with_sign_type: bool = True) -> bool:
    """Verify an asynchronous notification with the Alipay public key (never the app key), protocols §3.5.

    The rule for trade notifications (``trade_status_sync``): take every received parameter, remove ``sign``
    **and** ``sign_type``, drop empty values, sort by key, join ``key=value`` with ``&`` and check the RSA2
    (SHA256withRSA) signature. Values are used as the form parser decoded them: decoding once more would break
    values holding ``%``. Only RSA2 is accepted (an absent ``sign_type`` is taken as RSA2).

    Some non-trade notifications (``alipay.open.servicemarket.order.notify``) are signed with ``sign_type``
    kept in the string. With ``try_with_sign_type`` (the default) that variant is tried second, with
    ``sign_type=RSA2`` put back when the sender's form lacks it, as Alipay's Node SDK ``checkNotifySign``
    does; either string verifies only under a signature Alipay made over exactly that string, so trying both
    grants nothing a forger could use. Pass ``False`` to accept the trade rule only.

    Returns False on any failure: no or a malformed signature, another sign type, a value that is not a
    string, an unusable key. (Keys are checked when the trade client is built, so a misconfigured key does not
    hide here.)
    """
    try:
        signature = params.get(SIGN)
        if not isinstance(signature, str) or not signature:
            return False
        if any(not isinstance(key, str) or not isinstance(value, str) for key, value in params.items()):
            return False
        sign_type = params.get(SIGN_TYPE) or RSA2
        if sign_type != RSA2:
            return False
        if rsa2_verify(notify_sign_content(params), signature, alipay_public_key_pem):
            return True
        if not try_with_sign_type:
            return False
        with_type = {**params, SIGN_TYPE: sign_type}
        return rsa2_verify(notify_sign_content(with_type, include_sign_type=True), signature, alipay_public_key_pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


# -- responses ---------------------------------------------------------------------------------------------------


def response_key(method: str) -> str:
    """``alipay.system.oauth.token`` -> ``alipay_system_oauth_token_response`` (protocols §3.2)."""
    return method.replace(".", "_") + "_response"


def _skip_ws(raw: str, index: int) -> int:
    match = _WS.match(raw, index)
    return match.end() if match else index


@dataclass(frozen=True, slots=True)
class ResponseEnvelope:
    """Where a gateway body keeps its payload: the member name, its raw JSON text and the ``sign``."""

    key: str
    """``<method>_response`` or ``error_response``."""
    content: str
    sign: str | None

    @property
    def is_error_response(self) -> bool:
        return self.key == ERROR_RESPONSE


def extract_response_content(raw_body: str, method: str) -> tuple[str, str | None]:
    """The exact raw text of the ``<method>_response`` (or ``error_response``) value and the ``sign``."""
    envelope = locate_response(raw_body, method)
    return envelope.content, envelope.sign


def locate_response(raw_body: str, method: str) -> ResponseEnvelope:
    """Find the ``<method>_response`` (or ``error_response``) member of a gateway body, verbatim.

    The signature covers the value's bytes exactly as sent (protocols §3.2), so the body is not re-serialised:
    its top-level members are walked with the JSON decoder's ``raw_decode`` and the value's span is cut out of
    the original text. Only top-level members count, so a ``sign`` key inside the payload is not taken for the
    signature. Raises ``MalformedResponseError`` for anything but a JSON object holding exactly one of the two
    response members (duplicates included).
    """
    wanted = response_key(method)
    index = _skip_ws(raw_body, 0)
    if not raw_body.startswith("{", index):
        raise MalformedResponseError("the gateway body is not a JSON object")
    index = _skip_ws(raw_body, index + 1)
    found: dict[str, str] = {}
    sign: str | None = None
    seen: set[str] = set()
    if raw_body.startswith("}", index):
        index += 1
    else:
        while True:
            if not raw_body.startswith('"', index):
                raise MalformedResponseError(f"expected a member name at offset {index}")
            try:
                name, index = _DECODER.raw_decode(raw_body, index)
            except json.JSONDecodeError as exc:
                raise MalformedResponseError(f"bad member name at offset {index}") from exc
            if name in seen:
                raise MalformedResponseError(f"duplicate member {name!r}")
            seen.add(name)
            index = _skip_ws(raw_body, index)
            if not raw_body.startswith(":", index):
                raise MalformedResponseError(f"expected ':' at offset {index}")
            start = _skip_ws(raw_body, index + 1)
            try:
                value, end = _DECODER.raw_decode(raw_body, start)
            except json.JSONDecodeError as exc:
                raise MalformedResponseError(f"bad value of {name!r}") from exc
            if name in (wanted, ERROR_RESPONSE):
                if not isinstance(value, dict):
                    raise MalformedResponseError(f"{name!r} is not an object")
                found[name] = raw_body[start:end]
            elif name == SIGN:
                if not isinstance(value, str):
                    raise MalformedResponseError("'sign' is not a string")
                sign = value
            index = _skip_ws(raw_body, end)
            if raw_body.startswith(",", index):
                index = _skip_ws(raw_body, index + 1)
                continue
            if raw_body.startswith("}", index):
                index += 1
                break
            raise MalformedResponseError(f"expected ',' or '}}' at offset {index}")
    if _skip_ws(raw_body, index) != len(raw_body):
        raise MalformedResponseError("trailing data after the JSON object")
    if len(found) != 1:
        raise MalformedResponseError(f"expected exactly one of {wanted!r} or {ERROR_RESPONSE!r}")
    ((key, content),) = found.items()
    return ResponseEnvelope(key=key, content=content, sign=sign)


# -- timestamps --------------------------------------------------------------------------------------------------


def format_timestamp(instant: datetime) -> str:
    """An aware instant as the gateway's ``timestamp`` (``yyyy-MM-dd HH:mm:ss``, Beijing time)."""
    return to_shanghai(instant).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """A gateway or notification time (``yyyy-MM-dd HH:mm:ss``, Beijing time) as an aware UTC instant."""
    naive = datetime.strptime(text.strip(), TIMESTAMP_FORMAT)  # noqa: DTZ007 - the zone is attached next
    return ensure_utc(naive.replace(tzinfo=SHANGHAI))
