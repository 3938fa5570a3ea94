"""Masking of personal data for display and logs (DESIGN D5, SEC-P-08).

Full values leave the system only through the audited reveal; everything else shows these forms:
name ``张*三``, citizen ID ``110***********1234``, phone ``138****1234``, bank card first 6 + last 4.
Every function strips surrounding whitespace and replaces each hidden character with one ``*``; none
shows more than the characters listed.
"""

from __future__ import annotations

from typing import Final

MASK: Final = "*"

_ID_NUMBER_LENGTH: Final = 18
_MOBILE_LENGTH: Final = 11
_CARD_KEEP_HEAD: Final = 6
_CARD_KEEP_TAIL: Final = 4


def mask_name(name: str) -> str:
    """``张`` -> ``*``, ``张三`` -> ``张*``, ``张小三`` -> ``张*三``, ``欧阳小明`` -> ``欧**明``."""
    value = name.strip()
    if len(value) <= 1:
        return MASK * len(value)
    if len(value) == 2:
        return value[0] + MASK
    return _keep(value, 1, 1)


def mask_id_number(number: str) -> str:
    """An 18-character citizen ID keeps the first 3 and last 4 (``110***********1234``).

    Other lengths keep the first and last character when there are at least 3, else everything is masked.
    """
    value = number.strip()
    if len(value) == _ID_NUMBER_LENGTH:
        return _keep(value, 3, 4)
    return _keep_ends(value)


def mask_phone(phone: str) -> str:
    """A mainland mobile number keeps the first 3 and last 4 (``138****1234``).

    Spaces and hyphens are dropped and a leading ``+86``/``0086``/``86`` country code is removed first.
    Other lengths keep the first 3 and last 2 when there are at least 7 characters, else all are masked.
    """
    value = _compact(phone)
    for prefix in ("+86", "0086"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
            break
    else:
        if value.startswith("86") and len(value) == 2 + _MOBILE_LENGTH:
            value = value[2:]
    if len(value) == _MOBILE_LENGTH:
        return _keep(value, 3, 4)
    if len(value) >= 7:
        return _keep(value, 3, 2)
    return MASK * len(value)


def mask_bank_card(number: str) -> str:
    """Keep the first 6 and last 4 digits (``622202******1234``); spaces and hyphens are dropped.

    Numbers too short to hide anything that way keep only the first and last character (at least 3), else
    everything is masked.
    """
    value = _compact(number)
    if len(value) > _CARD_KEEP_HEAD + _CARD_KEEP_TAIL:
        return _keep(value, _CARD_KEEP_HEAD, _CARD_KEEP_TAIL)
    return _keep_ends(value)


def _keep(value: str, head: int, tail: int) -> str:
    """``value`` with all but the first ``head`` and last ``tail`` characters masked."""
    return value[:head] + MASK * (len(value) - head - tail) + value[len(value) - tail :]


def _keep_ends(value: str) -> str:
    return _keep(value, 1, 1) if len(value) >= 3 else MASK * len(value)


def _compact(value: str) -> str:
    return "".join(ch for ch in value if not ch.isspace() and ch != "-")
