"""Resident ID numbers (domain-rules §5.1-5.2, ID-001..ID-011)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.identity.resident_id import (
    CODE_BIRTH_DATE,
    CODE_CHECKSUM,
    CODE_FORMAT,
    CODE_REGION,
    EARLIEST_BIRTH_YEAR,
    InvalidResidentIdError,
    ResidentId,
    check_character,
    normalise,
    parse,
)
from domain.kernel.errors import ValidationError

TODAY = date(2025, 6, 1)
"""The reference date the caller takes from the clock port; fixed so the tests are deterministic."""

# GB 11643-1999 example (the standard's own example), quoted in domain-rules ID-002.
STANDARD_EXAMPLE = "11010519491231002X"
# The second published valid vector in domain-rules ID-002.
SECOND_VECTOR = "440308199901101512"
# The published invalid vector in domain-rules ID-002 (the check character should be X).
INVALID_VECTOR = "110105194912310021"
# The published legacy vector in domain-rules ID-006.
LEGACY_VECTOR = "110105491231002"


def _with_check(first17: str) -> str:
    return first17 + check_character(first17)


def _to_full_width(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else "\u3000" if ch == " " else ch for ch in text)


def _parse(text: str) -> ResidentId:
    return parse(text, today=TODAY)


def _rejected(text: str, *, today: date = TODAY) -> InvalidResidentIdError:
    with pytest.raises(InvalidResidentIdError) as caught:
        parse(text, today=today)
    return caught.value


# --- published vectors ---------------------------------------------------------------------------------------


def test_gb_11643_standard_example_is_valid() -> None:
    """ID-001, ID-002, ID-004, ID-005: the GB 11643-1999 example parses into its parts."""
    resident_id = _parse(STANDARD_EXAMPLE)
    assert resident_id.number == STANDARD_EXAMPLE
    assert resident_id.birth_date == date(1949, 12, 31)
    assert resident_id.sex == "F"
    assert resident_id.region_code == "110105"
    assert resident_id.kind == "citizen"


def test_second_published_vector_is_valid() -> None:
    """ID-002: 440308199901101512 (domain-rules vector) is valid."""
    resident_id = _parse(SECOND_VECTOR)
    assert resident_id.number == SECOND_VECTOR
    assert resident_id.birth_date == date(1999, 1, 10)
    assert resident_id.sex == "M"
    assert resident_id.region_code == "440308"


def test_check_character_of_published_vectors() -> None:
    """ID-002: MOD 11-2 over the first 17 digits gives the published check characters."""
    assert check_character(STANDARD_EXAMPLE[:17]) == "X"
    assert check_character(SECOND_VECTOR[:17]) == "2"
    assert check_character(INVALID_VECTOR[:17]) == "X"


@pytest.mark.parametrize("bad", ["", "1234567890123456", "1101051949123100X", "a" * 17, "１" * 17])
def test_check_character_needs_17_ascii_digits(bad: str) -> None:
    """ID-002: the helper is defined over 17 digits only."""
    with pytest.raises(ValueError, match="17 ASCII digits"):
        check_character(bad)


def test_published_invalid_vector_fails_the_checksum() -> None:
    """ID-002: 110105194912310021 is invalid (the check should be X)."""
    error = _rejected(INVALID_VECTOR)
    assert error.code == CODE_CHECKSUM
    assert error.message == "身份证号码校验位不正确，请核对后重新输入"


def test_published_legacy_vector_is_converted() -> None:
    """ID-006: 110105491231002 -> 11010519491231002X."""
    resident_id = _parse(LEGACY_VECTOR)
    assert resident_id.number == STANDARD_EXAMPLE
    assert resident_id.birth_date == date(1949, 12, 31)
    assert resident_id.sex == "F"


# --- ID-002 checksum -----------------------------------------------------------------------------------------


def test_wrong_check_character_is_rejected() -> None:
    """ID-002: any check character but the computed one is rejected."""
    for wrong in "0123456789X":
        if wrong != "2":
            assert _rejected(SECOND_VECTOR[:17] + wrong).code == CODE_CHECKSUM


def test_transposed_digits_are_rejected() -> None:
    """ID-002: swapping two adjacent different digits changes the weighted sum."""
    swapped = SECOND_VECTOR[:1] + SECOND_VECTOR[2] + SECOND_VECTOR[1] + SECOND_VECTOR[3:]
    assert _rejected(swapped).code == CODE_CHECKSUM


# --- ID-004 birth date ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "yyyymmdd",
    ["19900230", "19900231", "19900431", "19901301", "19900001", "19900100", "19000229", "20230229"],
)
def test_impossible_birth_date_is_rejected(yyyymmdd: str) -> None:
    """ID-004: positions 7-14 must be a real calendar date (Feb 30, month 13, 1900 and 2023 are not leap)."""
    error = _rejected(_with_check("110105" + yyyymmdd + "123"))
    assert error.code == CODE_BIRTH_DATE
    assert error.message == "身份证号码中的出生日期不正确，请核对后重新输入"


def test_leap_day_is_a_real_date() -> None:
    """ID-004: 29 February exists in 2000 and 2024."""
    assert _parse(_with_check("11010520000229123")).birth_date == date(2000, 2, 29)
    assert _parse(_with_check("11010520240229123")).birth_date == date(2024, 2, 29)


def test_future_birth_date_is_rejected() -> None:
    """ID-004: not in the future relative to the caller's ``today``."""
    tomorrow = TODAY + timedelta(days=1)
    number = _with_check("110105" + tomorrow.strftime("%Y%m%d") + "123")
    assert _rejected(number).code == CODE_BIRTH_DATE
    assert parse(number, today=tomorrow).birth_date == tomorrow


def test_birth_today_is_accepted() -> None:
    """ID-004: a child born today is not in the future."""
    number = _with_check("110105" + TODAY.strftime("%Y%m%d") + "124")
    assert _parse(number).age_on(TODAY) == 0


def test_birth_before_1900_is_rejected() -> None:
    """ID-004: the 1900 floor is policy [C]."""
    assert EARLIEST_BIRTH_YEAR == 1900
    error = _rejected(_with_check("11010518991231123"))
    assert error.code == CODE_BIRTH_DATE
    assert _parse(_with_check("11010519000101123")).birth_date == date(1900, 1, 1)


def test_earliest_year_is_configurable() -> None:
    """ID-004 [C]: the floor can be moved per call."""
    number = _with_check("11010518991231123")
    assert parse(number, today=TODAY, earliest_year=1890).birth_date == date(1899, 12, 31)
    with pytest.raises(InvalidResidentIdError):
        parse(SECOND_VECTOR, today=TODAY, earliest_year=2000)


@pytest.mark.parametrize("legacy", ["110105490230002", "110105491301002", "110105490931002"])
def test_legacy_number_with_impossible_date_is_rejected(legacy: str) -> None:
    """ID-006 + ID-004: the date of a 15-digit number (19YYMMDD) is validated after conversion."""
    assert _rejected(legacy).code == CODE_BIRTH_DATE


# --- ID-003 normalisation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "１１０１０５１９４９１２３１００２ｘ",
        "１１０１０５１９４９１２３１００２Ｘ",
        "１１０１０５1949１２３１００２X",
        "\u3000１１０１０５１９４９１２３１００２Ｘ\u3000",
        "11010519491231002x",
        "  11010519491231002x\n",
        "\t11010519491231002X ",
    ],
)
def test_full_width_lower_case_and_spaces_are_normalised(text: str) -> None:
    """ID-003: trim, full-width to half-width, x upper case."""
    assert _parse(text).number == STANDARD_EXAMPLE


def test_full_width_legacy_number_is_normalised() -> None:
    """ID-003 + ID-006."""
    assert _parse("１１０１０５４９１２３１００２").number == STANDARD_EXAMPLE


def test_normalise_maps_the_full_width_block_and_ideographic_space() -> None:
    """ID-003: U+FF01..U+FF5E -> U+0021..U+007E, U+3000 -> space."""
    assert normalise("\u3000ａｂｃ！～\u3000") == "ABC!~"
    assert normalise("１２３") == "123"


@pytest.mark.parametrize(
    "text",
    [
        "11010519491231002A",  # letter other than X
        "1101051949123100X2",  # X not last
        "X10105194912310021",
        "110105 19491231002X",  # inner space
        "110105-19491231002X",
        "11010519491231002Ｙ",  # full-width letter other than X
        "١١٠١٠٥١٩٤٩١٢٣١٠٠٢X",  # Arabic-Indic digits are digits to str.isdigit, not to GB 11643
        "11010519491231002X1",  # too long
        "1101051949123100",  # 16
        "11010549123100X",  # 15 with X: legacy numbers have no check character
        "",
        "   ",
    ],
)
def test_other_characters_and_lengths_are_rejected(text: str) -> None:
    """ID-003, ID-001: only digits (X as the 18th character); 15 or 18 characters."""
    assert _rejected(text).code == CODE_FORMAT


# --- ID-005 sex, ID-004 age ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("digit", "sex"), [(str(d), "M" if d % 2 else "F") for d in range(10)])
def test_sex_comes_from_the_17th_character(digit: str, sex: str) -> None:
    """ID-005: position 17 odd = male, even = female."""
    assert _parse(_with_check("1101051990010112" + digit)).sex == sex


def test_age_on_counts_completed_years() -> None:
    """ID-004: age is completed years (周岁) at the reference date."""
    resident_id = _parse(SECOND_VECTOR)  # born 1999-01-10
    assert resident_id.age_on(date(1999, 1, 10)) == 0
    assert resident_id.age_on(date(2000, 1, 9)) == 0
    assert resident_id.age_on(date(2000, 1, 10)) == 1
    assert resident_id.age_on(date(2025, 1, 9)) == 25
    assert resident_id.age_on(date(2025, 1, 10)) == 26


def test_age_on_leap_day_birthday() -> None:
    """ID-004: someone born on 29 February completes a year on 1 March in common years."""
    resident_id = _parse(_with_check("11010520000229123"))
    assert resident_id.age_on(date(2001, 2, 28)) == 0
    assert resident_id.age_on(date(2001, 3, 1)) == 1
    assert resident_id.age_on(date(2004, 2, 29)) == 4


def test_age_on_before_birth_is_an_error() -> None:
    """ID-004: there is no age before birth."""
    with pytest.raises(ValueError, match="before the birth date"):
        _parse(SECOND_VECTOR).age_on(date(1999, 1, 9))


# --- ID-007, ID-010, ID-011 kinds ----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["810000", "820000", "830000"])
def test_hk_macao_taiwan_permit_prefixes(prefix: str) -> None:
    """ID-010: 810000/820000/830000 are 港澳台居民居住证, same MOD 11-2 validator."""
    resident_id = _parse(_with_check(prefix + "19850315003"))
    assert resident_id.kind == "hk_macao_taiwan_permit"
    assert resident_id.region_code == prefix
    assert resident_id.birth_date == date(1985, 3, 15)
    assert resident_id.sex == "M"
    assert _rejected(resident_id.number[:17] + ("0" if resident_id.number[17] != "0" else "1")).code == CODE_CHECKSUM


def test_other_codes_starting_with_8_are_citizens() -> None:
    """ID-007, ID-010: only the three exact 6-digit codes mark a permit; codes are not checked against GB/T 2260."""
    assert _parse(_with_check("81010119850315003")).kind == "citizen"


def test_foreign_permanent_2023_card() -> None:
    """ID-011: 2023 card, first digit 9, province 31, nationality 840, birth date, sequence, MOD 11-2."""
    number = _with_check("93184019850315002")
    resident_id = _parse(number)
    assert resident_id.kind == "foreign_permanent"
    assert resident_id.region_code == "931840"
    assert resident_id.birth_date == date(1985, 3, 15)
    assert resident_id.sex == "F"


def test_foreign_permanent_2017_card_is_not_a_resident_id_number() -> None:
    """ID-011: the 2017 card (3 letters + 12 digits) is handled by parse_document, not by parse."""
    assert _rejected("USA110085031500").code == CODE_FORMAT


def test_first_digit_zero_is_rejected() -> None:
    """ID-007: the first digit is 1-8 (citizen) or 9 (foreign permanent); 0 is invalid."""
    error = _rejected(_with_check("01010519491231002"))
    assert error.code == CODE_REGION


@pytest.mark.parametrize("legacy", ["910105491231002", "810000491231002", "010105491231002"])
def test_legacy_numbers_are_citizen_only(legacy: str) -> None:
    """ID-006, ID-007: 15-digit numbers predate permits and the 2023 card."""
    assert _rejected(legacy).code == CODE_REGION


# --- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [INVALID_VECTOR, "11010519900230123X", "11010519491231002A", "1101051949", _with_check("01010519491231002")],
)
def test_errors_never_contain_the_number(text: str) -> None:
    """SEC-P-08 via ID rules: the number is personal data and stays out of message, detail and str()."""
    error = _rejected(text)
    assert isinstance(error, ValidationError)
    assert error.code.startswith("identity.")
    for shown in (error.message, error.detail, str(error), repr(error)):
        assert text not in shown
        assert text[:10] not in shown
    assert error.__cause__ is None


def test_repr_hides_number_and_birth_date() -> None:
    """SEC-P-08: repr of a parsed ID does not show the number or the birth date."""
    shown = repr(_parse(SECOND_VECTOR))
    assert SECOND_VECTOR not in shown
    assert "1999" not in shown


# --- properties ----------------------------------------------------------------------------------------------

_PERMIT_PREFIXES = {"810000", "820000", "830000"}

_regions = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("12345678"),
    st.text("0123456789", min_size=5, max_size=5),
)
_citizen_regions = _regions.filter(lambda region: region not in _PERMIT_PREFIXES)
_sequences = st.integers(0, 999).map(lambda n: f"{n:03d}")


@st.composite
def _valid_numbers(draw: st.DrawFn) -> tuple[str, date, str]:
    region = draw(_regions)
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=TODAY))
    sequence = draw(_sequences)
    return _with_check(region + born.strftime("%Y%m%d") + sequence), born, region


@st.composite
def _disguised(draw: st.DrawFn, number: str) -> str:
    """The same number as a resident might type it: some characters full-width, x lower case, padded."""
    chars = []
    for ch in number:
        typed = ch.lower() if ch == "X" and draw(st.booleans()) else ch
        chars.append(_to_full_width(typed) if draw(st.booleans()) else typed)
    padding = st.text(" \t\n\u3000", max_size=3)
    return draw(padding) + "".join(chars) + draw(padding)


@settings(max_examples=300)
@given(data=st.data(), generated=_valid_numbers())
def test_valid_numbers_round_trip_and_survive_normalisation(
    data: st.DataObject, generated: tuple[str, date, str]
) -> None:
    """ID-001..ID-005, ID-010 (property): a generated valid number parses to itself, also as a resident types it."""
    number, born, region = generated
    resident_id = _parse(number)
    assert resident_id.number == number
    assert resident_id.birth_date == born
    assert resident_id.region_code == region
    assert resident_id.kind == ("hk_macao_taiwan_permit" if region in _PERMIT_PREFIXES else "citizen")
    assert resident_id.sex == ("M" if int(number[16]) % 2 else "F")
    assert _parse(data.draw(_disguised(number))) == resident_id


@settings(max_examples=100)
@given(generated=_valid_numbers())
def test_every_single_character_substitution_is_rejected(generated: tuple[str, date, str]) -> None:
    """ID-002 (property): MOD 11-2 catches every single substitution; a broken date is rejected too (ID-004)."""
    number = generated[0]
    for position in range(18):
        alphabet = "0123456789X" if position == 17 else "0123456789"
        for replacement in alphabet:
            if replacement == number[position]:
                continue
            mutated = number[:position] + replacement + number[position + 1 :]
            with pytest.raises(InvalidResidentIdError):
                _parse(mutated)


@settings(max_examples=300)
@given(
    region=_citizen_regions,
    born=st.dates(min_value=date(1900, 1, 1), max_value=date(1999, 12, 31)),
    sequence=_sequences,
)
def test_legacy_conversion_keeps_birth_date_and_sex(region: str, born: date, sequence: str) -> None:
    """ID-006 (property): a 15-digit number converts to an 18-character one with the same birth date and sex."""
    legacy = region + born.strftime("%y%m%d") + sequence
    converted = _parse(legacy)
    assert len(converted.number) == 18
    assert converted.number[:6] + converted.number[8:17] == legacy
    assert converted.birth_date == born
    assert converted.sex == ("M" if int(legacy[-1]) % 2 else "F")
    assert converted.kind == "citizen"
    assert _parse(converted.number) == converted
