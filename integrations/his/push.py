"""Reading a FHIR R4 rest-hook notification (a ``Bundle`` of type ``history``) into the sessions to refresh
(docs/his-fhir-profile.md: "Changes pushed to us")."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

SESSION_SYSTEM = "urn:hsp:session"


class FhirPushReader:
    def changed_sessions(self, hospital_code: str, body: bytes) -> Sequence[str]:
        """Session ids named by the Bundle's Schedule entries (their ``urn:hsp:session`` identifier) and by its
        Slot entries (their ``schedule`` reference). Anything unreadable names nothing."""
        try:
            bundle = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return []
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            return []
        found: dict[str, None] = {}
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                continue
            session = _session_of(resource)
            if session:
                found[session] = None
        return list(found)


def _session_of(resource: dict[str, Any]) -> str | None:
    kind = resource.get("resourceType")
    if kind == "Schedule":
        for identifier in resource.get("identifier") or []:
            if isinstance(identifier, dict) and identifier.get("system") == SESSION_SYSTEM:
                value = identifier.get("value")
                return str(value) if value else None
        value = resource.get("id")
        return str(value) if value else None
    if kind == "Slot":
        schedule = resource.get("schedule")
        reference = schedule.get("reference") if isinstance(schedule, dict) else None
        if isinstance(reference, str) and reference.startswith("Schedule/"):
            return reference.split("/", 1)[1] or None
    return None
