"""The contract every HIS adapter must pass (the ``HisAdapter`` port of domain/catalogue/ports.py).

Reusable: a test module provides two fixtures and subclasses ``HisAdapterContract``::

    @pytest.fixture
    def his_adapter(...) -> HisAdapter: ...      # one hospital's adapter, talking to a live (test) HIS

    @pytest.fixture
    def his_clock(...) -> Clock: ...             # the instant the HIS lives at (a shared test clock)

    class TestMyAdapterContract(HisAdapterContract):
        pass

What the HIS behind the adapter must hold: a directory, open sessions with free numbers today (starting after
``his_clock.now()``) and on the next two days. Each test creates its own patients (unique ID numbers), so the
tests may share one HIS; none of them needs a fresh one.

``HisPatientsContract`` (part of ``HisAdapterContract``) holds the patient-record tests on their own, for
implementations of ``HisPatients`` alone (fixture ``his_patients``). ``HisBillingContract`` is the same for the
``HisBilling`` port (domain/billing/ports.py), with fixtures ``his_billing`` and ``billing_desk`` (a
``BillingDesk``: the hospital's side, to issue and withdraw bills and to work the fault switches).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import pytest

from domain.billing.model import BillItem, BillStatus, OutpatientBill, Settlement
from domain.billing.ports import BillNotFoundError, BillSettlementRefusedError, HisBilling, SettlementRefusal
from domain.catalogue.model import PatientDocument, ScheduleSession, SessionStatus, Slot
from domain.catalogue.ports import HisAdapter, HisPatients, HisRejectedError, HisUnavailableError
from domain.kernel.clock import SHANGHAI, Clock

DAYS = 3
"""The contract looks at today and the next two days."""

_serial = itertools.count(1)


def today_of(clock: Clock) -> date:
    return clock.now().astimezone(SHANGHAI).date()


def resident_id(birth: date, sequence: int) -> str:
    """A well-formed 居民身份证 number (GB 11643-1999): region, birth date, sequence, ISO 7064 MOD 11-2 check."""
    body = f"532301{birth:%Y%m%d}{sequence % 1000:03d}"
    total = sum(int(digit) * (2 ** (17 - i) % 11) for i, digit in enumerate(body))
    return body + "10X98765432"[total % 11]


def new_person(*, name: str | None = None) -> PatientDocument:
    """A person with a fresh resident ID number (unique per call) and the birth date it encodes."""
    serial = next(_serial)
    birth = date(1950, 1, 1) + timedelta(days=uuid.uuid4().int % 20000)
    return PatientDocument(
        name=name or f"测试患者{serial}",
        sex="F" if serial % 2 else "M",
        birth_date=birth,
        id_type="01",
        id_number=resident_id(birth, serial),
        phone=f"139{serial:08d}",
    )


async def new_patient(adapter: HisAdapter) -> str:
    return await adapter.find_or_create(new_person(), key=f"patient-{uuid.uuid4()}")


def key(label: str) -> str:
    return f"{label}-{uuid.uuid4()}"


async def sessions_ahead(adapter: HisAdapter, clock: Clock) -> Sequence[ScheduleSession]:
    today = today_of(clock)
    return await adapter.sessions(today, today + timedelta(days=DAYS - 1))


def free(slot: Slot, now: datetime) -> bool:
    return slot.start > now + timedelta(minutes=5) and slot.capacity > slot.his_booked


async def open_slot(
    adapter: HisAdapter, clock: Clock, *, day: date | None = None, fewest_left: bool = False, skip: int = 0
) -> tuple[ScheduleSession, Slot]:
    """An open session and one of its slots with free numbers, starting later than now (on ``day`` if given).
    ``skip`` picks a later candidate (so that tests of one HIS use different slots)."""
    now = clock.now()
    candidates = [
        (session, slot)
        for session in await sessions_ahead(adapter, clock)
        if session.status is SessionStatus.OPEN and (day is None or session.day == day)
        for slot in session.slots
        if free(slot, now)
    ]
    assert candidates, "the HIS under test needs open sessions with free numbers after now"
    if fewest_left:
        candidates.sort(key=lambda pair: (pair[1].capacity - pair[1].his_booked, pair[1].start, pair[1].id))
    return candidates[min(skip, len(candidates) - 1)]


async def booked(adapter: HisAdapter, session_id: str, slot_id: str) -> int:
    session = await adapter.session(session_id)
    return next(s.his_booked for s in session.slots if s.id == slot_id)


def child_of(guardian: PatientDocument, name: str = "测试宝宝", birth: date = date(2024, 5, 1)) -> PatientDocument:
    """A child without an ID document of their own, known by the guardian's document, name and birth date."""
    return PatientDocument(
        name=name,
        sex="M",
        birth_date=birth,
        guardian_id_type=guardian.id_type,
        guardian_id_number=guardian.id_number,
        guardian_name=guardian.name,
    )


class HisPatientsContract:
    """Tests any ``HisPatients`` must pass (finding or creating the hospital's patient record, and finding it
    without creating it); subclass it as ``Test...`` with a ``his_patients`` fixture. ``HisAdapterContract``
    includes it."""

    async def test_find_or_create_gives_the_same_patid_twice(self, his_patients: HisPatients) -> None:
        person = new_person()
        first = await his_patients.find_or_create(person, key=key("patient"))
        again = await his_patients.find_or_create(person, key=key("patient"))
        assert first
        assert again == first
        other = await his_patients.find_or_create(new_person(), key=key("patient"))
        assert other != first

    async def test_a_child_is_found_by_guardian_name_and_birth_date(self, his_patients: HisPatients) -> None:
        guardian = new_person()
        child = child_of(guardian)
        first = await his_patients.find_or_create(child, key=key("child"))
        assert await his_patients.find_or_create(child, key=key("child")) == first
        twin = child_of(guardian, name="测试二宝")
        assert await his_patients.find_or_create(twin, key=key("child")) != first

    async def test_find_never_creates(self, his_patients: HisPatients) -> None:
        person = new_person()
        assert await his_patients.find(person) is None
        assert await his_patients.find(person) is None, "a search leaves nothing behind"
        patid = await his_patients.find_or_create(person, key=key("patient"))
        assert await his_patients.find(person) == patid
        assert await his_patients.find_or_create(person, key=key("patient")) == patid
        assert await his_patients.find(new_person()) is None, "someone else is not found"

    async def test_find_matches_on_the_document_not_the_name(self, his_patients: HisPatients) -> None:
        person = new_person()
        patid = await his_patients.find_or_create(person, key=key("patient"))
        renamed = PatientDocument(
            name="改名后",
            sex=person.sex,
            birth_date=person.birth_date,
            id_type=person.id_type,
            id_number=person.id_number,
        )
        assert await his_patients.find(renamed) == patid

    async def test_find_a_child_by_guardian_name_and_birth_date(self, his_patients: HisPatients) -> None:
        guardian = new_person()
        child = child_of(guardian)
        assert await his_patients.find(child) is None
        patid = await his_patients.find_or_create(child, key=key("child"))
        assert await his_patients.find(child) == patid
        assert await his_patients.find(child_of(guardian, name="测试二宝")) is None, "a sibling is someone else"
        assert await his_patients.find(child_of(guardian, birth=date(2023, 5, 1))) is None
        assert await his_patients.find(child_of(new_person())) is None, "another guardian's child"
        assert await his_patients.find(guardian) is None, "the guardian is not the child"

    async def test_a_person_without_any_document_is_not_found(self, his_patients: HisPatients) -> None:
        assert await his_patients.find(PatientDocument("无证件", "F", date(2020, 1, 1))) is None


class HisAdapterContract(HisPatientsContract):
    """Tests any ``HisAdapter`` must pass; subclass it as ``Test...`` with ``his_adapter`` and ``his_clock``."""

    @pytest.fixture
    def his_patients(self, his_adapter: HisAdapter) -> HisPatients:
        return his_adapter

    # --- directory ---------------------------------------------------------------------------------------------

    async def test_directory_is_non_empty_and_consistent(self, his_adapter: HisAdapter) -> None:
        departments = await his_adapter.departments()
        doctors = await his_adapter.doctors()
        assert departments, "no departments"
        assert doctors, "no doctors"
        codes = [d.code for d in departments]
        assert len(codes) == len(set(codes)), "department codes repeat"
        assert all(d.hospital_code == his_adapter.hospital_code for d in departments)
        assert all(d.name.strip() for d in departments)
        for department in departments:
            assert department.parent_code is None or department.parent_code in codes, department.code
        doctor_codes = [d.code for d in doctors]
        assert len(doctor_codes) == len(set(doctor_codes)), "doctor codes repeat"
        for doctor in doctors:
            assert doctor.hospital_code == his_adapter.hospital_code
            assert doctor.name.strip()
            assert doctor.department_codes, f"doctor {doctor.code} has no department"
            assert set(doctor.department_codes) <= set(codes), f"doctor {doctor.code} names unknown departments"

    # --- sessions ----------------------------------------------------------------------------------------------

    async def test_sessions_over_a_date_range(self, his_adapter: HisAdapter, his_clock: Clock) -> None:
        today = today_of(his_clock)
        last = today + timedelta(days=DAYS - 1)
        sessions = await his_adapter.sessions(today, last)
        assert sessions, "no sessions in the next days"
        departments = {d.code for d in await his_adapter.departments()}
        doctors = {d.code for d in await his_adapter.doctors()}
        ids = [s.id for s in sessions]
        assert len(ids) == len(set(ids)), "session ids repeat"
        slot_ids = [slot.id for s in sessions for slot in s.slots]
        assert len(slot_ids) == len(set(slot_ids)), "slot ids repeat"
        for session in sessions:
            assert session.hospital_code == his_adapter.hospital_code
            assert today <= session.day <= last, session.id
            assert session.department_code in departments, session.id
            assert session.doctor_code is None or session.doctor_code in doctors, session.id
            assert isinstance(session.fee_fen, int)
            assert session.fee_fen >= 0
            assert (session.status is SessionStatus.STOPPED) == (session.stop_reason is not None)
            assert session.slots, f"session {session.id} has no slots"
            for slot in session.slots:
                assert slot.session_id == session.id
                assert slot.hospital_code == his_adapter.hospital_code
                assert slot.start.tzinfo is not None
                assert slot.end > slot.start
                assert slot.start.astimezone(SHANGHAI).date() == session.day
                assert slot.capacity >= 0
                assert slot.his_booked >= 0
            starts = [slot.start for slot in session.slots]
            assert starts == sorted(starts)
        assert any(s.status is SessionStatus.OPEN for s in sessions)

        one_day = await his_adapter.sessions(today, today)
        assert one_day
        assert {s.day for s in one_day} == {today}
        assert {s.id for s in one_day} == {s.id for s in sessions if s.day == today}

        sample = sessions[len(sessions) // 2]
        again = await his_adapter.session(sample.id)
        assert (again.id, again.day, again.period, again.status, again.fee_fen, again.department_code) == (
            sample.id,
            sample.day,
            sample.period,
            sample.status,
            sample.fee_fen,
            sample.department_code,
        )
        assert [s.id for s in again.slots] == [s.id for s in sample.slots]

    async def test_only_changed_sessions_since_an_instant(self, his_adapter: HisAdapter, his_clock: Clock) -> None:
        today = today_of(his_clock)
        later = his_clock.now() + timedelta(hours=1)
        assert await his_adapter.sessions(today, today + timedelta(days=DAYS - 1), changed_since=later) == []

    async def test_unknown_session_is_rejected(self, his_adapter: HisAdapter) -> None:
        with pytest.raises(HisRejectedError):
            await his_adapter.session(f"NO-SUCH-{uuid.uuid4().hex[:8]}")

    # --- lock, confirm, cancel ---------------------------------------------------------------------------------

    async def test_lock_confirm_and_cancel(self, his_adapter: HisAdapter, his_clock: Clock) -> None:
        session, slot = await open_slot(his_adapter, his_clock, skip=1)
        patid = await new_patient(his_adapter)
        before = await booked(his_adapter, session.id, slot.id)

        lock = await his_adapter.lock(slot.id, patid=patid, key=key("lock"))
        assert lock.lock_id
        assert lock.expires_at is None or lock.expires_at > his_clock.now()
        assert await booked(his_adapter, session.id, slot.id) == before + 1

        registration = await his_adapter.confirm(slot.id, patid=patid, key=key("confirm"), lock_id=lock.lock_id)
        assert registration.registration_id
        assert registration.queue_number is None or registration.queue_number > 0
        assert await booked(his_adapter, session.id, slot.id) == before + 1  # the locked number, not another

        await his_adapter.cancel(registration.registration_id, reason="行程有变", key=key("cancel"))
        assert await booked(his_adapter, session.id, slot.id) == before
        await his_adapter.cancel(registration.registration_id, reason="行程有变", key=key("cancel"))  # a repeat
        assert await booked(his_adapter, session.id, slot.id) == before
        with pytest.raises(HisRejectedError):
            await his_adapter.queue_position(registration.registration_id)

    async def test_unlock_gives_the_number_back(self, his_adapter: HisAdapter, his_clock: Clock) -> None:
        session, slot = await open_slot(his_adapter, his_clock, skip=2)
        patid = await new_patient(his_adapter)
        before = await booked(his_adapter, session.id, slot.id)
        lock = await his_adapter.lock(slot.id, patid=patid, key=key("lock"))
        assert await booked(his_adapter, session.id, slot.id) == before + 1
        await his_adapter.unlock(lock.lock_id, key=key("unlock"))
        assert await booked(his_adapter, session.id, slot.id) == before
        await his_adapter.unlock(lock.lock_id, key=key("unlock"))  # a repeat changes nothing
        assert await booked(his_adapter, session.id, slot.id) == before

    async def test_confirm_is_idempotent_by_key(self, his_adapter: HisAdapter, his_clock: Clock) -> None:
        session, slot = await open_slot(his_adapter, his_clock, skip=3)
        patid = await new_patient(his_adapter)
        before = await booked(his_adapter, session.id, slot.id)
        request = key("confirm")
        first = await his_adapter.confirm(slot.id, patid=patid, key=request)
        second = await his_adapter.confirm(slot.id, patid=patid, key=request)
        assert second == first
        assert await booked(his_adapter, session.id, slot.id) == before + 1

    # --- check-in and queue ------------------------------------------------------------------------------------

    async def test_check_in_and_queue_position(self, his_adapter: HisAdapter, his_clock: Clock) -> None:
        _, slot = await open_slot(his_adapter, his_clock, day=today_of(his_clock), skip=4)
        patid = await new_patient(his_adapter)
        registration = await his_adapter.confirm(slot.id, patid=patid, key=key("confirm"))
        waiting = await his_adapter.queue_position(registration.registration_id)
        assert waiting.ahead >= 0

        position = await his_adapter.check_in(registration.registration_id, key=key("check-in"))
        assert position.ahead >= 0
        assert position.current_number is None or position.current_number > 0
        assert await his_adapter.queue_position(registration.registration_id) == position
        assert await his_adapter.check_in(registration.registration_id, key=key("check-in")) == position

    # --- refusals ----------------------------------------------------------------------------------------------

    async def test_a_full_slot_is_refused(self, his_adapter: HisAdapter, his_clock: Clock) -> None:
        session, slot = await open_slot(his_adapter, his_clock, fewest_left=True)
        left = slot.capacity - slot.his_booked
        for _ in range(left):
            await his_adapter.confirm(slot.id, patid=await new_patient(his_adapter), key=key("fill"))
        assert await booked(his_adapter, session.id, slot.id) == slot.capacity
        latecomer = await new_patient(his_adapter)
        with pytest.raises(HisRejectedError) as refused:
            await his_adapter.confirm(slot.id, patid=latecomer, key=key("late"))
        assert refused.value.code == "his.slot_full"
        with pytest.raises(HisRejectedError) as refused_lock:
            await his_adapter.lock(slot.id, patid=latecomer, key=key("late-lock"))
        assert refused_lock.value.code == "his.slot_full"

    async def test_a_stopped_session_refuses_confirm(self, his_adapter: HisAdapter, his_clock: Clock) -> None:
        session, slot = await open_slot(his_adapter, his_clock, skip=5)
        patid = await new_patient(his_adapter)
        await his_adapter.stop_session(session.id, reason="医生参加学术会议", key=key("stop"))
        stopped = await his_adapter.session(session.id)
        assert stopped.status is SessionStatus.STOPPED
        assert stopped.stop_reason == "医生参加学术会议"
        await his_adapter.stop_session(session.id, reason="医生参加学术会议", key=key("stop"))  # a repeat
        with pytest.raises(HisRejectedError) as refused:
            await his_adapter.confirm(slot.id, patid=patid, key=key("confirm"))
        assert refused.value.code == "his.session_stopped"
        with pytest.raises(HisRejectedError) as refused_lock:
            await his_adapter.lock(slot.id, patid=patid, key=key("lock"))
        assert refused_lock.value.code == "his.session_stopped"


# --- billing (诊间支付) ----------------------------------------------------------------------------------------


class BillingDesk(Protocol):
    """The hospital's own side of billing, for the billing contract: what its doctors and cashiers do in the HIS,
    and its switches (a fake's attributes, a simulator's test routes)."""

    hospital_code: str

    async def new_patient(self) -> str:
        """A patient the HIS knows (a fresh patid); the HIS may have issued bills to them already."""
        ...

    async def add_bill(self, patid: str, items: Sequence[BillItem]) -> str:
        """Issue an unpaid bill of these items now; its bill id."""
        ...

    async def cancel_bill(self, bill_id: str) -> None:
        """Withdraw a bill (作废)."""
        ...

    async def refuse_next_settlement(self) -> None:
        """The HIS refuses the next settlement by its own rule."""
        ...

    async def set_available(self, available: bool) -> None:
        """Billing answers (True) or fails as unavailable (False)."""
        ...


LAB = BillItem("250102001", "血常规", 1, 2000, 2000, "检验费")
DRUG = BillItem("XY0003", "奥美拉唑肠溶胶囊 20mg×14粒", 3, 3299, 9897, "西药费")
SWAB = BillItem("CL0101", "医用棉签", 1, 10, 10, "材料费")
GAUZE = BillItem("CL0102", "医用纱布", 2, 10, 20, "材料费")
"""0.10 + 0.20 yuan: exactly 30 fen (never 0.30000000000000004)."""


def assert_consistent(bill: OutpatientBill, *, hospital_code: str, patid: str) -> None:
    assert bill.hospital_code == hospital_code
    assert bill.patid == patid
    assert bill.bill_id
    assert bill.title.strip()
    assert bill.issued_at.tzinfo is not None
    assert bill.items
    for item in bill.items:
        assert all(isinstance(v, int) for v in (item.quantity, item.unit_price_fen, item.amount_fen))
        assert item.amount_fen == item.quantity * item.unit_price_fen
        assert all((item.code, item.name, item.category))
    assert bill.total_fen == sum(item.amount_fen for item in bill.items)
    assert bill.self_pay_fen + bill.insured_fen == bill.total_fen
    assert bill.insured_fen == 0  # self-pay only until medical-insurance settlement


class HisBillingContract:
    """Tests any ``HisBilling`` must pass; subclass it as ``Test...`` with fixtures ``his_billing`` (the port,
    talking to a live test HIS) and ``billing_desk`` (a ``BillingDesk`` on the same HIS). Each test makes its own
    patients and bills; the desk's switches are left as found."""

    async def _bill(self, desk: BillingDesk, *items: BillItem) -> tuple[str, str]:
        patid = await desk.new_patient()
        return patid, await desk.add_bill(patid, items or (LAB, DRUG))

    async def _settle(self, billing: HisBilling, bill: OutpatientBill, request: str, **changes: Any) -> Settlement:
        arguments: dict[str, Any] = {
            "patid": bill.patid,
            "amount_fen": bill.total_fen,
            "payment_ref": f"PAY-{bill.bill_id}",
            "channel": "wechat",
            "key": request,
        }
        return await billing.settle(bill.bill_id, **(arguments | changes))

    # --- reading ---------------------------------------------------------------------------------------------

    async def test_unpaid_bills_are_listed_in_fen_that_add_up(
        self, his_billing: HisBilling, billing_desk: BillingDesk
    ) -> None:
        patid, first = await self._bill(billing_desk, LAB, DRUG, SWAB)
        second = await billing_desk.add_bill(patid, [SWAB, GAUZE])
        unpaid = await his_billing.unpaid_bills(patid)
        by_id = {bill.bill_id: bill for bill in unpaid}
        assert {first, second} <= set(by_id)
        assert len(by_id) == len(unpaid), "a bill is listed twice"
        for bill in unpaid:
            assert_consistent(bill, hospital_code=billing_desk.hospital_code, patid=patid)
            assert bill.status is BillStatus.UNPAID
            assert bill.payable
        issued = [bill.issued_at for bill in unpaid]
        assert issued == sorted(issued), "oldest first"

        three = by_id[first]
        assert three.items == (LAB, DRUG, SWAB)
        assert three.total_fen == 2000 + 9897 + 10
        assert three.title.startswith("门诊缴费")
        assert by_id[second].total_fen == 30
        assert await his_billing.bill(first) == three

    async def test_only_the_patients_own_bills_are_listed(
        self, his_billing: HisBilling, billing_desk: BillingDesk
    ) -> None:
        mine, bill_id = await self._bill(billing_desk)
        other = await billing_desk.new_patient()
        theirs = await billing_desk.add_bill(other, [LAB])
        assert bill_id not in {b.bill_id for b in await his_billing.unpaid_bills(other)}
        assert theirs not in {b.bill_id for b in await his_billing.unpaid_bills(mine)}
        assert all(b.patid == other for b in await his_billing.unpaid_bills(other))

    async def test_an_unknown_bill_is_not_found(self, his_billing: HisBilling, billing_desk: BillingDesk) -> None:
        with pytest.raises(BillNotFoundError) as unknown:
            await his_billing.bill(f"NO-SUCH-{uuid.uuid4().hex[:8]}")
        assert unknown.value.code == "his.bill_not_found"

    # --- settling --------------------------------------------------------------------------------------------

    async def test_a_settlement_is_idempotent_by_key(self, his_billing: HisBilling, billing_desk: BillingDesk) -> None:
        _, bill_id = await self._bill(billing_desk)
        bill = await his_billing.bill(bill_id)
        request = key("settle")
        settlement = await self._settle(his_billing, bill, request)
        assert settlement.bill_id == bill_id
        assert settlement.his_receipt_no.strip()
        assert settlement.settled_at.tzinfo is not None
        assert await self._settle(his_billing, bill, request) == settlement  # a retry: the same settlement

        paid = await his_billing.bill(bill_id)
        assert paid.status is BillStatus.PAID
        assert not paid.payable
        assert paid.total_fen == bill.total_fen
        assert bill_id not in {b.bill_id for b in await his_billing.unpaid_bills(bill.patid)}

    async def test_a_bill_settled_under_another_key_is_refused(
        self, his_billing: HisBilling, billing_desk: BillingDesk
    ) -> None:
        _, bill_id = await self._bill(billing_desk)
        bill = await his_billing.bill(bill_id)
        first = key("settle")
        settlement = await self._settle(his_billing, bill, first)
        with pytest.raises(BillSettlementRefusedError) as refused:
            await self._settle(his_billing, bill, key("settle-again"), payment_ref="PAY-OTHER")
        assert refused.value.code == "his.settlement_refused"
        assert refused.value.reason is SettlementRefusal.ALREADY_SETTLED
        assert await self._settle(his_billing, bill, first) == settlement  # the first key still answers

    async def test_a_wrong_amount_is_refused_for_good(self, his_billing: HisBilling, billing_desk: BillingDesk) -> None:
        _, bill_id = await self._bill(billing_desk)
        bill = await his_billing.bill(bill_id)
        request = key("settle")
        for amount in (bill.total_fen - 1, bill.total_fen + 1):
            with pytest.raises(BillSettlementRefusedError) as refused:
                await self._settle(his_billing, bill, f"{request}-{amount}", amount_fen=amount)
            assert refused.value.code == "his.settlement_refused"
            assert refused.value.reason is SettlementRefusal.AMOUNT_MISMATCH
            assert refused.value.status == 409
            assert refused.value.message  # Chinese, shown as is
        assert (await his_billing.bill(bill_id)).status is BillStatus.UNPAID
        with pytest.raises(BillSettlementRefusedError):  # final: the same request is refused again
            await self._settle(his_billing, bill, f"{request}-{bill.total_fen + 1}", amount_fen=bill.total_fen + 1)
        assert await self._settle(his_billing, bill, key("settle-right"))  # the right amount under a new key

    async def test_a_cancelled_bill_is_refused(self, his_billing: HisBilling, billing_desk: BillingDesk) -> None:
        patid, bill_id = await self._bill(billing_desk)
        bill = await his_billing.bill(bill_id)
        await billing_desk.cancel_bill(bill_id)
        assert (await his_billing.bill(bill_id)).status is BillStatus.CANCELLED
        assert bill_id not in {b.bill_id for b in await his_billing.unpaid_bills(patid)}
        with pytest.raises(BillSettlementRefusedError) as refused:
            await self._settle(his_billing, bill, key("settle"))
        assert refused.value.reason is SettlementRefusal.CANCELLED

    async def test_another_patients_or_an_unknown_bill_is_refused(
        self, his_billing: HisBilling, billing_desk: BillingDesk
    ) -> None:
        _, bill_id = await self._bill(billing_desk)
        bill = await his_billing.bill(bill_id)
        stranger = await billing_desk.new_patient()
        with pytest.raises(BillSettlementRefusedError) as wrong_patient:
            await self._settle(his_billing, bill, key("settle"), patid=stranger)
        assert wrong_patient.value.reason is SettlementRefusal.WRONG_PATIENT
        with pytest.raises(BillSettlementRefusedError) as unknown:
            await his_billing.settle(
                f"NO-SUCH-{uuid.uuid4().hex[:8]}",
                patid=bill.patid,
                amount_fen=100,
                payment_ref="PAY-X",
                channel="alipay",
                key=key("settle"),
            )
        assert unknown.value.reason is SettlementRefusal.UNKNOWN_BILL
        assert (await his_billing.bill(bill_id)).status is BillStatus.UNPAID

    async def test_a_refusal_by_the_his_is_final(self, his_billing: HisBilling, billing_desk: BillingDesk) -> None:
        _, bill_id = await self._bill(billing_desk)
        bill = await his_billing.bill(bill_id)
        request = key("settle")
        await billing_desk.refuse_next_settlement()
        with pytest.raises(BillSettlementRefusedError) as refused:
            await self._settle(his_billing, bill, request)
        assert refused.value.code == "his.settlement_refused"
        assert refused.value.reason is SettlementRefusal.REFUSED
        with pytest.raises(BillSettlementRefusedError):  # the same key stays refused
            await self._settle(his_billing, bill, request)
        assert (await his_billing.bill(bill_id)).status is BillStatus.UNPAID
        assert await self._settle(his_billing, bill, key("settle-new"))  # only the next one was refused

    async def test_billing_unavailable_is_retryable(self, his_billing: HisBilling, billing_desk: BillingDesk) -> None:
        patid, bill_id = await self._bill(billing_desk)
        bill = await his_billing.bill(bill_id)
        request = key("settle")
        await billing_desk.set_available(False)
        try:
            with pytest.raises(HisUnavailableError):
                await his_billing.unpaid_bills(patid)
            with pytest.raises(HisUnavailableError):
                await his_billing.bill(bill_id)
            with pytest.raises(HisUnavailableError) as down:
                await self._settle(his_billing, bill, request)
            assert down.value.status == 503
        finally:
            await billing_desk.set_available(True)
        settlement = await self._settle(his_billing, bill, request)  # retried with the same key
        assert settlement.bill_id == bill_id
        assert bill_id not in {b.bill_id for b in await his_billing.unpaid_bills(patid)}
