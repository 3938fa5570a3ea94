"""WeChat mini-program server APIs (protocols §1; DESIGN D9)."""

from integrations.wechat.miniprogram import (
    DEFAULT_BASE_URL,
    SubscribeRefusedError,
    SubscribeRejectedError,
    TemplateDataError,
    UserDataError,
    WechatMiniProgramClient,
    WechatPhoneInfo,
    decrypt_user_data,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "SubscribeRefusedError",
    "SubscribeRejectedError",
    "TemplateDataError",
    "UserDataError",
    "WechatMiniProgramClient",
    "WechatPhoneInfo",
    "decrypt_user_data",
]
