"""The payment order and refund state machines (DESIGN §5) as pure transition tables.

Order: CREATED -> PAYING (a prepay at a channel) -> PAID -> PARTIALLY_REFUNDED -> REFUNDED (also PAID ->
REFUNDED); CREATED | PAYING -> CLOSED; CLOSED -> PAID_LATE on a verified late success, then PAID (the payable
keeps it) or, through a refund, REFUNDED. Refund: REQUESTED -> PROCESSING -> SUCCEEDED | FAILED (retried with the
same refund number; FAILED goes to the operators' queue).

An order may have several *attempts* (one per prepay: the resident switched from WeChat Pay to Alipay, or
prepaid again after a network error), each with its own ``out_trade_no``. The invariants the tests check for any
interleaving of channel notifications, queries, closes, expiries and refunds:

* never paid twice: the first verified success pays the order; a success of any other attempt is refunded in
  full at once (``RefundAttempt``), and a repeated notification of the same success changes nothing;
* refunded <= paid, counting refunds still in flight;
* a success on a closed order becomes PAID_LATE and its payable decides: keep it or refund it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from domain.kernel.errors import ConflictError, ValidationError


class OrderState(StrEnum):
    CREATED = "created"
    PAYING = "paying"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CLOSED = "closed"
    PAID_LATE = "paid_late"


class RefundState(StrEnum):
    REQUESTED = "requested"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class AttemptState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    SUCCEEDED = "succeeded"
    DUPLICATE = "duplicate"
    """Succeeded after another attempt had paid the order: refunded in full."""


PAYABLE_STATES = frozenset({OrderState.CREATED, OrderState.PAYING})
REFUNDABLE_STATES = frozenset({OrderState.PAID, OrderState.PARTIALLY_REFUNDED, OrderState.PAID_LATE})
FINAL_REFUND_STATES = frozenset({RefundState.SUCCEEDED, RefundState.FAILED})


class IllegalTransitionError(ConflictError):
    code = "payment.illegal_transition"
    message = "订单状态已变化，请刷新后重试"


class OrderAlreadyPaidError(ConflictError):
    code = "payment.already_paid"
    message = "订单已支付"


class OrderClosedError(ConflictError):
    code = "payment.closed"
    message = "订单已关闭，请重新下单"


class RefundTooLargeError(ValidationError):
    code = "payment.refund_too_large"
    message = "退款金额超过可退金额"


class AmountMismatchError(ValidationError):
    code = "payment.amount_mismatch"
    message = "支付金额与订单金额不一致"


@dataclass(frozen=True, slots=True)
class Attempt:
    out_trade_no: str
    channel: str
    state: AttemptState = AttemptState.OPEN
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    out_refund_no: str
    out_trade_no: str
    amount_fen: int
    reason: str
    state: RefundState = RefundState.REQUESTED
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentOrder:
    id: str
    payable_type: str
    payable_id: str
    account_id: str
    description: str
    self_pay_fen: int
    insured_fen: int
    created_at: datetime
    expires_at: datetime
    state: OrderState = OrderState.CREATED
    attempts: tuple[Attempt, ...] = ()
    refunds: tuple[Refund, ...] = ()
    paid_out_trade_no: str | None = None
    paid_at: datetime | None = None
    version: int = 0

    @property
    def total_fen(self) -> int:
        return self.self_pay_fen + self.insured_fen

    @property
    def paid_fen(self) -> int:
        """What the resident paid for this order (self-pay part; the insured part is settled elsewhere)."""
        return self.self_pay_fen if self.paid_out_trade_no is not None else 0

    def refunds_of(self, out_trade_no: str) -> tuple[Refund, ...]:
        return tuple(r for r in self.refunds if r.out_trade_no == out_trade_no)

    @property
    def refunded_fen(self) -> int:
        """Refunds of the paying attempt that succeeded."""
        return sum(
            r.amount_fen for r in self.refunds_of(self.paid_out_trade_no or "") if r.state is RefundState.SUCCEEDED
        )

    @property
    def committed_refund_fen(self) -> int:
        """Refunds of the paying attempt that succeeded or may still succeed."""
        return sum(
            r.amount_fen for r in self.refunds_of(self.paid_out_trade_no or "") if r.state is not RefundState.FAILED
        )

    @property
    def refundable_fen(self) -> int:
        return self.paid_fen - self.committed_refund_fen

    def attempt(self, out_trade_no: str) -> Attempt | None:
        return next((a for a in self.attempts if a.out_trade_no == out_trade_no), None)

    def refund(self, refund_id: str) -> Refund | None:
        return next((r for r in self.refunds if r.id == refund_id), None)


# ---------------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Prepaid:
    out_trade_no: str
    channel: str


@dataclass(frozen=True, slots=True)
class Succeeded:
    """A verified success from a channel (notification or query)."""

    out_trade_no: str
    transaction_id: str
    amount_fen: int
    at: datetime


@dataclass(frozen=True, slots=True)
class AttemptClosed:
    """The channel confirmed this attempt is closed (it can no longer be paid)."""

    out_trade_no: str


@dataclass(frozen=True, slots=True)
class Close:
    """Expiry or cancellation: every open attempt must be closed at its channel first (``CloseAttempt``
    effects), then ``AttemptClosed`` per attempt moves the order to CLOSED."""

    at: datetime


@dataclass(frozen=True, slots=True)
class KeepLate:
    """The payable kept a late payment (its slot could be re-taken)."""


@dataclass(frozen=True, slots=True)
class RequestRefund:
    refund_id: str
    out_refund_no: str
    amount_fen: int
    reason: str


@dataclass(frozen=True, slots=True)
class RefundSubmitted:
    refund_id: str


@dataclass(frozen=True, slots=True)
class RefundSucceeded:
    refund_id: str


@dataclass(frozen=True, slots=True)
class RefundFailed:
    refund_id: str
    failure: str


@dataclass(frozen=True, slots=True)
class RefundRetried:
    """An operator (or the retry task) sends a failed refund again, with the same refund number."""

    refund_id: str


Event = (
    Prepaid
    | Succeeded
    | AttemptClosed
    | Close
    | KeepLate
    | RequestRefund
    | RefundSubmitted
    | RefundSucceeded
    | RefundFailed
    | RefundRetried
)


# ---------------------------------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class CloseAttempt:
    out_trade_no: str
    channel: str


@dataclass(frozen=True, slots=True)
class SubmitRefund:
    refund_id: str


@dataclass(frozen=True, slots=True)
class NotifyPayable:
    """Tell the payable (booking, bill, consult...) what happened: ``paid``, ``paid_late``, ``closed``,
    ``refunded``, ``refund_failed``."""

    what: str


Effect = CloseAttempt | SubmitRefund | NotifyPayable


@dataclass(frozen=True, slots=True)
class Outcome:
    order: PaymentOrder
    effects: tuple[Effect, ...] = field(default_factory=tuple)
    changed: bool = True


def _unchanged(order: PaymentOrder) -> Outcome:
    return Outcome(order, (), changed=False)


def _set_attempt(order: PaymentOrder, attempt: Attempt) -> tuple[Attempt, ...]:
    return tuple(attempt if a.out_trade_no == attempt.out_trade_no else a for a in order.attempts)


def _set_refund(order: PaymentOrder, refund: Refund) -> tuple[Refund, ...]:
    return tuple(refund if r.id == refund.id else r for r in order.refunds)


def _refund_state(order: PaymentOrder) -> OrderState:
    if order.state is OrderState.PAID_LATE and order.refunded_fen == 0:
        return OrderState.PAID_LATE
    if order.refunded_fen == 0:
        return OrderState.PAID
    return OrderState.REFUNDED if order.refunded_fen >= order.paid_fen else OrderState.PARTIALLY_REFUNDED


def apply(order: PaymentOrder, event: Event) -> Outcome:
    """The next order and the effects to carry out (after the commit). Repeated events change nothing;
    impossible ones raise a ConflictError with a stable code."""
    result = _apply(order, event)
    if result.changed:
        return Outcome(replace(result.order, version=order.version + 1), result.effects, True)
    return result


def _apply(order: PaymentOrder, event: Event) -> Outcome:
    match event:
        case Prepaid(out_trade_no, channel):
            if order.state not in PAYABLE_STATES:
                raise (
                    OrderClosedError(f"order is {order.state}")
                    if order.state is OrderState.CLOSED
                    else (OrderAlreadyPaidError(f"order is {order.state}"))
                )
            if order.attempt(out_trade_no) is not None:
                return _unchanged(order)
            # Other open attempts are closed at their channel so that a second payment cannot happen; if one
            # still succeeds, it is a duplicate and refunded (Succeeded below).
            effects = tuple(
                CloseAttempt(a.out_trade_no, a.channel) for a in order.attempts if a.state is AttemptState.OPEN
            )
            attempts = tuple(
                replace(a, state=AttemptState.CLOSED) if a.state is AttemptState.OPEN else a for a in order.attempts
            )
            return Outcome(
                replace(order, state=OrderState.PAYING, attempts=(*attempts, Attempt(out_trade_no, channel))), effects
            )

        case Succeeded(out_trade_no, transaction_id, amount_fen, at):
            attempt = order.attempt(out_trade_no)
            if attempt is None:
                raise IllegalTransitionError("success of an unknown attempt", code="payment.unknown_attempt")
            if attempt.state in (AttemptState.SUCCEEDED, AttemptState.DUPLICATE):
                if attempt.transaction_id not in (None, transaction_id):
                    raise IllegalTransitionError("two transactions for one attempt", code="payment.conflict")
                return _unchanged(order)
            if amount_fen != order.self_pay_fen:
                raise AmountMismatchError(f"paid {amount_fen}, order {order.self_pay_fen}")
            if order.paid_out_trade_no is not None:
                # Charged twice: this attempt is refunded in full at once.
                dup = replace(attempt, state=AttemptState.DUPLICATE, transaction_id=transaction_id)
                refund = Refund(
                    id=f"{order.id}-dup-{len(order.refunds) + 1}",
                    out_refund_no=f"R{out_trade_no}"[:64],
                    out_trade_no=out_trade_no,
                    amount_fen=amount_fen,
                    reason="duplicate",
                )
                return Outcome(
                    replace(order, attempts=_set_attempt(order, dup), refunds=(*order.refunds, refund)),
                    (SubmitRefund(refund.id),),
                )
            paid = replace(attempt, state=AttemptState.SUCCEEDED, transaction_id=transaction_id)
            late = order.state is OrderState.CLOSED
            others = tuple(
                CloseAttempt(a.out_trade_no, a.channel)
                for a in order.attempts
                if a.state is AttemptState.OPEN and a.out_trade_no != out_trade_no
            )
            attempts = tuple(
                replace(a, state=AttemptState.CLOSED) if a.state is AttemptState.OPEN else a
                for a in _set_attempt(order, paid)
            )
            return Outcome(
                replace(
                    order,
                    state=OrderState.PAID_LATE if late else OrderState.PAID,
                    attempts=attempts,
                    paid_out_trade_no=out_trade_no,
                    paid_at=at,
                ),
                (*others, NotifyPayable("paid_late" if late else "paid")),
            )

        case AttemptClosed(out_trade_no):
            attempt = order.attempt(out_trade_no)
            if attempt is None:
                raise IllegalTransitionError("unknown attempt", code="payment.unknown_attempt")
            if attempt.state is not AttemptState.OPEN:
                return _unchanged(order)
            closed = replace(attempt, state=AttemptState.CLOSED)
            return Outcome(replace(order, attempts=_set_attempt(order, closed)))

        case Close():
            if order.state is OrderState.CLOSED:
                return _unchanged(order)
            if order.state not in PAYABLE_STATES:
                raise OrderAlreadyPaidError(f"order is {order.state}")
            effects = tuple(
                CloseAttempt(a.out_trade_no, a.channel) for a in order.attempts if a.state is AttemptState.OPEN
            )
            # The attempts are closed here already: the close is tried at the channel before this is committed
            # (a success that arrives after it is a late success of a closed order).
            attempts = tuple(
                replace(a, state=AttemptState.CLOSED) if a.state is AttemptState.OPEN else a for a in order.attempts
            )
            return Outcome(
                replace(order, state=OrderState.CLOSED, attempts=attempts), (*effects, NotifyPayable("closed"))
            )

        case KeepLate():
            if order.state is not OrderState.PAID_LATE:
                raise IllegalTransitionError(f"order is {order.state}")
            if order.committed_refund_fen:
                raise IllegalTransitionError("a refund of the late payment is under way")
            return Outcome(replace(order, state=OrderState.PAID))

        case RequestRefund(refund_id, out_refund_no, amount_fen, reason):
            existing = order.refund(refund_id)
            if existing is not None:
                if existing.amount_fen != amount_fen or existing.out_refund_no != out_refund_no:
                    raise IllegalTransitionError("refund id reused", code="payment.refund_conflict")
                return _unchanged(order)
            if order.state not in REFUNDABLE_STATES:
                raise IllegalTransitionError(f"order is {order.state}", code="payment.not_refundable")
            if amount_fen <= 0 or amount_fen > order.refundable_fen:
                raise RefundTooLargeError(f"refund {amount_fen} of {order.refundable_fen} refundable")
            assert order.paid_out_trade_no is not None
            refund = Refund(refund_id, out_refund_no, order.paid_out_trade_no, amount_fen, reason)
            return Outcome(replace(order, refunds=(*order.refunds, refund)), (SubmitRefund(refund_id),))

        case RefundSubmitted(refund_id):
            refund = _known_refund(order, refund_id)
            if refund.state is not RefundState.REQUESTED:
                return _unchanged(order)
            return Outcome(replace(order, refunds=_set_refund(order, replace(refund, state=RefundState.PROCESSING))))

        case RefundSucceeded(refund_id):
            refund = _known_refund(order, refund_id)
            if refund.state is RefundState.SUCCEEDED:
                return _unchanged(order)
            if (
                refund.state is RefundState.FAILED
                and refund.out_trade_no == order.paid_out_trade_no
                and refund.amount_fen > order.refundable_fen
            ):
                # A refund we gave up on succeeded after another took its place: operators must look at it.
                raise IllegalTransitionError("late success of a replaced refund", code="payment.refund_conflict")
            done = replace(
                order, refunds=_set_refund(order, replace(refund, state=RefundState.SUCCEEDED, failure=None))
            )
            if refund.out_trade_no != order.paid_out_trade_no:
                return Outcome(done)  # a duplicate payment went back: the order itself is unchanged
            state = _refund_state(done)
            return Outcome(
                replace(done, state=state), (NotifyPayable("refunded"),) if state is OrderState.REFUNDED else ()
            )

        case RefundFailed(refund_id, failure):
            refund = _known_refund(order, refund_id)
            if refund.state in FINAL_REFUND_STATES:
                return _unchanged(order)
            failed = replace(refund, state=RefundState.FAILED, failure=failure[:64])
            return Outcome(replace(order, refunds=_set_refund(order, failed)), (NotifyPayable("refund_failed"),))

        case RefundRetried(refund_id):
            refund = _known_refund(order, refund_id)
            if refund.state is not RefundState.FAILED:
                return _unchanged(order)
            if refund.out_trade_no == order.paid_out_trade_no and refund.amount_fen > order.refundable_fen:
                raise RefundTooLargeError("the refund no longer fits")
            retried = replace(refund, state=RefundState.REQUESTED, failure=None)
            return Outcome(replace(order, refunds=_set_refund(order, retried)), (SubmitRefund(refund_id),))
    raise IllegalTransitionError(f"unknown event {type(event).__name__}")


def _known_refund(order: PaymentOrder, refund_id: str) -> Refund:
    refund = order.refund(refund_id)
    if refund is None:
        raise IllegalTransitionError("unknown refund", code="payment.unknown_refund")
    return refund
