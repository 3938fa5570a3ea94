"""SMS through Aliyun (dysmsapi, signature V1) and Tencent Cloud (TC3-HMAC-SHA256), with failover."""

from integrations.sms.aliyun import AliyunSmsSender, signature_v1
from integrations.sms.failover import FailoverSmsSender
from integrations.sms.tencent import TencentSmsSender, tc3_authorization, tc3_signature

__all__ = [
    "AliyunSmsSender",
    "FailoverSmsSender",
    "TencentSmsSender",
    "signature_v1",
    "tc3_authorization",
    "tc3_signature",
]
