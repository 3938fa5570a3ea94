"""Reading FHIR R4 Invoices into outpatient bills (integrations/his/resources.py): the official R4 example parses,
fen come out exact through Decimal, and what breaks the profile's billing rules is refused by name."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.billing.model import BillStatus
from integrations.his.fhir import _yuan_number
from integrations.his.resources import FhirParseError, Money, loads, parse_invoice, parse_money, to_bill
from sandbox.his.fhir import yuan

OFFICIAL_INVOICE = """{
  "resourceType": "Invoice",
  "id": "example",
  "text": {
    "status": "generated",
    "div": "<div xmlns=\\"http://www.w3.org/1999/xhtml\\">Example of Invoice</div>"
  },
  "identifier": [
    {
      "system": "http://myHospital.org/Invoices",
      "value": "654321"
    }
  ],
  "status": "issued",
  "subject": {
    "reference": "Patient/example"
  },
  "date": "2017-01-25T08:00:00+01:00",
  "participant": [
    {
      "role": {
        "coding": [
          {
            "system": "http://snomed.info/sct",
            "code": "17561000",
            "display": "Cardiologist"
          }
        ]
      },
      "actor": {
        "reference": "Practitioner/example"
      }
    }
  ],
  "issuer": {
    "identifier": {
      "system": "http://myhospital/NamingSystem/departments",
      "value": "CARD_INTERMEDIATE_CARE"
    }
  },
  "account": {
    "reference": "Account/example"
  },
  "totalNet": {
    "value": 40,
    "currency": "EUR"
  },
  "totalGross": {
    "value": 48,
    "currency": "EUR"
  }
}"""
"""The R4 (v4.0.0) example ``invoice-example.json``, as published on its page ``invoice-example.json.html`` (the copy
in HL7China/FHIR-R4, commit e5505210abefa3a99baf8437dbf269329c6705c4, HTML-unescaped; CC0)."""


def profiled() -> dict[str, Any]:
    """An Invoice of our profile: two lines, 0.10 + 98.97 yuan (three boxes at 32.99)."""
    raw: dict[str, Any] = loads(
        """{
      "resourceType": "Invoice", "id": "INV100000001", "status": "issued",
      "type": {"text": "门诊缴费：检验费 等2项"},
      "subject": {"reference": "Patient/100000077", "identifier": {"system": "urn:hsp:patid", "value": "100000077"}},
      "date": "2025-03-03T09:30:00+08:00",
      "participant": [{"role": {"coding": [{"code": "orderer"}]},
        "actor": {"reference": "Practitioner/P1001", "display": "李建国"}}],
      "issuer": {"identifier": {"system": "urn:hsp:department", "value": "D102"}, "display": "心血管内科"},
      "lineItem": [
        {"sequence": 1, "chargeItemCodeableConcept": {"coding": [
            {"system": "urn:hsp:charge-item", "code": "CL0101", "display": "医用棉签"},
            {"system": "urn:hsp:fee-category", "code": "material", "display": "材料费"}]},
         "priceComponent": [{"type": "base", "factor": 1, "amount": {"value": 0.10, "currency": "CNY"}},
                            {"type": "informational", "amount": {"value": 0.10, "currency": "CNY"}}]},
        {"sequence": 2, "chargeItemCodeableConcept": {"coding": [
            {"system": "urn:hsp:charge-item", "code": "XY0003"},
            {"system": "urn:hsp:fee-category", "code": "western", "display": "西药费"}],
            "text": "奥美拉唑肠溶胶囊"},
         "priceComponent": [{"type": "base", "factor": 3.0, "amount": {"value": 98.97, "currency": "CNY"}}]}
      ],
      "totalNet": {"value": 99.07, "currency": "CNY"},
      "totalGross": {"value": 99.07, "currency": "CNY"}
    }"""
    )
    return raw


def test_the_official_example_parses_but_is_no_bill_of_ours() -> None:
    invoice = parse_invoice(loads(OFFICIAL_INVOICE))
    assert (invoice.id, invoice.status) == ("example", "issued")
    assert invoice.subject is not None
    assert invoice.subject.id_of("Patient") == "example"
    assert invoice.date == datetime(2017, 1, 25, 7, 0, tzinfo=UTC)
    assert invoice.participants[0][0] == "17561000"
    assert invoice.total_gross == Money(Decimal(48), "EUR")
    assert invoice.receipt_no is None
    with pytest.raises(FhirParseError, match=r"Invoice\.lineItem: is required"):
        to_bill(invoice, "H9")
    raw = copy.deepcopy(loads(OFFICIAL_INVOICE))
    raw["lineItem"] = [{"chargeItemReference": {"reference": "ChargeItem/example"}}]
    with pytest.raises(FhirParseError, match="chargeItemReference is not profiled"):
        to_bill(parse_invoice(raw), "H9")


def test_a_profiled_invoice_is_a_bill_in_exact_fen() -> None:
    bill = to_bill(parse_invoice(profiled()), "H001")
    assert (bill.hospital_code, bill.bill_id, bill.patid) == ("H001", "INV100000001", "100000077")
    assert bill.status is BillStatus.UNPAID
    assert [(i.code, i.name, i.quantity, i.unit_price_fen, i.amount_fen, i.category) for i in bill.items] == [
        ("CL0101", "医用棉签", 1, 10, 10, "材料费"),
        ("XY0003", "奥美拉唑肠溶胶囊", 3, 3299, 9897, "西药费"),
    ]
    assert (bill.total_fen, bill.self_pay_fen, bill.insured_fen) == (9907, 9907, 0)
    assert (bill.title, bill.department, bill.doctor_name) == ("门诊缴费：检验费 等2项", "心血管内科", "李建国")
    assert bill.issued_at == datetime(2025, 3, 3, 1, 30, tzinfo=UTC)

    untitled = profiled()
    del untitled["type"], untitled["participant"], untitled["issuer"], untitled["totalNet"]
    plain = to_bill(parse_invoice(untitled), "H001")
    assert (plain.title, plain.department, plain.doctor_name) == ("门诊缴费：材料费 等2项", "", "")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("draft", BillStatus.UNPAID),
        ("issued", BillStatus.UNPAID),
        ("balanced", BillStatus.PAID),
        ("cancelled", BillStatus.CANCELLED),
        ("entered-in-error", BillStatus.CANCELLED),
    ],
)
def test_invoice_statuses(status: str, expected: BillStatus) -> None:
    assert to_bill(parse_invoice(profiled() | {"status": status}), "H001").status is expected


def _break(path: str, value: Any) -> dict[str, Any]:
    raw = profiled()
    target: Any = raw
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is DELETE:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return raw


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("status", "paid", "Invoice.status"),
        ("id", DELETE, "Invoice.id"),
        ("subject", DELETE, "Invoice.subject"),
        ("date", "2025-03-03", "Invoice.date"),
        ("lineItem.0.priceComponent.0.amount.value", Decimal("0.101"), "lineItem[0].priceComponent.amount"),
        ("lineItem.0.priceComponent.0.amount.currency", "USD", "lineItem[0].priceComponent.amount.currency"),
        ("lineItem.0.priceComponent.0.type", "tax", "lineItem[0].priceComponent"),
        ("lineItem.0.priceComponent.0.type", "price", "lineItem[0].priceComponent[0].type"),
        ("lineItem.1.priceComponent.0.factor", Decimal("2.5"), "lineItem[1].priceComponent.factor"),
        ("lineItem.1.priceComponent.0.factor", 0, "lineItem[1].priceComponent.factor"),
        ("lineItem.1.priceComponent.0.factor", 2, "lineItem[1].priceComponent.amount"),
        ("lineItem.1.priceComponent.0.amount.value", Decimal("-98.97"), "lineItem[1].priceComponent.amount"),
        ("lineItem.0.chargeItemCodeableConcept.coding.1", DELETE, "fee-category"),
        ("lineItem.0.chargeItemCodeableConcept.coding.0.system", "urn:other", "charge-item"),
        ("lineItem.0.chargeItemCodeableConcept", DELETE, "lineItem[0].chargeItem[x]"),
        ("totalGross.value", Decimal("99.08"), "Invoice.totalGross"),
        ("totalNet.value", Decimal("99.06"), "Invoice.totalNet"),
        ("extension", [{"url": "insured", "valueMoney": {"value": 10, "currency": "CNY"}}], "insured"),
    ],
)
def test_what_breaks_the_billing_profile_is_named(path: str, value: Any, where: str) -> None:
    raw = _break(path, value)
    with pytest.raises(FhirParseError) as broken:
        to_bill(parse_invoice(raw), "H001")
    assert where in str(broken.value)
    assert "100000077" not in str(broken.value)  # never the patient's id


def test_money_read_through_a_binary_float_is_refused() -> None:
    raw = profiled()
    raw["totalGross"]["value"] = 99.07  # a float, not a Decimal
    with pytest.raises(FhirParseError, match="never a binary float"):
        parse_invoice(raw)
    assert "100000077" not in repr(parse_invoice(profiled()))


@given(st.integers(min_value=1, max_value=10**13))
def test_amounts_go_out_and_come_back_as_the_same_fen(fen: int) -> None:
    for number in (_yuan_number(fen), yuan(fen)):  # ours to the HIS, the sandbox HIS's to us
        text = json.dumps({"value": number})
        assert parse_money({**loads(text), "currency": "CNY"}, "Money").to_fen() == fen


def test_only_positive_whole_fen_are_settled() -> None:
    for wrong in (0, -1, 10**15):
        with pytest.raises(ValueError, match="positive"):
            _yuan_number(wrong)
    assert json.dumps(_yuan_number(1)) == "0.01"
    assert json.dumps(_yuan_number(30)) == "0.3"
    assert json.dumps(_yuan_number(9897)) == "98.97"
    assert json.dumps(_yuan_number(10_000)) == "100"
