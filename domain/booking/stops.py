"""Stopped sessions (停诊, issue: booking item 4): every upcoming booking of the session ends STOPPED.

The catalogue emits ``catalogue.session_stopped`` (payload ``hospitalCode``, ``sessionId``, ``reason``,
``source``) in the transaction that records a stop: found stopped by the HIS sync (``source: his``) or stopped by
the doctor in the app (``source: doctor``, stopped at the HIS first). The worker hands it here: each booking of the
session in HELD, PAID or CONFIRMED gets ``SessionStopped`` through ``BookingService.apply_event``, under its row
lock, so the state machine decides and the effects follow in the same transaction or through the outbox:

* the number goes back to the slot, with no waitlist offer (the session will not take place);
* a hold's payment order is closed at its channel; a paid booking is refunded in full (once: a payment that lands
  later on the stopped hold is refunded too); a registration at the HIS is the HIS's to drop, it stopped the session;
* the reminders are cancelled;
* the resident gets ``booking.session_stopped``, an urgent message that bypasses quiet hours;
* no penalty: STOPPED never counts towards a ban (APT-007/008), unlike NO_SHOW or a resident's cancellation.

Idempotent: a second delivery of the message finds the bookings STOPPED already and changes nothing. A booking
that moved on meanwhile (checked in at the counter) is left to the hospital and reported, not retried; any other
failure is raised after every other booking was handled, so that the message is delivered again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.booking.machine import SessionStopped
from domain.booking.model import UPCOMING
from domain.booking.use_cases import BookingService
from domain.kernel.errors import ConflictError

log = logging.getLogger(__name__)

DEFAULT_REASON = "医生停诊"


@dataclass(frozen=True, slots=True)
class StopReport:
    stopped: tuple[str, ...] = ()
    """The bookings this run moved to STOPPED."""
    left: tuple[str, ...] = ()
    """Upcoming bookings the machine refused to stop (checked in meanwhile): the hospital settles them on site."""


async def stop_session_bookings(
    service: BookingService, hospital_code: str, session_id: str, *, reason: str
) -> StopReport:
    """Stop every upcoming booking of one session (see the module's docstring)."""
    at = service.d.clock.now()
    event = SessionStopped(reason.strip()[:200] or DEFAULT_REASON, at)
    async with service.d.uow_factory() as uow:
        found = await uow.bookings.of_sessions(hospital_code, [session_id])
    stopped: list[str] = []
    left: list[str] = []
    failure: BaseException | None = None
    for booking in found:
        if booking.state not in UPCOMING:
            continue
        try:
            after = await service.apply_event(booking.id, event)
        except ConflictError as exc:
            left.append(booking.id)
            log.warning("booking_stop_refused", extra={"booking": booking.id, "code": exc.code})
            continue
        except Exception as exc:  # noqa: BLE001  (the others are still stopped; the message comes again)
            log.warning("booking_stop_failed", extra={"booking": booking.id, "error": type(exc).__name__})
            failure = failure or exc
            continue
        if after.state is not booking.state:
            stopped.append(booking.id)
    if failure is not None:
        raise failure
    return StopReport(tuple(stopped), tuple(left))


async def on_session_stopped(service: BookingService, payload: Mapping[str, Any]) -> StopReport:
    """The worker's handler of ``catalogue.session_stopped``."""
    return await stop_session_bookings(
        service,
        str(payload["hospitalCode"]),
        str(payload["sessionId"]),
        reason=str(payload.get("reason") or ""),
    )
