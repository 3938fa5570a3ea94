"""HTTP routes of the sandbox HIS: the FHIR bases and the test helpers (paths relative to ``/sandbox/his``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.types import ControllerRouterHandler, ExceptionHandlersMap

from domain.kernel.clock import SHANGHAI
from sandbox.his import fhir
from sandbox.his.fhir import FHIR_JSON, Entry, FhirError, Query, Resource
from sandbox.his.seed import CHARGE_ITEMS, FEE_CATEGORIES, BillItemRec, BillRec, SessionRec, SlotRec
from sandbox.his.simulator import HisSimulator, HospitalState

_T = TypeVar("_T")


def _fhir_error(request: Request[Any, Any, Any], exc: FhirError) -> Response[bytes]:
    return Response(fhir.encode(exc.outcome()), status_code=exc.status, media_type=FHIR_JSON, headers=exc.headers)


_ERRORS: ExceptionHandlersMap = {FhirError: _fhir_error}


def _answer(resource: Resource, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    extra = dict(headers or {})
    version = (resource.get("meta") or {}).get("versionId")
    if version is not None:
        extra.setdefault("ETag", f'W/"{version}"')
    return Response(fhir.encode(resource), status_code=status, media_type=FHIR_JSON, headers=extra)


def _origin(request: Request[Any, Any, Any]) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _fhir_base(request: Request[Any, Any, Any], hospital_code: str) -> str:
    """The absolute FHIR base of the hospital, from a request to it or to its test helpers."""
    path = request.url.path
    marker = f"/{hospital_code}/fhir"
    at = path.find(marker)
    if at >= 0:
        return _origin(request) + path[: at + len(marker)]
    mount = path[: max(path.find(f"/test/{hospital_code}/"), 0)]
    return f"{_origin(request)}{mount}{marker}"


def _query(request: Request[Any, Any, Any]) -> Query:
    return Query.parse(request.scope["query_string"].decode("utf-8", errors="replace"))


# --- FHIR --------------------------------------------------------------------------------------------------


@get("/{hospital_code:str}/fhir/{resource_type:str}", exception_handlers=_ERRORS)
async def fhir_search(
    hospital_code: FromPath[str],
    resource_type: FromPath[str],
    request: Request[Any, Any, Any],
    simulator: NamedDependency[HisSimulator],
) -> Response[bytes]:
    """Search (``Bundle`` searchset, ``_count`` and ``_offset`` paging) or ``metadata``."""
    state = simulator.billing(hospital_code) if resource_type == "Invoice" else simulator.serving(hospital_code)
    if resource_type == "metadata":
        return _answer(fhir.capability_statement(simulator.ctx.clock.now()))
    query = _query(request)
    found = simulator.search(state, resource_type, query)
    count, offset = query.count, query.offset
    page = [render() for render in found[offset : offset + count]]
    entries = [Entry(r) for r in page] + [Entry(r, "include") for r in simulator.includes(state, page, query)]
    following = offset + count
    next_url = (
        f"{_origin(request)}{request.url.path}?{query.with_offset(following)}"
        if count > 0 and following < len(found)
        else None
    )
    bundle = fhir.searchset(
        entries,
        total=len(found),
        base=_fhir_base(request, hospital_code),
        self_url=str(request.url),
        next_url=next_url,
    )
    return _answer(bundle)


@get("/{hospital_code:str}/fhir/{resource_type:str}/{resource_id:str}", exception_handlers=_ERRORS)
async def fhir_read(
    hospital_code: FromPath[str],
    resource_type: FromPath[str],
    resource_id: FromPath[str],
    simulator: NamedDependency[HisSimulator],
) -> Response[bytes]:
    """Read; an Appointment carries its queue position."""
    state = simulator.billing(hospital_code) if resource_type == "Invoice" else simulator.serving(hospital_code)
    if resource_type == "Appointment":
        return _answer(simulator.render_appointment(state, simulator.appointment(state, resource_id)))
    return _answer(simulator.read(state, resource_type, resource_id))


@post("/{hospital_code:str}/fhir/{resource_type:str}", exception_handlers=_ERRORS)
async def fhir_create(
    hospital_code: FromPath[str],
    resource_type: FromPath[str],
    request: Request[Any, Any, Any],
    simulator: NamedDependency[HisSimulator],
) -> Response[bytes]:
    """Create an Appointment (lock or registration, idempotent by request key) or a Patient (conditional)."""
    state = simulator.serving(hospital_code)
    body = await request.body()
    if resource_type == "Appointment":
        appointment, created = simulator.create_appointment(state, fhir.decode_resource(body, "Appointment"))
        resource = simulator.render_appointment(state, appointment)
    elif resource_type == "Patient":
        patient, created = simulator.create_patient(
            state, fhir.decode_resource(body, "Patient"), request.headers.get("if-none-exist")
        )
        resource = fhir.patient(patient)
    else:
        raise FhirError(405, "not-supported", f"create is not supported for {resource_type!r}")
    location = f"{_fhir_base(request, hospital_code)}/{resource_type}/{resource['id']}"
    return _answer(resource, 201 if created else 200, {"Location": location})


@put("/{hospital_code:str}/fhir/{resource_type:str}/{resource_id:str}", exception_handlers=_ERRORS)
async def fhir_update(
    hospital_code: FromPath[str],
    resource_type: FromPath[str],
    resource_id: FromPath[str],
    request: Request[Any, Any, Any],
    simulator: NamedDependency[HisSimulator],
) -> Response[bytes]:
    """Move an Appointment: proposed -> booked, -> cancelled, booked -> arrived (answered with queue-ahead)."""
    state = simulator.serving(hospital_code)
    if resource_type != "Appointment":
        raise FhirError(405, "not-supported", f"update is not supported for {resource_type!r}")
    resource = fhir.decode_resource(await request.body(), "Appointment")
    appointment = simulator.update_appointment(state, resource_id, resource)
    return _answer(simulator.render_appointment(state, appointment))


@post("/{hospital_code:str}/fhir/{resource_type:str}/{resource_id:str}/{operation:str}", exception_handlers=_ERRORS)
async def fhir_operation(
    hospital_code: FromPath[str],
    resource_type: FromPath[str],
    resource_id: FromPath[str],
    operation: FromPath[str],
    request: Request[Any, Any, Any],
    simulator: NamedDependency[HisSimulator],
) -> Response[bytes]:
    """``Schedule/{id}/$stop`` with ``Parameters{reason}``: answers the stopped Schedule. ``Invoice/{id}/$settle``
    with ``Parameters{amount, patient, paymentReference, channel, requestKey}``: answers the balanced Invoice."""
    if (resource_type, operation) == ("Invoice", "$settle"):
        state = simulator.billing(hospital_code)
        parameters = fhir.decode_parameters(await request.body())
        bill = simulator.settle(state, resource_id, parameters)
        return _answer(fhir.invoice(bill, state.directory))
    state = simulator.serving(hospital_code)
    if (resource_type, operation) != ("Schedule", "$stop"):
        raise FhirError(404, "not-supported", f"unknown operation {resource_type}/{operation}")
    body = await request.body()
    reason: str | None = None
    if body.strip():
        parameters = fhir.decode_resource(body, "Parameters")
        for parameter in parameters.get("parameter") or ():
            if isinstance(parameter, dict) and parameter.get("name") == "reason":
                value = parameter.get("valueString") or parameter.get("valueCode")
                reason = value if isinstance(value, str) else None
    session, _ = await simulator.stop_session(state, resource_id, reason, base=_fhir_base(request, hospital_code))
    return _answer(fhir.schedule(session, state.directory))


# --- test helpers ------------------------------------------------------------------------------------------


class StopIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: str | None = None


class CapacityIn(msgspec.Struct, forbid_unknown_fields=True):
    capacity: Annotated[int, msgspec.Meta(ge=0, le=1000)]


class OnlineIn(msgspec.Struct, forbid_unknown_fields=True):
    online: bool


class HospitalOut(msgspec.Struct, rename="camel", kw_only=True):
    code: str
    name: str
    level: str
    online: bool
    departments: int
    doctors: int
    sessions: int


class HospitalsOut(msgspec.Struct, rename="camel", kw_only=True):
    hospitals: list[HospitalOut]


class OnlineOut(msgspec.Struct, rename="camel", kw_only=True):
    hospital_code: FromPath[str]
    online: bool


class SlotOut(msgspec.Struct, rename="camel", kw_only=True):
    id: str
    start: datetime
    end: datetime
    status: str
    onsite: int
    """Numbers held back for on-site registration."""
    capacity: int
    """The platform's numbers."""
    booked: int
    """Of the platform's numbers, how many the HIS counts taken."""
    version: int


class SessionOut(msgspec.Struct, rename="camel", kw_only=True):
    id: str
    department_code: str
    doctor_code: str | None
    day: date
    period: str
    active: bool
    stop_reason: str | None
    fee: float
    version: int
    last_updated: datetime
    slots: list[SlotOut]


class SessionsOut(msgspec.Struct, rename="camel", kw_only=True):
    hospital_code: FromPath[str]
    day: date | None
    sessions: list[SessionOut]


class StopOut(msgspec.Struct, rename="camel", kw_only=True):
    session: SessionOut
    callback_id: str | None
    """The push queued for the change (None when nothing changed or pushes are off)."""


class CapacityOut(msgspec.Struct, rename="camel", kw_only=True):
    session_id: FromPath[str]
    slot: SlotOut
    callback_id: str | None


def _slot_out(slot: SlotRec, session: SessionRec) -> SlotOut:
    return SlotOut(
        id=slot.id,
        start=slot.start.astimezone(SHANGHAI),
        end=slot.end.astimezone(SHANGHAI),
        status=fhir.slot_status(slot, session),
        onsite=slot.onsite,
        capacity=slot.capacity,
        booked=slot.booked,
        version=slot.version,
    )


def _session_out(session: SessionRec) -> SessionOut:
    return SessionOut(
        id=session.id,
        department_code=session.department_code,
        doctor_code=session.doctor_code,
        day=session.day,
        period=session.period.value,
        active=session.active,
        stop_reason=session.stop_reason,
        fee=session.fee,
        version=session.version,
        last_updated=session.last_updated.astimezone(SHANGHAI),
        slots=[_slot_out(slot, session) for slot in session.slots],
    )


def _decode(body: bytes, kind: type[_T]) -> _T:
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.DecodeError as exc:
        raise FhirError(400, "invalid", str(exc)) from None


def _json(payload: object) -> Response[bytes]:
    return Response(msgspec.json.encode(payload), media_type="application/json")


def _hospital_out(state: HospitalState) -> HospitalOut:
    info = state.directory.hospital
    return HospitalOut(
        code=info.code,
        name=info.name,
        level=info.level.value,
        online=state.online,
        departments=len(state.directory.departments),
        doctors=len(state.directory.doctors),
        sessions=len(state.sessions),
    )


@get("/test/hospitals", exception_handlers=_ERRORS)
async def test_hospitals(simulator: NamedDependency[HisSimulator]) -> Response[bytes]:
    """The simulated hospitals, their sizes and switches."""
    states = [simulator.hospital(code) for code in simulator.hospitals]
    return _json(HospitalsOut(hospitals=[_hospital_out(state) for state in states]))


@put("/test/{hospital_code:str}/online", exception_handlers=_ERRORS)
async def test_online(
    hospital_code: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[HisSimulator]
) -> Response[bytes]:
    """Switch a hospital's HIS off (every FHIR request answers 503) or back on."""
    state = simulator.hospital(hospital_code)
    state.online = _decode(await request.body(), OnlineIn).online
    return _json(OnlineOut(hospital_code=hospital_code, online=state.online))


@get("/test/{hospital_code:str}/sessions", exception_handlers=_ERRORS)
async def test_sessions(
    hospital_code: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[HisSimulator]
) -> Response[bytes]:
    """A hospital's sessions, compact; ``day=YYYY-MM-DD`` for one day, every day otherwise."""
    state = simulator.hospital(hospital_code)
    raw = request.query_params.get("day")
    try:
        day = date.fromisoformat(raw) if raw else None
    except ValueError:
        raise FhirError(400, "invalid", f"bad day {raw!r}") from None
    sessions = sorted(
        (s for s in state.sessions.values() if day is None or s.day == day), key=lambda s: (s.start, s.id)
    )
    return _json(SessionsOut(hospital_code=hospital_code, day=day, sessions=[_session_out(s) for s in sessions]))


@post("/test/{hospital_code:str}/sessions/{session_id:str}/stop", status_code=200, exception_handlers=_ERRORS)
async def test_stop_session(
    hospital_code: FromPath[str],
    session_id: FromPath[str],
    request: Request[Any, Any, Any],
    simulator: NamedDependency[HisSimulator],
) -> Response[bytes]:
    """The HIS stops a session itself (停诊): the change is pushed to the subscriber."""
    state = simulator.hospital(hospital_code)
    reason = _decode(await request.body(), StopIn).reason
    session, pushed = await simulator.stop_session(state, session_id, reason, base=_fhir_base(request, hospital_code))
    return _json(StopOut(session=_session_out(session), callback_id=pushed))


@post("/test/{hospital_code:str}/slots/{slot_id:str}/capacity", status_code=200, exception_handlers=_ERRORS)
async def test_slot_capacity(
    hospital_code: FromPath[str],
    slot_id: FromPath[str],
    request: Request[Any, Any, Any],
    simulator: NamedDependency[HisSimulator],
) -> Response[bytes]:
    """The HIS changes a slot's platform capacity: the change is pushed to the subscriber."""
    state = simulator.hospital(hospital_code)
    capacity = _decode(await request.body(), CapacityIn).capacity
    slot, pushed = await simulator.set_capacity(state, slot_id, capacity, base=_fhir_base(request, hospital_code))
    session = state.sessions[slot.session_id]
    return _json(CapacityOut(session_id=session.id, slot=_slot_out(slot, session), callback_id=pushed))


# --- billing test helpers ----------------------------------------------------------------------------------


class BillItemIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    code: str
    """A charge item of the sandbox's catalogue, or any code with ``name``, ``unitPriceFen`` and ``category``."""
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    name: str | None = None
    unit_price_fen: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)] | None = None
    category: str | None = None
    """A fee category: its code (lab, exam, western, patent, treatment, material) or its name (检验费 ...)."""


class BillIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    patid: str
    items: Annotated[list[BillItemIn], msgspec.Meta(min_length=1, max_length=50)]
    department_code: str | None = None
    doctor_code: str | None = None


class CancelBillIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: str | None = None


class BillingSwitchIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    refuse_next: Annotated[int, msgspec.Meta(ge=0, le=1000)] | None = None
    """Refuse this many of the next settlements (final refusals); 0 disarms."""
    unavailable: bool | None = None
    """Answer 503 to every Invoice request (search, read, ``$settle``) while true."""


class BillItemOut(msgspec.Struct, rename="camel", kw_only=True):
    code: str
    name: str
    category: str
    quantity: int
    unit_price_fen: int
    amount_fen: int


class BillOut(msgspec.Struct, rename="camel", kw_only=True):
    id: str
    patid: str
    status: str
    title: str
    department_code: str
    doctor_code: str | None
    issued_at: datetime
    total_fen: int
    items: list[BillItemOut]
    receipt_no: str | None
    settled_at: datetime | None
    payment_ref: str | None
    channel: str | None


class BillsOut(msgspec.Struct, rename="camel", kw_only=True):
    hospital_code: FromPath[str]
    bills: list[BillOut]


class BillingSwitchOut(msgspec.Struct, rename="camel", kw_only=True):
    hospital_code: FromPath[str]
    refuse_next: int
    unavailable: bool


def _bill_out(bill: BillRec) -> BillOut:
    return BillOut(
        id=bill.id,
        patid=bill.patid,
        status=bill.status,
        title=bill.title,
        department_code=bill.department_code,
        doctor_code=bill.doctor_code,
        issued_at=bill.issued_at.astimezone(SHANGHAI),
        total_fen=bill.total_fen,
        items=[
            BillItemOut(
                code=i.code,
                name=i.name,
                category=i.category,
                quantity=i.quantity,
                unit_price_fen=i.unit_price_fen,
                amount_fen=i.amount_fen,
            )
            for i in bill.items
        ],
        receipt_no=bill.receipt_no,
        settled_at=bill.settled_at.astimezone(SHANGHAI) if bill.settled_at else None,
        payment_ref=bill.payment_ref,
        channel=bill.channel,
    )


def _bill_item(item: BillItemIn) -> BillItemRec:
    known = CHARGE_ITEMS.get(item.code)
    name = item.name or (known[0] if known else None)
    names = {name: code for code, name in FEE_CATEGORIES.items()}
    category = names.get(item.category or "", item.category) or (known[1] if known else None)
    price = item.unit_price_fen if item.unit_price_fen is not None else (known[2] if known else None)
    if not name or price is None or category is None:
        raise FhirError(
            400, "invalid", f"item {item.code!r} is not in the catalogue: give name, unitPriceFen, category"
        )
    if category not in FEE_CATEGORIES:
        raise FhirError(400, "invalid", f"unknown fee category {category!r}")
    return BillItemRec(
        code=item.code,
        name=name,
        category_code=category,
        category=FEE_CATEGORIES[category],
        quantity=item.quantity,
        unit_price_fen=price,
    )


@post("/test/{hospital_code:str}/bills", status_code=201, exception_handlers=_ERRORS)
async def test_add_bill(
    hospital_code: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[HisSimulator]
) -> Response[bytes]:
    """The HIS issues a bill to a patient (``{"patid", "items": [{"code", "quantity"}]}``); answers it."""
    state = simulator.hospital(hospital_code)
    data = _decode(await request.body(), BillIn)
    bill = simulator.add_bill(
        state,
        data.patid,
        [_bill_item(item) for item in data.items],
        department_code=data.department_code,
        doctor_code=data.doctor_code,
    )
    return Response(msgspec.json.encode(_bill_out(bill)), status_code=201, media_type="application/json")


@get("/test/{hospital_code:str}/bills", exception_handlers=_ERRORS)
async def test_bills(
    hospital_code: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[HisSimulator]
) -> Response[bytes]:
    """A hospital's bills in every status, oldest first; ``patid=`` for one patient's."""
    state = simulator.hospital(hospital_code)
    patid = request.query_params.get("patid")
    bills = sorted(
        (b for b in state.bills.values() if patid is None or b.patid == patid), key=lambda b: (b.issued_at, b.id)
    )
    return _json(BillsOut(hospital_code=hospital_code, bills=[_bill_out(b) for b in bills]))


@post("/test/{hospital_code:str}/bills/{bill_id:str}/cancel", status_code=200, exception_handlers=_ERRORS)
async def test_cancel_bill(
    hospital_code: FromPath[str],
    bill_id: FromPath[str],
    request: Request[Any, Any, Any],
    simulator: NamedDependency[HisSimulator],
) -> Response[bytes]:
    """The HIS withdraws a bill (作废; 409 once it is settled)."""
    state = simulator.hospital(hospital_code)
    bill = simulator.cancel_bill(state, bill_id, _decode(await request.body(), CancelBillIn).reason)
    return _json(_bill_out(bill))


@put("/test/{hospital_code:str}/billing", exception_handlers=_ERRORS)
async def test_billing_switch(
    hospital_code: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[HisSimulator]
) -> Response[bytes]:
    """The billing fault switch: ``refuseNext`` settlements refused for good, ``unavailable`` Invoice requests
    answering 503; fields left out stay as they are."""
    state = simulator.hospital(hospital_code)
    data = _decode(await request.body(), BillingSwitchIn)
    if data.refuse_next is not None:
        state.refuse_settlements = data.refuse_next
    if data.unavailable is not None:
        state.billing_online = not data.unavailable
    return _json(
        BillingSwitchOut(
            hospital_code=hospital_code, refuse_next=state.refuse_settlements, unavailable=not state.billing_online
        )
    )


ROUTES: list[ControllerRouterHandler] = [
    fhir_search,
    fhir_read,
    fhir_create,
    fhir_update,
    fhir_operation,
    test_hospitals,
    test_online,
    test_sessions,
    test_stop_session,
    test_slot_capacity,
    test_add_bill,
    test_bills,
    test_cancel_bill,
    test_billing_switch,
]
