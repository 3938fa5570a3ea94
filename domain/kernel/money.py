"""Money is integer fen (DESIGN D3). Yuan strings exist only inside channel adapters."""

from __future__ import annotations

from dataclasses import dataclass

from domain.kernel.errors import ValidationError


class NegativeAmountError(ValidationError):
    code = "money.negative"
    message = "金额不能为负数"


@dataclass(frozen=True, slots=True)
class Amount:
    """An amount to pay, split into the self-pay and the insured part (insured is zero for now)."""

    self_pay_fen: int
    insured_fen: int = 0

    def __post_init__(self) -> None:
        for value in (self.self_pay_fen, self.insured_fen):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError("amounts are integer fen")
            if value < 0:
                raise NegativeAmountError(f"negative amount {value}")

    @property
    def total_fen(self) -> int:
        return self.self_pay_fen + self.insured_fen


def fen_to_yuan(fen: int) -> str:
    """Render fen as a yuan string with two decimals, exactly, without floats: 1 -> '0.01'."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise TypeError("fen must be an int")
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def yuan_to_fen(yuan: str) -> int:
    """Parse a yuan string with at most two decimals into fen, exactly: '0.01' -> 1."""
    text = yuan.strip()
    negative = text.startswith("-")
    if negative:
        text = text[1:]
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and (not frac.isdigit() or len(frac) > 2)):
        raise ValidationError(f"not a yuan amount: {yuan!r}", code="money.bad_yuan")
    fen = int(whole) * 100 + int((frac or "0").ljust(2, "0"))
    return -fen if negative else fen
