"""Identity documents by WS 364.3 CV02.01.101 type code (domain-rules §5.2, ID-010..ID-013).

Only the documents whose format the rules define are checked beyond normalisation:

| type | sub-type | rule | check |
|---|---|---|---|
| 01 居民身份证, 02 居民户口簿 | | ID-001..ID-007 | :func:`~domain.identity.resident_id.parse`, kind ``citizen`` |
| 03 护照 (Chinese passport) | | ID-012 | ``E`` + 8 digits, or ``E`` + letter + 7 digits |
| 06 港澳居民来往内地通行证 | | ID-012 | ``H``/``M`` + 8 digits, or + 10 digits (older cards) |
| 07 台湾居民来往大陆通行证 | | ID-012 | 8 digits |
| 99 | ``residence_permit`` | ID-010 | :func:`parse`, kind ``hk_macao_taiwan_permit`` |
| 99 | ``foreign_permanent_2023`` | ID-011 | :func:`parse`, kind ``foreign_permanent`` |
| 99 | ``foreign_permanent_2017`` | ID-011 | 3 Latin letters + 12 digits |
| 99 | ``foreign_passport`` | ID-012 [C] | 5-20 Latin letters or digits |
| 04 军官证, 05 驾驶证 | | none | non-empty, at most 32 characters, no whitespace |

Residence permits and permanent-residence cards have no CV02.01.101 code of their own: they are 99 plus a
sub-type (ID-013). Travel documents are format checks only; identity is verified by other means (ID-012).
Every number is normalised first as in ID-003 (full-width to half-width, trimmed, upper case). The number is
personal data: no error message or detail contains it, and it is left out of ``repr``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Final

from domain.identity.resident_id import (
    EARLIEST_BIRTH_YEAR,
    IdKind,
    InvalidResidentIdError,
    ResidentId,
    Sex,
    normalise,
    parse,
)
from domain.kernel.errors import ValidationError


class DocumentType(StrEnum):
    """WS 364.3 CV02.01.101 身份证件类别代码 (ID-013)."""

    RESIDENT_ID = "01"  # 居民身份证
    HOUSEHOLD_REGISTER = "02"  # 居民户口簿
    PASSPORT = "03"  # 护照
    OFFICER = "04"  # 军官证
    DRIVING_LICENCE = "05"  # 驾驶证
    HK_MACAO_TRAVEL_PERMIT = "06"  # 港澳居民来往内地通行证
    TAIWAN_TRAVEL_PERMIT = "07"  # 台湾居民来往内地通行证
    OTHER = "99"  # 其他法定有效证件


class OtherDocumentSubType(StrEnum):
    """The sub-type that goes with :attr:`DocumentType.OTHER` (ID-013: 99 plus a sub-type field)."""

    RESIDENCE_PERMIT = "residence_permit"  # 港澳台居民居住证 (ID-010)
    FOREIGN_PERMANENT_2017 = "foreign_permanent_2017"  # 外国人永久居留身份证, 2017 and older (ID-011)
    FOREIGN_PERMANENT_2023 = "foreign_permanent_2023"  # 外国人永久居留身份证, 2023 version (ID-011)
    FOREIGN_PASSPORT = "foreign_passport"  # 外国护照 (ID-012)


CODE_INVALID_DOCUMENT: Final = "identity.invalid_document"
CODE_DOCUMENT_TYPE: Final = "identity.document_type"
CODE_DOCUMENT_KIND_MISMATCH: Final = "identity.document_kind_mismatch"


class InvalidDocumentError(ValidationError):
    """A document number, type or sub-type is not acceptable. The number itself is never included."""

    code = CODE_INVALID_DOCUMENT
    message = "证件号码格式不正确，请核对后重新输入"


@dataclass(frozen=True)
class IdentityDocument:
    """A validated document. ``birth_date`` and ``sex`` are set only when the number carries them.

    ``sub_type`` is an :class:`OtherDocumentSubType` value for type 99, else ``None``.
    """

    doc_type: DocumentType
    sub_type: str | None
    number: str = field(repr=False)
    birth_date: date | None = field(repr=False)
    sex: Sex | None


_NOUNS: Final = {
    DocumentType.RESIDENT_ID: "身份证号码",
    DocumentType.HOUSEHOLD_REGISTER: "户口簿上的身份证号码",
    DocumentType.PASSPORT: "护照号码",
    DocumentType.OFFICER: "军官证号码",
    DocumentType.DRIVING_LICENCE: "驾驶证号码",
    DocumentType.HK_MACAO_TRAVEL_PERMIT: "港澳居民来往内地通行证号码",
    DocumentType.TAIWAN_TRAVEL_PERMIT: "台湾居民来往大陆通行证号码",
}
_SUB_TYPE_NOUNS: Final = {
    OtherDocumentSubType.RESIDENCE_PERMIT: "居住证号码",
    OtherDocumentSubType.FOREIGN_PERMANENT_2017: "永久居留身份证号码",
    OtherDocumentSubType.FOREIGN_PERMANENT_2023: "永久居留身份证号码",
    OtherDocumentSubType.FOREIGN_PASSPORT: "护照号码",
}
_EXPECTED_KIND: Final[dict[str, IdKind]] = {
    DocumentType.RESIDENT_ID: "citizen",
    DocumentType.HOUSEHOLD_REGISTER: "citizen",
    OtherDocumentSubType.RESIDENCE_PERMIT: "hk_macao_taiwan_permit",
    OtherDocumentSubType.FOREIGN_PERMANENT_2023: "foreign_permanent",
}
_KIND_NOUNS: Final[dict[IdKind, str]] = {
    "citizen": "居民身份证",
    "hk_macao_taiwan_permit": "港澳台居民居住证",
    "foreign_permanent": "外国人永久居留身份证",
}

# ID-012 (and ID-011 for the 2017 card); all patterns are ASCII-only after normalisation.
_CHINESE_PASSPORT: Final = re.compile(r"E[0-9]{8}|E[A-Z][0-9]{7}")
_HK_MACAO_TRAVEL_PERMIT: Final = re.compile(r"[HM][0-9]{8}|[HM][0-9]{10}")
_TAIWAN_TRAVEL_PERMIT: Final = re.compile(r"[0-9]{8}")
_FOREIGN_PERMANENT_2017: Final = re.compile(r"[A-Z]{3}[0-9]{12}")
_FOREIGN_PASSPORT: Final = re.compile(r"[A-Z0-9]{5,20}")
_UNCHECKED_MAX_LENGTH: Final = 32

_PATTERNS: Final[dict[str, tuple[re.Pattern[str], str]]] = {
    DocumentType.PASSPORT: (_CHINESE_PASSPORT, "应为E加8位数字，或E加1个字母和7位数字"),
    DocumentType.HK_MACAO_TRAVEL_PERMIT: (_HK_MACAO_TRAVEL_PERMIT, "应为H或M加8位或10位数字"),
    DocumentType.TAIWAN_TRAVEL_PERMIT: (_TAIWAN_TRAVEL_PERMIT, "应为8位数字"),
    OtherDocumentSubType.FOREIGN_PERMANENT_2017: (_FOREIGN_PERMANENT_2017, "应为3个英文字母加12位数字"),
    OtherDocumentSubType.FOREIGN_PASSPORT: (_FOREIGN_PASSPORT, "应为5至20位英文字母或数字"),
}


def parse_document(
    doc_type: str | DocumentType,
    text: str,
    *,
    sub_type: str | None = None,
    today: date,
    earliest_year: int = EARLIEST_BIRTH_YEAR,
) -> IdentityDocument:
    """Validate ``text`` as a number of ``doc_type`` (and ``sub_type`` for 99); see the module table for the rules.

    ``today`` is the reference date for birth dates (ID-004); the domain never reads the clock.

    Raises :class:`InvalidDocumentError` for an unknown type or sub-type (``identity.document_type``), a number
    of the wrong format (``identity.invalid_document``) or an ID number of another kind than declared
    (``identity.document_kind_mismatch``), and :class:`InvalidResidentIdError` when an ID-number-based document
    breaks GB 11643 rules.
    """
    kind = _document_type(doc_type)
    sub = _sub_type(kind, sub_type)
    key: str = sub if sub is not None else kind
    noun = _SUB_TYPE_NOUNS[sub] if sub is not None else _NOUNS[kind]

    if key in _EXPECTED_KIND:
        # 01, 02 (ID-001..ID-007), 99 residence permit (ID-010), 99 foreign permanent 2023 (ID-011).
        resident_id = _parse_resident_id(text, today=today, earliest_year=earliest_year, noun=noun)
        _require_kind(resident_id, _EXPECTED_KIND[key])
        return IdentityDocument(kind, sub, resident_id.number, resident_id.birth_date, resident_id.sex)

    number = normalise(text)
    if key in _PATTERNS:
        # 03, 06, 07 (ID-012); 99 foreign permanent 2017 (ID-011); 99 foreign passport (ID-012 [C]).
        pattern, shape = _PATTERNS[key]
        if not pattern.fullmatch(number):
            raise InvalidDocumentError(
                f"the number does not match the {key} format",
                message=f"{noun}格式不正确，{shape}，请核对后重新输入",
            )
    elif not number or len(number) > _UNCHECKED_MAX_LENGTH or any(ch.isspace() for ch in number):
        # 04, 05: the rules define no format; only reject what cannot be a document number.
        raise InvalidDocumentError(
            f"the number is empty, too long or contains whitespace (type {key})",
            message=f"{noun}格式不正确，请核对后重新输入",
        )
    return IdentityDocument(kind, sub, number, None, None)


def _document_type(doc_type: str | DocumentType) -> DocumentType:
    try:
        return DocumentType(normalise(doc_type))
    except ValueError:
        raise InvalidDocumentError(
            "unknown CV02.01.101 document type code",
            code=CODE_DOCUMENT_TYPE,
            message="证件类型不正确，请重新选择",
        ) from None


def _sub_type(doc_type: DocumentType, sub_type: str | None) -> OtherDocumentSubType | None:
    """ID-013: type 99 needs a known sub-type; the other types take none."""
    if doc_type is not DocumentType.OTHER:
        if sub_type is not None:
            raise InvalidDocumentError(
                "a sub-type is allowed only with document type 99",
                code=CODE_DOCUMENT_TYPE,
                message="证件类型不正确，请重新选择",
            )
        return None
    try:
        return OtherDocumentSubType((sub_type or "").strip().lower())
    except ValueError:
        raise InvalidDocumentError(
            "document type 99 needs a known sub-type",
            code=CODE_DOCUMENT_TYPE,
            message="请选择具体的证件类型",
        ) from None


def _parse_resident_id(text: str, *, today: date, earliest_year: int, noun: str) -> ResidentId:
    try:
        return parse(text, today=today, earliest_year=earliest_year)
    except InvalidResidentIdError as error:
        # Same code and detail, with the message naming the document the resident chose.
        raise InvalidResidentIdError.because(error.code, error.detail, noun=noun) from None


def _require_kind(resident_id: ResidentId, expected: IdKind) -> None:
    """ID-007/ID-010/ID-011: the prefix-derived kind must be the declared document."""
    if resident_id.kind != expected:
        raise InvalidDocumentError(
            f"the number is a {resident_id.kind} number, not {expected}",
            code=CODE_DOCUMENT_KIND_MISMATCH,
            message=f"该号码是{_KIND_NOUNS[resident_id.kind]}号码，请选择正确的证件类型",
        )
