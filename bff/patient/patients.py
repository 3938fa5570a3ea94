"""A resident's patients (就诊人), the step-up check, and their e-health cards. Responses mask names, ID
numbers and phones (SEC-P-08); the full ID number comes only from the audited reveal after a step-up."""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from bff.auth.guards import current_principal, require_resident, require_unrestricted
from bff.auth.principal import current_session
from bff.auth.routes import client_context
from bff.services import account_service, patient_service
from domain.identity.masking import mask_id_number, mask_name, mask_phone
from domain.patient.model import Patient, PatientState, Relationship
from domain.patient.use_cases import Actor, NewPatient

PatientId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


def actor_of(request: Request[Any, Any, Any]) -> Actor:
    principal = current_principal(request)
    st = request.scope.get("state", {})
    return Actor(
        account_id=principal.subject,
        session_id=principal.session_id,
        ip=str(st.get("client_ip") or "") or None,
        request_id=str(st.get("request_id") or "") or None,
    )


def _channel(request: Request[Any, Any, Any]) -> str:
    audience = current_principal(request).audience
    return {"wechat-mp": "wechat", "alipay-mp": "alipay"}.get(audience, "app")


# ---------------------------------------------------------------------------------------------------- bodies


class PatientOut(msgspec.Struct, rename="camel"):
    id: str
    relationship: Relationship
    state: PatientState
    name: str
    """Masked: 张*三."""
    sex: str
    birth_date: date
    verified: bool
    doc_type: str | None
    doc_number: str | None
    """Masked: 110***********1234."""
    phone: str | None
    """Masked: 138****1234."""
    has_health_card: bool


class PatientsOut(msgspec.Struct, rename="camel"):
    items: list[PatientOut]


class NewPatientIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    relationship: Relationship
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=40, examples=["张三"])]
    consent_version: Annotated[str, msgspec.Meta(max_length=32, examples=["2026-11"])]
    """The version of the privacy notice and separate health-data consent the resident accepted."""
    doc_type: Annotated[str, msgspec.Meta(pattern="^(01|02|03|04|05|06|07|99)$")] | None = None
    doc_sub_type: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    doc_number: Annotated[str, msgspec.Meta(max_length=40, examples=["110101199003070011"])] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    """The patient's own phone: required for anyone aged 14 or over other than the holder (for confirmation)."""
    sex: Annotated[str, msgspec.Meta(pattern="^[MF]$")] | None = None
    birth_date: date | None = None


class PatientPatchIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    relationship: Relationship | None = None
    phone: Annotated[str, msgspec.Meta(max_length=20)] | None = None


class CodeIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=4, max_length=8, examples=["123456"])]


class ExpiresOut(msgspec.Struct, rename="camel"):
    expires_at: datetime


class DocumentOut(msgspec.Struct, rename="camel"):
    doc_type: str | None
    doc_number: str | None


class CardIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    wechat_code: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    """From the card platform's WeChat authorisation page (registration on WeChat only)."""


class CardBindIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    health_code: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    """A one-time health code (WeChat)."""
    qr_code_text: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    """The card's static QR text, scanned or typed (any front end)."""


class CardOut(msgspec.Struct, rename="camel"):
    health_card_id: str
    qr_code_text: str
    """The static code: shown with a second factor at the counter (ID-032)."""


class DynamicCodeOut(msgspec.Struct, rename="camel"):
    qr_code_text: str
    png_base64: str
    expires_at: datetime


def patient_out(patient: Patient) -> PatientOut:
    person = patient.person
    return PatientOut(
        id=patient.link.id,
        relationship=patient.link.relationship,
        state=patient.link.state,
        name=mask_name(person.name),
        sex=person.sex,
        birth_date=person.birth_date,
        verified=person.verified,
        doc_type=person.doc_type,
        doc_number=mask_id_number(person.doc_number) if person.doc_number else None,
        phone=mask_phone(person.phone) if person.phone else None,
        has_health_card=person.health_card_id is not None,
    )


# ---------------------------------------------------------------------------------------------------- step-up


@post("/step-up/code", operation_id="patientStepUpCode", summary="Send a step-up code to my phone", status_code=200)
async def step_up_code(state: State, request: Request[Any, Any, Any]) -> ExpiresOut:
    return ExpiresOut(await patient_service(state).send_step_up_code(actor_of(request)))


@post("/step-up", operation_id="patientStepUp", summary="Pass the step-up check", status_code=200)
async def step_up(state: State, request: Request[Any, Any, Any], data: JSONBody[CodeIn]) -> ExpiresOut:
    return ExpiresOut(await patient_service(state).pass_step_up(actor_of(request), data.code))


class RecheckIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    doc_number: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    doc_type: Annotated[str, msgspec.Meta(pattern="^(01|02|03|04|05|06|07|99)$")] = "01"


class RecheckOut(msgspec.Struct, rename="camel"):
    restricted: bool


@post(
    "/recheck",
    operation_id="patientRecheck",
    summary="Real-name re-check that reopens patient data to a restricted session",
    status_code=200,
)
async def recheck(state: State, request: Request[Any, Any, Any], data: JSONBody[RecheckIn]) -> RecheckOut:
    await patient_service(state).recheck(
        actor_of(request), name=data.name, doc_type=data.doc_type, doc_number=data.doc_number
    )
    await account_service(state).lift_restriction(current_session(request), ctx=client_context(request))
    return RecheckOut(restricted=False)


# ---------------------------------------------------------------------------------------------------- patients


@get("/patients", operation_id="patientList", summary="My patients (confirmed ones)")
async def list_patients(state: State, request: Request[Any, Any, Any]) -> PatientsOut:
    patients = await patient_service(state).list(actor_of(request))
    return PatientsOut(items=[patient_out(p) for p in patients])


@post("/patients", operation_id="patientAdd", summary="Add a patient (after a step-up check)", status_code=201)
async def add_patient(state: State, request: Request[Any, Any, Any], data: JSONBody[NewPatientIn]) -> PatientOut:
    patient = await patient_service(state).add(
        actor_of(request),
        NewPatient(
            relationship=data.relationship,
            name=data.name,
            consent_version=data.consent_version,
            doc_type=data.doc_type,
            doc_sub_type=data.doc_sub_type,
            doc_number=data.doc_number,
            phone=data.phone,
            sex="M" if data.sex == "M" else ("F" if data.sex == "F" else None),
            birth_date=data.birth_date,
            channel=_channel(request),
        ),
    )
    return patient_out(patient)


@get("/patients/{patient_id:str}", operation_id="patientGet", summary="One of my patients")
async def get_patient(state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId]) -> PatientOut:
    return patient_out(await patient_service(state).get(actor_of(request), patient_id))


@patch("/patients/{patient_id:str}", operation_id="patientUpdate", summary="Change relationship or phone")
async def update_patient(
    state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId], data: JSONBody[PatientPatchIn]
) -> PatientOut:
    patient = await patient_service(state).update(
        actor_of(request), patient_id, relationship=data.relationship, phone=data.phone
    )
    return patient_out(patient)


@delete("/patients/{patient_id:str}", operation_id="patientRemove", summary="Remove a patient from my list")
async def remove_patient(state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId]) -> None:
    await patient_service(state).remove(actor_of(request), patient_id)


@post(
    "/patients/{patient_id:str}/confirmation",
    operation_id="patientConfirm",
    summary="Confirm an adult patient with the code sent to their phone",
    status_code=200,
)
async def confirm_patient(
    state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId], data: JSONBody[CodeIn]
) -> PatientOut:
    return patient_out(await patient_service(state).confirm(actor_of(request), patient_id, data.code))


@post(
    "/patients/{patient_id:str}/confirmation-code",
    operation_id="patientConfirmResend",
    summary="Send the confirmation code again",
    status_code=200,
)
async def resend_confirmation(
    state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId]
) -> ExpiresOut:
    return ExpiresOut(await patient_service(state).resend_confirmation(actor_of(request), patient_id))


@get(
    "/patients/{patient_id:str}/document",
    operation_id="patientRevealDocument",
    summary="The full ID number (after a step-up check; audited)",
)
async def reveal_document(
    state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId]
) -> DocumentOut:
    patient = await patient_service(state).reveal_document(actor_of(request), patient_id)
    return DocumentOut(doc_type=patient.person.doc_type, doc_number=patient.person.doc_number)


class FaceIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    redirect_url: Annotated[str, msgspec.Meta(max_length=512, pattern="^https?://")] | None = None
    """Where the provider's page sends the person back when done."""


class FaceOut(msgspec.Struct, rename="camel"):
    url: str
    """The face-check page: opened by the person being added, on their own phone."""
    expires_at: datetime


@post(
    "/patients/{patient_id:str}/face",
    operation_id="patientFaceStart",
    summary="Start the face check that confirms an adult patient (instead of the SMS code)",
    status_code=200,
)
async def start_face(
    state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId], data: JSONBody[FaceIn]
) -> FaceOut:
    session = await patient_service(state).start_face_confirmation(
        actor_of(request), patient_id, redirect_url=data.redirect_url
    )
    return FaceOut(url=session.url, expires_at=session.expires_at)


@post(
    "/patients/{patient_id:str}/face/result",
    operation_id="patientFaceResult",
    summary="Finish the face check: the adult patient is confirmed when it passed",
    status_code=200,
)
async def finish_face(state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId]) -> PatientOut:
    return patient_out(await patient_service(state).finish_face_confirmation(actor_of(request), patient_id))


class ConsentOut(msgspec.Struct, rename="camel"):
    kind: str
    version: str
    channel: str
    granted_at: datetime
    withdrawn_at: datetime | None


class ConsentsOut(msgspec.Struct, rename="camel"):
    items: list[ConsentOut]


class ConsentIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    consent_version: Annotated[str, msgspec.Meta(max_length=32, examples=["2026-11"])]


@get("/patients/{patient_id:str}/consents", operation_id="patientConsents", summary="My consent records")
async def list_consents(state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId]) -> ConsentsOut:
    found = await patient_service(state).consents(actor_of(request), patient_id)
    return ConsentsOut(
        items=[ConsentOut(c.kind.value, c.version, c.channel, c.granted_at, c.withdrawn_at) for c in found]
    )


@post(
    "/patients/{patient_id:str}/consents",
    operation_id="patientConsentGive",
    summary="Give the separate health-data consent again",
    status_code=201,
)
async def give_consent(
    state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId], data: JSONBody[ConsentIn]
) -> ConsentOut:
    c = await patient_service(state).give_consent(
        actor_of(request), patient_id, version=data.consent_version, channel=_channel(request)
    )
    return ConsentOut(c.kind.value, c.version, c.channel, c.granted_at, c.withdrawn_at)


@post(
    "/patients/{patient_id:str}/consents/withdrawal",
    operation_id="patientConsentWithdraw",
    summary="Withdraw the health-data consent (processing already done stays)",
    status_code=200,
)
async def withdraw_consent(
    state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId]
) -> ConsentsOut:
    service = patient_service(state)
    await service.withdraw_consent(actor_of(request), patient_id)
    found = await service.consents(actor_of(request), patient_id)
    return ConsentsOut(
        items=[ConsentOut(c.kind.value, c.version, c.channel, c.granted_at, c.withdrawn_at) for c in found]
    )


# ---------------------------------------------------------------------------------------------------- cards


def _card_out(patient: Patient) -> CardOut:
    person = patient.person
    return CardOut(health_card_id=person.health_card_id or "", qr_code_text=person.card_qr_text or "")


@post(
    "/patients/{patient_id:str}/health-card",
    operation_id="patientCardRegister",
    summary="Get an e-health card (WeChat)",
    status_code=200,
)
async def register_card(
    state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId], data: JSONBody[CardIn]
) -> CardOut:
    patient = await patient_service(state).register_card(actor_of(request), patient_id, wechat_code=data.wechat_code)
    return _card_out(patient)


@post(
    "/patients/{patient_id:str}/health-card/binding",
    operation_id="patientCardBind",
    summary="Bind an existing e-health card",
    status_code=200,
)
async def bind_card(
    state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId], data: JSONBody[CardBindIn]
) -> CardOut:
    patient = await patient_service(state).bind_card(
        actor_of(request), patient_id, health_code=data.health_code, qr_code_text=data.qr_code_text
    )
    return _card_out(patient)


@get("/patients/{patient_id:str}/health-card", operation_id="patientCard", summary="The card's static QR code")
async def get_card(state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId]) -> CardOut:
    return _card_out(await patient_service(state).card(actor_of(request), patient_id))


@get(
    "/patients/{patient_id:str}/health-card/qr.png",
    operation_id="patientCardPng",
    summary="The card's static QR code as a PNG",
    media_type="image/png",
)
async def card_png(state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId]) -> Response[bytes]:
    png = await patient_service(state).card_png(actor_of(request), patient_id)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@post(
    "/patients/{patient_id:str}/health-card/dynamic-code",
    operation_id="patientCardDynamicCode",
    summary="A fresh dynamic QR code (WeChat; expires)",
    status_code=200,
)
async def dynamic_code(
    state: State, request: Request[Any, Any, Any], patient_id: FromPath[PatientId]
) -> DynamicCodeOut:
    code = await patient_service(state).dynamic_code(actor_of(request), patient_id)
    return DynamicCodeOut(
        qr_code_text=code.qr_code_text, png_base64=base64.b64encode(code.png).decode(), expires_at=code.expires_at
    )


_patient_data = Router(
    path="/",
    guards=[require_unrestricted],
    route_handlers=[
        list_patients,
        add_patient,
        get_patient,
        update_patient,
        remove_patient,
        confirm_patient,
        resend_confirmation,
        reveal_document,
        register_card,
        bind_card,
        get_card,
        card_png,
        dynamic_code,
        start_face,
        finish_face,
        list_consents,
        give_consent,
        withdraw_consent,
    ],
)

patients_router = Router(
    path="/api/v1/patient",
    tags=["patient"],
    guards=[require_resident],
    security=[{"bearer": []}],
    route_handlers=[step_up_code, step_up, recheck, _patient_data],
)
