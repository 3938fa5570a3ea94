"""Catalogue values: what residents browse and what the HIS adapters return (typed, no vendor shapes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from domain.catalogue.rules import BookingRules


class HospitalLevel(StrEnum):
    PRIMARY = "primary"  # 一级
    SECONDARY = "secondary"  # 二级
    TERTIARY = "tertiary"  # 三级


class Period(StrEnum):
    MORNING = "morning"
    AFTERNOON = "afternoon"
    EVENING = "evening"


class SessionStatus(StrEnum):
    OPEN = "open"
    STOPPED = "stopped"
    """停诊: the doctor will not see patients in this session."""
    CLOSED = "closed"
    """Past, or withdrawn from the platform's pool by the hospital."""


class DoctorTitle(StrEnum):
    CHIEF = "chief"  # 主任医师
    ASSOCIATE_CHIEF = "associate_chief"  # 副主任医师
    ATTENDING = "attending"  # 主治医师
    RESIDENT = "resident"  # 住院医师 / 医师


@dataclass(frozen=True, slots=True)
class Department:
    hospital_code: str
    code: str
    name: str
    parent_code: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Doctor:
    hospital_code: str
    code: str
    """The HIS practitioner id."""
    name: str
    title: DoctorTitle
    department_codes: tuple[str, ...]
    specialties: tuple[str, ...] = ()
    """Free-text areas (e.g. 冠心病, 高血压), searched by symptom keyword."""
    introduction: str = ""
    on_leave: bool = False


@dataclass(frozen=True, slots=True)
class Slot:
    hospital_code: str
    id: str
    """The HIS slot id."""
    session_id: str
    start: datetime
    end: datetime
    capacity: int
    """How many of this slot's numbers are the platform's to sell."""
    his_booked: int = 0
    """Numbers of the platform's share the HIS already counts as taken (sync input; never lowers ours)."""


@dataclass(frozen=True, slots=True)
class ScheduleSession:
    """One clinic session (出诊): a doctor (or a department's general clinic) on a date and period."""

    hospital_code: str
    id: str
    department_code: str
    doctor_code: str | None
    day: date
    period: Period
    status: SessionStatus
    fee_fen: int
    slots: tuple[Slot, ...] = ()
    stop_reason: str | None = None
    version: str = ""
    """The HIS's version of the session (FHIR meta.versionId), for incremental sync."""


@dataclass(frozen=True, slots=True)
class PatientDocument:
    """What the HIS needs to find or create its own patient record."""

    name: str
    sex: str  # "M" | "F"
    birth_date: date
    id_type: str | None = None
    """CV02.01.101 code (01 居民身份证 ...); None for a child without an ID document."""
    id_number: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    guardian_id_type: str | None = None
    guardian_id_number: str | None = field(default=None, repr=False)
    guardian_name: str | None = None


@dataclass(frozen=True, slots=True)
class HisLock:
    lock_id: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class HisRegistration:
    registration_id: str
    queue_number: int | None = None


@dataclass(frozen=True, slots=True)
class QueuePosition:
    ahead: int
    current_number: int | None = None


@dataclass(frozen=True, slots=True)
class CatalogueChange:
    """A change pushed by a HIS (rest-hook) or found by a sync: which session to refresh."""

    hospital_code: str
    session_id: str


@dataclass(frozen=True, slots=True)
class Hospital:
    """A hospital in the registry, managed by operators."""

    code: str
    name: str
    level: HospitalLevel
    region_code: str
    """GB/T 2260 code of the county or district (e.g. 532301)."""
    address: str = ""
    phone: str = ""
    adapter: str = "fhir"
    adapter_settings: Mapping[str, str] = field(default_factory=dict)
    """e.g. {"base_url": ...}. Secrets are kept apart (``callback_secret``)."""
    pool_share_percent: int = 100
    """The share of each session's numbers released to the platform pool (the HIS reports the count)."""
    rules: BookingRules = field(default_factory=BookingRules)
    active: bool = True
    callback_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SlotView:
    slot_id: str
    start: datetime
    end: datetime
    capacity: int
    taken: int

    @property
    def remaining(self) -> int:
        return max(0, self.capacity - self.taken)


@dataclass(frozen=True, slots=True)
class SessionView:
    hospital_code: str
    session_id: str
    department_code: str
    doctor_code: str | None
    day: date
    period: Period
    status: SessionStatus
    fee_fen: int
    slots: tuple[SlotView, ...]
    stop_reason: str | None = None

    @property
    def remaining(self) -> int:
        return sum(s.remaining for s in self.slots) if self.status is SessionStatus.OPEN else 0


@dataclass(frozen=True, slots=True)
class CapacityConflict:
    id: int
    hospital_code: str
    session_id: str
    slot_id: str
    his_capacity: int
    our_taken: int
    detected_at: datetime
    resolved_at: datetime | None = None
    resolution: str | None = None


@dataclass(frozen=True, slots=True)
class SyncReport:
    hospital_code: str
    departments: int = 0
    doctors: int = 0
    sessions_seen: int = 0
    sessions_changed: int = 0
    slots_changed: int = 0
    stopped: int = 0
    conflicts: int = 0
