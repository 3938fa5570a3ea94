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
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta

import pytest

from domain.catalogue.model import PatientDocument, ScheduleSession, SessionStatus, Slot
from domain.catalogue.ports import HisAdapter, HisRejectedError
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


class HisAdapterContract:
    """Tests any ``HisAdapter`` must pass; subclass it as ``Test...`` with ``his_adapter`` and ``his_clock``."""

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

    # --- patients ----------------------------------------------------------------------------------------------

    async def test_find_or_create_gives_the_same_patid_twice(self, his_adapter: HisAdapter) -> None:
        person = new_person()
        first = await his_adapter.find_or_create(person, key=key("patient"))
        again = await his_adapter.find_or_create(person, key=key("patient"))
        assert first
        assert again == first
        other = await his_adapter.find_or_create(new_person(), key=key("patient"))
        assert other != first

    async def test_a_child_is_found_by_guardian_name_and_birth_date(self, his_adapter: HisAdapter) -> None:
        guardian = new_person()
        child = PatientDocument(
            name="测试宝宝",
            sex="M",
            birth_date=date(2024, 5, 1),
            guardian_id_type=guardian.id_type,
            guardian_id_number=guardian.id_number,
            guardian_name=guardian.name,
        )
        first = await his_adapter.find_or_create(child, key=key("child"))
        assert await his_adapter.find_or_create(child, key=key("child")) == first
        twin = PatientDocument(
            name="测试二宝",
            sex="F",
            birth_date=child.birth_date,
            guardian_id_type=guardian.id_type,
            guardian_id_number=guardian.id_number,
            guardian_name=guardian.name,
        )
        assert await his_adapter.find_or_create(twin, key=key("child")) != first

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
