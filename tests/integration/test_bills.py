"""Outpatient bills (诊间支付) on the real PostgreSQL: listing a patient's unpaid bills, one payment order per
bill however often it is asked for, settlement at the HIS once however often the outbox message is handled, a
refused settlement refunded in full, late payments kept or refunded, and the routes' problem+json codes.

The HIS is the in-memory fake of the billing port (tests/support/catalogue.py; the FHIR adapter passes the same
contract against the sandbox HIS), the channel the payment tests' model of the port. Outbox messages go through
the worker's registered topic handlers. Rule: NET-030 (only verified patients pay).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import sqlalchemy as sa

from domain.billing.model import BillItem, BillPaymentState, BillStatus
from domain.billing.use_cases import BillingDeps, BillingService, BillOrder
from domain.catalogue.model import Hospital, HospitalLevel, PatientDocument
from domain.kernel.errors import DomainError
from domain.kernel.ids import new_id
from domain.kernel.outbox import OutboxMessage
from domain.kernel.relay import relay_outbox
from domain.notification.model import Channel
from domain.notification.templates import REGISTRY
from domain.patient.model import (
    Consent,
    ConsentKind,
    PatientLink,
    PatientState,
    Person,
    Relationship,
    VerificationMethod,
)
from domain.patient.use_cases import CARD_USE_TOPIC, PatientDeps, PatientService
from domain.payment.machine import OrderState, PaymentOrder, RefundState
from domain.payment.use_cases import PaymentDeps, PaymentPolicy, PaymentService
from integrations.crypto.keys import Keyring, generate_keyring_config
from integrations.crypto.suite import build_suite
from notifications import tasks as _tasks  # noqa: F401  (registers the topic handlers)
from notifications.registry import registry
from notifications.runtime import WorkerRuntime
from persistence.db import ConnectionSource
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from tests.integration.test_payments import PAYER, ModelChannel, last_out_trade_no
from tests.support.app import FixedClock, asgi_client, build_test_apps
from tests.support.catalogue import FakeGateway, FakeHis
from tests.support.patients import citizen_id

HOSPITAL = "H001"
PATID = "PAT-0001"
TOTAL = 4500  # the fake HIS's default bill: a blood count (2000) and an ECG (2500)


class RecordingDispatcher:
    def __init__(self) -> None:
        self.messages: list[OutboxMessage] = []

    async def dispatch(self, message: OutboxMessage) -> None:
        self.messages.append(message)


@dataclass
class Stack:
    billing: BillingService
    payments: PaymentService
    patients: PatientService
    his: FakeHis
    gateway: FakeGateway
    wechat: ModelChannel
    clock: FixedClock
    source: ConnectionSource
    dispatcher: RecordingDispatcher = field(default_factory=RecordingDispatcher)

    @property
    def runtime(self) -> WorkerRuntime:
        return cast(WorkerRuntime, SimpleNamespace(services={"billing": self.billing}))

    async def patient(
        self, account_id: str, *, verified: bool = True, patid: str | None = PATID, seq: str = "123"
    ) -> str:
        """An active patient of the account with a live health-data consent (and a HIS patient id)."""
        now = self.clock.now()
        person = Person(
            id=new_id(),
            name="张伟",
            sex="M",
            birth_date=date(1988, 3, 12),
            created_at=now,
            doc_type="01",
            doc_number=citizen_id("110105", "19880312", seq),
            verified_at=now if verified else None,
            verification=VerificationMethod.ID_TWO_FACTOR if verified else None,
        )
        link = PatientLink(new_id(), account_id, person.id, Relationship.SELF, PatientState.ACTIVE, now, now)
        async with SqlUnitOfWork(self.source, cipher=self.patients.d.cipher) as uow:
            await uow.patients.add_person(person, doc_index=new_id(), phone_index=None)
            await uow.patients.add_link(link)
            await uow.patients.add_consent(
                Consent(new_id(), account_id, person.id, ConsentKind.HEALTH_DATA, "2026-11", "app", now)
            )
            if patid is not None:
                await uow.patients.set_hospital_patid(person.id, HOSPITAL, patid, now=now)
            await uow.commit()
        return link.id

    async def order(self, order_id: str) -> PaymentOrder:
        async with SqlUnitOfWork(self.source) as uow:
            order = await uow.payments.get(order_id)
        assert order is not None
        return order

    async def state(self, order_id: str) -> BillPaymentState:
        async with SqlUnitOfWork(self.source) as uow:
            payment = await uow.bill_payments.by_order(order_id)
        assert payment is not None
        return payment.state

    async def resident_pays(self, account_id: str, order_id: str) -> None:
        """Prepay at the channel, pay there, and the channel's notification arrives."""
        await self.payments.pay(account_id, order_id, "wechat", PAYER)
        trade = self.wechat.resident_pays(last_out_trade_no(self.wechat))
        await self.payments.apply_trade("wechat", trade)

    async def relay(self) -> list[OutboxMessage]:
        """Relay what the outbox holds now (each message once)."""
        start = len(self.dispatcher.messages)
        while await relay_outbox(unit_of_work_factory(self.source), self.dispatcher, self.clock.now()):
            pass
        return self.dispatcher.messages[start:]

    async def deliver(self, messages: list[OutboxMessage], *, prefix: str = "payment.") -> None:
        """Hand messages to the worker's registered topic handlers, as ``outbox.dispatch`` does."""
        for message in messages:
            if not message.topic.startswith(prefix):
                continue
            for handler in registry.topics.get(message.topic, []):
                await handler(self.runtime, message.payload, message.id)

    async def relay_and_deliver(self) -> list[OutboxMessage]:
        messages = await self.relay()
        await self.deliver(messages)
        return messages

    async def count(self, table: str) -> int:
        async with SqlUnitOfWork(self.source) as uow:
            return int((await uow.connection.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


@pytest.fixture
async def s(committed_source: ConnectionSource) -> Stack:
    cfg = generate_keyring_config()
    suite = build_suite("intl", Keyring.from_config(cfg["active_kid"], cfg["keys"], cfg["index_key"]))
    clock = FixedClock(datetime(2026, 11, 22, 2, 0, tzinfo=UTC))
    factory = unit_of_work_factory(committed_source, cipher=suite.cipher)
    his = FakeHis(HOSPITAL, clock=clock)
    gateway = FakeGateway({HOSPITAL: his})
    wechat = ModelChannel("wechat")
    channels: dict[str, Any] = {"wechat": wechat}
    payments = PaymentService(
        PaymentDeps(uow_factory=factory, clock=clock, channels=channels, policy=PaymentPolicy(refund_backoff=(30,)))
    )
    patients = PatientService(
        PatientDeps(
            uow_factory=factory,
            clock=clock,
            cipher=suite.cipher,
            blind_index=suite.blind_index,
            mac=suite.mac,
            his=gateway,
        )
    )
    billing = BillingService(
        BillingDeps(uow_factory=factory, clock=clock, his=gateway, patients=patients, payments=payments)
    )
    async with SqlUnitOfWork(committed_source) as uow:
        for code, name in ((HOSPITAL, "市第一人民医院"), ("H002", "市中医院")):
            await uow.catalogue.add_hospital(
                Hospital(code=code, name=name, level=HospitalLevel.TERTIARY, region_code="110105"), now=clock.now()
            )
        await uow.commit()
    return Stack(billing, payments, patients, his, gateway, wechat, clock, committed_source)


async def raises(code: str, awaitable: object) -> DomainError:
    with pytest.raises(DomainError) as caught:
        await awaitable  # type: ignore[misc]
    assert caught.value.code == code, caught.value
    return caught.value


# ---------------------------------------------------------------------------------------------------- listing


async def test_a_patients_unpaid_bills_are_listed_with_their_items(s: Stack) -> None:
    patient = await s.patient("acct-1")
    first = s.his.add_bill(PATID)
    second = s.his.add_bill(PATID, (BillItem("120100001", "普通门诊诊查费", 2, 1000, 2000, "诊查费"),))
    s.his.add_bill("PAT-OTHER")
    paid = s.his.add_bill(PATID)
    s.his.bills_[paid.bill_id] = replace(paid, status=BillStatus.PAID)

    found = await s.billing.unpaid_bills("acct-1", patient, HOSPITAL)
    assert [b.bill.bill_id for b in found] == [first.bill_id, second.bill_id]
    assert [i.name for i in found[0].bill.items] == ["血常规", "常规心电图"]
    assert found[0].bill.total_fen == TOTAL
    assert found[1].bill.title == "门诊缴费：诊查费"
    assert all(b.payment_state is None and b.order_id is None for b in found)

    order = await s.billing.pay_bill("acct-1", patient, HOSPITAL, first.bill_id)
    again = await s.billing.unpaid_bills("acct-1", patient, HOSPITAL)
    assert (again[0].payment_state, again[0].order_id) == (BillPaymentState.PENDING, order.order.id)


async def test_listing_never_creates_a_his_patient_record(s: Stack) -> None:
    """A person the HIS does not know has no bills there: the HIS is searched, never asked to create a record,
    and nothing is stored."""
    patient = await s.patient("acct-1", patid=None)
    s.his.add_bill("PAT-SOMEONE-ELSE")
    assert await s.billing.unpaid_bills("acct-1", patient, HOSPITAL) == []
    assert s.his.created_patients == []
    assert s.his.patients_ == {}
    async with SqlUnitOfWork(s.source) as uow:
        assert (
            await uow.patients.hospital_patid((await s.patients.usable("acct-1", patient)).person.id, HOSPITAL) is None
        )


async def test_a_person_known_at_the_his_who_never_paid_here_sees_their_bills(s: Stack) -> None:
    """Registered on site at the hospital (the HIS has a record), never booked or paid through us: the bills are
    listed, found by the ID document; no HIS record is created, and the patid found is kept for paying."""
    patient = await s.patient("acct-1", patid=None, seq="124")
    person = (await s.patients.usable("acct-1", patient)).person
    onsite = s.his.register_patient(
        PatientDocument(person.name, person.sex, person.birth_date, id_type="01", id_number=person.doc_number)
    )
    s.his.register_patient(PatientDocument("李娜", "F", date(1990, 1, 1), id_type="01", id_number="110105199001010022"))
    bill = s.his.add_bill(onsite)
    s.his.add_bill("PAT-SOMEONE-ELSE")

    found = await s.billing.unpaid_bills("acct-1", patient, HOSPITAL)
    assert [b.bill.bill_id for b in found] == [bill.bill_id]
    assert s.his.created_patients == [], "finding is not creating"
    assert len(s.his.patients_) == 2
    async with SqlUnitOfWork(s.source) as uow:
        assert await uow.patients.hospital_patid(person.id, HOSPITAL) == onsite

    order = await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)
    assert order.payment.patid == onsite
    assert s.his.created_patients == [], "paying uses the record found"
    # Elsewhere the person is unknown: nothing there, and still nothing created.
    other = FakeHis("H002", clock=s.clock)
    s.gateway.adapters["H002"] = other
    assert await s.billing.unpaid_bills("acct-1", patient, "H002") == []
    assert other.created_patients == []


async def test_another_accounts_patient_and_an_unknown_hospital_are_not_found(s: Stack) -> None:
    patient = await s.patient("acct-1")
    await raises("patient.not_found", s.billing.unpaid_bills("acct-2", patient, HOSPITAL))
    await raises("catalogue.hospital_not_found", s.billing.unpaid_bills("acct-1", patient, "NOPE"))
    s.gateway.no_billing.add(HOSPITAL)
    await raises("his.billing_not_offered", s.billing.unpaid_bills("acct-1", patient, HOSPITAL))


# ---------------------------------------------------------------------------------------------------- paying


async def test_paying_twice_answers_the_same_open_order(s: Stack) -> None:
    patient = await s.patient("acct-1")
    bill = s.his.add_bill(PATID)
    first = await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)
    second = await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)
    assert first.created
    assert not second.created
    assert second.order.id == first.order.id
    order = first.order
    assert (order.payable_type, order.payable_id) == ("bill", first.payment.id)
    assert (order.self_pay_fen, order.insured_fen) == (TOTAL, 0)
    assert order.expires_at == s.clock.now() + s.billing.d.policy.order_ttl
    assert order.description == bill.title
    assert (first.payment.patid, first.payment.amount_fen) == (PATID, TOTAL)
    assert await s.count("payment_orders") == 1
    assert await s.count("bill_payments") == 1

    # Asked at the same time (a double tap): still one order.
    other = s.his.add_bill(PATID)
    answers: list[BillOrder] = await asyncio.gather(
        *(s.billing.pay_bill("acct-1", patient, HOSPITAL, other.bill_id) for _ in range(4))
    )
    assert len({a.order.id for a in answers}) == 1
    assert await s.count("bill_payments") == 2
    assert await s.count("payment_orders") == 2, "the losers' orders were rolled back with their rows"


async def test_another_patients_bill_is_refused_like_an_unknown_one(s: Stack) -> None:
    patient = await s.patient("acct-1")
    theirs = s.his.add_bill("PAT-OTHER")
    await raises("his.bill_not_found", s.billing.pay_bill("acct-1", patient, HOSPITAL, theirs.bill_id))
    await raises("his.bill_not_found", s.billing.pay_bill("acct-1", patient, HOSPITAL, "NO-SUCH-BILL"))
    assert await s.count("payment_orders") == 0


async def test_an_unverified_patient_cannot_list_or_pay(s: Stack) -> None:
    """NET-030."""
    patient = await s.patient("acct-1", verified=False)
    bill = s.his.add_bill(PATID)
    await raises("patient.unverified", s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id))
    await raises("patient.unverified", s.billing.unpaid_bills("acct-1", patient, HOSPITAL))
    assert await s.count("payment_orders") == 0


async def test_a_bill_paid_or_cancelled_at_the_his_or_with_an_insured_part_is_refused(s: Stack) -> None:
    patient = await s.patient("acct-1")
    paid = s.his.add_bill(PATID)
    s.his.bills_[paid.bill_id] = replace(paid, status=BillStatus.PAID)
    await raises("billing.already_paid", s.billing.pay_bill("acct-1", patient, HOSPITAL, paid.bill_id))
    cancelled = s.his.cancel_bill(s.his.add_bill(PATID).bill_id)
    await raises("billing.cancelled", s.billing.pay_bill("acct-1", patient, HOSPITAL, cancelled.bill_id))
    insured = s.his.add_bill(PATID)
    s.his.bills_[insured.bill_id] = replace(insured, self_pay_fen=1500, insured_fen=3000)
    await raises("billing.insured_not_supported", s.billing.pay_bill("acct-1", patient, HOSPITAL, insured.bill_id))
    assert await s.count("payment_orders") == 0


async def test_another_account_cannot_take_over_an_open_order(s: Stack) -> None:
    """Both parents manage the child: the second sees the bill being paid, not the first one's order."""
    patient = await s.patient("acct-1")
    bill = s.his.add_bill(PATID)
    await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)
    async with SqlUnitOfWork(s.source, cipher=s.patients.d.cipher) as uow:
        person_id = (await uow.patients.link("acct-1", patient)).person_id  # type: ignore[union-attr]
        link = PatientLink(new_id(), "acct-2", person_id, Relationship.CHILD, PatientState.ACTIVE, s.clock.now())
        await uow.patients.add_link(link)
        await uow.patients.add_consent(
            Consent(new_id(), "acct-2", person_id, ConsentKind.HEALTH_DATA, "2026-11", "app", s.clock.now())
        )
        await uow.commit()
    await raises("billing.payment_in_progress", s.billing.pay_bill("acct-2", link.id, HOSPITAL, bill.bill_id))
    (listed,) = await s.billing.unpaid_bills("acct-2", link.id, HOSPITAL)
    assert (listed.payment_state, listed.order_id) == (BillPaymentState.PENDING, None)


# ---------------------------------------------------------------------------------------------------- settling


async def test_a_paid_bill_is_settled_once_even_when_the_handler_runs_twice(s: Stack) -> None:
    patient = await s.patient("acct-1")
    bill = s.his.add_bill(PATID)
    created = await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)
    order_id = created.order.id
    await s.resident_pays("acct-1", order_id)
    messages = await s.relay()
    assert [m.topic for m in messages] == ["payment.paid"]
    await s.deliver(messages)
    await s.deliver(messages)  # delivered again (a relay crash, a redelivery)
    await s.billing.settle(order_id)  # and swept

    assert len(s.his.settle_calls) == 1
    (call,) = s.his.settle_calls
    paid = await s.order(order_id)
    assert call == (bill.bill_id, TOTAL, paid.paid_out_trade_no, "wechat", order_id), "keyed by the order id"
    assert s.his.bills_[bill.bill_id].status is BillStatus.PAID
    (payment,) = await s.billing.payments_of("acct-1")
    assert payment.state is BillPaymentState.SETTLED
    assert payment.his_receipt_no is not None
    assert payment.his_receipt_no.startswith("FAKE-R")
    assert payment.settled_at is not None

    after = await s.relay()
    topics = sorted(m.topic for m in after)
    assert topics == ["bill.settled", CARD_USE_TOPIC], "one card use and one message, however often it ran"
    card_use = next(m for m in after if m.topic == CARD_USE_TOPIC)
    assert card_use.payload["scene"] == "payment"
    assert card_use.payload["hospitalCode"] == HOSPITAL
    settled = next(m for m in after if m.topic == "bill.settled")
    assert settled.payload["values"] == {"hospital": "市第一人民医院", "amount": "45.00元", "time": "2026-11-22 10:00"}
    wechat = REGISTRY.render("bill.settled", Channel.WECHAT_SUBSCRIBE, settled.payload["values"])
    assert wechat.fields == {
        "thing1": "市第一人民医院",
        "amount2": "45.00元",
        "time3": "2026-11-22 10:00",
        "thing4": "门诊缴费成功",
    }

    await raises("billing.already_paid", s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id))
    assert await s.billing.unpaid_bills("acct-1", patient, HOSPITAL) == []


async def test_a_settlement_the_his_made_before_a_crash_is_found_again_by_its_key(s: Stack) -> None:
    patient = await s.patient("acct-1")
    bill = s.his.add_bill(PATID)
    order_id = (await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)).order.id
    await s.resident_pays("acct-1", order_id)
    paid = await s.order(order_id)
    # The worker reached the HIS, which settled, and died before recording it.
    earlier = await s.his.settle(
        bill.bill_id,
        patid=PATID,
        amount_fen=TOTAL,
        payment_ref=paid.paid_out_trade_no or "",
        channel="wechat",
        key=order_id,
    )
    await s.relay_and_deliver()
    (payment,) = await s.billing.payments_of("acct-1")
    assert (payment.state, payment.his_receipt_no) == (BillPaymentState.SETTLED, earlier.his_receipt_no)
    assert len(s.his.settlements_) == 1
    assert not (await s.order(order_id)).refunds


async def test_a_refused_settlement_is_refunded_in_full_and_marked_refused(s: Stack) -> None:
    patient = await s.patient("acct-1")
    bill = s.his.add_bill(PATID)
    order_id = (await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)).order.id
    await s.resident_pays("acct-1", order_id)
    s.his.refuse_settlements = 1
    paid = await s.relay()
    await s.deliver(paid)

    order = await s.order(order_id)
    (refund,) = order.refunds
    assert refund.id == f"{order_id}-settlement-refused"
    assert refund.amount_fen == TOTAL, "all of it"
    assert refund.state is RefundState.SUCCEEDED
    assert order.state is OrderState.REFUNDED
    (payment,) = await s.billing.payments_of("acct-1")
    assert (payment.state, payment.refusal) == (BillPaymentState.REFUSED, "refused")

    await s.deliver(paid)  # the paid message again: no second refund, no second settlement try
    assert len((await s.order(order_id)).refunds) == 1
    assert len(s.wechat.refund_calls) == 1
    assert len(s.his.settle_calls) == 1

    refunded = await s.relay_and_deliver()
    assert "payment.refunded" in [m.topic for m in refunded]
    assert await s.state(order_id) is BillPaymentState.REFUNDED
    assert [m.topic for m in await s.relay()] == ["bill.refunded"]
    assert s.his.bills_[bill.bill_id].status is BillStatus.UNPAID, "the bill can be paid again"
    again = await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)
    assert again.created
    assert again.order.id != order_id


async def test_an_unavailable_his_raises_so_the_message_is_retried_and_the_sweep_settles(s: Stack) -> None:
    patient = await s.patient("acct-1")
    bill = s.his.add_bill(PATID)
    order_id = (await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)).order.id
    await s.resident_pays("acct-1", order_id)
    s.his.online = False
    messages = await s.relay()
    await raises("his.unavailable", s.deliver(messages))
    assert await s.state(order_id) is BillPaymentState.PENDING
    assert not (await s.order(order_id)).refunds, "unavailable is not a refusal"

    s.his.online = True
    assert await s.billing.settle_due() == 0, "not yet: the message may still be retried"
    s.clock.advance(120)
    assert await s.billing.settle_due() == 1
    assert await s.state(order_id) is BillPaymentState.SETTLED
    assert await s.billing.settle_due() == 0


async def test_orders_of_other_payables_are_ignored(s: Stack) -> None:
    await s.billing.on_payment_event("paid", {"orderId": "whatever", "payableType": "booking", "payableId": "b"})
    assert s.his.settle_calls == []


# ---------------------------------------------------------------------------------------------------- expiry, late


async def test_an_expired_order_frees_the_bill_and_a_late_payment_is_kept_while_the_bill_is_unpaid(s: Stack) -> None:
    patient = await s.patient("acct-1")
    bill = s.his.add_bill(PATID)
    order_id = (await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)).order.id
    await s.payments.pay("acct-1", order_id, "wechat", PAYER)
    out_trade_no = last_out_trade_no(s.wechat)
    s.clock.advance(16 * 60)
    assert await s.payments.expire_due() == 1
    await s.relay_and_deliver()
    assert await s.state(order_id) is BillPaymentState.CLOSED

    # The resident's payment went through at the channel after all; its notification comes late.
    s.wechat.trades[out_trade_no] = "paid"
    await s.payments.apply_trade("wechat", await s.wechat.query(out_trade_no))
    late = await s.relay_and_deliver()
    assert [m.topic for m in late] == ["payment.paid_late"]
    assert (await s.order(order_id)).state is OrderState.PAID, "kept"
    assert await s.state(order_id) is BillPaymentState.SETTLED
    assert s.his.bills_[bill.bill_id].status is BillStatus.PAID


async def test_a_late_payment_is_refunded_when_the_bill_was_paid_meanwhile(s: Stack) -> None:
    patient = await s.patient("acct-1")
    bill = s.his.add_bill(PATID)
    first = (await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)).order.id
    await s.payments.pay("acct-1", first, "wechat", PAYER)
    stale = last_out_trade_no(s.wechat)
    s.clock.advance(16 * 60)
    # Asking again after the deadline closes the stale order (at the channel first) and opens a new one.
    second = await s.billing.pay_bill("acct-1", patient, HOSPITAL, bill.bill_id)
    assert second.created
    assert second.order.id != first
    assert await s.state(first) is BillPaymentState.CLOSED
    await s.resident_pays("acct-1", second.order.id)
    await s.relay_and_deliver()
    assert await s.state(second.order.id) is BillPaymentState.SETTLED

    s.wechat.trades[stale] = "paid"
    await s.payments.apply_trade("wechat", await s.wechat.query(stale))
    await s.relay_and_deliver()
    late = await s.order(first)
    assert late.state is OrderState.REFUNDED
    assert [r.id for r in late.refunds] == [f"{first}-late-unpayable"]
    async with SqlUnitOfWork(s.source) as uow:
        payment = await uow.bill_payments.by_order(first)
    assert payment is not None
    assert payment.refusal == "late_paid"
    assert len(s.his.settle_calls) == 1, "the late payment never reached the HIS"
    await s.relay_and_deliver()
    assert await s.state(first) is BillPaymentState.REFUNDED


# ---------------------------------------------------------------------------------------------------- routes


@pytest.fixture
async def client(s: Stack, committed_source: ConnectionSource) -> AsyncIterator[httpx.AsyncClient]:
    public, _, deps = build_test_apps(committed_source, clock=s.clock)
    deps.billing = s.billing
    deps.payments = s.payments
    deps.patients = s.patients
    async with asgi_client(public) as http:
        yield http


def resident(account_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer resident-{account_id}"}


def problem(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["code"] == code
    assert body["message"]


async def test_the_routes_list_pay_and_show_bill_payments(s: Stack, client: httpx.AsyncClient) -> None:
    patient = await s.patient("acct-1")
    bill = s.his.add_bill(PATID)
    base = f"/api/v1/patient/patients/{patient}/hospitals/{HOSPITAL}/bills"
    listed = await client.get(base, headers=resident("acct-1"))
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert item["billId"] == bill.bill_id
    assert item["totalFen"] == TOTAL
    assert [i["unitPriceFen"] for i in item["items"]] == [2000, 2500]
    assert item["paymentState"] is None

    made = await client.post(f"{base}/{bill.bill_id}/payment-order", headers=resident("acct-1"))
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["selfPayFen"], body["insuredFen"], body["state"], body["created"]) == (TOTAL, 0, "created", True)
    assert body["expiresAt"].startswith("2026-11-22T02:15:00")
    again = await client.post(f"{base}/{bill.bill_id}/payment-order", headers=resident("acct-1"))
    assert (again.json()["orderId"], again.json()["created"]) == (body["orderId"], False)

    order = await client.get(f"/api/v1/patient/payment-orders/{body['orderId']}", headers=resident("acct-1"))
    assert order.status_code == 200, order.text
    await s.resident_pays("acct-1", body["orderId"])
    await s.relay_and_deliver()
    payments = await client.get("/api/v1/patient/bill-payments", headers=resident("acct-1"))
    assert payments.status_code == 200, payments.text
    (shown,) = payments.json()["items"]
    assert (shown["orderId"], shown["state"], shown["amountFen"]) == (body["orderId"], "settled", TOTAL)
    assert "patid" not in shown
    assert (await client.get("/api/v1/patient/bill-payments", headers=resident("acct-2"))).json() == {"items": []}


async def test_the_routes_answer_bad_input_with_stable_codes(s: Stack, client: httpx.AsyncClient) -> None:
    patient = await s.patient("acct-1")
    unverified = await s.patient("acct-3", verified=False, seq="135")
    mine = s.his.add_bill(PATID)
    theirs = s.his.add_bill("PAT-OTHER")
    paid = s.his.add_bill(PATID)
    s.his.bills_[paid.bill_id] = replace(paid, status=BillStatus.PAID)
    base = f"/api/v1/patient/patients/{patient}/hospitals/{HOSPITAL}/bills"
    me = resident("acct-1")

    problem(await client.get(base), 401, "auth.unauthenticated")
    problem(await client.get(base, headers=resident("acct-2")), 404, "patient.not_found")
    problem(
        await client.get(f"/api/v1/patient/patients/{patient}/hospitals/NOPE/bills", headers=me),
        404,
        "catalogue.hospital_not_found",
    )
    problem(
        await client.get(
            f"/api/v1/patient/patients/{unverified}/hospitals/{HOSPITAL}/bills", headers=resident("acct-3")
        ),
        403,
        "patient.unverified",
    )
    problem(
        await client.post(
            f"/api/v1/patient/patients/{unverified}/hospitals/{HOSPITAL}/bills/{mine.bill_id}/payment-order",
            headers=resident("acct-3"),
        ),
        403,
        "patient.unverified",
    )
    problem(await client.post(f"{base}/{theirs.bill_id}/payment-order", headers=me), 404, "his.bill_not_found")
    problem(await client.post(f"{base}/{paid.bill_id}/payment-order", headers=me), 409, "billing.already_paid")
    problem(await client.post(f"{base}/{'B' * 65}/payment-order", headers=me), 422, "request.invalid")
    problem(await client.get("/api/v1/patient/bill-payments?limit=0", headers=me), 422, "request.invalid")
    s.gateway.no_billing.add(HOSPITAL)
    problem(await client.get(base, headers=me), 404, "his.billing_not_offered")
    s.gateway.no_billing.clear()
    s.his.online = False
    problem(await client.post(f"{base}/{mine.bill_id}/payment-order", headers=me), 503, "his.unavailable")
    assert await s.count("payment_orders") == 0
