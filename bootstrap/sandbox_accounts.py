"""The credentials and templates the simulators are configured with in the demo and tests. The same values
configure our clients when the sandboxes are mounted, so both sides agree; none of them is a real secret."""

from __future__ import annotations

import functools
from pathlib import Path

from cryptography.hazmat.primitives import serialization

_KEYS = Path(__file__).parent / "demo_keys"

SMS_SIGN_NAME = "健康服务平台"
ALIYUN_KEY_ID = "LTAIdemo0000000000000001"
ALIYUN_KEY_SECRET = "demo0aliyun0secret0000000000001"
ALIYUN_TEMPLATES = {
    "SMS_900000001": "您的登录验证码为${code}，${minutes}分钟内有效。请勿泄露给他人。",
    "SMS_900000002": "您的账号于${time}在新设备（${device}）登录。如非本人操作，请立即退出所有设备。",
    "SMS_900000003": "您的账号已于${time}绑定手机号${phone}。",
    "SMS_900000004": "测试提醒（${time}）：${text}",
    "SMS_900000005": "您正在进行身份验证，验证码为${code}，${minutes}分钟内有效。请勿泄露给他人。",
    "SMS_900000006": "有人申请将您添加为就诊人，确认码为${code}，${minutes}分钟内有效。如您同意，请将确认码告知对方。",
}
ALIYUN_TEMPLATE_CODES = {
    "login_code": "SMS_900000001",
    "new_device": "SMS_900000002",
    "phone_bound": "SMS_900000003",
    "test_reminder": "SMS_900000004",
    "step_up_code": "SMS_900000005",
    "patient_confirm": "SMS_900000006",
}
TENCENT_SECRET_ID = "AKIDdemo00000000000000000000001"
TENCENT_SECRET_KEY = "demo0tencent0secret000000000001"
TENCENT_SDK_APP_ID = "1400000001"
TENCENT_TEMPLATES = {
    "900001": "{1}为您的登录验证码，请于{2}分钟内填写。如非本人操作，请忽略本短信。",
    "900002": "您的账号于{1}在新设备（{2}）登录。如非本人操作，请立即退出所有设备。",
    "900003": "您的账号已于{1}绑定手机号{2}。",
    "900004": "测试提醒（{1}）：{2}",
    "900005": "您正在进行身份验证，验证码为{1}，{2}分钟内有效。请勿泄露给他人。",
    "900006": "有人申请将您添加为就诊人，确认码为{1}，{2}分钟内有效。如您同意，请将确认码告知对方。",
}
TENCENT_TEMPLATE_IDS = {
    "login_code": "900001",
    "new_device": "900002",
    "phone_bound": "900003",
    "test_reminder": "900004",
    "step_up_code": "900005",
    "patient_confirm": "900006",
}
WECHAT_TEMPLATE_IDS = {
    "security_notice": "tmpl-security-notice-demo",
    "payment_notice": "tmpl-payment-notice-demo",
    "booking_notice": "tmpl-booking-notice-demo",
}
ALIPAY_MESSAGE_TEMPLATE = "tmpl-alipay-notice-demo"
"""The demo mini-program's service-notice subscribe template (keyword1 title, keyword2 body)."""

APNS_TEAM_ID = "DEMOTEAM01"
APNS_KEY_ID = "DEMOKEY001"
APNS_TOPIC = "cn.hsp.patient"
JPUSH_APP_KEY = "demo0jpush0app0key0000001"
JPUSH_MASTER_SECRET = "demo0jpush0master0secret01"


def _demo_key(name: str) -> bytes:
    """A fixed demo key from ``bootstrap/demo_keys``: every process (server, worker, beat) signs and verifies with
    the same keys as the simulators mounted in the server."""
    return (_KEYS / f"{name}.pem").read_bytes()


@functools.cache
def apns_private_key() -> bytes:
    """The demo's APNs auth key (EC P-256)."""
    return _demo_key("apns")


ALIPAY_APP_ID = "9021000122600001"


@functools.cache
def alipay_app_private_key() -> bytes:
    """The demo application's RSA key."""
    return _demo_key("alipay_app")


@functools.cache
def alipay_platform_private_key() -> bytes:
    """The simulated Alipay's own RSA key."""
    return _demo_key("alipay_platform")


ALIPAY_SELLER_ID = "2088102177000001"
"""The demo merchant's Alipay partner id (checked on every payment notification)."""

WECHATPAY_MCHID = "1900000109"
WECHATPAY_MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
WECHATPAY_API_V3_KEY = "demo0wechatpay0apiv3key000000001"
"""32 bytes, as WeChat Pay requires of an APIv3 key."""
WECHATPAY_APP_APPID = "wxdemo0patientapp1"
"""The patient app's WeChat open-platform app id (APP payments)."""


@functools.cache
def wechatpay_merchant_private_key() -> bytes:
    """The demo merchant's API certificate key."""
    return _demo_key("wechatpay_merchant")


@functools.cache
def wechatpay_platform_private_key() -> bytes:
    """The simulated WeChat Pay's first platform certificate key."""
    return _demo_key("wechatpay_platform")


@functools.cache
def wechatpay_public_key_private_key() -> bytes:
    """The key behind the simulated WeChat Pay's public key id (public-key mode)."""
    return _demo_key("wechatpay_public_key")


def public_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# The sandbox HIS's hospitals, as an operator would register them (fictional city 云岭市, fictional region codes).
HIS_HOSPITALS = {
    "H001": {
        "name": "云岭市第一人民医院",
        "level": "tertiary",
        "region": "539901",
        "secret": "demo-his-push-secret-h001",
        "address": "云岭市鹿城区鹿城南路88号",
        "phone": "0878-3122120",
    },
    "H002": {
        "name": "云岭市西山区人民医院",
        "level": "secondary",
        "region": "539902",
        "secret": "demo-his-push-secret-h002",
        "address": "云岭市西山区团结路126号",
        "phone": "0878-6215120",
    },
    "H003": {
        "name": "云岭市西山区桃源社区卫生服务中心",
        "level": "primary",
        "region": "539902",
        "secret": "demo-his-push-secret-h003",
        "address": "云岭市西山区桃源街道桃源路15号",
        "phone": "0878-6233065",
    },
}
