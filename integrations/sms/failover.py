"""Failover between SMS providers.

Policy: providers are tried in order and the next one is tried only on ``ProviderUnavailableError`` (the
provider could not take the message: down, timing out, refusing our credentials or clock, out of balance,
missing the template). ``SmsRejectedError`` is final and is not retried elsewhere, and that includes the
per-number limits (Aliyun ``isv.BUSINESS_LIMIT_CONTROL``/``isv.DAY_LIMIT_CONTROL``, Tencent
``LimitExceeded.PhoneNumber*``): those limits exist against SMS bombing of one phone, and routing around one
provider's limit through another would defeat them and double the messages the resident gets. An illegal or
blacklisted number is refused by every provider alike.

A timeout is ambiguous (the first provider may still deliver), so after a timeout the resident may get the
same message twice; for login codes that is harmless, both carry the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from domain.account.ports import ProviderUnavailableError, SmsReceipt, SmsSender

logger = logging.getLogger(__name__)


class FailoverSmsSender:
    """An ``SmsSender`` trying ``senders`` in order; the receipt names the provider that took the message."""

    def __init__(self, senders: Sequence[SmsSender]) -> None:
        if not senders:
            raise ValueError("failover needs at least one SMS sender")
        self._senders = tuple(senders)

    @property
    def provider(self) -> str:
        return "failover:" + ",".join(sender.provider for sender in self._senders)

    @property
    def senders(self) -> tuple[SmsSender, ...]:
        return self._senders

    async def send(self, phone: str, template: str, params: Mapping[str, str]) -> SmsReceipt:
        failures: list[str] = []
        last: ProviderUnavailableError | None = None
        for sender in self._senders:
            try:
                return await sender.send(phone, template, params)
            except ProviderUnavailableError as exc:
                # The detail names the provider and its error code, never the number or the parameters.
                logger.warning("sms provider unavailable: %s", exc.detail)
                failures.append(exc.detail)
                last = exc
        raise ProviderUnavailableError("no SMS provider took the message: " + "; ".join(failures)) from last
