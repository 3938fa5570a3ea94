"""The HIS billing port (诊间支付): a patient's unpaid bills at a hospital and their settlement at the HIS.

One HIS adapter implements it beside the catalogue ports (domain/catalogue/ports.py), and the same failure rules
hold: ``HisUnavailableError`` (timeouts, 5xx, an open circuit) is retryable; reads are retried by the gateway,
``settle`` is tried once and the caller retries it later with the same key. A settlement the HIS refuses
(``BillSettlementRefusedError``) is final: the payments feature refunds the resident.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from domain.billing.model import BillPayment, OutpatientBill, Settlement
from domain.catalogue.ports import HisUnavailableError
from domain.kernel.errors import ConflictError, NotFoundError

__all__ = [
    "BillNotFoundError",
    "BillPaymentRepository",
    "BillSettlementRefusedError",
    "BillingNotOfferedError",
    "HisBilling",
    "HisBillingGateway",
    "HisUnavailableError",
    "SettlementRefusal",
]


class SettlementRefusal(StrEnum):
    """Why the HIS refused a settlement (``BillSettlementRefusedError.reason``)."""

    AMOUNT_MISMATCH = "amount_mismatch"
    CANCELLED = "cancelled"
    ALREADY_SETTLED = "already_settled"
    """Settled before under another key (another payment, or at the hospital's window)."""
    UNKNOWN_BILL = "unknown_bill"
    WRONG_PATIENT = "wrong_patient"
    REFUSED = "refused"
    """Any other refusal (the HIS's own rule, a closed cashier day ...)."""


_REFUSAL_MESSAGES: Mapping[SettlementRefusal, str] = {
    SettlementRefusal.AMOUNT_MISMATCH: "缴费金额与医院账单不符，已付款项将原路退回",
    SettlementRefusal.CANCELLED: "该缴费单已被医院作废，已付款项将原路退回",
    SettlementRefusal.ALREADY_SETTLED: "该缴费单已缴费，本次款项将原路退回",
    SettlementRefusal.UNKNOWN_BILL: "医院系统中找不到该缴费单，已付款项将原路退回",
    SettlementRefusal.WRONG_PATIENT: "该缴费单不属于此就诊人，已付款项将原路退回",
    SettlementRefusal.REFUSED: "医院未能确认本次缴费，已付款项将原路退回",
}


class BillSettlementRefusedError(ConflictError):
    """The HIS answered and refused the settlement, for good: the same request will be refused again."""

    code = "his.settlement_refused"
    message = _REFUSAL_MESSAGES[SettlementRefusal.REFUSED]

    def __init__(
        self,
        detail: str | None = None,
        *,
        reason: SettlementRefusal = SettlementRefusal.REFUSED,
        message: str | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(
            detail,
            message=message or _REFUSAL_MESSAGES[reason],
            extra={**(extra or {}), "reason": reason.value},
        )
        self.reason = reason


class BillNotFoundError(NotFoundError):
    code = "his.bill_not_found"
    message = "未找到该缴费单，请刷新后重试"


class BillingNotOfferedError(NotFoundError):
    """The hospital's HIS adapter does not offer billing (诊间支付 is not open at this hospital)."""

    code = "his.billing_not_offered"
    message = "该医院暂未开通诊间缴费"


@runtime_checkable
class HisBilling(Protocol):
    """One hospital's outpatient bills. Every call may raise ``HisUnavailableError`` (retryable)."""

    async def unpaid_bills(self, patid: str) -> Sequence[OutpatientBill]:
        """The patient's bills that can be paid now (status unpaid), oldest first."""
        ...

    async def bill(self, bill_id: str) -> OutpatientBill:
        """One bill in whatever status it is; ``BillNotFoundError`` when the HIS does not know it."""
        ...

    async def settle(
        self, bill_id: str, *, patid: str, amount_fen: int, payment_ref: str, channel: str, key: str
    ) -> Settlement:
        """Tell the HIS the resident paid ``amount_fen`` (the bill's total) through ``channel``, with our payment
        reference. Idempotent by ``key``: the same key returns the same settlement. Raises
        ``BillSettlementRefusedError`` (final: a different amount, a cancelled bill, a bill settled under another
        key, an unknown bill, another patient's bill, or the HIS's own refusal) or ``HisUnavailableError``
        (retry with the same key)."""
        ...


class HisBillingGateway(Protocol):
    """The billing of each configured hospital (with the gateway's resilience around it)."""

    def billing_for(self, hospital_code: str) -> HisBilling:
        """Raises ``BillingNotOfferedError`` when the hospital's HIS has no billing, ``HisUnavailableError`` (or
        ``NotFoundError`` for a gateway without a registry) for a hospital without an adapter."""
        ...


class BillPaymentRepository(Protocol):
    """Our record of bill payments (``bill_payments``)."""

    async def add(self, payment: BillPayment) -> bool:
        """Insert; False (and nothing written) when another live payment of the same bill exists."""
        ...

    async def get(self, payment_id: str, *, lock: bool = False) -> BillPayment | None: ...

    async def by_order(self, order_id: str, *, lock: bool = False) -> BillPayment | None: ...

    async def live_for_bill(self, hospital_code: str, bill_id: str) -> BillPayment | None: ...

    async def live_for_bills(self, hospital_code: str, bill_ids: Sequence[str]) -> Sequence[BillPayment]: ...

    async def save(self, payment: BillPayment) -> bool:
        """Write the payment's state fields; False (and nothing written) when it would make a second live
        payment of its bill."""
        ...

    async def of_account(self, account_id: str, *, limit: int) -> Sequence[BillPayment]:
        """The account's bill payments, newest first."""
        ...

    async def awaiting_settlement(self, *, older_than: datetime, limit: int) -> Sequence[str]:
        """Order ids of payments left half-done since ``older_than`` (pending with a paid order, or closed with
        an order paid late): the sweep finishes them when the outbox handler could not."""
        ...
