"""Changes pushed by a HIS (FHIR rest-hook): verified, then a refresh of the named sessions is queued."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.params import FromPath

from bff.deps import BffDeps
from bff.services import catalogue_service as service
from domain.catalogue.push import verify_push
from domain.kernel.errors import AuthenticationError, UnavailableError


class PushAck(msgspec.Struct, rename="camel"):
    accepted: int


class BadPushSignatureError(AuthenticationError):
    code = "callbacks.bad_signature"
    message = "签名校验失败"


@post(
    "/callbacks/his/{hospital_code:str}",
    operation_id="callbackHisPush",
    tags=["callbacks"],
    summary="A HIS pushes catalogue changes (signed)",
    status_code=200,
)
async def his_push(state: State, request: Request[Any, Any, Any], hospital_code: FromPath[str]) -> PushAck:
    deps: BffDeps = state.deps
    body = await request.body()
    hospital = await service(state).hospital(hospital_code)
    if not verify_push(hospital.callback_secret, body, request.headers.get("x-hsp-signature")):
        raise BadPushSignatureError("push signature does not verify")
    if deps.his_push is None or deps.runner is None:
        raise UnavailableError("HIS pushes are not configured", code="callbacks.not_configured")
    sessions = list(deps.his_push.changed_sessions(hospital_code, body))
    if sessions:
        await deps.runner.enqueue(
            "catalogue.refresh_sessions", {"hospital_code": hospital_code, "session_ids": sessions}
        )
    return PushAck(accepted=len(sessions))
