"""Alipay OpenAPI v2 (DESIGN D9): our own RSA2 signing, the gateway client and the mini-program login."""

from __future__ import annotations

from integrations.alipay.client import (
    DEFAULT_GATEWAY,
    AlipayBadResponseError,
    AlipayBadSignatureError,
    AlipayBusinessError,
    AlipayClient,
    AlipayMiniProgramLogin,
    AlipayMisconfiguredError,
    AlipayUnavailableError,
    is_success,
)
from integrations.alipay.signing import (
    MalformedResponseError,
    ResponseEnvelope,
    extract_response_content,
    format_timestamp,
    locate_response,
    notify_sign_content,
    parse_timestamp,
    response_key,
    rsa2_sign,
    rsa2_verify,
    sign_content,
    sign_params,
    verify_notify,
)

__all__ = [
    "DEFAULT_GATEWAY",
    "AlipayBadResponseError",
    "AlipayBadSignatureError",
    "AlipayBusinessError",
    "AlipayClient",
    "AlipayMiniProgramLogin",
    "AlipayMisconfiguredError",
    "AlipayUnavailableError",
    "MalformedResponseError",
    "ResponseEnvelope",
    "extract_response_content",
    "format_timestamp",
    "is_success",
    "locate_response",
    "notify_sign_content",
    "parse_timestamp",
    "response_key",
    "rsa2_sign",
    "rsa2_verify",
    "sign_content",
    "sign_params",
    "verify_notify",
]
