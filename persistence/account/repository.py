"""The account repository on SQLAlchemy Core."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.account.model import (
    AccountKind,
    Audience,
    Identity,
    PractitionerLink,
    Provider,
    RefreshGrant,
    ResidentAccount,
    Restriction,
    Session,
    StaffAccount,
    StaffRole,
    StaffStatus,
)
from domain.account.ports import IdentityRaceError, SmsCode
from persistence.account.tables import (
    account_identities,
    refresh_grants,
    resident_accounts,
    sessions,
    sms_codes,
    staff_accounts,
    staff_links,
    staff_login_failures,
)


def _resident(row: RowMapping) -> ResidentAccount:
    return ResidentAccount(
        id=row["id"],
        created_at=row["created_at"],
        last_active_at=row["last_active_at"],
        phone_index=row["phone_index"],
        phone_cipher=row["phone_cipher"],
        phone_bound_at=row["phone_bound_at"],
        merged_into=row["merged_into"],
    )


def _session(row: RowMapping) -> Session:
    return Session(
        id=row["id"],
        account_id=row["account_id"],
        kind=AccountKind(row["kind"]),
        audience=Audience(row["audience"]),
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        expires_at=row["expires_at"],
        idle_seconds=row["idle_seconds"],
        roles=frozenset(row["roles"] or ()),
        restriction=Restriction(row["restriction"]) if row["restriction"] else None,
        revoked_at=row["revoked_at"],
        revoke_reason=row["revoke_reason"],
        device=row["device"],
        ip=row["ip"],
    )


class SqlAccountRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    # residents ---------------------------------------------------------------

    async def resident_by_identity(self, provider: Provider, app_id: str, subject: str) -> ResidentAccount | None:
        query = (
            sa.select(resident_accounts)
            .join(account_identities, account_identities.c.account_id == resident_accounts.c.id)
            .where(
                account_identities.c.provider == provider.value,
                account_identities.c.app_id == app_id,
                account_identities.c.subject == subject,
            )
        )
        row = (await self._c.execute(query)).mappings().first()
        return _resident(row) if row else None

    async def resident_by_phone(self, phone_index: str) -> ResidentAccount | None:
        row = (
            (await self._c.execute(sa.select(resident_accounts).where(resident_accounts.c.phone_index == phone_index)))
            .mappings()
            .first()
        )
        return _resident(row) if row else None

    async def resident(self, account_id: str) -> ResidentAccount | None:
        row = (
            (await self._c.execute(sa.select(resident_accounts).where(resident_accounts.c.id == account_id)))
            .mappings()
            .first()
        )
        return _resident(row) if row else None

    async def add_resident(self, account: ResidentAccount) -> None:
        await self._c.execute(
            resident_accounts.insert().values(
                id=account.id,
                created_at=account.created_at,
                last_active_at=account.last_active_at,
                phone_index=account.phone_index,
                phone_cipher=account.phone_cipher,
                phone_bound_at=account.phone_bound_at,
                merged_into=account.merged_into,
            )
        )

    async def add_identity(self, account_id: str, identity: Identity, *, now: datetime) -> None:
        try:
            async with self._c.begin_nested():
                await self._c.execute(
                    account_identities.insert().values(
                        provider=identity.provider.value,
                        app_id=identity.app_id,
                        subject=identity.subject,
                        account_id=account_id,
                        union_id=identity.union_id,
                        created_at=now,
                    )
                )
        except IntegrityError:
            raise IdentityRaceError("identity already belongs to an account") from None

    async def identities(self, account_id: str) -> Sequence[Identity]:
        rows = (
            await self._c.execute(
                sa.select(account_identities)
                .where(account_identities.c.account_id == account_id)
                .order_by(account_identities.c.created_at)
            )
        ).mappings()
        return [Identity(Provider(r["provider"]), r["app_id"], r["subject"], r["union_id"]) for r in rows]

    async def move_identities(self, from_account: str, to_account: str) -> int:
        result = await self._c.execute(
            account_identities.update()
            .where(account_identities.c.account_id == from_account, account_identities.c.provider != "phone")
            .values(account_id=to_account)
        )
        await self._c.execute(account_identities.delete().where(account_identities.c.account_id == from_account))
        return int(result.rowcount or 0)

    async def set_resident_phone(
        self, account_id: str, *, phone_index: str | None, phone_cipher: str | None, now: datetime
    ) -> None:
        await self._c.execute(
            resident_accounts.update()
            .where(resident_accounts.c.id == account_id)
            .values(phone_index=phone_index, phone_cipher=phone_cipher, phone_bound_at=now)
        )

    async def mark_merged(self, account_id: str, into: str) -> None:
        await self._c.execute(
            resident_accounts.update()
            .where(resident_accounts.c.id == account_id)
            .values(merged_into=into, phone_index=None, phone_cipher=None)
        )

    async def touch_resident(self, account_id: str, *, now: datetime) -> None:
        await self._c.execute(
            resident_accounts.update().where(resident_accounts.c.id == account_id).values(last_active_at=now)
        )

    # staff -------------------------------------------------------------------

    async def _links(self, staff_id: str) -> tuple[PractitionerLink, ...]:
        rows = (await self._c.execute(sa.select(staff_links).where(staff_links.c.staff_id == staff_id))).mappings()
        return tuple(
            PractitionerLink(r["hospital_code"], r["practitioner_id"], frozenset(StaffRole(x) for x in r["roles"]))
            for r in rows
        )

    async def _staff_row(self, row: RowMapping | None) -> StaffAccount | None:
        if row is None:
            return None
        return StaffAccount(
            id=row["id"],
            login_name=row["login_name"],
            display_name=row["display_name"],
            roles=frozenset(StaffRole(r) for r in row["roles"]),
            status=StaffStatus(row["status"]),
            created_at=row["created_at"],
            password_hash=row["password_hash"],
            password_changed_at=row["password_changed_at"],
            password_history=tuple(row["password_history"] or ()),
            totp_cipher=row["totp_cipher"],
            activation_hash=row["activation_hash"],
            activation_expires_at=row["activation_expires_at"],
            locked_until=row["locked_until"],
            last_login_at=row["last_login_at"],
            links=await self._links(row["id"]),
        )

    async def staff_by_login(self, login_name: str, *, for_update: bool = False) -> StaffAccount | None:
        query = sa.select(staff_accounts).where(staff_accounts.c.login_name == login_name)
        if for_update:
            query = query.with_for_update()
        return await self._staff_row((await self._c.execute(query)).mappings().first())

    async def staff(self, account_id: str, *, for_update: bool = False) -> StaffAccount | None:
        query = sa.select(staff_accounts).where(staff_accounts.c.id == account_id)
        if for_update:
            query = query.with_for_update()
        return await self._staff_row((await self._c.execute(query)).mappings().first())

    def _staff_values(self, account: StaffAccount) -> dict[str, Any]:
        return {
            "login_name": account.login_name,
            "display_name": account.display_name,
            "roles": sorted(r.value for r in account.roles),
            "status": account.status.value,
            "created_at": account.created_at,
            "password_hash": account.password_hash,
            "password_changed_at": account.password_changed_at,
            "password_history": list(account.password_history),
            "totp_cipher": account.totp_cipher,
            "activation_hash": account.activation_hash,
            "activation_expires_at": account.activation_expires_at,
            "locked_until": account.locked_until,
            "last_login_at": account.last_login_at,
        }

    async def add_staff(self, account: StaffAccount) -> None:
        await self._c.execute(staff_accounts.insert().values(id=account.id, **self._staff_values(account)))

    async def save_staff(self, account: StaffAccount) -> None:
        await self._c.execute(
            staff_accounts.update().where(staff_accounts.c.id == account.id).values(**self._staff_values(account))
        )

    async def add_login_failure(self, account_id: str, *, now: datetime) -> None:
        await self._c.execute(staff_login_failures.insert().values(staff_id=account_id, at=now))

    async def login_failures_since(self, account_id: str, since: datetime) -> int:
        value = await self._c.scalar(
            sa.select(sa.func.count()).where(
                staff_login_failures.c.staff_id == account_id, staff_login_failures.c.at > since
            )
        )
        return int(value or 0)

    async def clear_login_failures(self, account_id: str) -> None:
        await self._c.execute(staff_login_failures.delete().where(staff_login_failures.c.staff_id == account_id))

    async def claim_totp_step(self, account_id: str, step: int) -> bool:
        result = await self._c.execute(
            staff_accounts.update()
            .where(
                staff_accounts.c.id == account_id,
                sa.or_(staff_accounts.c.totp_last_step.is_(None), staff_accounts.c.totp_last_step < step),
            )
            .values(totp_last_step=step)
        )
        return bool(result.rowcount)

    async def list_staff(self, *, after: str | None, limit: int) -> Sequence[StaffAccount]:
        query = sa.select(staff_accounts).order_by(staff_accounts.c.login_name).limit(limit)
        if after:
            query = query.where(staff_accounts.c.login_name > after)
        rows = (await self._c.execute(query)).mappings().all()
        result = []
        for row in rows:
            staff = await self._staff_row(row)
            assert staff is not None
            result.append(staff)
        return result

    async def replace_links(self, staff_id: str, links: Sequence[PractitionerLink]) -> None:
        await self._c.execute(staff_links.delete().where(staff_links.c.staff_id == staff_id))
        for link in links:
            await self._c.execute(
                staff_links.insert().values(
                    staff_id=staff_id,
                    hospital_code=link.hospital_code,
                    practitioner_id=link.practitioner_id,
                    roles=sorted(r.value for r in link.roles),
                )
            )

    # sessions ----------------------------------------------------------------

    async def add_session(self, session: Session) -> None:
        await self._c.execute(
            sessions.insert().values(
                id=session.id,
                account_id=session.account_id,
                kind=session.kind.value,
                audience=session.audience.value,
                created_at=session.created_at,
                last_seen_at=session.last_seen_at,
                expires_at=session.expires_at,
                idle_seconds=session.idle_seconds,
                roles=sorted(session.roles),
                restriction=session.restriction.value if session.restriction else None,
                device=session.device,
                ip=session.ip,
            )
        )

    async def session(self, session_id: str) -> Session | None:
        row = (await self._c.execute(sa.select(sessions).where(sessions.c.id == session_id))).mappings().first()
        return _session(row) if row else None

    async def touch_session(self, session_id: str, *, now: datetime) -> None:
        await self._c.execute(
            sessions.update().where(sessions.c.id == session_id, sessions.c.last_seen_at < now).values(last_seen_at=now)
        )

    async def revoke_session(self, session_id: str, *, now: datetime, reason: str) -> bool:
        result = await self._c.execute(
            sessions.update()
            .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=reason[:40])
        )
        return bool(result.rowcount)

    async def revoke_account_sessions(
        self, account_id: str, *, now: datetime, reason: str, keep: str | None = None
    ) -> list[str]:
        condition = [sessions.c.account_id == account_id, sessions.c.revoked_at.is_(None)]
        if keep:
            condition.append(sessions.c.id != keep)
        ids = list((await self._c.execute(sa.select(sessions.c.id).where(*condition))).scalars())
        if ids:
            await self._c.execute(
                sessions.update().where(sessions.c.id.in_(ids)).values(revoked_at=now, revoke_reason=reason[:40])
            )
        return ids

    async def live_sessions(self, account_id: str, *, now: datetime) -> Sequence[Session]:
        rows = (
            await self._c.execute(
                sa.select(sessions)
                .where(
                    sessions.c.account_id == account_id, sessions.c.revoked_at.is_(None), sessions.c.expires_at > now
                )
                .order_by(sessions.c.last_seen_at.desc())
                .limit(50)
            )
        ).mappings()
        live = [_session(r) for r in rows]
        return [s for s in live if (now - s.last_seen_at).total_seconds() <= s.idle_seconds]

    async def set_session_restriction(self, session_id: str, restriction: Restriction | None) -> None:
        await self._c.execute(
            sessions.update()
            .where(sessions.c.id == session_id)
            .values(restriction=restriction.value if restriction else None)
        )

    # refresh grants ------------------------------------------------------------

    async def add_grant(self, grant: RefreshGrant) -> None:
        await self._c.execute(
            refresh_grants.insert().values(
                token_hash=grant.token_hash,
                session_id=grant.session_id,
                generation=grant.generation,
                expires_at=grant.expires_at,
                used_at=grant.used_at,
            )
        )

    async def grant_by_hash(self, token_hash: str, *, for_update: bool = True) -> RefreshGrant | None:
        query = sa.select(refresh_grants).where(refresh_grants.c.token_hash == token_hash)
        if for_update:
            query = query.with_for_update()
        row = (await self._c.execute(query)).mappings().first()
        if row is None:
            return None
        return RefreshGrant(
            session_id=row["session_id"],
            generation=row["generation"],
            token_hash=row["token_hash"],
            expires_at=row["expires_at"],
            used_at=row["used_at"],
        )

    async def use_grant(self, token_hash: str, *, now: datetime) -> None:
        await self._c.execute(
            refresh_grants.update().where(refresh_grants.c.token_hash == token_hash).values(used_at=now)
        )

    # SMS codes ---------------------------------------------------------------

    async def add_sms_code(self, phone_index: str, code_hash: str, *, now: datetime, expires_at: datetime) -> None:
        # A new code replaces the previous live one.
        await self._c.execute(
            sms_codes.update()
            .where(sms_codes.c.phone_index == phone_index, sms_codes.c.consumed_at.is_(None))
            .values(consumed_at=now)
        )
        await self._c.execute(
            sms_codes.insert().values(
                phone_index=phone_index, code_hash=code_hash, created_at=now, expires_at=expires_at, attempts=0
            )
        )

    async def latest_sms_code(self, phone_index: str, *, for_update: bool = True) -> SmsCode | None:
        query = (
            sa.select(sms_codes).where(sms_codes.c.phone_index == phone_index).order_by(sms_codes.c.id.desc()).limit(1)
        )
        if for_update:
            query = query.with_for_update()
        row = (await self._c.execute(query)).mappings().first()
        if row is None:
            return None
        return SmsCode(
            id=row["id"],
            phone_index=row["phone_index"],
            code_hash=row["code_hash"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            attempts=row["attempts"],
            consumed_at=row["consumed_at"],
        )

    async def count_sms_attempt(self, code_id: int) -> None:
        await self._c.execute(
            sms_codes.update().where(sms_codes.c.id == code_id).values(attempts=sms_codes.c.attempts + 1)
        )

    async def consume_sms_code(self, code_id: int, *, now: datetime) -> None:
        await self._c.execute(sms_codes.update().where(sms_codes.c.id == code_id).values(consumed_at=now))
