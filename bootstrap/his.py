"""The HIS gateway: one adapter per hospital in the registry, behind per-hospital resilience (timeouts, retries
for reads, a circuit breaker, a concurrency limit), rebuilt when an operator changes the hospital."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from domain.billing.ports import BillingNotOfferedError, HisBilling
from domain.catalogue.model import Hospital
from domain.catalogue.ports import HisAdapter, HisUnavailableError
from domain.catalogue.use_cases import CatalogueService
from domain.kernel.errors import NotFoundError
from integrations.his.gateway import ResilientHisGateway

AdapterBuilder = Callable[[Hospital], HisAdapter | None]


class RegistryHisGateway:
    def __init__(self, build: AdapterBuilder, resilient: ResilientHisGateway) -> None:
        self._build = build
        self._resilient = resilient
        self.loaded = False
        """True once every hospital of the registry was loaded; a process starts with no adapter at all, and a
        miss (a hospital registered since) makes it False again, so that the worker loads them again
        (``notifications.tasks.run_task``)."""

    def for_hospital(self, hospital_code: str) -> HisAdapter:
        try:
            return self._resilient.for_hospital(hospital_code)
        except NotFoundError:
            self.loaded = False
            raise HisUnavailableError(f"no HIS adapter for {hospital_code}", code="his.not_configured") from None

    def billing_for(self, hospital_code: str) -> HisBilling:
        """``HisBillingGateway``: reads retried, the settlement tried once, like the other HIS calls."""
        try:
            return self._resilient.billing_for(hospital_code)
        except BillingNotOfferedError:
            raise
        except NotFoundError:
            self.loaded = False
            raise HisUnavailableError(f"no HIS adapter for {hospital_code}", code="his.not_configured") from None

    def register(self, hospital: Hospital) -> None:
        adapter = self._build(hospital) if hospital.active else None
        if hospital.code in self._resilient.hospital_codes:
            self._resilient.unregister(hospital.code)
        if adapter is not None:
            self._resilient.register(adapter)

    async def reload(self, service: CatalogueService, codes: Sequence[str] | None = None) -> int:
        hospitals = (
            [await service.hospital(code) for code in codes]
            if codes
            else await service.hospitals(active_only=False, limit=1000)
        )
        for hospital in hospitals:
            self.register(hospital)
        if not codes:
            self.loaded = True
        return len(self._resilient.hospital_codes)

    def health(self) -> list[object]:
        return list(self._resilient.health())
