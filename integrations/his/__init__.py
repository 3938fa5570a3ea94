"""Hospital information systems: the FHIR R4 adapter (docs/his-fhir-profile.md) and the resilient gateway."""

from integrations.his.fhir import FhirHisAdapter, identifier_system
from integrations.his.gateway import HisHealth, ResiliencePolicy, ResilientHisAdapter, ResilientHisGateway
from integrations.his.resources import FhirParseError

__all__ = [
    "FhirHisAdapter",
    "FhirParseError",
    "HisHealth",
    "ResiliencePolicy",
    "ResilientHisAdapter",
    "ResilientHisGateway",
    "identifier_system",
]
