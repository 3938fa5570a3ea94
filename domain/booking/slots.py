"""The slot pool: each slot of a session has the platform's capacity and the count of numbers taken.

``take`` and ``release`` are the pure form of the conditional update the use cases run in PostgreSQL
(``UPDATE slots SET taken = taken + 1 WHERE id = :id AND taken < capacity``, DESIGN §3): taking beyond the
capacity is refused, and so is releasing a number nobody holds. ``resize`` is what a catalogue sync may do to a
slot: a capacity below what was already sold is never applied (the catalogue records a conflict for operators).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from domain.booking.errors import SlotFullError, SlotMismatchError, SlotReleaseError
from domain.catalogue.model import ScheduleSession, SessionStatus, Slot, SlotView


@dataclass(frozen=True, slots=True)
class SlotStock:
    hospital_code: str
    slot_id: str
    capacity: int
    """How many of this slot's numbers are the platform's to sell (``catalogue.Slot.capacity``)."""
    taken: int = 0
    """Numbers held by live bookings (held, paid, confirmed, checked in, completed or no-show)."""

    def __post_init__(self) -> None:
        if self.capacity < 0 or self.taken < 0:
            raise ValueError("capacity and taken are never negative")

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.taken)

    @property
    def key(self) -> tuple[str, str]:
        return (self.hospital_code, self.slot_id)


def take(stock: SlotStock) -> SlotStock:
    """One more number taken, or ``SlotFullError`` (``booking.slot_full``) when none is left."""
    if stock.taken >= stock.capacity:
        raise SlotFullError(f"slot {stock.slot_id} full ({stock.taken}/{stock.capacity})")
    return replace(stock, taken=stock.taken + 1)


def release(stock: SlotStock) -> SlotStock:
    """One number given back, or ``SlotReleaseError`` when none is taken (a double release is a bug)."""
    if stock.taken <= 0:
        raise SlotReleaseError(f"slot {stock.slot_id} has nothing taken")
    return replace(stock, taken=stock.taken - 1)


@dataclass(frozen=True, slots=True)
class Resized:
    stock: SlotStock
    conflict: bool
    """The HIS offered fewer numbers than were already sold: the capacity stays at what was sold."""


def resize(stock: SlotStock, capacity: int) -> Resized:
    """A sync's new capacity, never below what was taken (mirrors ``CatalogueService._apply_session``)."""
    if capacity < 0:
        raise ValueError("negative capacity")
    if capacity < stock.taken:
        return Resized(replace(stock, capacity=stock.taken), conflict=True)
    return Resized(replace(stock, capacity=capacity), conflict=False)


SlotPool = Mapping[tuple[str, str], SlotStock]
"""Slots by (hospital code, slot id)."""


def take_in(pool: SlotPool, hospital_code: str, slot_id: str) -> dict[tuple[str, str], SlotStock]:
    stock = _stock(pool, hospital_code, slot_id)
    return {**pool, stock.key: take(stock)}


def release_in(pool: SlotPool, hospital_code: str, slot_id: str) -> dict[tuple[str, str], SlotStock]:
    stock = _stock(pool, hospital_code, slot_id)
    return {**pool, stock.key: release(stock)}


def _stock(pool: SlotPool, hospital_code: str, slot_id: str) -> SlotStock:
    stock = pool.get((hospital_code, slot_id))
    if stock is None:
        raise SlotMismatchError(f"unknown slot {hospital_code}/{slot_id}")
    return stock


@dataclass(frozen=True, slots=True)
class SlotOffer:
    """A slot as a booking sees it when it takes (or re-takes) one: where and when, what it costs, whether its
    session is open, and its stock as read under the lock of the transaction that will take it."""

    hospital_code: str
    session_id: str
    slot_id: str
    department_code: str
    doctor_code: str | None
    start: datetime
    end: datetime
    fee_fen: int
    session_status: SessionStatus
    stock: SlotStock

    def __post_init__(self) -> None:
        if self.stock.key != (self.hospital_code, self.slot_id):
            raise ValueError("the stock is of another slot")
        if self.fee_fen < 0:
            raise ValueError("negative fee")

    @property
    def open(self) -> bool:
        return self.session_status is SessionStatus.OPEN

    @classmethod
    def of(cls, session: ScheduleSession, slot: Slot | SlotView, *, taken: int) -> SlotOffer:
        """From the catalogue's session and one of its slots, with the current taken count."""
        slot_id = slot.id if isinstance(slot, Slot) else slot.slot_id
        return cls(
            hospital_code=session.hospital_code,
            session_id=session.id,
            slot_id=slot_id,
            department_code=session.department_code,
            doctor_code=session.doctor_code,
            start=slot.start,
            end=slot.end,
            fee_fen=session.fee_fen,
            session_status=session.status,
            stock=SlotStock(session.hospital_code, slot_id, slot.capacity, taken),
        )
