"""Logs never carry ID numbers, phones, names, tokens or secrets (SEC-L-05, SEC-P-08)."""

from __future__ import annotations

import io
import json

import structlog

from bootstrap.logs import configure_logging
from domain.privacy.scrub import REDACTED, scrub_event, scrub_text

ID_NUMBER = "11010519491231002X"  # the GB 11643 example number
PHONE = "13812345678"


def test_sec_l_05_id_numbers_and_phones_are_masked_inside_free_text() -> None:
    text = scrub_text(f"patient {ID_NUMBER} called from +86 {PHONE} and 8613912345678")
    assert ID_NUMBER not in text
    assert PHONE not in text
    assert "110***********002X" in text
    assert "138****5678" in text
    assert "139****5678" in text


def test_sec_l_05_tokens_are_removed() -> None:
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"
    text = scrub_text(f"Authorization: Bearer abcdefghijklmnop and {jwt}")
    assert "abcdefghijklmnop" not in text
    assert jwt not in text


def test_sec_l_05_sensitive_keys_are_replaced_whole_at_any_depth() -> None:
    event = scrub_event(
        {
            "event": "login",
            "phone": PHONE,
            "user": {"name": "张三", "idNumber": ID_NUMBER, "password": "hunter2", "city": "昆明"},
            "items": [{"token": "t"}],
            "status": 200,
        }
    )
    assert event["phone"] == REDACTED
    assert event["user"]["name"] == REDACTED
    assert event["user"]["password"] == REDACTED
    assert ID_NUMBER not in json.dumps(event, ensure_ascii=False)
    assert event["user"]["city"] == "昆明"
    assert event["items"][0]["token"] == REDACTED
    assert event["status"] == 200


def test_ordinary_numbers_survive() -> None:
    assert scrub_text("order 202611220001 took 1234 ms") == "order 202611220001 took 1234 ms"


def test_configured_logger_output_is_scrubbed(capsys: object) -> None:
    configure_logging(level="INFO", json=True)
    buffer = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    structlog.get_logger("t").info("verify", id_number=ID_NUMBER, note=f"phone {PHONE}")
    line = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert line["id_number"] == REDACTED
    assert PHONE not in line["note"]
