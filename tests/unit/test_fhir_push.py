"""Reading a HIS rest-hook Bundle (docs/his-fhir-profile.md)."""

from __future__ import annotations

import json

from integrations.his.push import FhirPushReader


def test_schedules_and_slots_name_their_sessions_once() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            {
                "resource": {
                    "resourceType": "Schedule",
                    "id": "x1",
                    "identifier": [{"system": "urn:hsp:session", "value": "SES-9"}],
                }
            },
            {"resource": {"resourceType": "Slot", "id": "s1", "schedule": {"reference": "Schedule/SES-9"}}},
            {"resource": {"resourceType": "Slot", "id": "s2", "schedule": {"reference": "Schedule/SES-7"}}},
            {"resource": {"resourceType": "Patient", "id": "p"}},
            {"fullUrl": "no resource"},
        ],
    }
    assert FhirPushReader().changed_sessions("H001", json.dumps(bundle).encode()) == ["SES-9", "SES-7"]


def test_garbage_names_nothing() -> None:
    reader = FhirPushReader()
    for body in (b"", b"not json", b"[]", b'{"resourceType": "Patient"}', b"\xff\xfe"):
        assert reader.changed_sessions("H001", body) == []
