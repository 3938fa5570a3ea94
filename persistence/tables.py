"""Imports every table module so the metadata is complete (Alembic and tests import this)."""

from __future__ import annotations

from persistence.account import tables as account_tables  # noqa: F401
from persistence.billing import tables as billing_tables  # noqa: F401
from persistence.booking import tables as booking_tables  # noqa: F401
from persistence.booking import waitlist_tables  # noqa: F401
from persistence.catalogue import tables as catalogue_tables  # noqa: F401
from persistence.kernel import audit_tables  # noqa: F401  (audit_log, audit_chain, audit_anchor)
from persistence.kernel import tables as kernel_tables
from persistence.notification import tables as notification_tables  # noqa: F401
from persistence.patient import tables as patient_tables  # noqa: F401
from persistence.payment import reconciliation as reconciliation_tables  # noqa: F401
from persistence.payment import tables as payment_tables  # noqa: F401

__all__ = ["kernel_tables"]
