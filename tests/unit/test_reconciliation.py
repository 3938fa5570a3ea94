"""Daily reconciliation (对账), the pure comparison: one channel's bill of a Beijing day against our ledger of that
channel and day, line by line (payments by out_trade_no, refunds by out_refund_no)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from domain.payment.ports import ChannelBillLine
from domain.payment.reconciliation import (
    Comparison,
    Difference,
    DifferenceKind,
    LedgerLine,
    Totals,
    beijing_day,
    beijing_day_bounds,
    bill_key,
    compare,
)

AT = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


def pay(no: str, fen: int) -> LedgerLine:
    return LedgerLine("payment", no, fen, None, "X" + no, AT)


def refund(no: str, trade: str, fen: int) -> LedgerLine:
    return LedgerLine("refund", trade, fen, no, "X" + trade, AT)


def billed(line: LedgerLine) -> ChannelBillLine:
    """What the channel's bill says of the same payment or refund."""
    return ChannelBillLine(line.kind, line.out_trade_no, line.transaction_id or "", line.amount_fen, line.out_refund_no)


def test_nothing_against_nothing_is_clean() -> None:
    result = compare([], [])
    assert result == Comparison(Totals(), Totals(), Totals(), ())
    assert result.clean


def test_each_kind_of_difference_is_reported_with_both_amounts_and_totals_per_side() -> None:
    ledger = [pay("P1", 2500), pay("P2", 3000), pay("P3", 100), refund("R1", "P1", 500), refund("R2", "P2", 3000)]
    bill = [
        billed(pay("P1", 2500)),
        billed(pay("P2", 3100)),  # the channel took 1 yuan more
        billed(pay("P4", 800)),  # a payment we never saw succeed
        billed(refund("R1", "P1", 500)),
        billed(refund("R3", "P1", 200)),  # a refund made in the merchant portal
    ]
    result = compare(bill, ledger)
    assert result.differences == (
        Difference(DifferenceKind.AMOUNT_MISMATCH, "payment", "P2", None, "XP2", channel_fen=3100, ledger_fen=3000),
        Difference(DifferenceKind.MISSING_THERE, "payment", "P3", None, "XP3", ledger_fen=100),
        Difference(DifferenceKind.MISSING_HERE, "payment", "P4", None, "XP4", channel_fen=800),
        Difference(DifferenceKind.MISSING_THERE, "refund", "P2", "R2", "XP2", ledger_fen=3000),
        Difference(DifferenceKind.MISSING_HERE, "refund", "P1", "R3", "XP1", channel_fen=200),
    )
    assert result.bill == Totals(payments=3, payment_fen=6400, refunds=2, refund_fen=700)
    assert result.ledger == Totals(payments=3, payment_fen=5600, refunds=2, refund_fen=3500)
    assert result.matched == Totals(payments=1, payment_fen=2500, refunds=1, refund_fen=500)
    assert result.bill.net_fen == 5700
    assert not result.clean


def test_a_line_listed_twice_on_the_bill_is_one_amount_mismatch() -> None:
    line = pay("P1", 2500)
    result = compare([billed(line), billed(line)], [line])
    (difference,) = result.differences
    assert (difference.kind, difference.channel_fen, difference.ledger_fen) == (
        DifferenceKind.AMOUNT_MISMATCH,
        5000,
        2500,
    )


def test_a_refund_line_without_a_refund_number_is_keyed_by_its_trade() -> None:
    line = ChannelBillLine("refund", "P1", "XP1", 500)
    assert bill_key(line) == ("refund", "P1")
    assert compare([line], [LedgerLine("refund", "P1", 500, None)]).clean


def test_a_payment_and_a_refund_with_the_same_number_are_different_lines() -> None:
    ledger = [pay("N1", 2500), refund("N1", "P9", 2500)]
    result = compare([billed(x) for x in ledger], ledger)
    assert result.clean
    assert result.matched == Totals(1, 2500, 1, 2500)


def test_beijing_days_run_from_midnight_to_midnight_at_utc_plus_8() -> None:
    start, end = beijing_day_bounds(date(2026, 11, 21))
    assert (start, end) == (datetime(2026, 11, 20, 16, 0, tzinfo=UTC), datetime(2026, 11, 21, 16, 0, tzinfo=UTC))
    assert beijing_day(start) == date(2026, 11, 21)
    assert beijing_day(end) == date(2026, 11, 22)
    assert beijing_day(datetime(2026, 11, 21, 15, 59, 59, tzinfo=UTC)) == date(2026, 11, 21)


# ---------------------------------------------------------------------------------------------------- properties

numbers = st.text(alphabet="0123456789ABCDEF", min_size=1, max_size=6)
amounts = st.integers(min_value=1, max_value=10_000_000)


@st.composite
def ledgers(draw: st.DrawFn) -> list[LedgerLine]:
    """Our ledger of a day: payments with distinct numbers, refunds of some of them with distinct numbers."""
    payments = draw(st.dictionaries(numbers, amounts, max_size=15))
    lines = [pay("P" + no, fen) for no, fen in payments.items()]
    refunds = draw(st.dictionaries(numbers, amounts, max_size=8))
    for no, fen in refunds.items():
        trade = "P" + draw(st.sampled_from(sorted(payments))) if payments else "P" + draw(numbers)
        lines.append(refund("R" + no, trade, fen))
    return lines


@given(ledger=ledgers(), seed=st.integers(0, 2**32))
def test_a_ledger_compared_with_its_own_bill_has_no_differences(ledger: list[LedgerLine], seed: int) -> None:
    bill = [billed(x) for x in ledger]
    random.Random(seed).shuffle(bill)
    result = compare(bill, ledger)
    assert result.clean
    assert result.matched == result.bill == result.ledger
    assert result.matched.payments + result.matched.refunds == len(ledger)


CHANGES = (
    "drop_from_bill",
    "drop_from_ledger",
    "amount_on_bill",
    "amount_in_ledger",
    "extra_on_bill",
    "extra_in_ledger",
)


@given(
    ledger=ledgers(),
    change=st.sampled_from(CHANGES),
    pick=st.integers(min_value=0),
    delta=st.integers(min_value=-1000, max_value=1000).filter(bool),
    extra_kind=st.sampled_from(["payment", "refund"]),
    seed=st.integers(0, 2**32),
)
def test_any_single_change_is_reported_exactly_once(
    ledger: list[LedgerLine], change: str, pick: int, delta: int, extra_kind: str, seed: int
) -> None:
    bill = [billed(x) for x in ledger]
    original = len(ledger)
    if not ledger and not change.startswith("extra"):
        change = "extra_on_bill"
    i = pick % len(ledger) if ledger else 0
    extra = pay("NEW-1", 4200) if extra_kind == "payment" else refund("NEW-1", "P0", 4200)  # no number has a dash
    match change:
        case "drop_from_bill":
            changed, expected = ledger[i], DifferenceKind.MISSING_THERE
            del bill[i]
        case "drop_from_ledger":
            changed, expected = ledger[i], DifferenceKind.MISSING_HERE
            ledger = ledger[:i] + ledger[i + 1 :]
        case "amount_on_bill":
            changed, expected = ledger[i], DifferenceKind.AMOUNT_MISMATCH
            bill[i] = replace(bill[i], amount_fen=bill[i].amount_fen + delta)
        case "amount_in_ledger":
            changed, expected = ledger[i], DifferenceKind.AMOUNT_MISMATCH
            ledger = [*ledger[:i], replace(ledger[i], amount_fen=ledger[i].amount_fen + delta), *ledger[i + 1 :]]
        case "extra_on_bill":
            changed, expected = extra, DifferenceKind.MISSING_HERE
            bill.append(billed(extra))
        case _:
            changed, expected = extra, DifferenceKind.MISSING_THERE
            ledger = [*ledger, extra]
    random.Random(seed).shuffle(bill)
    result = compare(bill, ledger)
    (difference,) = result.differences
    assert difference.kind is expected
    assert difference.key == changed.key
    assert difference.line_kind == changed.kind
    untouched = original if change.startswith("extra") else original - 1
    assert result.matched.payments + result.matched.refunds == untouched


@given(ledger=ledgers(), other=ledgers(), seed=st.integers(0, 2**32))
def test_the_comparison_does_not_depend_on_the_order_of_the_lines(
    ledger: list[LedgerLine], other: list[LedgerLine], seed: int
) -> None:
    bill = [billed(x) for x in other]
    shuffled_bill, shuffled_ledger = list(bill), list(ledger)
    rng = random.Random(seed)
    rng.shuffle(shuffled_bill)
    rng.shuffle(shuffled_ledger)
    assert compare(bill, ledger) == compare(shuffled_bill, shuffled_ledger)
