"""Real-name verification (实名认证) through Tencent Cloud FaceID (TC3-HMAC-SHA256)."""

from integrations.verification.tencent import TencentFaceIdVerifier

__all__ = ["TencentFaceIdVerifier"]
