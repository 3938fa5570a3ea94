"""Money is integer fen; yuan strings exist only at the channel edge (DESIGN D3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.kernel.errors import ValidationError
from domain.kernel.money import Amount, fen_to_yuan, yuan_to_fen


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_fen_yuan_round_trip(fen: int) -> None:
    assert yuan_to_fen(fen_to_yuan(fen)) == fen


@pytest.mark.parametrize(("fen", "yuan"), [(0, "0.00"), (1, "0.01"), (10, "0.10"), (100, "1.00"), (12345, "123.45")])
def test_known_values(fen: int, yuan: str) -> None:
    assert fen_to_yuan(fen) == yuan
    assert yuan_to_fen(yuan) == fen


@pytest.mark.parametrize("bad", ["1.234", "abc", "1.a", "", "1e3", "0x10"])
def test_bad_yuan_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        yuan_to_fen(bad)


def test_amounts_are_non_negative_integers_with_separate_insured_part() -> None:
    assert Amount(self_pay_fen=500, insured_fen=0).total_fen == 500
    with pytest.raises(ValidationError):
        Amount(self_pay_fen=-1)
    with pytest.raises(TypeError):
        Amount(self_pay_fen=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Amount(self_pay_fen=True)
