"""Operators: find a person by document, merge two records of the same human and undo a merge (ID-033).
Every lookup, merge and unmerge is audited; responses mask personal data."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from bff.auth.guards import current_principal, require_staff
from bff.services import patient_service
from domain.identity.masking import mask_id_number, mask_name
from domain.patient.model import PersonMerge
from domain.patient.use_cases import PatientNotFoundError


class PersonQueryIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    doc_type: Annotated[str, msgspec.Meta(pattern="^(01|02|03|04|05|06|07|99)$")]
    doc_number: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]


class PersonOut(msgspec.Struct, rename="camel"):
    id: str
    name: str
    sex: str
    birth_date: date
    doc_type: str | None
    doc_number: str | None
    verified: bool
    merged_into: str | None


class MergeIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    source_person_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    target_person_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    reason: Annotated[str, msgspec.Meta(min_length=2, max_length=200)]


class ReasonIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=2, max_length=200)]


class MergeOut(msgspec.Struct, rename="camel"):
    id: str
    source_person_id: str
    target_person_id: str
    actor: str
    reason: str
    merged_at: datetime
    undone_at: datetime | None


def _staff(request: Request[Any, Any, Any]) -> str:
    return f"staff:{current_principal(request).subject}"


def _merge_out(merge: PersonMerge) -> MergeOut:
    return MergeOut(
        merge.id,
        merge.source_person_id,
        merge.target_person_id,
        merge.actor,
        merge.reason,
        merge.merged_at,
        merge.undone_at,
    )


@post("/persons/search", operation_id="adminPersonSearch", summary="Find a person by ID document", status_code=200)
async def search(state: State, request: Request[Any, Any, Any], data: JSONBody[PersonQueryIn]) -> PersonOut:
    person = await patient_service(state).find_person(_staff(request), data.doc_type, data.doc_number)
    if person is None:
        raise PatientNotFoundError("no person with this document", code="person.not_found", message="未找到该人员")
    return PersonOut(
        id=person.id,
        name=mask_name(person.name),
        sex=person.sex,
        birth_date=person.birth_date,
        doc_type=person.doc_type,
        doc_number=mask_id_number(person.doc_number) if person.doc_number else None,
        verified=person.verified,
        merged_into=person.merged_into,
    )


@post("/person-merges", operation_id="adminPersonMerge", summary="Merge two records of one person", status_code=201)
async def merge(state: State, request: Request[Any, Any, Any], data: JSONBody[MergeIn]) -> MergeOut:
    done = await patient_service(state).merge_persons(
        _staff(request), data.source_person_id, data.target_person_id, reason=data.reason
    )
    return _merge_out(done)


@post("/person-merges/{merge_id:str}/undo", operation_id="adminPersonUnmerge", summary="Undo a merge", status_code=200)
async def unmerge(
    state: State, request: Request[Any, Any, Any], merge_id: FromPath[str], data: JSONBody[ReasonIn]
) -> MergeOut:
    return _merge_out(await patient_service(state).undo_merge(_staff(request), merge_id, reason=data.reason))


persons_admin_router = Router(
    path="/api/v1/admin",
    tags=["admin"],
    guards=[require_staff("operator", "sysadmin")],
    security=[{"bearer": []}],
    route_handlers=[search, merge, unmerge],
)
