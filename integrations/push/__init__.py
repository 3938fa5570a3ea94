"""App push channels: APNs (HTTP/2, token auth) and JPush (REST v3), each a ``PushSender``."""

from integrations.push.apns import ApnsSender, apns_payload, provider_token
from integrations.push.jpush import JpushSender, basic_authorization, jpush_body

__all__ = ["ApnsSender", "JpushSender", "apns_payload", "basic_authorization", "jpush_body", "provider_token"]
