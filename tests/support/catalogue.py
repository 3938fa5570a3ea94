"""An in-memory fake of the HIS ports (for use-case and route tests; the FHIR adapter has its own contract
tests against the sandbox HIS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

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
from domain.kernel.errors import NotFoundError


@dataclass
class FakeHis:
    hospital_code: str = "H001"
    online: bool = True
    stops: list[tuple[str, str]] = field(default_factory=list)
    departments_: list[Department] = field(default_factory=list)
    doctors_: list[Doctor] = field(default_factory=list)
    sessions_: dict[str, ScheduleSession] = field(default_factory=dict)

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
        raise NotImplementedError

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

    def set_capacity(self, session_id: str, slot_id: str, capacity: int) -> None:
        session = self.sessions_[session_id]
        slots = tuple(replace(s, capacity=capacity) if s.id == slot_id else s for s in session.slots)
        self.sessions_[session_id] = replace(session, slots=slots, version=str(int(session.version) + 1))


@dataclass
class FakeGateway:
    adapters: dict[str, FakeHis] = field(default_factory=dict)

    def for_hospital(self, hospital_code: str) -> FakeHis:
        adapter = self.adapters.get(hospital_code)
        if adapter is None:
            raise NotFoundError(hospital_code, code="catalogue.hospital_not_found")
        return adapter
