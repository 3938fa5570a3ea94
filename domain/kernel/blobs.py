"""The blob store port (DESIGN D5): report PDFs, images and chat pictures, stored encrypted, served through
signed links bound to an account that expire in minutes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from domain.kernel.crypto import DecryptionError, FieldCipher
from domain.kernel.errors import NotFoundError, UnavailableError, ValidationError


class BlobNotFoundError(NotFoundError):
    code = "blob.not_found"
    message = "文件不存在或已过期"


@dataclass(frozen=True, slots=True)
class Blob:
    key: str
    data: bytes
    content_type: str


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes, *, content_type: str) -> None: ...

    async def get(self, key: str) -> Blob:
        """Raises BlobNotFoundError."""
        ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...


# -- keys and content types ------------------------------------------------------------------------------


class BlobKeyError(ValidationError):
    code = "blob.bad_key"
    message = "文件路径无效"


class BlobContentTypeError(ValidationError):
    code = "blob.bad_content_type"
    message = "文件类型无效"


class BlobStoreUnavailableError(UnavailableError):
    """The storage backend failed or cannot be reached (disk error, S3 outage)."""

    code = "blob.store_unavailable"


MAX_KEY_LENGTH = 1024
"""S3's own limit on key length (in bytes; keys are ASCII here)."""

_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
_CONTENT_TYPE = re.compile(r"[!-~][ -~]{0,254}")


def validate_blob_key(key: str) -> str:
    """Return ``key`` if it is a safe relative path, else raise :class:`BlobKeyError`.

    Safe means: only ``[A-Za-z0-9._/-]``, at most :data:`MAX_KEY_LENGTH` characters, no leading or
    trailing ``/``, and no empty, ``.`` or ``..`` segment. Keys should be opaque ids, never personal data:
    they travel (encoded, not encrypted) inside signed links.
    """
    if not key or len(key) > MAX_KEY_LENGTH or _KEY_CHARS.fullmatch(key) is None:
        raise BlobKeyError("blob key is empty, too long or has characters outside [A-Za-z0-9._/-]")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise BlobKeyError("blob key has an empty, '.' or '..' segment, or a leading or trailing '/'")
    return key


def validate_content_type(content_type: str) -> str:
    """Return ``content_type`` if it is 1-255 printable ASCII characters, else raise."""
    if _CONTENT_TYPE.fullmatch(content_type) is None:
        raise BlobContentTypeError("content type must be 1-255 printable ASCII characters")
    return content_type


# -- encryption ------------------------------------------------------------------------------------------


class BlobCipher(Protocol):
    """Authenticated encryption of whole blobs; ``context`` is bound as associated data."""

    def encrypt(self, data: bytes, *, context: str) -> bytes: ...

    def decrypt(self, data: bytes, *, context: str) -> bytes:
        """Raises :class:`~domain.kernel.crypto.DecryptionError` when ``data`` or ``context`` do not match."""
        ...


class FieldCipherBlobs:
    """A :class:`BlobCipher` over a :class:`FieldCipher`: the text token is stored as ASCII bytes."""

    __slots__ = ("_cipher",)

    def __init__(self, cipher: FieldCipher) -> None:
        self._cipher = cipher

    def encrypt(self, data: bytes, *, context: str) -> bytes:
        return self._cipher.encrypt(data, context=context).encode("ascii")

    def decrypt(self, data: bytes, *, context: str) -> bytes:
        try:
            token = data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise DecryptionError("blob is not a cipher token") from exc
        return self._cipher.decrypt(token, context=context)


ENCRYPTED_CONTENT_TYPE = "application/octet-stream"
"""What the inner store records for every encrypted blob; the real type travels inside the ciphertext."""

_ENVELOPE_VERSION = 1


def blob_context(key: str) -> str:
    """The associated data bound to the blob stored under ``key``."""
    return f"blob:{key}"


class EncryptedBlobStore:
    """A :class:`BlobStore` that encrypts every blob before handing it to ``inner``.

    The plaintext envelope is ``version (1 byte) | content-type length (2 bytes) | content type | data`` and
    is encrypted with the blob key as associated data, so the content type is authenticated too and a blob
    copied to another key fails to decrypt (:class:`~domain.kernel.crypto.DecryptionError`).
    """

    __slots__ = ("_cipher", "_inner")

    def __init__(self, inner: BlobStore, cipher: BlobCipher) -> None:
        self._inner = inner
        self._cipher = cipher

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        validate_blob_key(key)
        encoded_type = validate_content_type(content_type).encode("ascii")
        envelope = b"".join((bytes((_ENVELOPE_VERSION,)), len(encoded_type).to_bytes(2, "big"), encoded_type, data))
        ciphertext = self._cipher.encrypt(envelope, context=blob_context(key))
        await self._inner.put(key, ciphertext, content_type=ENCRYPTED_CONTENT_TYPE)

    async def get(self, key: str) -> Blob:
        stored = await self._inner.get(validate_blob_key(key))
        envelope = self._cipher.decrypt(stored.data, context=blob_context(key))
        if len(envelope) < 3 or envelope[0] != _ENVELOPE_VERSION:
            raise DecryptionError("unknown blob envelope")
        type_length = int.from_bytes(envelope[1:3], "big")
        if len(envelope) < 3 + type_length:
            raise DecryptionError("truncated blob envelope")
        try:
            content_type = envelope[3 : 3 + type_length].decode("ascii")
        except UnicodeDecodeError as exc:
            raise DecryptionError("bad content type in blob envelope") from exc
        return Blob(key=key, data=envelope[3 + type_length :], content_type=content_type)

    async def delete(self, key: str) -> None:
        await self._inner.delete(validate_blob_key(key))

    async def exists(self, key: str) -> bool:
        return await self._inner.exists(validate_blob_key(key))
