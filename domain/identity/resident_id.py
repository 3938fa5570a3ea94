"""Resident ID numbers: GB 11643-1999 公民身份号码 and the cards sharing its layout (domain-rules §5, ID-001..ID-011).

One parser serves three kinds of 18-character number, all with the same layout (6-digit code, birth date
``YYYYMMDD``, 3-digit sequence, MOD 11-2 check character):

- ``citizen``: 居民身份证, first digit 1-8 (ID-001, ID-007);
- ``hk_macao_taiwan_permit``: 港澳台居民居住证, address code 810000/820000/830000 (ID-010);
- ``foreign_permanent``: 外国人永久居留身份证, 2023 version, first digit 9 (ID-011).

Legacy 15-digit citizen numbers are converted to 18 characters (ID-006). The number is personal data: no
error message or detail ever contains it, and it is left out of ``repr``.

The domain never reads the clock (DESIGN D3): callers pass ``today`` (the Asia/Shanghai date from the clock
port) so that the "not in the future" check of ID-004 has a reference date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Final, Literal

from domain.kernel.errors import ValidationError

Sex = Literal["M", "F"]
IdKind = Literal["citizen", "hk_macao_taiwan_permit", "foreign_permanent"]

EARLIEST_BIRTH_YEAR: Final = 1900
"""Birth dates before 1 January of this year are rejected (ID-004). Policy [C], not law: override per call by
passing ``earliest_year=`` to :func:`parse`."""

# ID-002: W_i = 2^(17-i) mod 11 for i = 1..17, and the map from S mod 11 to the check character.
_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARACTERS: Final = "10X98765432"

# ID-010: the three address codes of 港澳台居民居住证.
PERMIT_PREFIXES: Final = frozenset({"810000", "820000", "830000"})

_LENGTH: Final = 18
_LEGACY_LENGTH: Final = 15
_DIGITS_17: Final = re.compile(r"[0-9]{17}")
_FULL_NUMBER: Final = re.compile(r"[0-9]{17}[0-9X]")
_LEGACY_NUMBER: Final = re.compile(r"[0-9]{15}")

# ID-003: U+FF01..U+FF5E are the full-width forms of U+0021..U+007E; U+3000 is the ideographic space.
_FULL_WIDTH_OFFSET: Final = 0xFEE0
_HALF_WIDTH: Final = {code: code - _FULL_WIDTH_OFFSET for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}

CODE_INVALID: Final = "identity.invalid_id_number"
CODE_FORMAT: Final = "identity.id_format"
CODE_CHECKSUM: Final = "identity.id_checksum"
CODE_BIRTH_DATE: Final = "identity.id_birth_date"
CODE_REGION: Final = "identity.id_region"

# Resident-facing messages; ``{noun}`` names the document ("身份证号码" unless a caller says otherwise).
_MESSAGES: Final = {
    CODE_INVALID: "{noun}无效，请核对后重新输入",
    CODE_FORMAT: "{noun}格式不正确，应为18位数字（最后一位可以是X），请核对后重新输入",
    CODE_CHECKSUM: "{noun}校验位不正确，请核对后重新输入",
    CODE_BIRTH_DATE: "{noun}中的出生日期不正确，请核对后重新输入",
    CODE_REGION: "{noun}开头的地区代码不正确，请核对后重新输入",
}
_DEFAULT_NOUN: Final = "身份证号码"


class InvalidResidentIdError(ValidationError):
    """An ID number breaks GB 11643 rules. ``code`` says which; the number itself is never included."""

    code = CODE_INVALID
    message = _MESSAGES[CODE_INVALID].format(noun=_DEFAULT_NOUN)

    @classmethod
    def because(cls, code: str, detail: str, *, noun: str = _DEFAULT_NOUN) -> InvalidResidentIdError:
        """The error for ``code`` (one of the ``CODE_*`` constants) with its Chinese message.

        ``detail`` is for developers and must not contain the number.
        """
        return cls(detail, code=code, message=_MESSAGES.get(code, _MESSAGES[CODE_INVALID]).format(noun=noun))


@dataclass(frozen=True, slots=True)
class ResidentId:
    """A validated 18-character number. Build it with :func:`parse`, which enforces every rule.

    ``number`` and ``birth_date`` are personal data and stay out of ``repr``.
    """

    number: str = field(repr=False)
    birth_date: date = field(repr=False)
    sex: Sex
    region_code: str
    kind: IdKind

    def age_on(self, day: date) -> int:
        """Completed years on ``day`` (ID-004 周岁). A 29 February birthday counts from 1 March in common years.

        Raises ``ValueError`` if ``day`` is before the birth date.
        """
        if day < self.birth_date:
            raise ValueError("the reference date is before the birth date")
        had_birthday = (day.month, day.day) >= (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - (0 if had_birthday else 1)


def normalise(text: str) -> str:
    """ID-003: full-width forms (U+FF01..U+FF5E, U+3000) to half-width, surrounding whitespace trimmed, upper case.

    No character is dropped or validated here: the parsers reject anything that is still not allowed.
    """
    return text.translate(_HALF_WIDTH).strip().upper()


def check_character(first17: str) -> str:
    """ID-002: the ISO 7064 MOD 11-2 check character (``0``-``9`` or ``X``) for 17 ASCII digits.

    Raises ``ValueError`` for anything but exactly 17 ASCII digits.
    """
    if not _DIGITS_17.fullmatch(first17):
        raise ValueError("check_character needs exactly 17 ASCII digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARACTERS[total % 11]


def parse(
    text: str,
    *,
    today: date,
    earliest_year: int = EARLIEST_BIRTH_YEAR,
) -> ResidentId:
    """Validate and normalise an ID number a resident typed; raise :class:`InvalidResidentIdError` if it breaks a rule.

    - ID-003: :func:`normalise`; then only ASCII digits (and ``X`` as the 18th character) are allowed;
    - ID-006: 15 digits are a legacy citizen number: "19" is inserted after the address code and the check
      character appended; legacy numbers exist only for citizens (first digit 1-8, not a permit prefix);
    - ID-001/ID-002: 18 characters, the last one the MOD 11-2 check character of the first 17;
    - ID-007/ID-010/ID-011: the kind comes from the prefix (810000/820000/830000 permit, 9 foreign permanent
      2023 card, 1-8 citizen); a first digit of 0 is rejected. Address codes are not checked against GB/T 2260;
    - ID-004: positions 7-14 are a real date, not after ``today`` and not before ``earliest_year``;
    - ID-005: sex from position 17, odd male, even female.
    """
    value = normalise(text)
    legacy = len(value) == _LEGACY_LENGTH
    if legacy:
        if not _LEGACY_NUMBER.fullmatch(value):
            raise InvalidResidentIdError.because(CODE_FORMAT, "a 15-character number must be all digits")
        first17 = value[:6] + "19" + value[6:]
        value = first17 + check_character(first17)
    elif len(value) != _LENGTH:
        raise InvalidResidentIdError.because(CODE_FORMAT, f"expected 15 or 18 characters, got {len(value)}")
    elif not _FULL_NUMBER.fullmatch(value):
        raise InvalidResidentIdError.because(CODE_FORMAT, "only digits are allowed, and X only as the last character")
    elif check_character(value[:17]) != value[17]:
        raise InvalidResidentIdError.because(CODE_CHECKSUM, "the MOD 11-2 check character does not match")

    kind = _kind(value[:6])
    if kind is None:
        raise InvalidResidentIdError.because(CODE_REGION, "the first digit must be 1-9")
    if legacy and kind != "citizen":
        raise InvalidResidentIdError.because(CODE_REGION, "15-digit legacy numbers exist only for citizen IDs")

    birth_date = _birth_date(value[6:14], today=today, earliest_year=earliest_year)
    sex: Sex = "M" if int(value[16]) % 2 == 1 else "F"
    return ResidentId(number=value, birth_date=birth_date, sex=sex, region_code=value[:6], kind=kind)


def _kind(region_code: str) -> IdKind | None:
    """ID-007, ID-010, ID-011."""
    if region_code in PERMIT_PREFIXES:
        return "hk_macao_taiwan_permit"
    first = region_code[0]
    if first == "9":
        return "foreign_permanent"
    if "1" <= first <= "8":
        return "citizen"
    return None


def _birth_date(yyyymmdd: str, *, today: date, earliest_year: int) -> date:
    """ID-004: a real calendar date, not in the future, not before ``earliest_year``."""
    try:
        birth_date = date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]))
    except ValueError:
        raise InvalidResidentIdError.because(CODE_BIRTH_DATE, "the birth date is not a calendar date") from None
    if birth_date > today:
        raise InvalidResidentIdError.because(CODE_BIRTH_DATE, "the birth date is in the future")
    if birth_date.year < earliest_year:
        raise InvalidResidentIdError.because(CODE_BIRTH_DATE, f"the birth year is before {earliest_year} (policy)")
    return birth_date
