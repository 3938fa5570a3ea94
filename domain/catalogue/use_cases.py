"""The hospital registry, the catalogue sync from each HIS, and stopping a session (issue: HIS layer)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from domain.account.model import Session, StaffRole
from domain.catalogue.model import (
    CapacityConflict,
    Department,
    Doctor,
    Hospital,
    HospitalLevel,
    ScheduleSession,
    SessionStatus,
    SessionView,
    SyncReport,
)
from domain.catalogue.ports import CatalogueRepository, HisGateway
from domain.kernel.audit import AuditEvent, AuditRepository, Outcome
from domain.kernel.clock import SHANGHAI, Clock
from domain.kernel.ephemeral import EphemeralStore, EphemeralStoreUnavailableError
from domain.kernel.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from domain.kernel.outbox import OutboxRepository


class CatalogueUnitOfWork(Protocol):
    @property
    def catalogue(self) -> CatalogueRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def commit(self) -> None: ...


class HospitalNotFoundError(NotFoundError):
    code = "catalogue.hospital_not_found"
    message = "医院不存在"


class DoctorNotFoundError(NotFoundError):
    code = "catalogue.doctor_not_found"
    message = "医生不存在"


class SessionNotFoundError(NotFoundError):
    code = "catalogue.session_not_found"
    message = "出诊信息不存在"


class HospitalExistsError(ConflictError):
    code = "catalogue.hospital_exists"
    message = "医院编码已存在"


class NotYourSessionError(ForbiddenError):
    code = "catalogue.not_your_session"
    message = "只能对本人的出诊进行停诊"


class SessionAlreadyStoppedError(ConflictError):
    code = "catalogue.session_stopped"
    message = "该出诊已停诊"


SESSION_STOPPED = "catalogue.session_stopped"
CAPACITY_CHANGED = "catalogue.capacity_changed"


@dataclass
class CatalogueDeps:
    uow_factory: Callable[[], CatalogueUnitOfWork]
    clock: Clock
    gateway: HisGateway
    store: EphemeralStore | None = None
    days_ahead: int = 14
    cache_seconds: float = 30.0
    health: Callable[[], Sequence[object]] = field(default=lambda: [])


def _code(text: str) -> str:
    value = text.strip()
    if not (2 <= len(value) <= 32) or not all(c.isalnum() or c in "-_" for c in value):
        raise ValidationError(
            "codes are 2-32 letters, digits, - or _",
            code="catalogue.code_invalid",
            message="编码需为2到32位字母、数字、-或_",
        )
    return value


class CatalogueService:
    def __init__(self, deps: CatalogueDeps) -> None:
        self.d = deps

    # ------------------------------------------------------------------ registry

    async def add_hospital(self, hospital: Hospital, *, actor: Session) -> Hospital:
        hospital = replace(hospital, code=_code(hospital.code))
        if not 0 <= hospital.pool_share_percent <= 100:
            raise ValidationError(
                "pool share is a percentage", code="catalogue.pool_share_invalid", message="号源投放比例应在0到100之间"
            )
        now = self.d.clock.now()
        async with self.d.uow_factory() as uow:
            if await uow.catalogue.hospital(hospital.code) is not None:
                raise HospitalExistsError(hospital.code)
            await uow.catalogue.add_hospital(hospital, now=now)
            await uow.audit.record(_audit("catalogue.hospital_added", actor, hospital.code), now=now)
            await uow.commit()
        return hospital

    async def update_hospital(self, hospital: Hospital, *, actor: Session) -> Hospital:
        now = self.d.clock.now()
        async with self.d.uow_factory() as uow:
            existing = await uow.catalogue.hospital(hospital.code)
            if existing is None:
                raise HospitalNotFoundError(hospital.code)
            if hospital.callback_secret is None:
                hospital = replace(hospital, callback_secret=existing.callback_secret)
            await uow.catalogue.save_hospital(hospital, now=now)
            await uow.audit.record(_audit("catalogue.hospital_changed", actor, hospital.code), now=now)
            await uow.commit()
        await self._forget_cache()
        return hospital

    async def hospital(self, code: str) -> Hospital:
        async with self.d.uow_factory() as uow:
            hospital = await uow.catalogue.hospital(code)
        if hospital is None:
            raise HospitalNotFoundError(code)
        return hospital

    async def hospitals(
        self,
        *,
        region_prefix: str | None = None,
        level: HospitalLevel | None = None,
        active_only: bool = True,
        after: str | None = None,
        limit: int = 50,
    ) -> Sequence[Hospital]:
        async with self.d.uow_factory() as uow:
            return await uow.catalogue.hospitals(
                region_prefix=region_prefix, level=level, active_only=active_only, after=after, limit=limit
            )

    # ------------------------------------------------------------------ sync

    async def sync_hospital(self, hospital_code: str, *, full: bool = False) -> SyncReport:
        """Bring our copy of one hospital up to date. All HIS calls happen before the transaction. Running it
        twice changes nothing; a capacity below what we already sold is never applied (a conflict is recorded
        for operators instead); a session that became stopped emits ``catalogue.session_stopped``."""
        hospital = await self.hospital(hospital_code)
        adapter = self.d.gateway.for_hospital(hospital_code)
        started = self.d.clock.now()
        today = started.astimezone(SHANGHAI).date()
        async with self.d.uow_factory() as uow:
            cursor = None if full else await uow.catalogue.sync_cursor(hospital_code)
        departments = await adapter.departments()
        doctors = await adapter.doctors()
        sessions = await adapter.sessions(today, today + timedelta(days=self.d.days_ahead), changed_since=cursor)
        report = await self._apply(hospital, departments, doctors, sessions, cursor=started)
        await self._forget_cache()
        return report

    async def refresh_sessions(self, hospital_code: str, session_ids: Sequence[str]) -> SyncReport:
        """Refresh the named sessions (after a HIS push)."""
        await self.hospital(hospital_code)
        adapter = self.d.gateway.for_hospital(hospital_code)
        sessions = [await adapter.session(session_id) for session_id in dict.fromkeys(session_ids)]
        report = await self._apply(await self.hospital(hospital_code), [], [], sessions, cursor=None)
        await self._forget_cache()
        return report

    async def _apply(
        self,
        hospital: Hospital,
        departments: Sequence[Department],
        doctors: Sequence[Doctor],
        sessions: Sequence[ScheduleSession],
        *,
        cursor: datetime | None,
    ) -> SyncReport:
        now = self.d.clock.now()
        counts: dict[str, int] = dict.fromkeys(
            ("departments", "doctors", "sessions_changed", "slots_changed", "stopped", "conflicts"), 0
        )
        async with self.d.uow_factory() as uow:
            repo = uow.catalogue
            if departments:
                counts["departments"] = await repo.upsert_departments(hospital.code, departments, now=now)
            if doctors:
                counts["doctors"] = await repo.upsert_doctors(hospital.code, doctors, now=now)
            for session in sessions:
                await self._apply_session(uow, session, counts, now=now)
            if cursor is not None:
                await repo.set_sync_cursor(hospital.code, cursor, error=None)
            await uow.commit()
        return SyncReport(hospital_code=hospital.code, sessions_seen=len(sessions), **counts)

    async def _apply_session(
        self, uow: CatalogueUnitOfWork, session: ScheduleSession, counts: dict[str, int], *, now: datetime
    ) -> None:
        repo = uow.catalogue
        before = await repo.stored_session(session.hospital_code, session.id, for_update=True)
        if await repo.upsert_session(session, now=now):
            counts["sessions_changed"] += 1
        newly_stopped = before is not None and before.status is not SessionStatus.STOPPED
        if session.status is SessionStatus.STOPPED and newly_stopped:
            counts["stopped"] += 1
            await uow.outbox.add(
                SESSION_STOPPED,
                {
                    "hospitalCode": session.hospital_code,
                    "sessionId": session.id,
                    "reason": session.stop_reason or "",
                    "source": "his",
                },
                now=now,
                key=f"{session.hospital_code}:{session.id}",
            )
        stored = {s.slot_id: s for s in await repo.stored_slots(session.hospital_code, session.id, for_update=True)}
        ours = await repo.registered_at_his(session.hospital_code, session.id)
        for slot in session.slots:
            # The HIS's capacity is the platform's share; what the HIS counts booked of it beyond our own
            # registrations was sold elsewhere (before us, another channel): not ours to sell again.
            foreign = max(0, slot.his_booked - ours.get(slot.id, 0))
            available = max(0, slot.capacity - foreign)
            current = stored.get(slot.id)
            if current is None:
                await repo.insert_slot(replace(slot, capacity=available), now=now)
                counts["slots_changed"] += 1
                continue
            capacity = available
            if capacity < current.taken:
                if await repo.add_conflict(
                    session.hospital_code,
                    session.id,
                    slot.id,
                    his_capacity=slot.capacity,
                    our_taken=current.taken,
                    now=now,
                ):
                    counts["conflicts"] += 1
                capacity = current.taken
            if (capacity, slot.his_booked, slot.start, slot.end) != (
                current.capacity,
                current.his_booked,
                current.start,
                current.end,
            ):
                await repo.update_slot(
                    session.hospital_code,
                    slot.id,
                    capacity=capacity,
                    his_booked=slot.his_booked,
                    start=slot.start,
                    end=slot.end,
                    now=now,
                )
                counts["slots_changed"] += 1
                if capacity != current.capacity:
                    await uow.outbox.add(
                        CAPACITY_CHANGED,
                        {
                            "hospitalCode": session.hospital_code,
                            "sessionId": session.id,
                            "slotId": slot.id,
                            "capacity": capacity,
                            "previous": current.capacity,
                        },
                        now=now,
                    )

    # ------------------------------------------------------------------ stopping a session from the doctor app

    async def stop_session(
        self, actor: Session, hospital_code: str, session_id: str, *, reason: str, links: Mapping[str, str]
    ) -> None:
        """The doctor stops their own session: at the HIS first (so our copy never diverges), then here, then
        the ``catalogue.session_stopped`` event that booking acts on. ``links`` maps hospital code to the
        doctor's practitioner id there."""
        reason = reason.strip()[:200] or "医生停诊"
        async with self.d.uow_factory() as uow:
            stored = await uow.catalogue.stored_session(hospital_code, session_id)
        if stored is None:
            raise SessionNotFoundError(session_id)
        if StaffRole.DOCTOR.value not in actor.roles or links.get(hospital_code) != stored.doctor_code:
            raise NotYourSessionError("the session belongs to another practitioner")
        if stored.status is SessionStatus.STOPPED:
            raise SessionAlreadyStoppedError(session_id)
        await self.d.gateway.for_hospital(hospital_code).stop_session(
            session_id, reason=reason, key=f"stop:{hospital_code}:{session_id}"
        )
        now = self.d.clock.now()
        async with self.d.uow_factory() as uow:
            await uow.catalogue.set_session_status(
                hospital_code, session_id, SessionStatus.STOPPED, reason=reason, now=now
            )
            await uow.outbox.add(
                SESSION_STOPPED,
                {"hospitalCode": hospital_code, "sessionId": session_id, "reason": reason, "source": "doctor"},
                now=now,
                key=f"{hospital_code}:{session_id}",
            )
            await uow.audit.record(
                AuditEvent(
                    action="catalogue.session_stop",
                    outcome=Outcome.SUCCESS,
                    actor=f"staff:{actor.account_id}",
                    actor_role="doctor",
                    object_type="session",
                    object_id=f"{hospital_code}/{session_id}",
                    reason=reason,
                ),
                now=now,
            )
            await uow.commit()
        await self._forget_cache()

    # ------------------------------------------------------------------ conflicts

    async def conflicts(self, *, open_only: bool, after: int | None, limit: int) -> Sequence[CapacityConflict]:
        async with self.d.uow_factory() as uow:
            return await uow.catalogue.conflicts(open_only=open_only, after=after, limit=limit)

    async def resolve_conflict(self, conflict_id: int, *, resolution: str, actor: Session) -> CapacityConflict:
        now = self.d.clock.now()
        async with self.d.uow_factory() as uow:
            resolved = await uow.catalogue.resolve_conflict(conflict_id, resolution=resolution.strip()[:200], now=now)
            if resolved is None:
                raise NotFoundError(
                    "no open conflict with this id",
                    code="catalogue.conflict_not_found",
                    message="冲突记录不存在或已处理",
                )
            await uow.audit.record(_audit("catalogue.conflict_resolved", actor, str(conflict_id)), now=now)
            await uow.commit()
        return resolved

    # ------------------------------------------------------------------ reads (our copy, cached)

    async def cached(self, key: str, produce: Callable[[], Awaitable[bytes]]) -> bytes:
        """Catalogue answers are served from our copy and cached briefly; a cache outage only costs speed."""
        store = self.d.store
        if store is not None:
            try:
                hit = await store.get(f"cat:{key}")
            except EphemeralStoreUnavailableError:
                hit = None
            if hit is not None:
                return hit
        value = await produce()
        if store is not None:
            try:
                await store.set(f"cat:{key}", value, ttl_seconds=self.d.cache_seconds)
                await store.incr("cat:keys", ttl_seconds=self.d.cache_seconds)
            except EphemeralStoreUnavailableError:
                pass
        return value

    async def _forget_cache(self) -> None:
        """Bump the cache generation so that every cached answer is recomputed."""
        if self.d.store is None:
            return
        with contextlib.suppress(EphemeralStoreUnavailableError):
            await self.d.store.incr("cat:generation")

    async def generation(self) -> int:
        if self.d.store is None:
            return 0
        try:
            raw = await self.d.store.get("cat:generation")
        except EphemeralStoreUnavailableError:
            return -1
        return int(raw) if raw else 0

    async def departments(self, hospital_code: str) -> Sequence[Department]:
        await self.hospital(hospital_code)
        async with self.d.uow_factory() as uow:
            return await uow.catalogue.departments(hospital_code)

    async def doctors(
        self,
        *,
        hospital_code: str | None,
        department_code: str | None,
        query: str | None,
        after: str | None,
        limit: int,
    ) -> Sequence[Doctor]:
        async with self.d.uow_factory() as uow:
            return await uow.catalogue.doctors(
                hospital_code=hospital_code, department_code=department_code, query=query, after=after, limit=limit
            )

    async def doctor(self, hospital_code: str, code: str) -> Doctor:
        async with self.d.uow_factory() as uow:
            doctor = await uow.catalogue.doctor(hospital_code, code)
        if doctor is None:
            raise DoctorNotFoundError(code)
        return doctor

    async def sessions(
        self,
        hospital_code: str,
        *,
        doctor_code: str | None = None,
        department_code: str | None = None,
        days: int | None = None,
    ) -> Sequence[SessionView]:
        today = self.d.clock.now().astimezone(SHANGHAI).date()
        last = today + timedelta(days=days if days is not None else self.d.days_ahead)
        async with self.d.uow_factory() as uow:
            return await uow.catalogue.session_views(
                hospital_code, doctor_code=doctor_code, department_code=department_code, first_day=today, last_day=last
            )


def _audit(action: str, actor: Session, object_id: str) -> AuditEvent:
    return AuditEvent(
        action=action,
        outcome=Outcome.SUCCESS,
        actor=f"staff:{actor.account_id}",
        actor_role=",".join(sorted(actor.roles)),
        object_type="hospital",
        object_id=object_id,
    )


def cache_key(*parts: object) -> str:
    return json.dumps(parts, separators=(",", ":"), ensure_ascii=False, default=str)


def today_in_shanghai(now: datetime) -> date:
    return now.astimezone(SHANGHAI).date()
