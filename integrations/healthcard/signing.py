"""The e-health-card platform's ``sign`` (protocols §6.1), as pure functions: no clock reads, no I/O.

The rule, as implemented by the goairix/wx Go SDK (``healthcard/signature.go``) and pinned by its
``signature_test.go`` vectors:

* merge ``commonIn`` (without ``sign``) and ``req`` into one map; the key ``sign`` never takes part;
* drop ``None`` values and values that render as the empty string (numeric ``0`` renders ``"0"`` and stays);
* sort the keys by ASCII (byte order);
* render each value: a string as is; a bool as ``true``/``false`` and a number as its JSON text (the Go SDK
  renders every non-string with ``encoding/json``); an object or an array as compact JSON with non-ASCII left
  unescaped and nested keys in their given order;
* join ``key=value`` with ``&``, append the app secret with no separator, SHA-256, standard Base64.

The platform does not sign its answers (the Go SDK's ``CommonOut`` has no ``sign`` and nothing verifies one).
Our sandbox does, with the same rule, so that a tampered answer can be caught: ``sign_response`` signs the
two-member object ``{"commonOut": <commonOut without sign>, "rsp": <rsp>}``. Signing the pair, rather than
merging ``commonOut`` into ``rsp`` as requests do, keeps every field covered: some ``rsp`` objects carry their
own ``resultCode`` and ``time``, which a merge would let shadow the envelope's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from typing import Final

SIGN: Final = "sign"
"""The ``commonIn`` / ``commonOut`` member holding the signature; never part of what is signed."""


def _plain(value: object) -> object:
    """``value`` with every mapping turned into a dict and every tuple into a list, for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def render_value(value: object) -> str | None:
    """The text a value contributes to the sign string, or None when it is left out (``None``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("a sign field cannot be NaN or infinite")
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    raise TypeError(f"cannot sign a value of type {type(value).__name__}")


def sign_string(fields: Mapping[str, object]) -> str:
    """``k1=v1&k2=v2…``: keys sorted, ``sign`` left out, ``None`` and empty renderings dropped."""
    parts: list[str] = []
    for key in sorted(fields, key=lambda name: name.encode("utf-8")):
        if key == SIGN:
            continue
        rendered = render_value(fields[key])
        if rendered is None or rendered == "":
            continue
        parts.append(f"{key}={rendered}")
    return "&".join(parts)


def sign(fields: Mapping[str, object], *, app_secret: str) -> str:
    """Base64(SHA-256(sign string + app secret))."""
    digest = hashlib.sha256((sign_string(fields) + app_secret).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


def request_fields(common_in: Mapping[str, object], req: Mapping[str, object]) -> dict[str, object]:
    """``commonIn`` without ``sign``, then ``req``; on a shared key ``req`` wins (as in the C# port of the
    official SDK, ``SignatureUtils.MixSortedDictionary``)."""
    merged: dict[str, object] = {key: value for key, value in common_in.items() if key != SIGN}
    merged.update(req)
    return merged


def sign_request(common_in: Mapping[str, object], req: Mapping[str, object], *, app_secret: str) -> str:
    """The ``commonIn.sign`` of a request."""
    return sign(request_fields(common_in, req), app_secret=app_secret)


def verify(fields: Mapping[str, object], signature: str, *, app_secret: str) -> bool:
    """Whether ``signature`` is the sign of ``fields``; compared in constant time."""
    expected = sign(fields, app_secret=app_secret).encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8"))


def response_fields(common_out: Mapping[str, object], rsp: Mapping[str, object] | None) -> dict[str, object]:
    """What a response signature covers: ``commonOut`` without ``sign`` and ``rsp`` (module docstring)."""
    return {"commonOut": {key: value for key, value in common_out.items() if key != SIGN}, "rsp": rsp}


def sign_response(common_out: Mapping[str, object], rsp: Mapping[str, object] | None, *, app_secret: str) -> str:
    """The ``commonOut.sign`` of an answer (our sandbox's extension of the protocol)."""
    return sign(response_fields(common_out, rsp), app_secret=app_secret)


def verify_response(
    common_out: Mapping[str, object], rsp: Mapping[str, object] | None, signature: str, *, app_secret: str
) -> bool:
    return verify(response_fields(common_out, rsp), signature, app_secret=app_secret)
