"""Verifying pushes from a HIS: ``X-HSP-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` with the
hospital's shared secret (our FHIR profile, docs/his-fhir-profile.md)."""

from __future__ import annotations

import hashlib
import hmac


def push_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_push(secret: str | None, body: bytes, header: str | None) -> bool:
    if not secret or not header:
        return False
    return hmac.compare_digest(push_signature(secret, body), header.strip())
