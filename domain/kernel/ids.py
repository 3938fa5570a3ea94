"""Identifiers: opaque random UUIDs rendered as 32 hex characters. Never an ID number as a key (D4)."""

from __future__ import annotations

import uuid


def new_id() -> str:
    return uuid.uuid4().hex


def is_id(text: str) -> bool:
    if len(text) != 32:
        return False
    try:
        uuid.UUID(hex=text)
    except ValueError:
        return False
    return True
