"""Access tokens (DESIGN D6): short-lived ES256 JWTs with a ``kid`` for rotation and an audience per front end,
carrying the session id. The session itself lives in PostgreSQL (cached in Redis) and is checked on every
request, so logout and revocation take effect at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from domain.account.model import Audience, Session
from domain.kernel.clock import Clock
from domain.kernel.errors import AuthenticationError
from domain.kernel.ids import new_id

ISSUER = "hsp-bff"
ALGORITHM = "ES256"


class TokenInvalidError(AuthenticationError):
    code = "auth.token_invalid"
    message = "登录凭证无效，请重新登录"


class TokenExpiredError(AuthenticationError):
    code = "auth.token_expired"
    message = "登录凭证已过期，请刷新或重新登录"


@dataclass(frozen=True)
class SigningKeys:
    active_kid: str
    private: Mapping[str, ec.EllipticCurvePrivateKey] = field(repr=False)

    @classmethod
    def from_pem(cls, active_kid: str, pems: Mapping[str, bytes]) -> SigningKeys:
        keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        for kid, pem in pems.items():
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise ValueError(f"signing key {kid} is not an EC P-256 private key")
            keys[kid] = key
        if active_kid not in keys:
            raise ValueError("the active signing key id is not among the keys")
        return cls(active_kid=active_kid, private=keys)

    @staticmethod
    def generate_pem() -> bytes:
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    session_id: str
    subject: str
    audience: Audience
    kind: str


class AccessTokens:
    def __init__(self, keys: SigningKeys, *, clock: Clock, ttl: timedelta, leeway_seconds: int = 30) -> None:
        self._keys = keys
        self._clock = clock
        self._ttl = ttl
        self._leeway = leeway_seconds
        self._public = {kid: key.public_key() for kid, key in keys.private.items()}

    def mint(self, session: Session) -> tuple[str, datetime]:
        now = self._clock.now()
        expires = min(now + self._ttl, session.expires_at)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": session.account_id,
            "aud": session.audience.value,
            "sid": session.id,
            "knd": session.kind.value,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": new_id(),
        }
        if session.roles:
            claims["roles"] = sorted(session.roles)
        kid = self._keys.active_kid
        token = jwt.encode(claims, self._keys.private[kid], algorithm=ALGORITHM, headers={"kid": kid})
        return token, expires

    def verify(self, token: str) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenInvalidError("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise TokenInvalidError("unexpected algorithm")
        kid = header.get("kid")
        key = self._public.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenInvalidError("unknown key id")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=[a.value for a in Audience],
                issuer=ISSUER,
                # Expiry is checked against our clock below (the demo and tests move it).
                options={"verify_exp": False, "verify_iat": False, "require": ["exp", "iat", "sub", "aud", "sid"]},
            )
        except jwt.PyJWTError:
            raise TokenInvalidError("signature or claims invalid") from None
        now = int(self._clock.now().timestamp())
        if int(claims["exp"]) + self._leeway < now:
            raise TokenExpiredError("access token expired")
        if int(claims["iat"]) - self._leeway > now:
            raise TokenInvalidError("issued in the future")
        try:
            audience = Audience(claims["aud"])
        except ValueError:
            raise TokenInvalidError("unknown audience") from None
        return VerifiedToken(
            session_id=str(claims["sid"]), subject=str(claims["sub"]), audience=audience, kind=str(claims.get("knd"))
        )
