"""The outbox relay use case (DESIGN D2)."""

from __future__ import annotations

from datetime import datetime

from domain.kernel.outbox import OutboxDispatcher
from domain.kernel.uow import UnitOfWorkFactory


async def relay_outbox(
    uow_factory: UnitOfWorkFactory,
    dispatcher: OutboxDispatcher,
    now: datetime,
    *,
    batch_size: int = 100,
) -> int:
    """Relay one batch: lock unrelayed rows (skipping those another relay holds), hand each to the
    dispatcher, mark them relayed, commit. Two relays running at once relay each message once; a crash
    between dispatch and commit dispatches again, which consumers absorb by deduplicating on the id."""
    async with uow_factory() as uow:
        messages = await uow.outbox.claim(batch_size, now=now)
        for message in messages:
            await dispatcher.dispatch(message)
        await uow.outbox.mark_relayed([m.id for m in messages], now=now)
        await uow.commit()
    return len(messages)
