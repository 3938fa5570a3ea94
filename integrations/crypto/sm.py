"""The ``sm`` suite: SM4-GCM, HMAC-SM3, SM3 and SM2 (DESIGN D5, SEC-K-02, SEC-K-03).

For deployments that must pass 密评. Subkeys come from the master keys through HKDF-SM3. SM4 (GB/T 32907),
SM3 (GB/T 32905) and HMAC-SM3 run in ``cryptography``; SM2 signatures (GB/T 32918.2) use ``gmssl``, with
the nonce drawn from :mod:`secrets` (gmssl's own nonce source is not cryptographically secure) and the
public key set after construction (gmssl's constructor can corrupt a key whose hex starts with ``04``).
"""

from __future__ import annotations

import secrets
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from gmssl import sm2

from domain.kernel.crypto import UnknownKeyError
from integrations.crypto.keys import (
    TAG_BYTES,
    AeadTokenCipher,
    HashDigest,
    HmacBlindIndex,
    HmacMac,
    Keyring,
    derive_key,
)

SUITE: Final = "sm"

SM4_KEY_BYTES: Final = 16

# The recommended SM2 curve (GB/T 32918.5-2017).
SM2_P: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
SM2_A: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
SM2_B: Final = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
SM2_N: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
SM2_GX: Final = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
SM2_GY: Final = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0


def _hash() -> hashes.HashAlgorithm:
    return hashes.SM3()


class Sm4Gcm:
    """SM4 in GCM mode with a 12-byte nonce; output is ``ciphertext || tag16`` like ``AESGCM``."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != SM4_KEY_BYTES:
            raise ValueError(f"SM4 key must be {SM4_KEY_BYTES} bytes")
        self._key = bytes(key)

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None, /) -> bytes:
        encryptor = Cipher(algorithms.SM4(self._key), modes.GCM(nonce)).encryptor()
        if associated_data:
            encryptor.authenticate_additional_data(associated_data)
        ciphertext = encryptor.update(data) + encryptor.finalize()
        return ciphertext + encryptor.tag

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None, /) -> bytes:
        if len(data) < TAG_BYTES:
            raise InvalidTag
        ciphertext, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
        decryptor = Cipher(algorithms.SM4(self._key), modes.GCM(nonce, tag)).decryptor()
        if associated_data:
            decryptor.authenticate_additional_data(associated_data)
        plaintext = decryptor.update(ciphertext)
        return plaintext + decryptor.finalize()


class Sm4GcmFieldCipher(AeadTokenCipher):
    """SM4-GCM field tokens ``sm.<kid>.<body>``; the 16-byte SM4 key comes from HKDF-SM3."""

    __slots__ = ()

    def __init__(self, keyring: Keyring) -> None:
        super().__init__(keyring, suite=SUITE, algorithm=_hash(), key_length=SM4_KEY_BYTES, make_aead=Sm4Gcm)


class HmacSm3BlindIndex(HmacBlindIndex):
    """HMAC-SM3 blind index (hex) keyed from the stable index key (SEC-K-02)."""

    __slots__ = ()

    def __init__(self, keyring: Keyring) -> None:
        super().__init__(keyring, suite=SUITE, algorithm=_hash())


class HmacSm3Mac(HmacMac):
    """HMAC-SM3 with the context bound into the input (SEC-K-03)."""

    __slots__ = ()

    def __init__(self, keyring: Keyring) -> None:
        super().__init__(keyring, suite=SUITE, algorithm=_hash())


class Sm3Digest(HashDigest):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("sm3", _hash())


class Sm2Signer:
    """SM2 signatures with SM3 (GB/T 32918.2, default user ID ``1234567812345678``), DER ``SEQUENCE {r, s}``.

    Each master key deterministically yields one key pair. Signing uses the active key; verification
    accepts any configured key.
    """

    __slots__ = ("_active", "_engines", "_public", "algorithm")

    def __init__(self, keyring: Keyring) -> None:
        self.algorithm = "sm2-sm3"
        self._active = keyring.active_kid
        self._engines: dict[str, Any] = {}
        self._public: dict[str, bytes] = {}
        for kid, master in keyring.keys.items():
            seed = derive_key(_hash(), master, suite=SUITE, purpose="sign", length=48)
            private = int.from_bytes(seed, "big") % (SM2_N - 2) + 1  # SM2 needs d in [1, n-2]
            public = sm2_public_key(private)
            self._engines[kid] = _engine(public, private)
            self._public[kid] = public

    def sign(self, data: bytes) -> bytes:
        engine = self._engines[self._active]
        while True:
            nonce = secrets.randbelow(SM2_N - 1) + 1
            signed = engine.sign_with_sm3(bytes(data), f"{nonce:064x}")
            if signed:  # gmssl returns None for the rare nonces the standard says to retry
                text = str(signed)
                return encode_dss_signature(int(text[:64], 16), int(text[64:], 16))

    def verify(self, data: bytes, signature: bytes) -> bool:
        rs = _parse_signature(signature)
        if rs is None:
            return False
        ordered = [self._active, *(kid for kid in self._engines if kid != self._active)]
        return any(_verify_with(self._engines[kid], data, rs) for kid in ordered)

    def public_key(self, kid: str | None = None) -> bytes:
        """The uncompressed public point (``04 || x || y``) of ``kid`` (default: the active key)."""
        chosen = kid or self._active
        if chosen not in self._public:
            raise UnknownKeyError(f"key id {chosen!r} is not configured")
        return self._public[chosen]


def sm2_public_key(private: int) -> bytes:
    """The uncompressed public point (``04 || x || y``) of the SM2 private key ``private``."""
    if not 1 <= private <= SM2_N - 2:
        raise ValueError("SM2 private key out of range")
    engine = sm2.CryptSM2(private_key=f"{private:064x}", public_key="")
    public_hex = str(engine._kg(private, f"{SM2_GX:064x}{SM2_GY:064x}"))
    public = b"\x04" + bytes.fromhex(public_hex)
    if not _on_curve(public):
        raise ValueError("SM2 public key derivation failed")
    return public


def sm2_verify(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """Verify a DER SM2-with-SM3 ``signature`` of ``data`` (default user ID) under an uncompressed point."""
    rs = _parse_signature(signature)
    if rs is None or not _on_curve(public_key):
        return False
    return _verify_with(_engine(public_key, None), data, rs)


def _engine(public_key: bytes, private: int | None) -> Any:
    engine = sm2.CryptSM2(private_key=f"{private:064x}" if private is not None else "", public_key="")
    engine.public_key = public_key[1:].hex()  # set directly: the constructor strips leading '0'/'4' characters
    return engine


def _on_curve(public_key: bytes) -> bool:
    if len(public_key) != 65 or public_key[0] != 4:
        return False
    x, y = int.from_bytes(public_key[1:33], "big"), int.from_bytes(public_key[33:], "big")
    if not (x < SM2_P and y < SM2_P):
        return False
    return (y * y - (x * x * x + SM2_A * x + SM2_B)) % SM2_P == 0


def _parse_signature(signature: bytes) -> tuple[int, int] | None:
    """``(r, s)`` from a canonical DER signature with both values in ``[1, n-1]``, else ``None``."""
    try:
        r, s = decode_dss_signature(bytes(signature))
    except (ValueError, TypeError):
        return None
    if not (1 <= r < SM2_N and 1 <= s < SM2_N) or encode_dss_signature(r, s) != signature:
        return None
    return r, s


def _verify_with(engine: Any, data: bytes, rs: tuple[int, int]) -> bool:
    try:
        return bool(engine.verify_with_sm3(f"{rs[0]:064x}{rs[1]:064x}", bytes(data)))
    except (ValueError, TypeError, IndexError):  # gmssl fails this way on degenerate points
        return False
