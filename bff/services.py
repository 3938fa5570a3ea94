"""Accessors for the feature services the composition root hands the edge (shared by every audience)."""

from __future__ import annotations

from litestar.datastructures import State

from bff.deps import BffDeps
from domain.account.use_cases import AccountService
from domain.billing.use_cases import BillingService
from domain.booking.use_cases import BookingService
from domain.catalogue.use_cases import CatalogueService
from domain.kernel.errors import UnavailableError
from domain.notification.use_cases import NotificationService
from domain.patient.use_cases import PatientService
from domain.payment.use_cases import PaymentService


def deps_of(state: State) -> BffDeps:
    deps: BffDeps = state.deps
    return deps


def account_service(state: State) -> AccountService:
    service = deps_of(state).accounts
    if service is None:
        raise UnavailableError("accounts are not configured", code="auth.not_configured")
    return service


def notification_service(state: State) -> NotificationService:
    service = deps_of(state).notifications
    if service is None:
        raise UnavailableError("notifications are not configured", code="notification.not_configured")
    return service


def catalogue_service(state: State) -> CatalogueService:
    service = deps_of(state).catalogue
    if service is None:
        raise UnavailableError("the catalogue is not configured", code="catalogue.not_configured")
    return service


def patient_service(state: State) -> PatientService:
    service = deps_of(state).patients
    if service is None:
        raise UnavailableError("patients are not configured", code="patient.not_configured")
    return service


def payment_service(state: State) -> PaymentService:
    service = deps_of(state).payments
    if service is None:
        raise UnavailableError("payments are not configured", code="payment.not_configured")
    return service


def billing_service(state: State) -> BillingService:
    service = deps_of(state).billing
    if service is None:
        raise UnavailableError("outpatient bills are not configured", code="billing.not_configured")
    return service


def booking_service(state: State) -> BookingService:
    service = deps_of(state).bookings
    if service is None:
        raise UnavailableError("booking is not configured", code="booking.not_configured")
    return service
