"""The ``intl`` suite: AES-256-GCM, HMAC-SHA256, SHA-256 and ECDSA P-256 (DESIGN D5).

Subkeys come from the master keys through HKDF-SHA256 (see :mod:`integrations.crypto.keys`).
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.kernel.crypto import UnknownKeyError
from integrations.crypto.keys import (
    AeadTokenCipher,
    HashDigest,
    HmacBlindIndex,
    HmacMac,
    Keyring,
    derive_key,
)

SUITE: Final = "intl"

_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _hash() -> hashes.HashAlgorithm:
    return hashes.SHA256()


class AesGcmFieldCipher(AeadTokenCipher):
    """AES-256-GCM field tokens ``intl.<kid>.<body>``."""

    __slots__ = ()

    def __init__(self, keyring: Keyring) -> None:
        super().__init__(keyring, suite=SUITE, algorithm=_hash(), key_length=32, make_aead=AESGCM)


class HmacSha256BlindIndex(HmacBlindIndex):
    """HMAC-SHA256 blind index (hex) keyed from the stable index key."""

    __slots__ = ()

    def __init__(self, keyring: Keyring) -> None:
        super().__init__(keyring, suite=SUITE, algorithm=_hash())


class HmacSha256Mac(HmacMac):
    """HMAC-SHA256 with the context bound into the input."""

    __slots__ = ()

    def __init__(self, keyring: Keyring) -> None:
        super().__init__(keyring, suite=SUITE, algorithm=_hash())


class Sha256Digest(HashDigest):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("sha256", _hash())


class EcdsaP256Signer:
    """ECDSA over P-256 with SHA-256; DER signatures.

    Each master key deterministically yields one signing key, so the same keyring always signs with the
    same key pair. Signing uses the active key; verification accepts any configured key.
    """

    __slots__ = ("_active", "_keys", "_public", "algorithm")

    def __init__(self, keyring: Keyring) -> None:
        self.algorithm = "ecdsa-p256-sha256"
        self._keys = {kid: _derive_signing_key(master) for kid, master in keyring.keys.items()}
        self._public = {kid: key.public_key() for kid, key in self._keys.items()}
        self._active = keyring.active_kid

    def sign(self, data: bytes) -> bytes:
        return self._keys[self._active].sign(data, ec.ECDSA(hashes.SHA256()))

    def verify(self, data: bytes, signature: bytes) -> bool:
        ordered = [self._active, *(kid for kid in self._public if kid != self._active)]
        return any(self._verify_with(kid, data, signature) for kid in ordered)

    def public_key(self, kid: str | None = None) -> bytes:
        """The uncompressed public point (``04 || x || y``) of ``kid`` (default: the active key)."""
        chosen = kid or self._active
        if chosen not in self._public:
            raise UnknownKeyError(f"key id {chosen!r} is not configured")
        return self._public[chosen].public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def _verify_with(self, kid: str, data: bytes, signature: bytes) -> bool:
        try:
            self._public[kid].verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


def _derive_signing_key(master: bytes) -> ec.EllipticCurvePrivateKey:
    """A private scalar in ``[1, n-1]`` from 48 bytes of HKDF output (bias below 2^-128)."""
    seed = derive_key(_hash(), master, suite=SUITE, purpose="sign", length=48)
    scalar = int.from_bytes(seed, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())
