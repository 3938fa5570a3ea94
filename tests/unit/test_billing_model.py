"""Outpatient bills are integer fen that add up (domain/billing/model.py), and the billing port's errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.billing.model import BillAmountsError, BillItem, BillStatus, OutpatientBill, Settlement, bill_title
from domain.billing.ports import (
    BillingNotOfferedError,
    BillNotFoundError,
    BillSettlementRefusedError,
    HisBilling,
    SettlementRefusal,
)
from domain.kernel.errors import ConflictError, NotFoundError, ValidationError
from tests.support.catalogue import FakeHis

ISSUED = datetime(2025, 3, 3, 1, 30, tzinfo=UTC)
LAB = BillItem("250102001", "血常规", 1, 2000, 2000, "检验费")
DRUG = BillItem("XY0003", "奥美拉唑肠溶胶囊", 3, 3299, 9897, "西药费")


def bill(*items: BillItem, **changes: object) -> OutpatientBill:
    lines = items or (LAB, DRUG)
    total = sum(i.amount_fen for i in lines)
    fields: dict[str, object] = {
        "hospital_code": "H001",
        "bill_id": "INV1",
        "patid": "100000001",
        "title": bill_title(lines),
        "department": "心血管内科",
        "doctor_name": "李建国",
        "issued_at": ISSUED,
        "items": lines,
        "self_pay_fen": total,
        "insured_fen": 0,
        "total_fen": total,
        "status": BillStatus.UNPAID,
    }
    return OutpatientBill(**(fields | changes))  # type: ignore[arg-type]


def test_a_consistent_bill() -> None:
    made = bill()
    assert made.total_fen == 11897
    assert made.payable
    assert not replace(made, status=BillStatus.PAID).payable
    assert "100000001" not in repr(made)  # the patid stays out of logs


def test_titles() -> None:
    assert bill_title([LAB, DRUG, LAB]) == "门诊缴费：检验费 等3项"
    assert bill_title([DRUG]) == "门诊缴费：西药费"
    with pytest.raises(ValidationError):
        bill_title([])


@pytest.mark.parametrize(
    "item",
    [
        lambda: BillItem("C", "项目", 2, 100, 201, "检验费"),
        lambda: BillItem("C", "项目", 0, 100, 0, "检验费"),
        lambda: BillItem("C", "项目", 1, -1, -1, "检验费"),
    ],
)
def test_items_add_up(item: object) -> None:
    with pytest.raises(BillAmountsError) as wrong:
        item()  # type: ignore[operator]
    assert wrong.value.code == "billing.amounts_inconsistent"


def test_amounts_are_integer_fen() -> None:
    with pytest.raises(TypeError):
        BillItem("C", "项目", 1, 1.5, 1.5, "检验费")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        BillItem("C", "项目", True, 1, 1, "检验费")
    with pytest.raises(TypeError):
        bill(total_fen=11897.0)
    with pytest.raises(ValidationError):
        BillItem("", "项目", 1, 1, 1, "检验费")


@pytest.mark.parametrize(
    "changes",
    [
        {"total_fen": 11898, "self_pay_fen": 11898},
        {"self_pay_fen": 11000},
        {"self_pay_fen": 11000, "insured_fen": 800},
        {"insured_fen": -1, "self_pay_fen": 11898},
    ],
)
def test_totals_add_up(changes: dict[str, object]) -> None:
    with pytest.raises(BillAmountsError):
        bill(**changes)


def test_an_insured_part_splits_the_total() -> None:
    assert bill(self_pay_fen=10000, insured_fen=1897).total_fen == 11897


def test_what_a_bill_needs() -> None:
    with pytest.raises(ValidationError):
        bill(items=())
    with pytest.raises(ValueError, match="aware"):
        bill(issued_at=datetime(2025, 3, 3, 9, 30))
    with pytest.raises(TypeError):
        bill(status="unpaid")
    with pytest.raises(ValidationError):
        bill(patid=" ")
    assert bill(doctor_name="", department="").doctor_name == ""
    with pytest.raises(ValueError, match="aware"):
        Settlement("INV1", "R1", datetime(2025, 3, 3))
    with pytest.raises(ValidationError):
        Settlement("INV1", "", ISSUED)


@given(
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=99), st.integers(min_value=0, max_value=10_000_000)),
        min_size=1,
        max_size=12,
    )
)
def test_any_priced_lines_make_a_bill_whose_total_is_their_sum(lines: list[tuple[int, int]]) -> None:
    items = tuple(BillItem(f"C{n}", f"项目{n}", q, p, q * p, "检验费") for n, (q, p) in enumerate(lines))
    made = bill(*items)
    assert made.total_fen == made.self_pay_fen == sum(q * p for q, p in lines)
    assert made.title.endswith(f"等{len(lines)}项") == (len(lines) > 1)


def test_errors_have_stable_codes_and_chinese_messages() -> None:
    refused = BillSettlementRefusedError("HIS H001 $settle Invoice: HTTP 422", reason=SettlementRefusal.AMOUNT_MISMATCH)
    assert isinstance(refused, ConflictError)
    assert (refused.code, refused.status, refused.reason) == ("his.settlement_refused", 409, "amount_mismatch")
    assert refused.extra == {"reason": "amount_mismatch"}
    assert "退回" in refused.message
    messages = {BillSettlementRefusedError(reason=reason).message for reason in SettlementRefusal}
    assert len(messages) == len(SettlementRefusal)
    assert BillSettlementRefusedError().reason is SettlementRefusal.REFUSED
    assert isinstance(BillNotFoundError(), NotFoundError)
    assert BillNotFoundError().code == "his.bill_not_found"
    assert BillingNotOfferedError().code == "his.billing_not_offered"


def test_the_fake_his_is_a_his_billing() -> None:
    assert isinstance(FakeHis(), HisBilling)
    assert not isinstance(object(), HisBilling)
