"""Outpatient bills become payable (诊间支付): a resident lists a patient's unpaid bills at a hospital, pays one
through a payment order, and the HIS settles it once the channel confirms the payment.

The flow is a saga (DESIGN §3) with the payment order as its spine:

1. ``pay_bill`` checks the patient (active, verified, consenting: NET-030), reads the bill at the HIS (it must
   be this patient's, unpaid, self-pay only) and, in one transaction, creates the payment order
   (``payable_type="bill"``) and the ``bill_payments`` row. A second call for the same unpaid bill answers the
   same open order; a unique index keeps one live payment per bill whatever runs at the same time.
2. ``payment.paid`` (outbox): settle at the HIS with the order id as the key (idempotent there), mark settled,
   report the card use and tell the resident. A HIS refusal is final: the order is refunded in full (refund key
   ``settlement-refused``) and the payment marked refused; an unavailable HIS raises, and the sweep (or a
   redelivery) tries again with the same key.
3. ``payment.paid_late`` (a success after the order closed): the payment is kept (``keep_late``) and settled
   when the bill is still unpaid at the HIS and no other payment holds it; otherwise it is refunded.
4. ``payment.closed`` frees the bill for a new order; ``payment.refunded`` ends a refused payment.

No HIS or channel call happens inside a database transaction. Every step is idempotent, so a message handled
twice, or handled and then swept, settles once and refunds once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from domain.billing.model import BillPayment, BillPaymentState, BillStatus, OutpatientBill, Settlement
from domain.billing.ports import (
    BillingNotOfferedError,
    BillNotFoundError,
    BillPaymentRepository,
    BillSettlementRefusedError,
    HisBillingGateway,
    SettlementRefusal,
)
from domain.catalogue.model import Hospital
from domain.catalogue.ports import CatalogueRepository
from domain.catalogue.use_cases import HospitalNotFoundError
from domain.kernel.audit import AuditEvent, Outcome
from domain.kernel.clock import SHANGHAI, Clock
from domain.kernel.errors import ConflictError, DomainError, ValidationError
from domain.kernel.ids import new_id
from domain.kernel.money import Amount, fen_to_yuan
from domain.patient.ports import PatientRepository
from domain.patient.use_cases import PatientService, card_use_message
from domain.payment.machine import OrderState, PaymentOrder
from domain.payment.use_cases import PaymentService, PaymentUnitOfWork

log = logging.getLogger(__name__)

BILL_PAYABLE = "bill"
"""The payment orders' ``payable_type`` for outpatient bills."""
BILL_SETTLED_TOPIC = "bill.settled"
BILL_REFUNDED_TOPIC = "bill.refunded"
"""Outbox topics of the residents' messages (templates in ``domain/notification/templates.py``)."""
REFUSED_REFUND_KEY = "settlement-refused"
LATE_REFUND_KEY = "late-unpayable"
CARD_USE_SCENE = "payment"
MAX_BILL_ID = 64


# ---------------------------------------------------------------------------------------------------- errors


class BillAlreadyPaidError(ConflictError):
    code = "billing.already_paid"
    message = "该缴费单已缴费，无需重复支付"


class BillCancelledError(ConflictError):
    code = "billing.cancelled"
    message = "该缴费单已被医院作废，如有疑问请咨询开单科室"


class BillPaymentInProgressError(ConflictError):
    code = "billing.payment_in_progress"
    message = "该缴费单正在支付处理中，请稍后刷新查看"


class NothingToPayError(ValidationError):
    code = "billing.nothing_to_pay"
    message = "该缴费单无需支付"


class InsuredBillError(ValidationError):
    code = "billing.insured_not_supported"
    message = "该缴费单含医保结算部分，暂不支持线上缴费，请到医院收费窗口办理"


# ---------------------------------------------------------------------------------------------------- ports


class BillingUnitOfWork(PaymentUnitOfWork, Protocol):
    @property
    def bill_payments(self) -> BillPaymentRepository: ...

    @property
    def patients(self) -> PatientRepository: ...

    @property
    def catalogue(self) -> CatalogueRepository: ...


@dataclass(frozen=True, slots=True)
class BillingPolicy:
    order_ttl: timedelta = timedelta(minutes=15)
    """How long a bill's payment order stays payable."""
    settle_after: timedelta = timedelta(minutes=1)
    """A paid bill not settled for this long is picked up by the sweep (the HIS was down, a message was lost)."""
    list_limit: int = 100


@dataclass(slots=True)
class BillingDeps:
    uow_factory: Callable[[], BillingUnitOfWork]
    clock: Clock
    his: HisBillingGateway
    patients: PatientService
    payments: PaymentService
    policy: BillingPolicy = field(default_factory=BillingPolicy)


@dataclass(frozen=True, slots=True)
class PayableBill:
    """An unpaid bill as the resident sees it, with the payment under way for it, if any."""

    bill: OutpatientBill
    payment_state: BillPaymentState | None = None
    order_id: str | None = None
    """This account's open order for the bill (pay it again rather than asking for a new one)."""


@dataclass(frozen=True, slots=True)
class BillOrder:
    order: PaymentOrder
    payment: BillPayment
    created: bool
    """False when an open order for the bill was answered again."""


# ---------------------------------------------------------------------------------------------------- service


class BillingService:
    def __init__(self, deps: BillingDeps) -> None:
        self.d = deps

    def _now(self) -> datetime:
        return self.d.clock.now()

    @staticmethod
    async def _hospital(uow: BillingUnitOfWork, code: str) -> Hospital:
        hospital = await uow.catalogue.hospital(code)
        if hospital is None or not hospital.active:
            raise HospitalNotFoundError(f"no active hospital {code[:32]!r}")
        return hospital

    # ------------------------------------------------------------------ reading

    async def unpaid_bills(self, account_id: str, patient_id: str, hospital_code: str) -> Sequence[PayableBill]:
        """The patient's unpaid bills at the hospital. Uses the HIS patient id already recorded, else the HIS's own
        record of the person when it has one (a resident registered there on site has bills before ever paying
        here; the id found is kept); a person the HIS does not know has no bills there. Listing never creates a
        HIS patient record."""
        patient = await self.d.patients.usable(account_id, patient_id)
        async with self.d.uow_factory() as uow:
            await self._hospital(uow, hospital_code)
        billing = self.d.his.billing_for(hospital_code)
        patid = await self.d.patients.find_hospital_patid(patient.person.id, hospital_code)
        if patid is None:
            return []
        bills = await billing.unpaid_bills(patid)
        async with self.d.uow_factory() as uow:
            live = {
                p.bill_id: p for p in await uow.bill_payments.live_for_bills(hospital_code, [b.bill_id for b in bills])
            }
            await uow.audit.record(
                AuditEvent(
                    action="billing.list",
                    outcome=Outcome.SUCCESS,
                    actor=f"account:{account_id}",
                    actor_role="resident",
                    object_type="patient",
                    object_id=patient_id,
                    details={"hospital": hospital_code, "count": str(len(bills))},
                ),
                now=self._now(),
            )
            await uow.commit()
        found: list[PayableBill] = []
        for bill in bills:
            payment = live.get(bill.bill_id)
            found.append(
                PayableBill(
                    bill,
                    payment.state if payment else None,
                    payment.order_id if payment and payment.account_id == account_id else None,
                )
            )
        return found

    async def payments_of(self, account_id: str, *, limit: int = 50) -> Sequence[BillPayment]:
        async with self.d.uow_factory() as uow:
            return await uow.bill_payments.of_account(account_id, limit=max(1, min(limit, self.d.policy.list_limit)))

    # ------------------------------------------------------------------ paying

    async def pay_bill(self, account_id: str, patient_id: str, hospital_code: str, bill_id: str) -> BillOrder:
        """A payment order for one unpaid bill of the patient (created once: asking again answers the open
        order). The order and the bill-payment record are written in one transaction."""
        if not 0 < len(bill_id) <= MAX_BILL_ID:
            raise BillNotFoundError("bill id of a length no HIS issues")
        patient = await self.d.patients.usable(account_id, patient_id)
        async with self.d.uow_factory() as uow:
            await self._hospital(uow, hospital_code)
            existing = await uow.bill_payments.live_for_bill(hospital_code, bill_id)
        if existing is not None:
            reused = await self._reuse(account_id, existing)
            if reused is not None:
                return reused
        billing = self.d.his.billing_for(hospital_code)
        patid = await self.d.patients.hospital_patid(patient.person.id, hospital_code)
        bill = await billing.bill(bill_id)
        self._check_payable(bill, patid)
        for _ in range(2):
            now = self._now()
            async with self.d.uow_factory() as uow:
                payment_id = new_id()
                order = await self.d.payments.create_order(
                    uow,
                    payable_type=BILL_PAYABLE,
                    payable_id=payment_id,
                    account_id=account_id,
                    description=bill.title,
                    amount=Amount(bill.self_pay_fen),
                    expires_at=now + self.d.policy.order_ttl,
                )
                payment = BillPayment(
                    id=payment_id,
                    order_id=order.id,
                    account_id=account_id,
                    patient_id=patient.link.id,
                    person_id=patient.person.id,
                    hospital_code=hospital_code,
                    bill_id=bill.bill_id,
                    patid=patid,
                    title=bill.title,
                    amount_fen=bill.self_pay_fen,
                    state=BillPaymentState.PENDING,
                    created_at=now,
                    updated_at=now,
                )
                if await uow.bill_payments.add(payment):
                    await uow.audit.record(
                        self._audit(
                            "billing.order_created",
                            payment,
                            actor=f"account:{account_id}",
                            details={"amountFen": str(payment.amount_fen)},
                        ),
                        now=now,
                    )
                    await uow.commit()
                    return BillOrder(order, payment, created=True)
            # Another request made a live payment of this bill meanwhile (the order above is rolled back).
            async with self.d.uow_factory() as uow:
                existing = await uow.bill_payments.live_for_bill(hospital_code, bill_id)
            if existing is not None:
                reused = await self._reuse(account_id, existing)
                if reused is not None:
                    return reused
        raise BillPaymentInProgressError("the bill's live payment kept changing")

    @staticmethod
    def _check_payable(bill: OutpatientBill, patid: str) -> None:
        if bill.patid != patid or len(bill.bill_id) > MAX_BILL_ID:
            # Another patient's bill looks exactly like an unknown one (nothing leaks about who it belongs to).
            raise BillNotFoundError("the bill belongs to another patient")
        if bill.status is BillStatus.PAID:
            raise BillAlreadyPaidError("the HIS has the bill paid")
        if bill.status is BillStatus.CANCELLED:
            raise BillCancelledError("the HIS cancelled the bill")
        if bill.insured_fen:
            raise InsuredBillError("insured settlement is not offered yet")
        if bill.self_pay_fen <= 0:
            raise NothingToPayError("zero bill")

    async def _reuse(self, account_id: str, existing: BillPayment) -> BillOrder | None:
        """The answer when the bill already has a live payment: its open order (same account), or None when that
        order turned out closed and the bill may be paid with a new one."""
        if existing.state is BillPaymentState.SETTLED:
            raise BillAlreadyPaidError("settled through an earlier order")
        async with self.d.uow_factory() as uow:
            order = await uow.payments.get(existing.order_id)
        if order is None:
            raise BillPaymentInProgressError("the bill's order is missing")
        if order.state in (OrderState.CREATED, OrderState.PAYING):
            if order.expires_at > self._now():
                if existing.account_id != account_id:
                    raise BillPaymentInProgressError("another account is paying this bill")
                return BillOrder(order, existing, created=False)
            # Expired but not swept yet: close it now (at the channels first; a payment found there wins).
            if await self.d.payments.expire(order.id) is not OrderState.CLOSED:
                raise BillPaymentInProgressError("the expired order turned out paid or paying")
            await self.order_closed(order.id)
            return None
        if order.state is OrderState.CLOSED:
            await self.order_closed(order.id)
            return None
        raise BillPaymentInProgressError("paid, settling at the HIS")

    # ------------------------------------------------------------------ after the payment (outbox)

    async def on_payment_event(self, what: str, payload: Mapping[str, Any]) -> None:
        """The handler of ``payment.<what>`` outbox messages; orders of other payables are not ours."""
        if payload.get("payableType") != BILL_PAYABLE:
            return
        order_id = str(payload.get("orderId") or "")
        if what in ("paid", "paid_late"):
            await self.settle(order_id)
        elif what == "closed":
            await self.order_closed(order_id)
        elif what == "refunded":
            await self.order_refunded(order_id)
        elif what == "refund_failed":
            log.warning("bill_refund_failed", extra={"order": order_id})

    async def _load(self, order_id: str) -> tuple[BillPayment, PaymentOrder] | None:
        async with self.d.uow_factory() as uow:
            payment = await uow.bill_payments.by_order(order_id)
            order = await uow.payments.get(order_id)
        if payment is None or order is None:
            log.warning("bill_payment_unknown", extra={"order": order_id})
            return None
        return payment, order

    async def settle(self, order_id: str) -> BillPaymentState | None:
        """Finish a paid (or late-paid) bill payment: settle at the HIS, or refund. Idempotent: the HIS call
        carries the order id as its key, the refund its own key, and a finished payment is left alone."""
        loaded = await self._load(order_id)
        if loaded is None:
            return None
        payment, order = loaded
        if payment.state is BillPaymentState.REFUSED:
            # Refused before: make sure the refund was asked for (a crash may have come in between).
            key = LATE_REFUND_KEY if (payment.refusal or "").startswith("late_") else REFUSED_REFUND_KEY
            await self._request_refund(order, key)
            return payment.state
        if payment.state in (BillPaymentState.SETTLED, BillPaymentState.REFUNDED):
            return payment.state
        if order.state is OrderState.PAID_LATE or (
            payment.state is BillPaymentState.CLOSED and order.state is OrderState.PAID
        ):
            return await self._decide_late(payment, order)
        if payment.state is not BillPaymentState.PENDING or order.state is not OrderState.PAID:
            return payment.state
        assert order.paid_out_trade_no is not None
        attempt = order.attempt(order.paid_out_trade_no)
        assert attempt is not None
        try:
            settlement = await self.d.his.billing_for(payment.hospital_code).settle(
                payment.bill_id,
                patid=payment.patid,
                amount_fen=payment.amount_fen,
                payment_ref=order.paid_out_trade_no,
                channel=attempt.channel,
                key=order.id,
            )
        except BillSettlementRefusedError as exc:
            return await self._refuse(payment, order, exc.reason.value, REFUSED_REFUND_KEY)
        except BillingNotOfferedError:
            return await self._refuse(payment, order, SettlementRefusal.REFUSED.value, REFUSED_REFUND_KEY)
        return await self._settled(payment, settlement)

    async def _decide_late(self, payment: BillPayment, order: PaymentOrder) -> BillPaymentState:
        """A payment that arrived after its order closed: keep and settle it while the bill is still unpaid at
        the HIS and no other payment holds it; otherwise refund it."""
        if order.state is OrderState.PAID_LATE and order.committed_refund_fen:
            return await self._refuse(payment, order, payment.refusal or "late_refunded", LATE_REFUND_KEY)
        reason = "late_in_progress"
        try:
            bill = await self.d.his.billing_for(payment.hospital_code).bill(payment.bill_id)
        except (BillNotFoundError, BillingNotOfferedError):
            bill, reason = None, "late_unknown_bill"
        if bill is not None and not bill.payable:
            reason = f"late_{bill.status.value}"
        elif bill is not None and (
            bill.patid != payment.patid or bill.self_pay_fen != payment.amount_fen or bill.insured_fen
        ):
            bill, reason = None, "late_changed"
        if bill is not None and bill.payable and await self._revive(payment):
            if order.state is OrderState.PAID_LATE:
                await self.d.payments.keep_late(order.id)
            state = await self.settle(order.id)
            return state or BillPaymentState.PENDING
        return await self._refuse(payment, order, reason, LATE_REFUND_KEY)

    async def _revive(self, payment: BillPayment) -> bool:
        """Make a closed payment live again (for a late payment it keeps); False when another payment of the
        bill is live."""
        async with self.d.uow_factory() as uow:
            current = await uow.bill_payments.get(payment.id, lock=True)
            assert current is not None
            if current.state is BillPaymentState.PENDING:
                return True
            if current.state is not BillPaymentState.CLOSED:
                return False
            revived = replace(current, state=BillPaymentState.PENDING, updated_at=self._now())
            if not await uow.bill_payments.save(revived):
                return False
            await uow.commit()
        return True

    async def _settled(self, payment: BillPayment, settlement: Settlement) -> BillPaymentState:
        now = self._now()
        async with self.d.uow_factory() as uow:
            current = await uow.bill_payments.get(payment.id, lock=True)
            assert current is not None
            if current.state is not BillPaymentState.PENDING:
                return current.state
            settled = replace(
                current,
                state=BillPaymentState.SETTLED,
                his_receipt_no=settlement.his_receipt_no[:64],
                settled_at=settlement.settled_at,
                updated_at=now,
            )
            await uow.bill_payments.save(settled)
            topic, card_use = card_use_message(
                settled.account_id, settled.person_id, settled.hospital_code, CARD_USE_SCENE
            )
            await uow.outbox.add(topic, card_use, now=now, key=f"bill:{settled.id}:card-use")
            hospital = await uow.catalogue.hospital(settled.hospital_code)
            await uow.outbox.add(
                BILL_SETTLED_TOPIC,
                self._message(settled, hospital, settlement.settled_at),
                now=now,
                key=f"bill:{settled.id}:settled",
            )
            await uow.audit.record(
                self._audit("billing.settled", settled, details={"receipt": settled.his_receipt_no or ""}), now=now
            )
            await uow.commit()
        return BillPaymentState.SETTLED

    async def _request_refund(self, order: PaymentOrder, key: str) -> None:
        refund_id = f"{order.id}-{key}"[:80]
        if order.refund(refund_id) is None and order.refundable_fen <= 0:
            log.warning("bill_nothing_to_refund", extra={"order": order.id})
            return
        await self.d.payments.request_refund(order.id, amount_fen=None, reason=key.replace("-", "_"), key=key)

    async def _refuse(self, payment: BillPayment, order: PaymentOrder, reason: str, key: str) -> BillPaymentState:
        """Refund the whole payment (first: the request is idempotent by its key), then mark it refused."""
        await self._request_refund(order, key)
        now = self._now()
        async with self.d.uow_factory() as uow:
            current = await uow.bill_payments.get(payment.id, lock=True)
            assert current is not None
            if current.state not in (BillPaymentState.PENDING, BillPaymentState.CLOSED):
                return current.state
            refused = replace(current, state=BillPaymentState.REFUSED, refusal=reason[:64], updated_at=now)
            await uow.bill_payments.save(refused)
            await uow.audit.record(self._audit("billing.refused", refused, reason=reason[:64]), now=now)
            await uow.commit()
        return BillPaymentState.REFUSED

    async def order_closed(self, order_id: str) -> None:
        """The order closed unpaid: its bill may be paid with a new order."""
        async with self.d.uow_factory() as uow:
            payment = await uow.bill_payments.by_order(order_id, lock=True)
            order = await uow.payments.get(order_id)
            if payment is None or order is None:
                return
            if payment.state is not BillPaymentState.PENDING or order.state is not OrderState.CLOSED:
                return
            await uow.bill_payments.save(replace(payment, state=BillPaymentState.CLOSED, updated_at=self._now()))
            await uow.commit()

    async def order_refunded(self, order_id: str) -> None:
        """A refused payment went back to the resident in full: tell them."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            payment = await uow.bill_payments.by_order(order_id, lock=True)
            if payment is None:
                return
            if payment.state is not BillPaymentState.REFUSED:
                if payment.state is BillPaymentState.SETTLED:
                    # An operator refunded a settled bill: the HIS still has it paid; operators reverse it there.
                    log.warning("bill_settled_then_refunded", extra={"order": order_id})
                return
            refunded = replace(payment, state=BillPaymentState.REFUNDED, updated_at=now)
            await uow.bill_payments.save(refunded)
            hospital = await uow.catalogue.hospital(refunded.hospital_code)
            await uow.outbox.add(
                BILL_REFUNDED_TOPIC, self._message(refunded, hospital, now), now=now, key=f"bill:{refunded.id}:refunded"
            )
            await uow.audit.record(self._audit("billing.refunded", refunded), now=now)
            await uow.commit()

    async def settle_due(self, *, limit: int = 100) -> int:
        """The sweep: finish payments left half-done (the HIS was down when the message came, or it was lost)."""
        async with self.d.uow_factory() as uow:
            due = await uow.bill_payments.awaiting_settlement(
                older_than=self._now() - self.d.policy.settle_after, limit=limit
            )
        done = 0
        for order_id in due:
            try:
                await self.settle(order_id)
                done += 1
            except DomainError as exc:
                log.warning("bill_settle_failed", extra={"order": order_id, "code": exc.code})
        return done

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _message(payment: BillPayment, hospital: Hospital | None, at: datetime) -> dict[str, Any]:
        return {
            "accountId": payment.account_id,
            "billPaymentId": payment.id,
            "values": {
                "hospital": hospital.name if hospital else payment.hospital_code,
                "amount": f"{fen_to_yuan(payment.amount_fen)}元",
                "time": at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M"),
            },
        }

    @staticmethod
    def _audit(
        action: str,
        payment: BillPayment,
        *,
        actor: str = "system",
        reason: str | None = None,
        details: Mapping[str, str] | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            action=action,
            outcome=Outcome.SUCCESS,
            actor=actor,
            actor_role="resident" if actor.startswith("account:") else None,
            object_type="bill_payment",
            object_id=payment.id,
            reason=reason,
            details={"order": payment.order_id, "hospital": payment.hospital_code, **(details or {})},
        )
