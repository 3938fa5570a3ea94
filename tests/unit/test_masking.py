"""Masking for display and logs (SEC-P-08, DESIGN D5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.identity.masking import mask_bank_card, mask_id_number, mask_name, mask_phone


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("", ""),
        ("   ", ""),
        ("张", "*"),
        ("张三", "张*"),
        ("张小三", "张*三"),
        ("欧阳小明", "欧**明"),
        ("王四", "王*"),
        ("欧阳五", "欧*五"),
        (" 张小三\n", "张*三"),
        ("Li", "L*"),
        ("阿卜杜热合曼", "阿****曼"),
    ],
)
def test_mask_name_sec_p_08(name: str, masked: str) -> None:
    assert mask_name(name) == masked


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("110101199001011234", "110***********1234"),
        ("11010119900101123X", "110***********123X"),
        (" 110101199001011234 ", "110***********1234"),
        ("110101900101123", "1*************3"),  # the old 15-digit form
        ("A1234567", "A******7"),
        ("123", "1*3"),
        ("12", "**"),
        ("1", "*"),
        ("", ""),
    ],
)
def test_mask_id_number_sec_p_08(number: str, masked: str) -> None:
    assert mask_id_number(number) == masked


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13812341234", "138****1234"),
        ("+8613812341234", "138****1234"),
        ("8613812341234", "138****1234"),
        ("+86 138 1234 1234", "138****1234"),
        ("0086-138-1234-1234", "138****1234"),
        ("1234567", "123**67"),
        ("02112345678901", "021*********01"),
        ("123456", "******"),
        ("", ""),
    ],
)
def test_mask_phone_sec_p_08(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


def test_mask_phone_keeps_86_when_it_is_not_a_country_code_sec_p_08() -> None:
    """Only ``86`` followed by an 11-digit number is a country code; ``8612345`` is a local number."""
    assert mask_phone("8612345") == "861**45"


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("6222020200112233445", "622202*********3445"),
        ("6222 0202 0011 2233", "622202******2233"),
        ("62220202001", "622202*2001"),
        ("6222020200", "6********0"),
        ("12", "**"),
        ("", ""),
    ],
)
def test_mask_bank_card_sec_p_08(number: str, masked: str) -> None:
    assert mask_bank_card(number) == masked


@settings(max_examples=50)
@given(st.text(alphabet="0123456789X", min_size=18, max_size=18))
def test_masked_id_number_shows_only_seven_characters_sec_p_08(number: str) -> None:
    masked = mask_id_number(number)
    assert len(masked) == 18
    assert masked[:3] == number[:3]
    assert masked[-4:] == number[-4:]
    assert masked[3:-4] == "*" * 11


@settings(max_examples=50)
@given(st.text(min_size=3, max_size=30).map(str.strip).filter(lambda s: len(s) >= 3))
def test_masked_name_hides_the_middle_sec_p_08(name: str) -> None:
    masked = mask_name(name)
    assert len(masked) == len(name)
    assert masked[0] == name[0]
    assert masked[-1] == name[-1]
    assert set(masked[1:-1]) == {"*"}
