"""Ports to a hospital's HIS. One adapter per HIS protocol implements all of them; features talk only to these.

Every call may raise ``HisUnavailableError`` (timeouts, 5xx, an open circuit) or ``HisRejectedError`` (the HIS
refused for good: the slot is gone, the registration is unknown). Reads are idempotent and retried by the
adapter; writes carry an idempotency key so that a retried write has one effect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from domain.catalogue.model import (
    CapacityConflict,
    Department,
    Doctor,
    HisLock,
    HisRegistration,
    Hospital,
    HospitalLevel,
    PatientDocument,
    QueuePosition,
    ScheduleSession,
    SessionStatus,
    SessionView,
    Slot,
)
from domain.kernel.errors import ConflictError, UpstreamError


class HisUnavailableError(UpstreamError):
    code = "his.unavailable"
    message = "医院系统暂时无法连接，请稍后再试"


class HisRejectedError(ConflictError):
    code = "his.rejected"
    message = "医院系统拒绝了此操作"


class HisDirectory(Protocol):
    async def departments(self) -> Sequence[Department]: ...

    async def doctors(self) -> Sequence[Doctor]: ...


class HisScheduling(Protocol):
    async def sessions(
        self, start: date, end: date, *, changed_since: datetime | None = None
    ) -> Sequence[ScheduleSession]:
        """Sessions (with their slots) on days ``start``..``end`` inclusive; only those changed since the given
        instant when ``changed_since`` is set (incremental sync)."""
        ...

    async def session(self, session_id: str) -> ScheduleSession: ...

    async def lock(self, slot_id: str, *, patid: str, key: str) -> HisLock:
        """锁号: hold one number of a slot at the HIS before payment (for HIS that do not separate shares)."""
        ...

    async def unlock(self, lock_id: str, *, key: str) -> None: ...

    async def confirm(self, slot_id: str, *, patid: str, key: str, lock_id: str | None = None) -> HisRegistration:
        """Register the patient on the slot; ``key`` makes a retry return the same registration."""
        ...

    async def cancel(self, registration_id: str, *, reason: str, key: str) -> None: ...

    async def stop_session(self, session_id: str, *, reason: str, key: str) -> None: ...

    async def check_in(self, registration_id: str, *, key: str) -> QueuePosition: ...

    async def queue_position(self, registration_id: str) -> QueuePosition: ...


class HisPatients(Protocol):
    async def find_or_create(self, document: PatientDocument, *, key: str) -> str:
        """The hospital's own patient id (patid) for this person, created when missing (conditional create)."""
        ...

    async def find(self, document: PatientDocument) -> str | None:
        """The patid of the hospital's record of this person, or None when it has none (a read: never creates).
        Matched as the conditional create matches: on the ID document, or for a child without one on the
        guardian's document, the name and the birth date; a person with neither is not found. More than one
        match is ``HisRejectedError`` ``his.ambiguous_match``."""
        ...


class HisAdapter(HisDirectory, HisScheduling, HisPatients, Protocol):
    """Everything one hospital's HIS offers through one adapter."""

    @property
    def hospital_code(self) -> str: ...


class HisGateway(Protocol):
    """The adapter for each configured hospital (with resilience around it)."""

    def for_hospital(self, hospital_code: str) -> HisAdapter:
        """Raises NotFoundError for an unknown hospital."""
        ...


class HisPushReader(Protocol):
    """Reads a change pushed by a HIS (a FHIR rest-hook Bundle) into the sessions to refresh."""

    def changed_sessions(self, hospital_code: str, body: bytes) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class StoredSlot:
    slot_id: str
    session_id: str
    capacity: int
    taken: int
    his_booked: int
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class StoredSession:
    session_id: str
    status: SessionStatus
    version: str
    doctor_code: str | None


class CatalogueRepository(Protocol):
    # registry
    async def hospital(self, code: str) -> Hospital | None: ...

    async def add_hospital(self, hospital: Hospital, *, now: datetime) -> None: ...

    async def save_hospital(self, hospital: Hospital, *, now: datetime) -> None: ...

    async def hospitals(
        self,
        *,
        region_prefix: str | None,
        level: HospitalLevel | None,
        active_only: bool,
        after: str | None,
        limit: int,
    ) -> Sequence[Hospital]: ...

    # synced copy
    async def upsert_departments(self, hospital_code: str, departments: Sequence[Department], *, now: datetime) -> int:
        """Insert or update; returns how many rows changed."""
        ...

    async def upsert_doctors(self, hospital_code: str, doctors: Sequence[Doctor], *, now: datetime) -> int: ...

    async def stored_session(
        self, hospital_code: str, session_id: str, *, for_update: bool = False
    ) -> StoredSession | None: ...

    async def upsert_session(self, session: ScheduleSession, *, now: datetime) -> bool:
        """Insert or update the session's own fields (not its slots); True when anything changed."""
        ...

    async def set_session_status(
        self, hospital_code: str, session_id: str, status: SessionStatus, *, reason: str | None, now: datetime
    ) -> None: ...

    async def stored_slots(
        self, hospital_code: str, session_id: str, *, for_update: bool = False
    ) -> Sequence[StoredSlot]: ...

    async def registered_at_his(self, hospital_code: str, session_id: str) -> Mapping[str, int]:
        """Per slot, our bookings the HIS counts as registered (confirmed, checked in, completed, no-show)."""
        ...

    async def insert_slot(self, slot: Slot, *, now: datetime) -> None: ...

    async def update_slot(
        self,
        hospital_code: str,
        slot_id: str,
        *,
        capacity: int,
        his_booked: int,
        start: datetime,
        end: datetime,
        now: datetime,
    ) -> None: ...

    async def add_conflict(
        self, hospital_code: str, session_id: str, slot_id: str, *, his_capacity: int, our_taken: int, now: datetime
    ) -> bool:
        """Record a capacity conflict once while it is open; False when already recorded."""
        ...

    async def conflicts(self, *, open_only: bool, after: int | None, limit: int) -> Sequence[CapacityConflict]: ...

    async def resolve_conflict(
        self, conflict_id: int, *, resolution: str, now: datetime
    ) -> CapacityConflict | None: ...

    async def sync_cursor(self, hospital_code: str) -> datetime | None: ...

    async def set_sync_cursor(self, hospital_code: str, cursor: datetime, *, error: str | None) -> None: ...

    # reads for residents
    async def departments(self, hospital_code: str) -> Sequence[Department]: ...

    async def doctors(
        self,
        *,
        hospital_code: str | None,
        department_code: str | None,
        query: str | None,
        after: str | None,
        limit: int,
    ) -> Sequence[Doctor]: ...

    async def doctor(self, hospital_code: str, code: str) -> Doctor | None: ...

    async def session_views(
        self,
        hospital_code: str,
        *,
        doctor_code: str | None,
        department_code: str | None,
        first_day: date,
        last_day: date,
    ) -> Sequence[SessionView]: ...
