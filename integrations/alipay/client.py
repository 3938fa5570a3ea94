"""The Alipay OpenAPI v2 gateway client and the mini-program login on top of it (protocols §3, DESIGN D9).

``AlipayClient.call`` is generic: later payment methods (``alipay.trade.*``) use it as the login does. It
signs every request with the app private key (RSA2) and trusts an answer only after checking Alipay's
signature over the raw ``*_response`` text.

Signed and unsigned answers: a success (see ``is_success``) must carry a valid signature, or it is refused with
``AlipayBadSignatureError``. A failure that carries a signature must verify as well. A failure without one is
accepted as a failure: the gateway does not sign some protocol errors (an unknown ``app_id`` has no key pair
to sign with), and an unsigned failure can only make us give up, never grant anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final, NoReturn

import httpx

from domain.account.ports import AlipayIdentity, LoginCodeError, ProviderUnavailableError
from domain.kernel.clock import Clock
from domain.kernel.errors import UpstreamError
from integrations.alipay.signing import (
    RSA2,
    MalformedResponseError,
    format_timestamp,
    load_private_key,
    load_public_key,
    locate_response,
    rsa2_verify,
    sign_params,
)

DEFAULT_GATEWAY: Final = "https://openapi.alipay.com/gateway.do"
SUCCESS_CODE: Final = "10000"
SERVICE_UNAVAILABLE_CODE: Final = "20000"
INVALID_ARGUMENTS_CODE: Final = "40002"
MISSING_ARGUMENTS_CODE: Final = "40001"
CODE_INVALID: Final = "isv.code-invalid"

COMMON_PARAMS: Final = frozenset(
    {
        "app_id",
        "method",
        "format",
        "charset",
        "sign_type",
        "sign",
        "timestamp",
        "version",
        "notify_url",
        "return_url",
        "app_auth_token",
        "auth_token",
    }
)
"""Sent in the query string, like the official SDKs; everything else (``biz_content``, ``grant_type``,
``code``…) goes in the form body. The gateway reads both."""

CONFIGURATION_SUB_CODES: Final = frozenset(
    {
        "isv.invalid-signature",
        "isv.invalid-signature-type",
        "isv.invalid-app-id",
        "isv.invalid-timestamp",
        "isv.invalid-charset",
        "isv.invalid-format",
        "isv.invalid-method",
        "isv.insufficient-isv-permissions",
    }
)
"""Failures that mean our request or our app's configuration is wrong, not the resident's input."""


class AlipayUnavailableError(ProviderUnavailableError):
    """Alipay could not be reached, timed out, answered an HTTP error or ``20000`` (retry later)."""

    code = "alipay.unavailable"


class AlipayBadSignatureError(ProviderUnavailableError):
    """An answer whose Alipay signature is missing or does not verify: never trusted."""

    code = "alipay.bad_signature"


class AlipayBadResponseError(ProviderUnavailableError):
    """An answer that is not the gateway's JSON shape."""

    code = "alipay.bad_response"


class AlipayMisconfiguredError(ProviderUnavailableError):
    """The gateway refused our request itself (signature, app id, timestamp, permissions): our setup is wrong."""

    code = "alipay.misconfigured"

    def __init__(self, detail: str | None = None, *, alipay_code: str, sub_code: str | None) -> None:
        super().__init__(detail, extra={"alipay_code": alipay_code, "sub_code": sub_code})
        self.alipay_code = alipay_code
        self.sub_code = sub_code


class AlipayBusinessError(UpstreamError):
    """Any other failure answer (``40004`` business failures with ``ACQ.*`` sub codes, ``40006``…).

    Callers map the ``sub_code`` they expect (``ACQ.TRADE_NOT_EXIST``…) to their own errors.
    """

    code = "alipay.business_error"
    message = "支付宝业务处理失败，请稍后再试"

    def __init__(
        self,
        detail: str | None = None,
        *,
        alipay_code: str,
        sub_code: str | None,
        sub_msg: str | None = None,
        payload: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(detail, extra={"alipay_code": alipay_code, "sub_code": sub_code})
        self.alipay_code = alipay_code
        self.sub_code = sub_code
        self.sub_msg = sub_msg
        self.payload: dict[str, object] = dict(payload or {})


def _text(payload: Mapping[str, object], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) and value else None


class AlipayClient:
    """One app's gateway client: signed ``application/x-www-form-urlencoded`` POSTs, verified answers."""

    def __init__(
        self,
        *,
        app_id: str,
        app_private_key_pem: bytes,
        alipay_public_key_pem: bytes,
        gateway_url: str = DEFAULT_GATEWAY,
        http: httpx.AsyncClient,
        clock: Clock,
        timeout_seconds: float = 5.0,
    ) -> None:
        load_private_key(app_private_key_pem)  # an unusable key fails here, not on the first call
        load_public_key(alipay_public_key_pem)
        self._app_id = app_id
        self._private_key = app_private_key_pem
        self._alipay_public_key = alipay_public_key_pem
        self._gateway_url = gateway_url
        self._http = http
        self._clock = clock
        self._timeout = timeout_seconds

    @property
    def app_id(self) -> str:
        return self._app_id

    @property
    def alipay_public_key_pem(self) -> bytes:
        """Alipay's public key for this app (verifies answers, and notifications through the trade client)."""
        return self._alipay_public_key

    def signed_params(
        self,
        method: str,
        *,
        biz_content: Mapping[str, object] | None = None,
        extra_params: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Every parameter of a call, signed (protocols §3.1); ``timestamp`` from the clock, Beijing time."""
        params: dict[str, str] = dict(extra_params or {})
        params.update(
            {
                "app_id": self._app_id,
                "method": method,
                "format": "JSON",
                "charset": "utf-8",
                "sign_type": RSA2,
                "timestamp": format_timestamp(self._clock.now()),
                "version": "1.0",
            }
        )
        if biz_content is not None:
            params["biz_content"] = json.dumps(biz_content, ensure_ascii=False, separators=(",", ":"))
        return sign_params(params, self._private_key)

    async def call(
        self,
        method: str,
        *,
        biz_content: Mapping[str, object] | None = None,
        extra_params: Mapping[str, str] | None = None,
    ) -> dict[str, object]:
        """Call ``method``; returns the verified ``<method>_response`` object of a successful answer.

        Raises ``AlipayUnavailableError`` (transport, HTTP status, ``20000``), ``AlipayBadSignatureError``,
        ``AlipayBadResponseError``, ``LoginCodeError`` (``40002 isv.code-invalid``),
        ``AlipayMisconfiguredError`` (the gateway refused the request itself) or ``AlipayBusinessError``.
        """
        params = self.signed_params(method, biz_content=biz_content, extra_params=extra_params)
        query = {key: value for key, value in params.items() if key in COMMON_PARAMS}
        form = {key: value for key, value in params.items() if key not in COMMON_PARAMS}
        try:
            response = await self._http.post(
                self._gateway_url,
                params=query,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise AlipayUnavailableError(f"{method}: timed out") from exc
        except httpx.HTTPError as exc:
            raise AlipayUnavailableError(f"{method}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise AlipayUnavailableError(f"{method}: HTTP {response.status_code}")
        payload, success = self._verified_payload(method, response.content)
        if not success:
            self._raise_for_failure(method, payload)
        return payload

    def _verified_payload(self, method: str, body: bytes) -> tuple[dict[str, object], bool]:
        """The response object and whether it is a success, once its signature is checked (module docstring)."""
        try:
            envelope = locate_response(body.decode("utf-8"), method)
        except (UnicodeDecodeError, MalformedResponseError) as exc:
            raise AlipayBadResponseError(f"{method}: {exc}") from exc
        payload: dict[str, object] = json.loads(envelope.content)
        success = is_success(payload) and not envelope.is_error_response
        if envelope.sign is None:
            if success:
                raise AlipayBadSignatureError(f"{method}: a success answer without a signature")
        elif not rsa2_verify(envelope.content, envelope.sign, self._alipay_public_key):
            raise AlipayBadSignatureError(f"{method}: the answer's signature does not verify")
        return payload, success

    def _raise_for_failure(self, method: str, payload: Mapping[str, object]) -> NoReturn:
        """Map a failure answer to our errors (protocols §3.2)."""
        code = _text(payload, "code")
        sub_code = _text(payload, "sub_code")
        sub_msg = _text(payload, "sub_msg")
        detail = f"{method}: {code} {sub_code or ''} {sub_msg or _text(payload, 'msg') or ''}".strip()
        if code is None:
            raise AlipayBadResponseError(f"{method}: a failure answer without a code")
        if code == SERVICE_UNAVAILABLE_CODE:
            raise AlipayUnavailableError(detail)
        if code == INVALID_ARGUMENTS_CODE and sub_code == CODE_INVALID:
            raise LoginCodeError(detail)
        if code == MISSING_ARGUMENTS_CODE or sub_code in CONFIGURATION_SUB_CODES:
            raise AlipayMisconfiguredError(detail, alipay_code=code, sub_code=sub_code)
        raise AlipayBusinessError(detail, alipay_code=code, sub_code=sub_code, sub_msg=sub_msg, payload=payload)


def is_success(payload: Mapping[str, object]) -> bool:
    """A ``*_response`` object reports success when its ``code`` is ``10000`` or absent, with no ``sub_code``.

    ``alipay.system.oauth.token`` answers a success without any ``code`` (its object holds only the token
    fields), while ``alipay.trade.*`` successes carry ``code: 10000, msg: Success``.
    """
    code = payload.get("code")
    return (code is None or code == SUCCESS_CODE) and not payload.get("sub_code")


LOGIN_METHOD: Final = "alipay.system.oauth.token"


class AlipayMiniProgramLogin:
    """The ``AlipayMiniProgram`` port: ``my.getAuthCode`` authCode -> the Alipay user (protocols §3.3)."""

    def __init__(self, client: AlipayClient) -> None:
        self._client = client

    @property
    def app_id(self) -> str:
        return self._client.app_id

    async def exchange_auth_code(self, auth_code: str) -> AlipayIdentity:
        """``alipay.system.oauth.token`` with top-level ``grant_type=authorization_code`` and ``code``.

        Works in both of Alipay's modes: ``user_id`` (``2088…``) or ``open_id`` (apps switched since 2023),
        plus ``union_id`` when the app has one. Failures other than a bad code become
        ``ProviderUnavailableError``: the port promises nothing else.
        """
        code = auth_code.strip()
        if not code:
            raise LoginCodeError("empty Alipay auth code")
        try:
            payload = await self._client.call(
                LOGIN_METHOD,
                extra_params={"grant_type": "authorization_code", "code": code},
            )
        except AlipayBusinessError as exc:
            raise AlipayUnavailableError(
                exc.detail, extra={"alipay_code": exc.alipay_code, "sub_code": exc.sub_code}
            ) from exc
        user_id = _text(payload, "user_id")
        open_id = _text(payload, "open_id")
        if user_id is None and open_id is None:
            raise AlipayBadResponseError(f"{LOGIN_METHOD}: neither user_id nor open_id")
        return AlipayIdentity(user_id=user_id, open_id=open_id, union_id=_text(payload, "union_id"))
