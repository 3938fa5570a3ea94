"""The crypto port (DESIGN D5, SEC-K-02/03): two suites behind one interface, chosen by configuration.

* ``intl``: AES-256-GCM, HMAC-SHA256, SHA-256, ECDSA P-256.
* ``sm``:   SM4-GCM, HMAC-SM3, SM3, SM2 (for deployments that must pass 密评).

Field ciphertexts are self-describing text tokens that carry the suite and key id, so keys rotate without
a flag day: new writes use the active key, old tokens still decrypt while their key is configured, and
``needs_rotation`` tells a re-encryption job which tokens to rewrite.
"""

from __future__ import annotations

from typing import Protocol

from domain.kernel.errors import DomainError


class CryptoError(DomainError):
    status = 500
    code = "crypto.failed"
    message = "数据处理失败"
    title = "Crypto failure"


class DecryptionError(CryptoError):
    code = "crypto.decrypt_failed"


class UnknownKeyError(CryptoError):
    code = "crypto.unknown_key"


class FieldCipher(Protocol):
    def encrypt(self, plaintext: bytes, *, context: str) -> str:
        """Encrypt with the active key; ``context`` (e.g. ``patient.id_number``) is bound as associated data,
        so a ciphertext moved to another column fails to decrypt."""
        ...

    def decrypt(self, token: str, *, context: str) -> bytes: ...

    def needs_rotation(self, token: str) -> bool:
        """True when ``token`` was written with a key other than the active one."""
        ...


class BlindIndex(Protocol):
    def index(self, normalised_value: str, *, context: str) -> str:
        """A keyed, deterministic digest for equality lookups of an encrypted column (hex)."""
        ...


class Digest(Protocol):
    name: str

    def digest(self, data: bytes) -> bytes: ...


class Mac(Protocol):
    def mac(self, data: bytes, *, context: str) -> bytes: ...

    def verify(self, data: bytes, tag: bytes, *, context: str) -> bool: ...


class Signer(Protocol):
    algorithm: str

    def sign(self, data: bytes) -> bytes: ...

    def verify(self, data: bytes, signature: bytes) -> bool: ...


class CryptoSuite(Protocol):
    name: str
    cipher: FieldCipher
    blind_index: BlindIndex
    digest: Digest
    mac: Mac
    signer: Signer
