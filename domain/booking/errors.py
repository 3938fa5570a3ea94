"""Booking errors: each subclasses one category of ``domain.kernel.errors`` and carries a stable dotted code
and a Chinese message shown to residents as is. Rules with configurable numbers fill them into the message."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Self

from domain.kernel.clock import to_shanghai
from domain.kernel.errors import ConflictError, ForbiddenError, ValidationError

# --------------------------------------------------------------------------------------------------------- transitions


class IllegalBookingTransitionError(ConflictError):
    code = "booking.illegal_transition"
    message = "预约状态已变化，请刷新后重试"


class HoldNotExpiredError(ConflictError):
    code = "booking.hold_not_expired"
    message = "预约尚在支付有效期内"


class PaymentMismatchError(ConflictError):
    code = "booking.payment_mismatch"
    message = "支付订单与预约不一致"


class RegistrationMismatchError(ConflictError):
    code = "booking.registration_mismatch"
    message = "医院登记信息与预约不一致，请联系客服"


# --------------------------------------------------------------------------------------------------------------- slots


class SlotFullError(ConflictError):
    code = "booking.slot_full"
    message = "该时段号源已约满，请选择其他时段"


class SlotReleaseError(ConflictError):
    """Releasing a number nobody holds: a bug or a double release, never silently absorbed."""

    code = "booking.slot_not_taken"
    message = "号源状态异常，请稍后再试"


class SlotMismatchError(ConflictError):
    code = "booking.slot_mismatch"
    message = "号源信息已变化，请刷新后重试"


class SessionNotOpenError(ConflictError):
    code = "booking.session_not_open"
    message = "该出诊已停诊或已结束，请选择其他时段"


# ------------------------------------------------------------------------------------------- window (APT-004, APT-010)


class OutsideWindowError(ConflictError):
    """A slot outside the booking window of its hospital (APT-004) or booking outside opening hours (APT-010)."""

    code = "booking.window"
    message = "该时段当前不可预约"


class NotOpenYetError(OutsideWindowError):
    code = "booking.not_open_yet"
    message = "该日号源尚未放号"


class SameDayNotAllowedError(OutsideWindowError):
    code = "booking.same_day_not_allowed"
    message = "该医院不提供当日预约，请到医院现场挂号"


class SlotPastError(OutsideWindowError):
    code = "booking.slot_past"
    message = "该时段已过，请选择其他时段"


class BookingClosedHoursError(OutsideWindowError):
    code = "booking.closed_hours"
    message = "当前时段暂停预约服务，请稍后再试"


# ---------------------------------------------------------------------------------------- cancel, reschedule (APT-006)


class CancelTooLateError(ConflictError):
    code = "booking.cancel_too_late"
    message = "已过取消截止时间，无法取消预约"


class RescheduleTooLateError(ConflictError):
    code = "booking.reschedule_too_late"
    message = "已过改约截止时间，无法改约"


class RescheduleNotAllowedError(ConflictError):
    code = "booking.reschedule_not_allowed"
    message = "只能改约到同一医院同一科室、同等费用的其他时段"


# -------------------------------------------------------------------------------- check-in (APT-002, APT-007, APT-010)


class CheckInTooEarlyError(ConflictError):
    code = "booking.checkin_too_early"
    message = "尚未到签到时间"


class CheckInTooLateError(ConflictError):
    code = "booking.checkin_too_late"
    message = "已超过签到时间，本次预约已失效"


class CheckInWindowOpenError(ConflictError):
    code = "booking.checkin_window_open"
    message = "签到时间尚未结束"


class IdentityMismatchError(ForbiddenError):
    """APT-002: the person collecting the number is not the person booked: no number is issued."""

    code = "booking.identity_mismatch"
    message = "就诊人与预约人不一致，无法取号"


# ------------------------------------------------------------------------------------- admission (APT-002/003/005/008)


class RealNameRequiredError(ValidationError):
    """APT-002/003: booking needs a verified real-name patient."""

    code = "booking.real_name_required"
    message = "请先完成就诊人实名认证"


class DocumentRequiredError(RealNameRequiredError):
    code = "booking.document_required"
    message = "该医院要求使用就诊人本人证件（身份证或户口簿）预约，请先补充证件信息"


class GuardianRequiredError(RealNameRequiredError):
    code = "booking.guardian_required"
    message = "无证件儿童须由已实名认证的监护人代为预约"


class LimitExceededError(ConflictError):
    """APT-005: a per-person limit, counted across every account that manages the person and every hospital.
    ``template`` is the message with the configured numbers filled in (``refusal``)."""

    code = "booking.limit"
    message = "预约次数已达上限"
    template: ClassVar[str] = "预约次数已达上限"

    @classmethod
    def refusal(cls, detail: str, **values: object) -> Self:
        return cls(detail, message=cls.template.format(**values), extra=values)


class DepartmentDayLimitError(LimitExceededError):
    code = "booking.limit_department_day"
    message = "同一就诊人同一就诊日在同一医院同一科室预约次数已达上限"
    template = "同一就诊人同一就诊日在同一医院同一科室只能预约{limit}个号"


class DayLimitError(LimitExceededError):
    code = "booking.limit_day"
    message = "同一就诊人同一就诊日预约次数已达上限"
    template = "同一就诊人同一就诊日最多预约{limit}个号"


class ShortWindowLimitError(LimitExceededError):
    code = "booking.limit_short_window"
    message = "同一就诊人近期预约次数已达上限"
    template = "同一就诊人{days}日内最多预约{limit}个号"


class LongWindowLimitError(LimitExceededError):
    code = "booking.limit_long_window"
    message = "同一就诊人近期预约次数已达上限"
    template = "同一就诊人{months}个月内最多预约{limit}个号"


class BannedError(ForbiddenError):
    """APT-008: online booking suspended after no-shows (on-site registration stays open)."""

    code = "booking.banned"
    message = "因爽约次数较多，暂停网上预约，您仍可到医院现场挂号"
    template: ClassVar[str] = "因爽约次数较多，{until}前暂停网上预约，您仍可到医院现场挂号"

    @classmethod
    def until(cls, until: datetime, detail: str) -> Self:
        local = to_shanghai(until)
        return cls(
            detail,
            message=cls.template.format(until=f"{local:%Y年%m月%d日 %H:%M}"),
            extra={"until": until.isoformat()},
        )
