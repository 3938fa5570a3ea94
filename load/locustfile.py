"""A resident's mixed day on the patient API, for locust: mostly browsing, sometimes booking a free slot found by
browsing, paying it through the WeChat Pay sandbox and checking the booking, sometimes cancelling.

Run by ``python -m load.mixed_day`` (which seeds the residents, starts the app with the sandboxes mounted and
reads the results); by hand, against an app that mounts the sandboxes (``HSP_SANDBOX__MOUNT=true``) and knows the
residents' tokens::

    MIXED_DAY_RESIDENTS=residents.json .venv/bin/python -m locust -f load/locustfile.py --headless \\
        -u 20 -r 4 -t 60s --host http://127.0.0.1:8000

``MIXED_DAY_RESIDENTS`` is a JSON list of ``{"token", "patientId", "address"}``: each user takes the next one (its
own access token and its own ``X-Forwarded-For`` address; the app must trust loopback as a proxy) and stops when
none is left. ``MIXED_DAY_COUNTS``, when set, is where the scenario's counters are written at the end (JSON);
``MIXED_DAY_SEED`` seeds the users' choices.

Expected refusals (a full slot, a limit, a window, 429) are marked as successes of locust's request and counted
as ``refusal:<action>:<code>``; 5xx, transport failures and answers the scenario does not expect are failures.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task
from locust.exception import StopUser

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:  # locust loads this file by path: make ``load`` importable from the repository
    sys.path.insert(0, ROOT)

from domain.kernel.clock import SHANGHAI  # noqa: E402
from load.mixed_day import (  # noqa: E402
    ACTION_WEIGHTS,
    LIVE_STATES,
    PAY_APP_ID,
    PAY_CHECKS,
    SEARCH_KEYWORDS,
    THINK_SECONDS,
    FreeSlot,
    Outcome,
    free_slots,
    judge,
    prepay_id_of,
    problem_code,
)

API = "/api/v1/patient"
CATALOGUE = f"{API}/catalogue"
SANDBOX_PAY = "/sandbox/wechatpay/test/pay"
REMEMBERED_SLOTS = 40
"""Free slots a resident keeps in mind from its last screens of sessions."""

COUNTS: Counter[str] = Counter()
"""``action:<action>:<outcome>``, ``refusal:<action>:<code>``, ``status:<action>:<status>``, ``event:<name>``."""
_next_user = itertools.count()
_residents: list[dict[str, str]] | None = None


def residents() -> list[dict[str, str]]:
    global _residents
    if _residents is None:
        path = os.environ.get("MIXED_DAY_RESIDENTS")
        if not path:
            raise StopUser  # nobody to play
        _residents = json.loads(Path(path).read_text(encoding="utf-8"))
    return _residents


def write_counts(**_kwargs: Any) -> None:
    path = os.environ.get("MIXED_DAY_COUNTS")
    if path:
        Path(path).write_text(json.dumps(dict(COUNTS), ensure_ascii=False), encoding="utf-8")


events.test_stop.add_listener(write_counts)  # type: ignore[no-untyped-call]  # locust leaves it untyped


@dataclass
class MyBooking:
    state: str
    order_id: str | None


class Resident(HttpUser):
    """One resident over a day: each action is followed by ``THINK_SECONDS`` on the screen."""

    wait_time = between(*THINK_SECONDS)

    def on_start(self) -> None:
        index = next(_next_user)
        pool = residents()
        if index >= len(pool):
            COUNTS["event:user_without_resident"] += 1
            raise StopUser
        me = pool[index]
        self.patient_id = me["patientId"]
        self.headers = {"Authorization": f"Bearer {me['token']}", "X-Forwarded-For": me["address"]}
        self.rng = random.Random(int(os.environ.get("MIXED_DAY_SEED", "0")) * 1_000_003 + index)
        self.hospitals: list[str] = []
        self.free: list[FreeSlot] = []
        self.mine: dict[str, MyBooking] = {}

    # ------------------------------------------------------------------------------------ one request

    def call(
        self,
        action: str,
        method: str,
        path: str,
        *,
        name: str,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        idempotent: bool = False,
    ) -> tuple[Outcome, Any]:
        headers = dict(self.headers)
        if idempotent:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        with self.client.request(
            method, path, name=name, params=params, json=body, headers=headers, catch_response=True
        ) as response:
            status = int(response.status_code or 0)
            try:
                answer: Any = response.json() if response.content else None
            except ValueError:
                answer = None
            code = problem_code(answer) if status >= 400 else None
            outcome = judge(action, status, code)
            if outcome is Outcome.FAILED:
                response.failure(f"{status} {code or ''}".strip())
            else:
                response.success()
        COUNTS[f"action:{action}:{outcome.value}"] += 1
        COUNTS[f"status:{action}:{status}"] += 1
        if outcome is Outcome.REFUSED:
            COUNTS[f"refusal:{action}:{code or status}"] += 1
        return outcome, answer

    # ------------------------------------------------------------------------------------ screens

    def today(self) -> date:
        return datetime.now(UTC).astimezone(SHANGHAI).date()

    def see_sessions(self, answer: Any) -> None:
        found = free_slots(answer, today=self.today())
        if found:
            self.free = (found + self.free)[:REMEMBERED_SLOTS]

    def hospital_list(self) -> list[str]:
        outcome, page = self.call("browse", "GET", f"{CATALOGUE}/hospitals", name=f"{CATALOGUE}/hospitals")
        if outcome is Outcome.OK and isinstance(page, dict):
            self.hospitals = [h["code"] for h in page.get("items", []) if isinstance(h, dict) and "code" in h]
        return self.hospitals

    def departments(self, hospital: str) -> list[str]:
        outcome, answer = self.call(
            "browse",
            "GET",
            f"{CATALOGUE}/hospitals/{hospital}/departments",
            name=f"{CATALOGUE}/hospitals/[code]/departments",
        )
        if outcome is not Outcome.OK or not isinstance(answer, dict):
            return []
        return [d["code"] for d in answer.get("items", []) if isinstance(d, dict) and "code" in d]

    def department_sessions(self, hospital: str, department: str) -> None:
        outcome, answer = self.call(
            "browse",
            "GET",
            f"{CATALOGUE}/hospitals/{hospital}/departments/{department}/sessions",
            name=f"{CATALOGUE}/hospitals/[code]/departments/[code]/sessions",
        )
        if outcome is Outcome.OK:
            self.see_sessions(answer)

    def my_bookings(self) -> None:
        """The "my bookings" screen: the states the server holds now."""
        outcome, answer = self.call("check", "GET", f"{API}/bookings", name=f"{API}/bookings")
        if outcome is Outcome.OK and isinstance(answer, dict):
            for item in answer.get("items", []):
                if isinstance(item, dict) and item.get("id") in self.mine:
                    self.mine[item["id"]] = MyBooking(str(item.get("state")), item.get("paymentOrderId"))

    # ------------------------------------------------------------------------------------ actions

    @task(ACTION_WEIGHTS["browse"])
    def browse(self) -> None:
        """Hospitals, a hospital's departments, then a department's doctors or a search by symptom or name (or
        the department's general sessions), then a doctor's profile and sessions."""
        COUNTS["event:browse"] += 1
        hospitals = self.hospital_list()
        if not hospitals:
            return
        hospital = self.rng.choice(hospitals)
        departments = self.departments(hospital)
        if not departments:
            return
        department = self.rng.choice(departments)
        way = self.rng.random()
        if way < 0.2:
            self.department_sessions(hospital, department)
            return
        if way < 0.7:
            params = {"hospital": hospital, "department": department}
        else:
            params = {"q": self.rng.choice(SEARCH_KEYWORDS)}
        outcome, page = self.call("browse", "GET", f"{CATALOGUE}/doctors", name=f"{CATALOGUE}/doctors", params=params)
        doctors = page.get("items", []) if outcome is Outcome.OK and isinstance(page, dict) else []
        doctors = [d for d in doctors if isinstance(d, dict) and "code" in d and "hospitalCode" in d]
        if not doctors:
            return
        doctor = self.rng.choice(doctors)
        where = f"{CATALOGUE}/hospitals/{doctor['hospitalCode']}/doctors/{doctor['code']}"
        if self.rng.random() < 0.5:
            self.call("browse", "GET", where, name=f"{CATALOGUE}/hospitals/[code]/doctors/[code]")
        outcome, sessions = self.call(
            "browse", "GET", f"{where}/sessions", name=f"{CATALOGUE}/hospitals/[code]/doctors/[code]/sessions"
        )
        if outcome is Outcome.OK:
            self.see_sessions(sessions)

    @task(ACTION_WEIGHTS["book"])
    def book(self) -> None:
        """Book one of the free slots seen while browsing (a department's sessions first if none was seen)."""
        if not self.free:
            hospitals = self.hospitals or self.hospital_list()
            if hospitals:
                hospital = self.rng.choice(hospitals)
                departments = self.departments(hospital)
                if departments:
                    self.department_sessions(hospital, self.rng.choice(departments))
        if not self.free:
            COUNTS["event:no_free_slot_seen"] += 1
            return
        slot = self.free.pop(self.rng.randrange(len(self.free)))
        body = {"patientId": self.patient_id, "hospitalCode": slot.hospital_code, "slotId": slot.slot_id}
        outcome, answer = self.call(
            "book", "POST", f"{API}/bookings", name=f"{API}/bookings [hold]", body=body, idempotent=True
        )
        if outcome is Outcome.OK and isinstance(answer, dict):
            COUNTS["event:booked"] += 1
            self.mine[str(answer["id"])] = MyBooking(str(answer.get("state")), answer.get("paymentOrderId"))

    @task(ACTION_WEIGHTS["pay"])
    def pay(self) -> None:
        """Pay a held booking with WeChat Pay: the signed parameters, the sandbox's "pay now" with the prepay id,
        then the booking read until it is no longer HELD (the notification is handled, the worker moves it on).
        With nothing to pay, the "my bookings" screen."""
        unpaid = [(bid, b) for bid, b in self.mine.items() if b.state == "held" and b.order_id]
        if not unpaid:
            self.my_bookings()
            return
        booking_id, booking = self.rng.choice(unpaid)
        outcome, answer = self.call(
            "pay",
            "POST",
            f"{API}/payment-orders/{booking.order_id}/pay",
            name=f"{API}/payment-orders/[id]/pay",
            body={"channel": "wechat", "appId": PAY_APP_ID},
            idempotent=True,
        )
        if outcome is Outcome.OK:
            prepay = prepay_id_of(answer)
            if prepay is None:
                COUNTS["event:pay_answer_without_prepay_id"] += 1
                return
            outcome, _ = self.call("pay", "POST", SANDBOX_PAY, name=SANDBOX_PAY, body={"prepayId": prepay})
            if outcome is not Outcome.OK:
                return
            COUNTS["event:paid_at_channel"] += 1
        state = booking.state
        for _ in range(PAY_CHECKS):
            time.sleep(1.0)  # gevent's, patched by locust: the other users go on meanwhile
            outcome, answer = self.call("check", "GET", f"{API}/bookings/{booking_id}", name=f"{API}/bookings/[id]")
            if outcome is Outcome.OK and isinstance(answer, dict):
                state = str(answer.get("state"))
                self.mine[booking_id] = MyBooking(state, answer.get("paymentOrderId"))
                if state != "held":
                    break
        COUNTS[f"event:after_pay_{state}"] += 1
        if state in ("paid", "confirmed"):
            COUNTS["event:paid_seen"] += 1

    @task(ACTION_WEIGHTS["cancel"])
    def cancel(self) -> None:
        """Cancel one of my live bookings (refunded when paid; too late after the cut-off). With none, the "my
        bookings" screen."""
        live = [bid for bid, b in self.mine.items() if b.state in LIVE_STATES]
        if not live:
            self.my_bookings()
            return
        booking_id = self.rng.choice(live)
        outcome, answer = self.call(
            "cancel",
            "POST",
            f"{API}/bookings/{booking_id}/cancel",
            name=f"{API}/bookings/[id]/cancel",
            idempotent=True,
        )
        if outcome is Outcome.OK and isinstance(answer, dict):
            COUNTS["event:cancelled"] += 1
            self.mine[booking_id] = MyBooking(str(answer.get("state")), answer.get("paymentOrderId"))
        elif outcome is Outcome.REFUSED:
            self.my_bookings()
