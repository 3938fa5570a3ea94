"""Operators manage the hospital registry, run syncs, see HIS health and resolve capacity conflicts."""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody

from bff.auth.guards import require_staff
from bff.auth.principal import current_session
from bff.deps import BffDeps
from bff.services import catalogue_service as service
from domain.catalogue.model import CapacityConflict, Hospital, HospitalLevel
from domain.catalogue.rules import BookingRules, NoShowRule
from domain.kernel.errors import ValidationError

HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["08:00"])]


class NoShowRuleIO(msgspec.Struct, rename="camel"):
    count: int = 3
    window_days: int = 90
    ban_days: int = 90
    event: str = "no_show"


class RulesIO(msgspec.Struct, rename="camel"):
    """Per-hospital booking rules (APT-004, APT-006..010); every value is configurable."""

    window_days: Annotated[int, msgspec.Meta(ge=0, le=90)] = 7
    release_time: HHMM = "08:00"
    allow_same_day: bool = False
    cancel_cutoff_hours_before: Annotated[int, msgspec.Meta(ge=0, le=168)] = 0
    cancel_cutoff_day_before_at: HHMM = "15:00"
    payment_minutes: Annotated[int, msgspec.Meta(ge=1, le=1440)] = 15
    checkin_before_minutes: Annotated[int, msgspec.Meta(ge=0, le=720)] = 60
    checkin_after_minutes: Annotated[int, msgspec.Meta(ge=0, le=720)] = 30
    no_show_rules: list[NoShowRuleIO] = msgspec.field(default_factory=lambda: [NoShowRuleIO()])
    lock_at_his: bool = False


class HospitalIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(examples=["H001"])]
    name: Annotated[str, msgspec.Meta(min_length=2, max_length=100, examples=["楚雄州人民医院"])]
    level: HospitalLevel
    region_code: Annotated[str, msgspec.Meta(pattern=r"^\d{6}$", examples=["532301"])]
    address: str = ""
    phone: str = ""
    adapter: str = "fhir"
    adapter_settings: dict[str, str] = msgspec.field(default_factory=dict)
    pool_share_percent: Annotated[int, msgspec.Meta(ge=0, le=100)] = 100
    rules: RulesIO = msgspec.field(default_factory=RulesIO)
    active: bool = True
    callback_secret: str | None = None
    """Shared secret of the HIS's pushes; write-only (never returned)."""


class AdminHospitalOut(msgspec.Struct, rename="camel"):
    code: str
    name: str
    level: str
    region_code: str
    address: str
    phone: str
    adapter: str
    adapter_settings: dict[str, str]
    pool_share_percent: int
    rules: RulesIO
    active: bool
    has_callback_secret: bool


class AdminHospitalsOut(msgspec.Struct, rename="camel"):
    items: list[AdminHospitalOut]


class SyncOut(msgspec.Struct, rename="camel"):
    hospital_code: str
    departments: int
    doctors: int
    sessions_seen: int
    sessions_changed: int
    slots_changed: int
    stopped: int
    conflicts: int


class HealthOut(msgspec.Struct, rename="camel"):
    items: list[dict[str, Any]]


class ConflictOut(msgspec.Struct, rename="camel"):
    id: int
    hospital_code: str
    session_id: str
    slot_id: str
    his_capacity: int
    our_taken: int
    detected_at: datetime
    resolved_at: datetime | None = None
    resolution: str | None = None


class ConflictsOut(msgspec.Struct, rename="camel"):
    items: list[ConflictOut]


class ResolveIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    resolution: Annotated[str, msgspec.Meta(min_length=2, max_length=200, examples=["已与医院确认，多售号源保留"])]


def _rules(r: RulesIO) -> BookingRules:
    return BookingRules(
        window_days=r.window_days,
        release_time=time.fromisoformat(r.release_time),
        allow_same_day=r.allow_same_day,
        cancel_cutoff_hours_before=r.cancel_cutoff_hours_before,
        cancel_cutoff_day_before_at=time.fromisoformat(r.cancel_cutoff_day_before_at),
        payment_minutes=r.payment_minutes,
        checkin_before_minutes=r.checkin_before_minutes,
        checkin_after_minutes=r.checkin_after_minutes,
        no_show_rules=tuple(
            NoShowRule(event=x.event, count=x.count, window_days=x.window_days, ban_days=x.ban_days)
            for x in r.no_show_rules
        ),
        lock_at_his=r.lock_at_his,
    )


def _rules_io(r: BookingRules) -> RulesIO:
    return RulesIO(
        window_days=r.window_days,
        release_time=r.release_time.strftime("%H:%M"),
        allow_same_day=r.allow_same_day,
        cancel_cutoff_hours_before=r.cancel_cutoff_hours_before,
        cancel_cutoff_day_before_at=r.cancel_cutoff_day_before_at.strftime("%H:%M"),
        payment_minutes=r.payment_minutes,
        checkin_before_minutes=r.checkin_before_minutes,
        checkin_after_minutes=r.checkin_after_minutes,
        no_show_rules=[
            NoShowRuleIO(count=x.count, window_days=x.window_days, ban_days=x.ban_days, event=x.event)
            for x in r.no_show_rules
        ],
        lock_at_his=r.lock_at_his,
    )


def _hospital(data: HospitalIn) -> Hospital:
    if data.adapter != "fhir":
        raise ValidationError("unknown adapter", code="catalogue.adapter_unknown", message="不支持的医院接口类型")
    return Hospital(
        code=data.code,
        name=data.name.strip(),
        level=data.level,
        region_code=data.region_code,
        address=data.address.strip(),
        phone=data.phone.strip(),
        adapter=data.adapter,
        adapter_settings=dict(data.adapter_settings),
        pool_share_percent=data.pool_share_percent,
        rules=_rules(data.rules),
        active=data.active,
        callback_secret=data.callback_secret,
    )


def _out(h: Hospital) -> AdminHospitalOut:
    return AdminHospitalOut(
        code=h.code,
        name=h.name,
        level=h.level.value,
        region_code=h.region_code,
        address=h.address,
        phone=h.phone,
        adapter=h.adapter,
        adapter_settings=dict(h.adapter_settings),
        pool_share_percent=h.pool_share_percent,
        rules=_rules_io(h.rules),
        active=h.active,
        has_callback_secret=bool(h.callback_secret),
    )


def _conflict(c: CapacityConflict) -> ConflictOut:
    return ConflictOut(
        id=c.id,
        hospital_code=c.hospital_code,
        session_id=c.session_id,
        slot_id=c.slot_id,
        his_capacity=c.his_capacity,
        our_taken=c.our_taken,
        detected_at=c.detected_at,
        resolved_at=c.resolved_at,
        resolution=c.resolution,
    )


OPERATORS = require_staff("operator", "sysadmin")


@post("/hospitals", operation_id="adminHospitalCreate", summary="Add a hospital to the registry", guards=[OPERATORS])
async def create_hospital(
    state: State, request: Request[Any, Any, Any], data: JSONBody[HospitalIn]
) -> AdminHospitalOut:
    hospital = await service(state).add_hospital(_hospital(data), actor=current_session(request))
    deps: BffDeps = state.deps
    if deps.on_hospital_changed is not None:
        await deps.on_hospital_changed(hospital.code)
    return _out(hospital)


@put("/hospitals/{code:str}", operation_id="adminHospitalUpdate", summary="Change a hospital", guards=[OPERATORS])
async def update_hospital(
    state: State, request: Request[Any, Any, Any], code: FromPath[str], data: JSONBody[HospitalIn]
) -> AdminHospitalOut:
    if data.code != code:
        raise ValidationError("the code cannot change", code="catalogue.code_immutable", message="医院编码不可修改")
    hospital = await service(state).update_hospital(_hospital(data), actor=current_session(request))
    deps: BffDeps = state.deps
    if deps.on_hospital_changed is not None:
        await deps.on_hospital_changed(hospital.code)
    return _out(hospital)


@get("/hospitals", operation_id="adminHospitals", summary="The registry, active or not", guards=[OPERATORS])
async def list_hospitals(state: State) -> AdminHospitalsOut:
    items = await service(state).hospitals(active_only=False, limit=1000)
    return AdminHospitalsOut(items=[_out(h) for h in items])


@post(
    "/hospitals/{code:str}/sync",
    operation_id="adminHospitalSync",
    summary="Sync a hospital's catalogue now",
    guards=[OPERATORS],
)
async def sync_hospital(state: State, code: FromPath[str], full: FromQuery[bool] = False) -> SyncOut:
    report = await service(state).sync_hospital(code, full=full)
    return SyncOut(
        hospital_code=report.hospital_code,
        departments=report.departments,
        doctors=report.doctors,
        sessions_seen=report.sessions_seen,
        sessions_changed=report.sessions_changed,
        slots_changed=report.slots_changed,
        stopped=report.stopped,
        conflicts=report.conflicts,
    )


@get(
    "/his/health",
    operation_id="adminHisHealth",
    summary="Each hospital's HIS health and circuit-breaker state",
    guards=[OPERATORS],
)
async def his_health(state: State) -> HealthOut:
    svc = service(state)
    return HealthOut(
        items=[dict(item) if isinstance(item, dict) else msgspec.to_builtins(item) for item in svc.d.health()]
    )


@get(
    "/catalogue/conflicts",
    operation_id="adminCapacityConflicts",
    summary="Capacity conflicts found by the sync",
    guards=[OPERATORS],
)
async def conflicts(
    state: State, open_only: FromQuery[bool] = True, after: FromQuery[int | None] = None
) -> ConflictsOut:
    items = await service(state).conflicts(open_only=open_only, after=after, limit=200)
    return ConflictsOut(items=[_conflict(c) for c in items])


@post(
    "/catalogue/conflicts/{conflict_id:int}/resolve",
    operation_id="adminResolveConflict",
    summary="Record how a capacity conflict was resolved with the hospital",
    guards=[OPERATORS],
)
async def resolve(
    state: State, request: Request[Any, Any, Any], conflict_id: FromPath[int], data: JSONBody[ResolveIn]
) -> ConflictOut:
    return _conflict(
        await service(state).resolve_conflict(conflict_id, resolution=data.resolution, actor=current_session(request))
    )


hospitals_admin_router = Router(
    path="/api/v1/admin",
    tags=["admin"],
    route_handlers=[create_hospital, update_hospital, list_hospitals, sync_hospital, his_health, conflicts, resolve],
    security=[{"bearer": []}],
)
