"""Operators and the security administrator manage staff accounts (SEC-A-01, SEC-C-02). Admin listener only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from bff.auth.guards import require_staff
from bff.auth.principal import current_session
from bff.auth.routes import client_context
from bff.services import account_service as _service
from domain.account.model import PractitionerLink, StaffAccount, StaffRole
from domain.kernel.errors import ValidationError


class StaffCreateIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    login_name: str
    display_name: str
    roles: list[str]


class StaffCreatedOut(msgspec.Struct, rename="camel"):
    staff_id: str
    login_name: str
    activation_token: str
    """Hand to the holder through a separate channel; valid once, until ``expiresAt``."""
    expires_at: datetime


class StaffOut(msgspec.Struct, rename="camel"):
    staff_id: str
    login_name: str
    display_name: str
    roles: list[str]
    status: str
    created_at: datetime
    locked: bool
    last_login_at: datetime | None = None


class StaffPageOut(msgspec.Struct, rename="camel"):
    items: list[StaffOut]
    next_cursor: str | None = None


class RolesIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    roles: list[str]


def _roles(values: list[str]) -> frozenset[StaffRole]:
    try:
        return frozenset(StaffRole(v) for v in values)
    except ValueError:
        raise ValidationError("unknown role", code="staff.role_unknown", message="角色不存在") from None


def _out(staff: StaffAccount, now: datetime) -> StaffOut:
    return StaffOut(
        staff_id=staff.id,
        login_name=staff.login_name,
        display_name=staff.display_name,
        roles=sorted(r.value for r in staff.roles),
        status=staff.status.value,
        created_at=staff.created_at,
        locked=staff.locked_until is not None and staff.locked_until > now,
        last_login_at=staff.last_login_at,
    )


@post(
    "/",
    operation_id="adminStaffCreate",
    summary="Create a staff account (activation by one-time token)",
    guards=[require_staff("operator", "secadmin")],
)
async def create_staff(state: State, request: Request[Any, Any, Any], data: JSONBody[StaffCreateIn]) -> StaffCreatedOut:
    service = _service(state)
    activation = await service.create_staff(
        login_name=data.login_name,
        display_name=data.display_name,
        roles=_roles(data.roles),
        actor=current_session(request),
        ctx=client_context(request),
    )
    async with service.d.uow_factory() as uow:
        staff = await uow.accounts.staff_by_login(activation.login_name)
    assert staff is not None
    return StaffCreatedOut(
        staff_id=staff.id,
        login_name=activation.login_name,
        activation_token=activation.token,
        expires_at=activation.expires_at,
    )


@get(
    "/",
    operation_id="adminStaffList",
    summary="Staff accounts, by login name (cursor pagination)",
    guards=[require_staff("operator", "sysadmin", "secadmin", "auditadmin")],
)
async def list_staff(
    state: State,
    request: Request[Any, Any, Any],
    after: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
) -> StaffPageOut:
    service = _service(state)
    size = max(1, min(200, limit))
    items = await service.list_staff(current_session(request), after=after, limit=size)
    now = service.d.clock.now()
    return StaffPageOut(
        items=[_out(s, now) for s in items], next_cursor=items[-1].login_name if len(items) == size else None
    )


@put(
    "/{staff_id:str}/roles",
    operation_id="adminStaffSetRoles",
    summary="Change a staff member's roles (security administrator only)",
    guards=[require_staff("secadmin")],
)
async def set_roles(
    state: State, request: Request[Any, Any, Any], staff_id: FromPath[str], data: JSONBody[RolesIn]
) -> StaffOut:
    service = _service(state)
    staff = await service.set_staff_roles(
        current_session(request), staff_id, _roles(data.roles), ctx=client_context(request)
    )
    return _out(staff, service.d.clock.now())


class LinkIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    hospital_code: str
    practitioner_id: str
    roles: list[str]


class LinksIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    links: list[LinkIn]


class LinkOut(msgspec.Struct, rename="camel"):
    hospital_code: str
    practitioner_id: str
    roles: list[str]


class LinksOut(msgspec.Struct, rename="camel"):
    staff_id: str
    links: list[LinkOut]


@put(
    "/{staff_id:str}/links",
    operation_id="adminStaffSetLinks",
    summary="Link a staff account to practitioners at hospitals (replaces the links)",
    guards=[require_staff("operator", "secadmin")],
)
async def set_links(
    state: State, request: Request[Any, Any, Any], staff_id: FromPath[str], data: JSONBody[LinksIn]
) -> LinksOut:
    links = [
        PractitionerLink(
            hospital_code=link.hospital_code.strip()[:32],
            practitioner_id=link.practitioner_id.strip()[:64],
            roles=_roles(link.roles),
        )
        for link in data.links
    ]
    staff = await _service(state).set_staff_links(
        current_session(request), staff_id, links, ctx=client_context(request)
    )
    return LinksOut(
        staff_id=staff.id,
        links=[
            LinkOut(
                hospital_code=x.hospital_code, practitioner_id=x.practitioner_id, roles=sorted(r.value for r in x.roles)
            )
            for x in staff.links
        ],
    )


staff_admin_router = Router(
    path="/api/v1/admin/staff",
    tags=["admin"],
    route_handlers=[create_staff, list_staff, set_roles, set_links],
    security=[{"bearer": []}],
)
