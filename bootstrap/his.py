"""The HIS gateway: one adapter per hospital in the registry, rebuilt when an operator changes the hospital."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from domain.catalogue.model import Hospital
from domain.catalogue.ports import HisAdapter, HisUnavailableError
from domain.catalogue.use_cases import CatalogueService

AdapterBuilder = Callable[[Hospital], HisAdapter | None]


class RegistryHisGateway:
    def __init__(self, build: AdapterBuilder) -> None:
        self._build = build
        self._adapters: dict[str, HisAdapter] = {}

    def for_hospital(self, hospital_code: str) -> HisAdapter:
        adapter = self._adapters.get(hospital_code)
        if adapter is None:
            raise HisUnavailableError(f"no HIS adapter for {hospital_code}", code="his.not_configured")
        return adapter

    def register(self, hospital: Hospital) -> None:
        adapter = self._build(hospital) if hospital.active else None
        if adapter is None:
            self._adapters.pop(hospital.code, None)
        else:
            self._adapters[hospital.code] = adapter

    async def reload(self, service: CatalogueService, codes: Sequence[str] | None = None) -> int:
        hospitals = (
            [await service.hospital(code) for code in codes]
            if codes
            else await service.hospitals(active_only=False, limit=1000)
        )
        for hospital in hospitals:
            self.register(hospital)
        return len(self._adapters)

    def health(self) -> list[object]:
        reporter = getattr(self, "_health", None)
        return list(reporter()) if callable(reporter) else []
