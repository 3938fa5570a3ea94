"""TOTP (RFC 6238) for the staff second factor (SEC-A-05), on pyotp."""

from __future__ import annotations

from datetime import datetime

import pyotp


class PyotpTotp:
    def __init__(self, *, issuer: str = "HSP", interval: int = 30, digits: int = 6, drift_steps: int = 1) -> None:
        self._issuer = issuer
        self._interval = interval
        self._digits = digits
        self._drift = drift_steps

    def new_secret(self) -> str:
        return pyotp.random_base32()

    def provisioning_uri(self, secret: str, *, account_name: str) -> str:
        return pyotp.TOTP(secret, digits=self._digits, interval=self._interval).provisioning_uri(
            name=account_name, issuer_name=self._issuer
        )

    def matching_step(self, secret: str, code: str, *, now: datetime) -> int | None:
        if not code.isdigit() or len(code) != self._digits:
            return None
        totp = pyotp.TOTP(secret, digits=self._digits, interval=self._interval)
        step = int(now.timestamp()) // self._interval
        for candidate in range(step - self._drift, step + self._drift + 1):
            if pyotp.utils.strings_equal(totp.generate_otp(candidate), code):
                return candidate
        return None

    def code_at(self, secret: str, when: datetime) -> str:
        """The code for ``when`` (for tests and the demo's authenticator stand-in)."""
        return pyotp.TOTP(secret, digits=self._digits, interval=self._interval).at(when)
