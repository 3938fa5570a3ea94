"""Identity documents by CV02.01.101 type (domain-rules §5.2, ID-010..ID-013)."""

from __future__ import annotations

from datetime import date

import pytest

from domain.identity.documents import (
    CODE_DOCUMENT_KIND_MISMATCH,
    CODE_DOCUMENT_TYPE,
    CODE_INVALID_DOCUMENT,
    DocumentType,
    IdentityDocument,
    InvalidDocumentError,
    OtherDocumentSubType,
    parse_document,
)
from domain.identity.resident_id import CODE_BIRTH_DATE, CODE_CHECKSUM, InvalidResidentIdError, check_character
from domain.kernel.errors import ValidationError

TODAY = date(2025, 6, 1)

# GB 11643-1999 example, quoted in domain-rules ID-002.
STANDARD_EXAMPLE = "11010519491231002X"
RESIDENCE_PERMIT = "81000019850315003" + check_character("81000019850315003")
FOREIGN_2023 = "93184019850315002" + check_character("93184019850315002")


def _parse(doc_type: str | DocumentType, text: str, sub_type: str | None = None) -> IdentityDocument:
    return parse_document(doc_type, text, sub_type=sub_type, today=TODAY)


def _invalid_document(doc_type: str | DocumentType, text: str, sub_type: str | None = None) -> InvalidDocumentError:
    with pytest.raises(InvalidDocumentError) as caught:
        _parse(doc_type, text, sub_type)
    return caught.value


def test_cv02_01_101_codes() -> None:
    """ID-013: the WS 364.3 CV02.01.101 code list."""
    assert [member.value for member in DocumentType] == ["01", "02", "03", "04", "05", "06", "07", "99"]
    assert DocumentType.RESIDENT_ID.value == "01"
    assert DocumentType.HOUSEHOLD_REGISTER.value == "02"
    assert DocumentType.PASSPORT.value == "03"
    assert DocumentType.OFFICER.value == "04"
    assert DocumentType.DRIVING_LICENCE.value == "05"
    assert DocumentType.HK_MACAO_TRAVEL_PERMIT.value == "06"
    assert DocumentType.TAIWAN_TRAVEL_PERMIT.value == "07"
    assert DocumentType.OTHER.value == "99"


# --- 01, 02: citizen ID number ------------------------------------------------------------------------------


@pytest.mark.parametrize("doc_type", [DocumentType.RESIDENT_ID, "01", DocumentType.HOUSEHOLD_REGISTER, "02", "０１"])
def test_resident_id_and_household_register_use_the_citizen_number(doc_type: str | DocumentType) -> None:
    """ID-001..ID-005, ID-013: 01 and 02 carry the citizen ID number (GB 11643-1999 example)."""
    document = _parse(doc_type, "１１０１０５１９４９１２３１００２ｘ")
    assert document.doc_type in {DocumentType.RESIDENT_ID, DocumentType.HOUSEHOLD_REGISTER}
    assert document.sub_type is None
    assert document.number == STANDARD_EXAMPLE
    assert document.birth_date == date(1949, 12, 31)
    assert document.sex == "F"


def test_resident_id_accepts_the_legacy_form() -> None:
    """ID-006: 110105491231002 -> 11010519491231002X."""
    assert _parse("01", "110105491231002").number == STANDARD_EXAMPLE


def test_resident_id_errors_keep_their_code_and_name_the_document() -> None:
    """ID-002, ID-004: GB 11643 errors come through with their codes; the message names the chosen document."""
    with pytest.raises(InvalidResidentIdError) as caught:
        _parse("02", "110105194912310021")
    assert caught.value.code == CODE_CHECKSUM
    assert "户口簿" in caught.value.message
    with pytest.raises(InvalidResidentIdError) as caught:
        _parse("01", "110105199002301234")
    assert caught.value.code in {CODE_CHECKSUM, CODE_BIRTH_DATE}
    assert "110105199002301234" not in str(caught.value)


@pytest.mark.parametrize("number", [RESIDENCE_PERMIT, FOREIGN_2023])
def test_resident_id_rejects_permit_and_foreign_card_numbers(number: str) -> None:
    """ID-010, ID-011, ID-013: permits and permanent-residence cards are 99 plus a sub-type, not 01."""
    error = _invalid_document("01", number)
    assert error.code == CODE_DOCUMENT_KIND_MISMATCH
    assert "请选择正确的证件类型" in error.message
    assert number not in str(error)


# --- 03 passport ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"), [("E12345678", "E12345678"), ("eA1234567", "EA1234567"), ("ＥＢ１２３４５６７ ", "EB1234567")]
)
def test_chinese_passport(text: str, number: str) -> None:
    """ID-012: E + 8 digits, or E + letter + 7 digits; normalised (ID-003)."""
    document = _parse(DocumentType.PASSPORT, text)
    assert document.number == number
    assert document.birth_date is None
    assert document.sex is None


@pytest.mark.parametrize(
    "text", ["G12345678", "E1234567", "E123456789", "EA12345678", "E1A234567", "E1234567X", "E 12345678"]
)
def test_chinese_passport_format_is_enforced(text: str) -> None:
    """ID-012: other shapes are not Chinese passports (foreign passports are 99/foreign_passport)."""
    error = _invalid_document("03", text)
    assert error.code == CODE_INVALID_DOCUMENT
    assert error.message.startswith("护照号码格式不正确")


# --- 06, 07 travel permits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("H12345678", "H12345678"),
        ("M12345678", "M12345678"),
        ("h1234567890", "H1234567890"),
        ("Ｍ１２３４５６７８９０", "M1234567890"),
    ],
)
def test_hk_macao_travel_permit(text: str, number: str) -> None:
    """ID-012: 回乡证 H/M + 8 digits, or + 10 digits on older cards; normalised (ID-003)."""
    assert _parse("06", text).number == number


@pytest.mark.parametrize("text", ["A12345678", "H1234567", "H123456789", "H12345678901", "12345678", "HM1234567"])
def test_hk_macao_travel_permit_format_is_enforced(text: str) -> None:
    """ID-012."""
    assert _invalid_document("06", text).code == CODE_INVALID_DOCUMENT


def test_taiwan_travel_permit() -> None:
    """ID-012: 台胞证 8 digits."""
    assert _parse("07", " １２３４５６７８ ").number == "12345678"


@pytest.mark.parametrize("text", ["1234567", "123456789", "T1234567", "1234567A"])
def test_taiwan_travel_permit_format_is_enforced(text: str) -> None:
    """ID-012."""
    assert _invalid_document("07", text).code == CODE_INVALID_DOCUMENT


# --- 99 with sub-types --------------------------------------------------------------------------------------


def test_residence_permit() -> None:
    """ID-010: 港澳台居民居住证 via the GB 11643 validator, kind from the 810000/820000/830000 prefix."""
    document = _parse("99", RESIDENCE_PERMIT, OtherDocumentSubType.RESIDENCE_PERMIT)
    assert document.doc_type is DocumentType.OTHER
    assert document.sub_type == "residence_permit"
    assert document.number == RESIDENCE_PERMIT
    assert document.birth_date == date(1985, 3, 15)
    assert document.sex == "M"


@pytest.mark.parametrize("number", [STANDARD_EXAMPLE, FOREIGN_2023])
def test_residence_permit_kind_must_match(number: str) -> None:
    """ID-010, ID-013: a citizen or foreign-card number is not a residence permit."""
    assert _invalid_document("99", number, "residence_permit").code == CODE_DOCUMENT_KIND_MISMATCH


def test_residence_permit_checksum() -> None:
    """ID-010 + ID-002: same MOD 11-2 check."""
    wrong = RESIDENCE_PERMIT[:17] + ("1" if RESIDENCE_PERMIT[17] != "1" else "2")
    with pytest.raises(InvalidResidentIdError) as caught:
        _parse("99", wrong, "residence_permit")
    assert caught.value.code == CODE_CHECKSUM
    assert caught.value.message.startswith("居住证号码")


def test_foreign_permanent_2023() -> None:
    """ID-011: 2023 card, first digit 9, MOD 11-2, birth date at positions 7-14, sex from position 17."""
    document = _parse("99", FOREIGN_2023, "foreign_permanent_2023")
    assert document.sub_type == OtherDocumentSubType.FOREIGN_PERMANENT_2023
    assert document.number == FOREIGN_2023
    assert document.birth_date == date(1985, 3, 15)
    assert document.sex == "F"


@pytest.mark.parametrize("number", [STANDARD_EXAMPLE, RESIDENCE_PERMIT])
def test_foreign_permanent_2023_kind_must_match(number: str) -> None:
    """ID-011, ID-013: the 2023 card starts with 9."""
    assert _invalid_document("99", number, "foreign_permanent_2023").code == CODE_DOCUMENT_KIND_MISMATCH


@pytest.mark.parametrize(
    ("text", "number"),
    [("USA110085031500", "USA110085031500"), (" ｃａｎ３１０１８５０３１５０１ ", "CAN310185031501")],
)
def test_foreign_permanent_2017(text: str, number: str) -> None:
    """ID-011: 2017 and older cards are 3 Latin letters + 12 digits."""
    document = _parse("99", text, "foreign_permanent_2017")
    assert document.number == number
    assert document.birth_date is None
    assert document.sex is None


@pytest.mark.parametrize(
    "text", ["US1100850315001", "USA11008503150", "USA1100850315001", "1USA10085031500", "ÜSA110085031500"]
)
def test_foreign_permanent_2017_format_is_enforced(text: str) -> None:
    """ID-011."""
    assert _invalid_document("99", text, "foreign_permanent_2017").code == CODE_INVALID_DOCUMENT


@pytest.mark.parametrize(("text", "number"), [("x1234", "X1234"), ("AB1234567", "AB1234567"), ("1" * 20, "1" * 20)])
def test_foreign_passport(text: str, number: str) -> None:
    """ID-012 [C]: foreign passports are 5-20 alphanumeric characters."""
    assert _parse("99", text, "foreign_passport").number == number


@pytest.mark.parametrize("text", ["X123", "1" * 21, "AB-123456", "AB 123456", "", "护照12345"])
def test_foreign_passport_format_is_enforced(text: str) -> None:
    """ID-012 [C]."""
    assert _invalid_document("99", text, "foreign_passport").code == CODE_INVALID_DOCUMENT


# --- 04, 05 and type errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("doc_type", ["04", "05"])
def test_officer_and_driving_licence_are_only_normalised(doc_type: str) -> None:
    """ID-013: the rules define no format for 04 and 05; the number is normalised (ID-003) and kept."""
    assert _parse(doc_type, " 南字第１２３４５６号 ").number == "南字第123456号"
    for bad in ["", "   ", "A B", "1" * 33]:
        assert _invalid_document(doc_type, bad).code == CODE_INVALID_DOCUMENT


@pytest.mark.parametrize("doc_type", ["00", "08", "1", "111", "", "passport"])
def test_unknown_type_is_rejected(doc_type: str) -> None:
    """ID-013: only CV02.01.101 codes are accepted."""
    error = _invalid_document(doc_type, "E12345678")
    assert error.code == CODE_DOCUMENT_TYPE
    assert error.message == "证件类型不正确，请重新选择"


@pytest.mark.parametrize("sub_type", [None, "", "military", "01"])
def test_type_99_needs_a_known_sub_type(sub_type: str | None) -> None:
    """ID-013: residence permits and permanent-residence cards are 99 plus a sub-type field."""
    assert _invalid_document("99", "AB1234567", sub_type).code == CODE_DOCUMENT_TYPE


def test_sub_type_only_with_type_99() -> None:
    """ID-013: the sub-type belongs to 99 only."""
    assert _invalid_document("01", STANDARD_EXAMPLE, "residence_permit").code == CODE_DOCUMENT_TYPE


def test_document_errors_are_validation_errors_without_the_number() -> None:
    """ID-012, SEC-P-08: errors are ValidationError and never carry the number."""
    error = _invalid_document("03", "G98765432")
    assert isinstance(error, ValidationError)
    for shown in (error.message, error.detail, str(error)):
        assert "98765432" not in shown
    assert "98765432" not in repr(_parse("03", "E98765432"))
