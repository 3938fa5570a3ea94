"""Key material, per-purpose key derivation and the constructions both suites share (DESIGN D5, SEC-K-02).

A :class:`Keyring` holds rotating master keys by key id plus a separate, stable index key. Nothing uses a
master key directly: every purpose (``enc``, ``mac``, ``sign``, ``index``) gets its own subkey through
HKDF with the suite's hash and a distinct ``info`` label, so the two suites never share a subkey even when
configured with the same master key.

Field tokens are ``<suite>.<kid>.<base64url-no-padding(nonce12 || ciphertext || tag16)>``; the associated
data is ``context "|" suite "|" kid`` in UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol, TypedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from domain.kernel.crypto import DecryptionError, UnknownKeyError

KEY_BYTES: Final = 32
"""Length of every master key and of the index key."""

NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16

_KID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_INFO_PREFIX: Final = "hsp-bff"


# -- the keyring ------------------------------------------------------------------------------------------


class KeyringConfig(TypedDict):
    """The textual form of a keyring, as settings carry it (keys in base64)."""

    active_kid: str
    keys: dict[str, str]
    index_key: str


@dataclass(frozen=True, slots=True)
class Keyring:
    """Master keys by key id (new writes use ``active_kid``) and the blind-index key.

    ``index_key`` is separate from the rotating keys because a blind index must stay stable across
    rotations. Key bytes never appear in ``repr``.
    """

    active_kid: str
    keys: Mapping[str, bytes] = field(repr=False, hash=False)
    index_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for kid, key in self.keys.items():
            if not isinstance(kid, str) or _KID.fullmatch(kid) is None:
                raise ValueError(f"key id {kid!r} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
            if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
                raise ValueError(f"key {kid!r} must be {KEY_BYTES} bytes of key material")
        if self.active_kid not in self.keys:
            raise ValueError(f"active key id {self.active_kid!r} is not among the configured keys")
        if not isinstance(self.index_key, bytes | bytearray) or len(self.index_key) != KEY_BYTES:
            raise ValueError(f"index key must be {KEY_BYTES} bytes of key material")
        if any(hmac.compare_digest(self.index_key, key) for key in self.keys.values()):
            raise ValueError("index key must differ from every encryption key")
        object.__setattr__(self, "keys", MappingProxyType({k: bytes(v) for k, v in self.keys.items()}))
        object.__setattr__(self, "index_key", bytes(self.index_key))

    @classmethod
    def from_config(cls, active_kid: str, keys: Mapping[str, str], index_key: str) -> Keyring:
        """Build a keyring from base64 text (standard or URL-safe alphabet, padding optional)."""
        if not keys:
            raise ValueError("no encryption keys configured")
        decoded = {kid: _decode_key(value, f"key {kid!r}") for kid, value in keys.items()}
        return cls(active_kid=active_kid, keys=decoded, index_key=_decode_key(index_key, "index key"))

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active_kid]

    def key(self, kid: str) -> bytes:
        """The master key for ``kid``; :class:`UnknownKeyError` when it is not configured."""
        try:
            return self.keys[kid]
        except KeyError:
            raise UnknownKeyError(f"key id {kid!r} is not configured") from None


def generate_keyring_config(active_kid: str = "k1") -> KeyringConfig:
    """Fresh random keys in the textual form :meth:`Keyring.from_config` accepts (demo and tests)."""
    return KeyringConfig(
        active_kid=active_kid,
        keys={active_kid: _encode_key(secrets.token_bytes(KEY_BYTES))},
        index_key=_encode_key(secrets.token_bytes(KEY_BYTES)),
    )


def _encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def _decode_key(text: str, what: str) -> bytes:
    """Decode standard or URL-safe base64; the message names the key, never its value."""
    cleaned = "".join(str(text).split()).rstrip("=").replace("-", "+").replace("_", "/")
    if not cleaned:
        raise ValueError(f"{what} is empty")
    try:
        key = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{what} must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


# -- derivation and encoding helpers ----------------------------------------------------------------------


def derive_key(algorithm: hashes.HashAlgorithm, master: bytes, *, suite: str, purpose: str, length: int) -> bytes:
    """HKDF(``algorithm``) of ``master`` with the label ``hsp-bff/<suite>/<purpose>/v1``."""
    info = f"{_INFO_PREFIX}/{suite}/{purpose}/v1".encode("ascii")
    return HKDF(algorithm=algorithm, length=length, salt=None, info=info).derive(master)


def bind_context(context: str, data: bytes) -> bytes:
    """Unambiguous ``len(context) || context || data`` so no two (context, data) pairs collide."""
    if not context:
        raise ValueError("context must not be empty")
    encoded = context.encode("utf-8")
    return len(encoded).to_bytes(4, "big") + encoded + data


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes | None:
    """Decode unpadded base64url, accepting only the canonical spelling; ``None`` when malformed."""
    if _B64URL.fullmatch(text) is None:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if b64url_encode(data) == text else None


# -- shared constructions ---------------------------------------------------------------------------------


class Aead(Protocol):
    """An AEAD with a 12-byte nonce whose output is ``ciphertext || tag16`` (e.g. ``AESGCM``)."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None, /) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None, /) -> bytes:
        """Raises ``cryptography.exceptions.InvalidTag`` when authentication fails."""
        ...


class AeadTokenCipher:
    """A field cipher producing self-describing ``<suite>.<kid>.<body>`` tokens over one AEAD per key."""

    __slots__ = ("_active_kid", "_aeads", "_suite")

    def __init__(
        self,
        keyring: Keyring,
        *,
        suite: str,
        algorithm: hashes.HashAlgorithm,
        key_length: int,
        make_aead: Callable[[bytes], Aead],
    ) -> None:
        self._suite = suite
        self._active_kid = keyring.active_kid
        self._aeads: dict[str, Aead] = {
            kid: make_aead(derive_key(algorithm, master, suite=suite, purpose="enc", length=key_length))
            for kid, master in keyring.keys.items()
        }

    def encrypt(self, plaintext: bytes, *, context: str) -> str:
        """Encrypt with the active key, binding ``context``, the suite and the key id."""
        kid = self._active_kid
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aeads[kid].encrypt(nonce, bytes(plaintext), self._associated_data(context, kid))
        return f"{self._suite}.{kid}.{b64url_encode(nonce + sealed)}"

    def decrypt(self, token: str, *, context: str) -> bytes:
        """The plaintext; :class:`DecryptionError` or :class:`UnknownKeyError` when it cannot be trusted."""
        suite, kid, body = self._split(token)
        if suite != self._suite:
            raise DecryptionError(f"token was not written by the {self._suite} suite")
        aead = self._aeads.get(kid)
        if aead is None:
            raise UnknownKeyError(f"key id {kid!r} is not configured")
        raw = b64url_decode(body)
        if raw is None or len(raw) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("malformed cipher token")
        try:
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._associated_data(context, kid))
        except InvalidTag:
            raise DecryptionError("cipher token failed authentication") from None

    def needs_rotation(self, token: str) -> bool:
        """True unless ``token`` was written by this suite with the active key; malformed tokens raise."""
        suite, kid, _ = self._split(token)
        return suite != self._suite or kid != self._active_kid

    def _associated_data(self, context: str, kid: str) -> bytes:
        if not context:
            raise ValueError("context must not be empty")
        return f"{context}|{self._suite}|{kid}".encode()

    @staticmethod
    def _split(token: str) -> tuple[str, str, str]:
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3 or not parts[0] or _KID.fullmatch(parts[1]) is None:
            raise DecryptionError("malformed cipher token")
        return parts[0], parts[1], parts[2]


class HmacBlindIndex:
    """Hex HMAC of ``context`` and the normalised value under a subkey of the stable index key."""

    __slots__ = ("_algorithm", "_key")

    def __init__(self, keyring: Keyring, *, suite: str, algorithm: hashes.HashAlgorithm) -> None:
        self._algorithm = algorithm
        self._key = derive_key(algorithm, keyring.index_key, suite=suite, purpose="index", length=algorithm.digest_size)

    def index(self, normalised_value: str, *, context: str) -> str:
        return _hmac(self._algorithm, self._key, bind_context(context, normalised_value.encode("utf-8"))).hex()


class HmacMac:
    """HMAC of ``context`` and data under the active ``mac`` subkey; verifies under any configured key."""

    __slots__ = ("_algorithm", "_keys")

    def __init__(self, keyring: Keyring, *, suite: str, algorithm: hashes.HashAlgorithm) -> None:
        self._algorithm = algorithm
        derived = {
            kid: derive_key(algorithm, master, suite=suite, purpose="mac", length=algorithm.digest_size)
            for kid, master in keyring.keys.items()
        }
        # The active key first: it is the one that signs, so it is the likeliest match.
        self._keys = [derived[keyring.active_kid]] + [k for kid, k in derived.items() if kid != keyring.active_kid]

    def mac(self, data: bytes, *, context: str) -> bytes:
        return _hmac(self._algorithm, self._keys[0], bind_context(context, data))

    def verify(self, data: bytes, tag: bytes, *, context: str) -> bool:
        message = bind_context(context, data)
        return any(hmac.compare_digest(_hmac(self._algorithm, key, message), tag) for key in self._keys)


class HashDigest:
    """A plain (unkeyed) hash."""

    __slots__ = ("_algorithm", "name")

    def __init__(self, name: str, algorithm: hashes.HashAlgorithm) -> None:
        self.name = name
        self._algorithm = algorithm

    def digest(self, data: bytes) -> bytes:
        h = hashes.Hash(self._algorithm)
        h.update(data)
        return h.finalize()


def _hmac(algorithm: hashes.HashAlgorithm, key: bytes, data: bytes) -> bytes:
    h = crypto_hmac.HMAC(key, algorithm)
    h.update(data)
    return h.finalize()
