"""Scrubbing personal data and secrets out of log events and audit records (SEC-L-05, SEC-P-08).

Values under sensitive keys are replaced whole; in every other string, citizen ID numbers (a plausible birth
date and a valid check character), mainland mobile numbers, bearer tokens and JWTs are masked. Applying it
twice changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

REDACTED: Final = "[redacted]"
SENSITIVE_KEYS = frozenset(
    {
        "name",
        "real_name",
        "realname",
        "phone",
        "mobile",
        "id_number",
        "idnumber",
        "id_card",
        "idcard",
        "address",
        "openid",
        "unionid",
        "session_key",
        "sessionkey",
        "code",
        "sms_code",
        "body",
        "payload",
        "content",
        "diagnosis",
    }
)
_SECRET_KEY = re.compile(
    r"pass(?:word|wd|code)|pwd|secret|token|authori[sz]ation|cookie|api[_-]?key|private[_-]?key"
    r"|credential|cvv|(?:^|[_.-])otp(?:$|[_.-])|totp",
    re.IGNORECASE,
)
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[0-9Xx](?![0-9A-Za-z])")
_ID_NUMBER_15 = re.compile(r"(?<![0-9A-Za-z])\d{6}(\d{2})(\d{2})(\d{2})\d{3}(?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?<![0-9A-Za-z+])(?:\+?86[ -]?)?(1[3-9]\d)(\d{4})(\d{4})(?![0-9A-Za-z])")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"\b(Bearer|Basic)\s+(?!\[redacted\])[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK: Final = "10X98765432"


def is_secret_key(key: str) -> bool:
    """Keys whose values are secrets (passwords, tokens, keys): never kept, not even masked."""
    return _SECRET_KEY.search(key) is not None


def is_sensitive_key(key: str) -> bool:
    """Secret keys, and keys whose values identify a person or carry medical content (dropped from logs)."""
    return key.lower().replace("-", "_") in SENSITIVE_KEYS or is_secret_key(key)


def _is_citizen_id(number: str) -> bool:
    """An 18-character mainland citizen ID: a plausible birth date and a valid ISO 7064 check character."""
    birth = number[6:14]
    if not ("1800" <= birth[:4] <= "2199" and "01" <= birth[4:6] <= "12" and "01" <= birth[6:8] <= "31"):
        return False
    total = sum(int(digit) * weight for digit, weight in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def _mask_id(match: re.Match[str]) -> str:
    whole = match.group(0)
    return whole[:3] + "*" * 11 + whole[-4:] if _is_citizen_id(whole) else whole


def _mask_id_15(match: re.Match[str]) -> str:
    _, month, day = match.groups()
    plausible = "01" <= month <= "12" and "01" <= day <= "31"
    return "*" * 15 if plausible else match.group(0)


def scrub_text(text: str) -> str:
    """Mask citizen IDs (``110***********1234``) and mobile numbers (``138****1234``), drop tokens."""
    text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _ID_NUMBER.sub(_mask_id, text)
    text = _ID_NUMBER_15.sub(_mask_id_15, text)
    return _MOBILE.sub(lambda m: m.group(1) + "****" + m.group(3), text)


def scrub(value: Any, *, key: str | None = None, depth: int = 0) -> Any:
    """Return a copy of ``value`` safe to log."""
    if key is not None and value is not None and is_sensitive_key(key):
        return REDACTED
    if depth > 6:
        return "[nested]"
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {k: scrub(v, key=str(k), depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v, depth=depth + 1) for v in value]
    return value


def scrub_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Scrub a log event dict; the event name itself is kept but scrubbed as text."""
    return {k: scrub_text(v) if k == "event" and isinstance(v, str) else scrub(v, key=k) for k, v in event.items()}
