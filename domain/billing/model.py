"""Outpatient bills as the HIS issues them, and the HIS's settlement of one.

Amounts are integer fen (architecture: "Money"), checked to add up when a value is built: each item's amount is
its quantity times its unit price, the bill's total is the sum of its items, and the total splits into the
self-pay part and the insured part (zero until medical-insurance settlement comes behind its own port).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from domain.kernel.errors import ValidationError

BILL_TITLE_PREFIX = "门诊缴费："


class BillStatus(StrEnum):
    UNPAID = "unpaid"
    PAID = "paid"
    CANCELLED = "cancelled"
    """作废: the HIS withdrew the bill; it can no longer be paid."""


class BillAmountsError(ValidationError):
    code = "billing.amounts_inconsistent"
    message = "缴费单金额不一致，请到医院收费窗口核对"


def _fen(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} is integer fen")
    if value < 0:
        raise BillAmountsError(f"{what} is negative")
    return value


def _text(value: object, what: str, *, required: bool = True) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is a string")
    if required and not value.strip():
        raise ValidationError(f"{what} is empty", code="billing.incomplete")
    return value


@dataclass(frozen=True, slots=True)
class BillItem:
    """One line of a bill: ``amount_fen == quantity * unit_price_fen``."""

    code: str
    """The HIS's charge item code (收费项目编码)."""
    name: str
    quantity: int
    unit_price_fen: int
    amount_fen: int
    category: str
    """The fee category shown to residents (检验费, 西药费 ...)."""

    def __post_init__(self) -> None:
        _text(self.code, "item code")
        _text(self.name, "item name")
        _text(self.category, "item category")
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int):
            raise TypeError("quantity is an integer")
        if self.quantity < 1:
            raise BillAmountsError("quantity must be at least 1")
        unit = _fen(self.unit_price_fen, "unit price")
        amount = _fen(self.amount_fen, "item amount")
        if amount != self.quantity * unit:
            raise BillAmountsError(f"item {self.code}: {self.quantity} x {unit} fen is not {amount} fen")


def bill_title(items: Sequence[BillItem]) -> str:
    """``门诊缴费：检验费 等3项`` (the first item's category, and how many items there are when more than one)."""
    if not items:
        raise ValidationError("a bill has at least one item", code="billing.incomplete")
    first = items[0].category
    return f"{BILL_TITLE_PREFIX}{first}" + (f" 等{len(items)}项" if len(items) > 1 else "")


@dataclass(frozen=True, slots=True)
class OutpatientBill:
    """An outpatient bill (门诊缴费单) of one patient at one hospital."""

    hospital_code: str
    bill_id: str
    patid: str = field(repr=False)
    """The hospital's own patient id (HisPatients.find_or_create)."""
    title: str
    department: str
    """The ordering department's name (开单科室); empty when the HIS names none."""
    doctor_name: str
    """The ordering doctor's name (开单医生); empty when the HIS names none."""
    issued_at: datetime
    items: tuple[BillItem, ...]
    self_pay_fen: int
    insured_fen: int
    total_fen: int
    status: BillStatus

    def __post_init__(self) -> None:
        _text(self.hospital_code, "hospital code")
        _text(self.bill_id, "bill id")
        _text(self.patid, "patid")
        _text(self.title, "title")
        _text(self.department, "department", required=False)
        _text(self.doctor_name, "doctor name", required=False)
        if not isinstance(self.issued_at, datetime) or self.issued_at.tzinfo is None:
            raise ValueError("issued_at is an aware datetime")
        if not isinstance(self.status, BillStatus):
            raise TypeError("status is a BillStatus")
        if not isinstance(self.items, tuple) or not self.items:
            raise ValidationError("a bill has at least one item (a tuple)", code="billing.incomplete")
        if not all(isinstance(item, BillItem) for item in self.items):
            raise TypeError("items are BillItems")
        total = _fen(self.total_fen, "total")
        self_pay = _fen(self.self_pay_fen, "self-pay part")
        insured = _fen(self.insured_fen, "insured part")
        items = sum(item.amount_fen for item in self.items)
        if items != total:
            raise BillAmountsError(f"bill {self.bill_id}: items add up to {items} fen, the total is {total} fen")
        if self_pay + insured != total:
            raise BillAmountsError(f"bill {self.bill_id}: {self_pay} + {insured} fen is not the total {total} fen")

    @property
    def payable(self) -> bool:
        return self.status is BillStatus.UNPAID


@dataclass(frozen=True, slots=True)
class Settlement:
    """The HIS took the payment for a bill: its receipt number (收据号) and when."""

    bill_id: str
    his_receipt_no: str
    settled_at: datetime

    def __post_init__(self) -> None:
        _text(self.bill_id, "bill id")
        _text(self.his_receipt_no, "receipt number")
        if not isinstance(self.settled_at, datetime) or self.settled_at.tzinfo is None:
            raise ValueError("settled_at is an aware datetime")


class BillPaymentState(StrEnum):
    """Where the payment of one bill through one payment order stands."""

    PENDING = "pending"
    """The order is open, or paid and not yet settled at the HIS."""
    SETTLED = "settled"
    """The HIS took the payment (its receipt number is recorded)."""
    REFUSED = "refused"
    """The HIS refused the settlement (or a late payment found the bill no longer payable): a full refund is
    under way."""
    REFUNDED = "refunded"
    """The refund of a refused payment went through."""
    CLOSED = "closed"
    """The order closed unpaid (expired): the bill can be paid with a new order."""


LIVE_BILL_PAYMENT_STATES = frozenset({BillPaymentState.PENDING, BillPaymentState.SETTLED})
"""At most one payment of a bill is in these states at a time (a unique index enforces it)."""


@dataclass(frozen=True, slots=True)
class BillPayment:
    """One payment order paying one HIS bill, for one patient of one account. No ID numbers or phones here: the
    person id and the hospital's own patient id are enough to settle."""

    id: str
    order_id: str
    account_id: str
    patient_id: str
    person_id: str
    hospital_code: str
    bill_id: str
    patid: str = field(repr=False)
    title: str
    amount_fen: int
    state: BillPaymentState
    created_at: datetime
    updated_at: datetime
    his_receipt_no: str | None = None
    refusal: str | None = None
    """Why the HIS refused (``SettlementRefusal`` value, or ``late_<bill status>`` for a late payment)."""
    settled_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE_BILL_PAYMENT_STATES
