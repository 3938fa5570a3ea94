"""The SQLAlchemy unit of work (DESIGN D2): one transaction per ``async with`` block, committed only by an
explicit ``commit()``; anything else rolls back."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

from domain.kernel.crypto import FieldCipher
from domain.kernel.errors import ConflictError, ValidationError
from persistence.account.repository import SqlAccountRepository
from persistence.billing.repository import SqlBillPaymentRepository
from persistence.booking.repository import SqlBookingRepository
from persistence.booking.waitlist_repository import SqlWaitlistRepository
from persistence.catalogue.repository import SqlCatalogueRepository
from persistence.db import ConnectionSource
from persistence.kernel.audit import SqlAuditRepository
from persistence.kernel.outbox import SqlOutboxRepository
from persistence.notification.repository import SqlNotificationRepository, SqlScheduleRepository
from persistence.patient.repository import SqlPatientRepository
from persistence.payment.reconciliation import SqlReconciliationRepository
from persistence.payment.repository import SqlPaymentRepository


class UnitOfWorkStateError(ConflictError):
    code = "uow.state"


class UnstorableTextError(ValidationError):
    code = "request.bad_text"
    message = "请求包含无法识别的字符"


_TEXT_REFUSALS = (
    "invalid byte sequence",
    "invalid input for query argument",
    "unsupported unicode escape",
    "surrogates not allowed",
    "character with byte sequence",
)


def _is_text_refusal(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(marker in text for marker in _TEXT_REFUSALS)


class SqlUnitOfWork:
    """Implements ``domain.kernel.uow.UnitOfWork`` and, as features arrive, their repositories."""

    def __init__(self, source: ConnectionSource, *, cipher: FieldCipher | None = None) -> None:
        self._source = source
        self._cipher = cipher
        self._conn: AsyncConnection | None = None
        self._tx: AsyncTransaction | None = None
        self._owns_connection = False
        self._done = False
        self._outbox: SqlOutboxRepository | None = None
        self._audit: SqlAuditRepository | None = None
        self._accounts: SqlAccountRepository | None = None
        self._catalogue: SqlCatalogueRepository | None = None
        self._notifications: SqlNotificationRepository | None = None
        self._schedule: SqlScheduleRepository | None = None
        self._patients: SqlPatientRepository | None = None
        self._payments: SqlPaymentRepository | None = None
        self._reconciliation: SqlReconciliationRepository | None = None
        self._bill_payments: SqlBillPaymentRepository | None = None
        self._bookings: SqlBookingRepository | None = None
        self._waitlist: SqlWaitlistRepository | None = None

    @property
    def outbox(self) -> SqlOutboxRepository:
        if self._outbox is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._outbox

    @property
    def accounts(self) -> SqlAccountRepository:
        if self._accounts is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._accounts

    @property
    def catalogue(self) -> SqlCatalogueRepository:
        if self._catalogue is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._catalogue

    @property
    def notifications(self) -> SqlNotificationRepository:
        if self._notifications is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._notifications

    @property
    def schedule(self) -> SqlScheduleRepository:
        if self._schedule is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._schedule

    @property
    def patients(self) -> SqlPatientRepository:
        if self._patients is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._patients

    @property
    def payments(self) -> SqlPaymentRepository:
        if self._payments is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._payments

    @property
    def bill_payments(self) -> SqlBillPaymentRepository:
        if self._bill_payments is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._bill_payments

    @property
    def bookings(self) -> SqlBookingRepository:
        if self._bookings is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._bookings

    @property
    def waitlist(self) -> SqlWaitlistRepository:
        if self._waitlist is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._waitlist

    @property
    def reconciliation(self) -> SqlReconciliationRepository:
        if self._reconciliation is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._reconciliation

    @property
    def audit(self) -> SqlAuditRepository:
        if self._audit is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._audit

    @property
    def connection(self) -> AsyncConnection:
        if self._conn is None:
            raise UnitOfWorkStateError("the unit of work is not open")
        return self._conn

    @property
    def dialect(self) -> str:
        return self._source.dialect

    async def __aenter__(self) -> Self:
        if self._conn is not None:
            raise UnitOfWorkStateError("a unit of work is entered once")
        if self._source.fixed is not None:
            self._conn = self._source.fixed
            self._tx = await self._conn.begin_nested()
        else:
            self._conn = await self._source.checkout()
            self._owns_connection = True
            self._tx = await self._conn.begin()
        self._outbox = SqlOutboxRepository(self._conn)
        self._audit = SqlAuditRepository(self._conn)
        self._accounts = SqlAccountRepository(self._conn)
        self._catalogue = SqlCatalogueRepository(self._conn, self._cipher)
        self._notifications = SqlNotificationRepository(self._conn)
        self._schedule = SqlScheduleRepository(self._conn)
        self._patients = SqlPatientRepository(self._conn, self._cipher)
        self._payments = SqlPaymentRepository(self._conn)
        self._reconciliation = SqlReconciliationRepository(self._conn)
        self._bill_payments = SqlBillPaymentRepository(self._conn)
        self._bookings = SqlBookingRepository(self._conn)
        self._waitlist = SqlWaitlistRepository(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._done:
                await self.rollback()
        finally:
            if self._owns_connection and self._conn is not None:
                await self._conn.close()
        if isinstance(exc, DBAPIError) and _is_text_refusal(exc):
            raise UnstorableTextError("text the database cannot store") from None

    async def commit(self) -> None:
        if self._tx is None or self._done:
            raise UnitOfWorkStateError("nothing to commit")
        await self._tx.commit()
        self._done = True

    async def rollback(self) -> None:
        if self._tx is None or self._done:
            return
        self._done = True
        if self._tx.is_active:
            await self._tx.rollback()


def unit_of_work_factory(source: ConnectionSource, *, cipher: FieldCipher | None = None) -> Callable[[], SqlUnitOfWork]:
    def factory() -> SqlUnitOfWork:
        return SqlUnitOfWork(source, cipher=cipher)

    return factory
