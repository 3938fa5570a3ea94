"""The patients feature's card-platform port over our health-card client (issue: patients)."""

from __future__ import annotations

import io

import segno

from domain.kernel.errors import ValidationError
from domain.patient.ports import CardHolder, CardRegistration, CardUse, DynamicCode
from integrations.healthcard.client import CODE_TYPE_DYNAMIC, HealthCard, HealthCardClient


class WechatCodeRequiredError(ValidationError):
    code = "healthcard.wechat_required"
    message = "请在微信小程序中领取电子健康卡；支付宝和App用户可扫描已有健康卡二维码绑定"


def _holder(card: HealthCard) -> CardHolder:
    return CardHolder(
        health_card_id=card.health_card_id,
        phid=card.phid or None,
        qr_code_text=card.qr_code_text,
        name=card.name,
        id_type=card.id_type,
        id_number=card.id_number,
    )


class HealthCardPlatformAdapter:
    def __init__(self, client: HealthCardClient) -> None:
        self._client = client

    async def register(self, registration: CardRegistration) -> CardHolder:
        if not registration.wechat_code:
            raise WechatCodeRequiredError("registration needs a WeChat authorisation code")
        card = await self._client.register_health_card(
            wechat_code=registration.wechat_code,
            name=registration.name,
            gender=registration.sex,
            nation="汉族",
            birthday=registration.birth_date,
            id_number=registration.id_number,
            id_type=registration.id_type,
            phone=registration.phone or "",
            relation=registration.relation,
        )
        return _holder(card)

    async def by_health_code(self, health_code: str, *, relate_app_id: str, relate_open_id: str) -> CardHolder:
        card = await self._client.get_by_health_code(
            health_code, relate_app_id=relate_app_id, relate_open_id=relate_open_id
        )
        return _holder(card)

    async def by_qr_code(self, qr_code_text: str) -> CardHolder:
        return _holder(await self._client.get_by_qr_code(qr_code_text))

    async def dynamic_code(
        self, health_card_id: str, *, id_type: str, id_number: str, relate_app_id: str, relate_open_id: str
    ) -> DynamicCode:
        code = await self._client.get_dynamic_qr_code(
            health_card_id,
            id_type,
            id_number,
            CODE_TYPE_DYNAMIC,
            relate_open_id=relate_open_id,
            relate_app_id=relate_app_id or None,
        )
        assert code.expires_at is not None
        image = code.image or self.static_png(code.qr_code_text)
        return DynamicCode(qr_code_text=code.qr_code_text, png=image, expires_at=code.expires_at)

    async def report_use(self, use: CardUse, *, relate_app_id: str, relate_open_id: str) -> None:
        await self._client.report_his_data(
            qr_code_text=use.qr_code_text,
            used_at=use.at,
            hospital_code=use.hospital_code,
            scene=use.scene,
            card_type=use.card_type,
            card_channel=use.card_channel,
            relate_open_id=relate_open_id,
            relate_app_id=relate_app_id or None,
            department=use.department,
            card_cost_types=use.cost_types,
        )

    def static_png(self, qr_code_text: str) -> bytes:
        buffer = io.BytesIO()
        segno.make(qr_code_text, error="m", micro=False).save(buffer, kind="png", scale=5, border=2)
        return buffer.getvalue()
