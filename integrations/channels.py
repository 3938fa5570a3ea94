"""Notification channels over the vendor clients: WeChat subscribe messages, Alipay mini-program messages, SMS and
app push (issue: notifications)."""

from __future__ import annotations

from collections.abc import Mapping

from domain.account.ports import ProviderUnavailableError, SmsRejectedError, SmsSender
from domain.kernel.errors import DomainError
from domain.notification.model import Channel
from domain.notification.ports import (
    TOKEN_INVALID,
    Address,
    ChannelFinalError,
    ChannelQuotaError,
    ChannelTransientError,
)
from domain.notification.push import PushMessage, PushSender, PushTokenInvalidError, PushUnavailableError
from domain.notification.templates import Rendered
from integrations.alipay.messages import (
    AlipayMessageClient,
    AlipayMessageRefusedError,
    AlipayMessageRejectedError,
)
from integrations.wechat.miniprogram import (
    SubscribeRefusedError,
    SubscribeRejectedError,
    TemplateDataError,
    WechatMiniProgramClient,
)


class WechatSubscribeChannel:
    """Sends through the mini-program the resident uses; template names map to each app's template ids."""

    channel = Channel.WECHAT_SUBSCRIBE

    def __init__(
        self,
        clients: Mapping[str, WechatMiniProgramClient],
        template_ids: Mapping[str, str],
        *,
        state: str = "formal",
    ) -> None:
        self._clients = clients
        self._template_ids = template_ids
        self._state = state

    async def send(self, address: Address, template: str | None, rendered: Rendered) -> tuple[str, str]:
        client = self._clients.get(address.app_id)
        template_id = self._template_ids.get(template or "")
        if client is None or template_id is None:
            raise ChannelFinalError(
                "no client or template id for this mini-program", code="notification.not_configured"
            )
        try:
            message_id = await client.send_subscribe_message(
                address.value, template_id, rendered.fields, state=self._state
            )
        except SubscribeRefusedError:
            raise ChannelQuotaError("43101: no remaining authorisation") from None
        except (TemplateDataError, SubscribeRejectedError) as exc:
            raise ChannelFinalError(f"refused: {exc.code}", code="notification.refused") from None
        except ProviderUnavailableError as exc:
            raise ChannelTransientError(f"unavailable: {exc.code}") from None
        return "wechat", message_id


class AlipayMessageChannel:
    """Alipay mini-program subscribe messages: one service-notice template per mini-program (configured), with
    the message's title and body as its two keywords. A spent authorisation is final, like WeChat's 43101."""

    channel = Channel.ALIPAY_MESSAGE

    def __init__(self, clients: Mapping[str, AlipayMessageClient], template_ids: Mapping[str, str]) -> None:
        self._clients = clients
        self._template_ids = template_ids

    async def send(self, address: Address, template: str | None, rendered: Rendered) -> tuple[str, str]:
        client = self._clients.get(address.app_id)
        template_id = self._template_ids.get(address.app_id)
        if client is None or template_id is None:
            raise ChannelFinalError("no client or template for this mini-program", code="notification.not_configured")
        try:
            receipt = await client.send_subscribe_message(address.value, template_id, rendered.fields)
        except AlipayMessageRefusedError:
            raise ChannelQuotaError("no remaining authorisation") from None
        except AlipayMessageRejectedError as exc:
            raise ChannelFinalError(f"refused: {exc.code}", code="notification.refused") from None
        except (ProviderUnavailableError, DomainError) as exc:
            raise ChannelTransientError(f"unavailable: {exc.code}") from None
        return "alipay", receipt


class SmsChannel:
    channel = Channel.SMS

    def __init__(self, sender: SmsSender) -> None:
        self._sender = sender

    async def send(self, address: Address, template: str | None, rendered: Rendered) -> tuple[str, str]:
        if not template:
            raise ChannelFinalError("no SMS template", code="notification.not_configured")
        try:
            receipt = await self._sender.send(address.value, template, rendered.fields)
        except SmsRejectedError as exc:
            raise ChannelFinalError(f"rejected: {exc.code}", code="notification.refused") from None
        except (ProviderUnavailableError, DomainError) as exc:
            raise ChannelTransientError(f"unavailable: {exc.code}") from None
        return receipt.provider, receipt.message_id


class PushChannel:
    """App push through the resident's registered phones (APNs for iPhones, JPush for Android in China)."""

    channel = Channel.APP_PUSH

    def __init__(self, senders: Mapping[str, PushSender]) -> None:
        self._senders = senders

    async def send(self, address: Address, template: str | None, rendered: Rendered) -> tuple[str, str]:
        sender = self._senders.get(address.app_id)
        if sender is None:
            raise ChannelFinalError("no sender for this push provider", code="notification.not_configured")
        try:
            receipt = await sender.send(address.value, PushMessage(title=rendered.title, body=rendered.body))
        except PushTokenInvalidError:
            raise ChannelFinalError("the device token is gone", code=TOKEN_INVALID) from None
        except PushUnavailableError as exc:
            raise ChannelTransientError(f"unavailable: {exc.code}") from None
        return receipt.provider, receipt.message_id
