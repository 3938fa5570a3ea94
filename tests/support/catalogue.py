"""An in-memory fake of the HIS ports (for use-case and route tests; the FHIR adapter has its own contract
tests against the sandbox HIS). Its billing and its patient records pass the same contracts
(tests/contract/test_his_billing.py)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from domain.billing.model import BillItem, BillStatus, OutpatientBill, Settlement, bill_title
from domain.billing.ports import (
    BillingNotOfferedError,
    BillNotFoundError,
    BillSettlementRefusedError,
    HisBilling,
    SettlementRefusal,
)
from domain.catalogue.model import (
    Department,
    Doctor,
    DoctorTitle,
    HisLock,
    HisRegistration,
    PatientDocument,
    Period,
    QueuePosition,
    ScheduleSession,
    SessionStatus,
    Slot,
)
from domain.catalogue.ports import HisRejectedError, HisUnavailableError
from domain.kernel.clock import Clock
from domain.kernel.errors import NotFoundError, ValidationError

FAKE_NOW = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)
"""When the fake HIS issues and settles bills without a clock (10:00 in China)."""


@dataclass
class FakeHis:
    hospital_code: str = "H001"
    online: bool = True
    stops: list[tuple[str, str]] = field(default_factory=list)
    departments_: list[Department] = field(default_factory=list)
    doctors_: list[Doctor] = field(default_factory=list)
    sessions_: dict[str, ScheduleSession] = field(default_factory=dict)
    clock: Clock | None = None
    bills_: dict[str, OutpatientBill] = field(default_factory=dict)
    settlements_: dict[str, tuple[str, int, str, Settlement]] = field(default_factory=dict)
    """Request key -> (bill id, amount, patid, the settlement)."""
    refusals_: dict[str, BillSettlementRefusedError] = field(default_factory=dict)
    """Request key -> its refusal (final)."""
    refuse_settlements: int = 0
    """How many of the next settlements are refused (the HIS's own rule)."""
    settle_calls: list[tuple[str, int, str, str, str]] = field(default_factory=list)
    """(bill id, amount, payment ref, channel, key) of every ``settle`` that reached the HIS."""
    patients_: dict[str, PatientDocument] = field(default_factory=dict)
    """Patid -> the person the HIS has on record (``register_patient``, ``find_or_create``)."""
    created_patients: list[str] = field(default_factory=list)
    """Patids ``find_or_create`` created (an on-site registration is not in it)."""
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def _check(self) -> None:
        if not self.online:
            raise HisUnavailableError("hospital off")

    async def departments(self) -> Sequence[Department]:
        self._check()
        return list(self.departments_)

    async def doctors(self) -> Sequence[Doctor]:
        self._check()
        return list(self.doctors_)

    async def sessions(
        self, start: date, end: date, *, changed_since: datetime | None = None
    ) -> Sequence[ScheduleSession]:
        self._check()
        return [s for s in self.sessions_.values() if start <= s.day <= end]

    async def session(self, session_id: str) -> ScheduleSession:
        self._check()
        return self.sessions_[session_id]

    async def lock(self, slot_id: str, *, patid: str, key: str) -> HisLock:
        raise NotImplementedError

    async def unlock(self, lock_id: str, *, key: str) -> None:
        raise NotImplementedError

    async def confirm(self, slot_id: str, *, patid: str, key: str, lock_id: str | None = None) -> HisRegistration:
        raise NotImplementedError

    async def cancel(self, registration_id: str, *, reason: str, key: str) -> None:
        raise NotImplementedError

    async def stop_session(self, session_id: str, *, reason: str, key: str) -> None:
        self._check()
        if session_id not in self.sessions_:
            raise HisRejectedError("unknown session")
        self.stops.append((session_id, reason))
        self.sessions_[session_id] = replace(
            self.sessions_[session_id], status=SessionStatus.STOPPED, stop_reason=reason
        )

    async def check_in(self, registration_id: str, *, key: str) -> QueuePosition:
        raise NotImplementedError

    async def queue_position(self, registration_id: str) -> QueuePosition:
        raise NotImplementedError

    async def find_or_create(self, document: PatientDocument, *, key: str) -> str:
        """Conditional create: the one match, else a new patient (``created_patients``)."""
        found = await self.find(document)
        if found is not None:
            return found
        if _match_key(document) is None:
            raise ValidationError("no document to match", code="his.patient_unidentified")
        patid = self.register_patient(document)
        self.created_patients.append(patid)
        return patid

    async def find(self, document: PatientDocument) -> str | None:
        """The one patient matched as the conditional create matches; None for none or for nothing to match."""
        self._check()
        wanted = _match_key(document)
        if wanted is None:
            return None
        matches = [patid for patid, known in self.patients_.items() if _match_key(known) == wanted]
        if len(matches) > 1:
            raise HisRejectedError("more than one patient matches", code="his.ambiguous_match")
        return matches[0] if matches else None

    # billing -----------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.clock.now() if self.clock is not None else FAKE_NOW

    async def unpaid_bills(self, patid: str) -> Sequence[OutpatientBill]:
        self._check()
        return sorted(
            (b for b in self.bills_.values() if b.patid == patid and b.payable), key=lambda b: (b.issued_at, b.bill_id)
        )

    async def bill(self, bill_id: str) -> OutpatientBill:
        self._check()
        found = self.bills_.get(bill_id)
        if found is None:
            raise BillNotFoundError(f"unknown bill {bill_id}")
        return found

    async def settle(
        self, bill_id: str, *, patid: str, amount_fen: int, payment_ref: str, channel: str, key: str
    ) -> Settlement:
        """Idempotent by key; refusals are final for their key (like the sandbox HIS)."""
        self._check()
        self.settle_calls.append((bill_id, amount_fen, payment_ref, channel, key))
        if key in self.refusals_:
            raise self.refusals_[key]
        try:
            return self._settle(bill_id, patid=patid, amount_fen=amount_fen, key=key)
        except BillSettlementRefusedError as exc:
            self.refusals_[key] = exc
            raise

    def _settle(self, bill_id: str, *, patid: str, amount_fen: int, key: str) -> Settlement:
        def refuse(reason: SettlementRefusal) -> BillSettlementRefusedError:
            return BillSettlementRefusedError(f"fake HIS refused bill {bill_id}: {reason.value}", reason=reason)

        found = self.bills_.get(bill_id)
        if found is None:
            raise refuse(SettlementRefusal.UNKNOWN_BILL)
        earlier = self.settlements_.get(key)
        if found.status is BillStatus.PAID:
            if earlier is not None and earlier[0] == bill_id:
                return earlier[3]
            raise refuse(SettlementRefusal.ALREADY_SETTLED)
        if earlier is not None:
            raise refuse(SettlementRefusal.REFUSED)  # the key settled another bill
        if found.status is BillStatus.CANCELLED:
            raise refuse(SettlementRefusal.CANCELLED)
        if patid != found.patid:
            raise refuse(SettlementRefusal.WRONG_PATIENT)
        if amount_fen != found.total_fen:
            raise refuse(SettlementRefusal.AMOUNT_MISMATCH)
        if self.refuse_settlements > 0:
            self.refuse_settlements -= 1
            raise refuse(SettlementRefusal.REFUSED)
        settlement = Settlement(bill_id, f"FAKE-R{next(self._serial):06d}", self._now())
        self.bills_[bill_id] = replace(found, status=BillStatus.PAID)
        self.settlements_[key] = (bill_id, amount_fen, patid, settlement)
        return settlement

    # test helpers ----------------------------------------------------------------

    def seed(self, day: date) -> None:
        self.departments_ = [
            Department(self.hospital_code, "D-CARD", "心血管内科"),
            Department(self.hospital_code, "D-PED", "儿科"),
        ]
        self.doctors_ = [
            Doctor(self.hospital_code, "P-1", "李建国", DoctorTitle.CHIEF, ("D-CARD",), ("高血压", "冠心病")),
            Doctor(self.hospital_code, "P-2", "王晓燕", DoctorTitle.ATTENDING, ("D-PED",), ("儿童哮喘",)),
        ]
        start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)  # 08:00 Asia/Shanghai
        slots = tuple(
            Slot(
                self.hospital_code,
                f"S-1-{i}",
                "SES-1",
                start + timedelta(minutes=30 * i),
                start + timedelta(minutes=30 * (i + 1)),
                capacity=3,
            )
            for i in range(4)
        )
        self.sessions_ = {
            "SES-1": ScheduleSession(
                self.hospital_code,
                "SES-1",
                "D-CARD",
                "P-1",
                day,
                Period.MORNING,
                SessionStatus.OPEN,
                5000,
                slots,
                version="1",
            ),
            "SES-2": ScheduleSession(
                self.hospital_code,
                "SES-2",
                "D-PED",
                "P-2",
                day,
                Period.AFTERNOON,
                SessionStatus.OPEN,
                1000,
                (
                    Slot(
                        self.hospital_code,
                        "S-2-0",
                        "SES-2",
                        start + timedelta(hours=6),
                        start + timedelta(hours=6, minutes=30),
                        capacity=2,
                    ),
                ),
                version="1",
            ),
        }

    def add_bill(
        self,
        patid: str,
        items: Sequence[BillItem] = (),
        *,
        bill_id: str | None = None,
        department: str = "心血管内科",
        doctor_name: str = "李建国",
        issued_at: datetime | None = None,
    ) -> OutpatientBill:
        """Issue an unpaid bill (a blood count and an ECG unless items are given)."""
        lines = tuple(items) or (
            BillItem("250102001", "血常规", 1, 2000, 2000, "检验费"),
            BillItem("310701001", "常规心电图", 1, 2500, 2500, "检查费"),
        )
        total = sum(item.amount_fen for item in lines)
        bill = OutpatientBill(
            hospital_code=self.hospital_code,
            bill_id=bill_id or f"FAKE-B{next(self._serial):06d}",
            patid=patid,
            title=bill_title(lines),
            department=department,
            doctor_name=doctor_name,
            issued_at=issued_at or self._now(),
            items=lines,
            self_pay_fen=total,
            insured_fen=0,
            total_fen=total,
            status=BillStatus.UNPAID,
        )
        self.bills_[bill.bill_id] = bill
        return bill

    def register_patient(self, document: PatientDocument, *, patid: str | None = None) -> str:
        """The hospital records a patient itself (an on-site registration at the window); the patid."""
        patid = patid or f"FAKE-P{next(self._serial):06d}"
        self.patients_[patid] = document
        return patid

    def cancel_bill(self, bill_id: str) -> OutpatientBill:
        """The HIS withdraws a bill (作废)."""
        bill = replace(self.bills_[bill_id], status=BillStatus.CANCELLED)
        self.bills_[bill_id] = bill
        return bill

    def set_capacity(self, session_id: str, slot_id: str, capacity: int) -> None:
        session = self.sessions_[session_id]
        slots = tuple(replace(s, capacity=capacity) if s.id == slot_id else s for s in session.slots)
        self.sessions_[session_id] = replace(session, slots=slots, version=str(int(session.version) + 1))


def _match_key(document: PatientDocument) -> tuple[str, ...] | None:
    """What the HIS matches a person on: the ID document, else the guardian's with the name and birth date."""
    if document.id_type and document.id_number:
        return ("id", document.id_type, document.id_number)
    if document.guardian_id_type and document.guardian_id_number:
        return (
            "guardian",
            document.guardian_id_type,
            document.guardian_id_number,
            document.name,
            document.birth_date.isoformat(),
        )
    return None


@dataclass
class FakeGateway:
    adapters: dict[str, FakeHis] = field(default_factory=dict)

    no_billing: set[str] = field(default_factory=set)
    """Hospitals whose HIS offers no billing (``billing_for`` raises ``BillingNotOfferedError``)."""

    def for_hospital(self, hospital_code: str) -> FakeHis:
        adapter = self.adapters.get(hospital_code)
        if adapter is None:
            raise NotFoundError(hospital_code, code="catalogue.hospital_not_found")
        return adapter

    def billing_for(self, hospital_code: str) -> HisBilling:
        adapter = self.for_hospital(hospital_code)
        if hospital_code in self.no_billing:
            raise BillingNotOfferedError(hospital_code)
        return adapter
