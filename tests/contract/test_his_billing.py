"""The billing port's contract (and the patient records' one) on the in-memory fake the service tests use (so
that the fake behaves as the FHIR adapter against the sandbox HIS does, tests/contract/test_fhir_adapter.py), and
how the gateways pass billing through: only for adapters that offer it, an unknown hospital as before."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import pytest

from bootstrap.his import RegistryHisGateway
from domain.billing.model import BillItem, BillStatus
from domain.billing.ports import BillingNotOfferedError, HisBilling, HisBillingGateway
from domain.catalogue.model import Hospital, HospitalLevel
from domain.catalogue.ports import HisAdapter, HisPatients, HisUnavailableError
from domain.kernel.errors import NotFoundError
from integrations.his import ResilientHisGateway
from tests.contract.his_contract import LAB, HisBillingContract, HisPatientsContract
from tests.support.catalogue import FakeGateway, FakeHis
from tests.support.clock import ManualClock

START = datetime(2025, 3, 3, 1, 0, tzinfo=UTC)


@dataclass
class FakeBillingDesk:
    his: FakeHis
    serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def hospital_code(self) -> str:
        return self.his.hospital_code

    async def new_patient(self) -> str:
        return f"P{next(self.serial):06d}"

    async def add_bill(self, patid: str, items: Sequence[BillItem]) -> str:
        return self.his.add_bill(patid, items).bill_id

    async def cancel_bill(self, bill_id: str) -> None:
        self.his.cancel_bill(bill_id)

    async def refuse_next_settlement(self) -> None:
        self.his.refuse_settlements += 1

    async def set_available(self, available: bool) -> None:
        self.his.online = available


@pytest.fixture
def fake_his() -> FakeHis:
    return FakeHis(clock=ManualClock(START))


@pytest.fixture
def his_billing(fake_his: FakeHis) -> HisBilling:
    return fake_his


@pytest.fixture
def billing_desk(fake_his: FakeHis) -> FakeBillingDesk:
    return FakeBillingDesk(fake_his)


class TestFakeHisBillingContract(HisBillingContract):
    """``tests.support.catalogue.FakeHis``: the fake the payments service tests use."""


class TestFakeHisPatientsContract(HisPatientsContract):
    """The same fake's patient records (finding without creating), as the bills tests use them."""

    @pytest.fixture
    def his_patients(self, fake_his: FakeHis) -> HisPatients:
        return fake_his


async def test_the_fake_records_what_reached_it_and_settles_on_its_clock(fake_his: FakeHis) -> None:
    bill = fake_his.add_bill("P1")
    assert bill.total_fen == 4500
    assert bill.title == "门诊缴费：检验费 等2项"
    settlement = await fake_his.settle(
        bill.bill_id, patid="P1", amount_fen=4500, payment_ref="PAY", channel="alipay", key="k"
    )
    assert settlement.settled_at == START
    assert fake_his.settle_calls == [(bill.bill_id, 4500, "PAY", "alipay", "k")]
    assert (await fake_his.bill(bill.bill_id)).status is BillStatus.PAID
    assert FakeHis().add_bill("P2").issued_at.tzinfo is not None  # without a clock too


def test_the_fake_gateway_offers_billing_unless_told_not_to(fake_his: FakeHis) -> None:
    gateway: HisBillingGateway = FakeGateway({"H001": fake_his, "H002": FakeHis("H002")}, no_billing={"H002"})
    assert gateway.billing_for("H001") is fake_his
    with pytest.raises(BillingNotOfferedError) as not_offered:
        gateway.billing_for("H002")
    assert not_offered.value.code == "his.billing_not_offered"
    assert not_offered.value.message == "该医院暂未开通诊间缴费"


class _NoBilling:
    """A HIS adapter without billing (only what the gateway touches)."""

    hospital_code = "H009"


def _hospital(code: str) -> Hospital:
    return Hospital(
        code=code,
        name="测试医院",
        level=HospitalLevel.SECONDARY,
        region_code="530102",
        address="云岭市测试路1号",
        phone="0871-0000000",
        adapter="fhir",
    )


async def test_the_gateways_pass_billing_through_only_where_it_is_offered(fake_his: FakeHis) -> None:
    resilient = ResilientHisGateway(clock=ManualClock(START), adapters=[fake_his, cast(HisAdapter, _NoBilling())])
    billing = resilient.billing_for("H001")
    bill = fake_his.add_bill("P1", [LAB])
    assert await billing.unpaid_bills("P1") == [bill]
    with pytest.raises(BillingNotOfferedError):
        resilient.billing_for("H009")
    with pytest.raises(NotFoundError) as unknown:
        resilient.billing_for("H404")
    assert unknown.value.code == "his.hospital_not_configured"

    adapters: dict[str, HisAdapter] = {"H001": fake_his, "H009": cast(HisAdapter, _NoBilling())}
    registry = RegistryHisGateway(
        lambda hospital: adapters.get(hospital.code), ResilientHisGateway(clock=ManualClock(START))
    )
    for code in ("H001", "H009"):
        registry.register(_hospital(code))
    registered: HisBillingGateway = registry
    assert await registered.billing_for("H001").bill(bill.bill_id) == bill
    with pytest.raises(BillingNotOfferedError):
        registered.billing_for("H009")
    with pytest.raises(HisUnavailableError) as not_configured:
        registered.billing_for("H404")
    assert not_configured.value.code == "his.not_configured"
