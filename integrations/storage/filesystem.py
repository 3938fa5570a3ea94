"""A blob store in a local folder, for the demo and tests.

The blob under key ``a/b/c.pdf`` lives in ``<root>/a/b/c.pdf~blob``. The ``~blob`` suffix uses a character
keys may not contain, so a file never clashes with a folder (``a`` and ``a/b`` can both be keys) nor with
the temporary files of writes in progress (``.c.pdf~<random>.tmp``). Each file starts with a small
header carrying the content type, so data and type are replaced together by one atomic rename.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

from domain.kernel.blobs import (
    Blob,
    BlobNotFoundError,
    BlobStoreUnavailableError,
    validate_blob_key,
    validate_content_type,
)

_MAGIC = b"HSPBLOB1"
_SUFFIX = "~blob"


class FilesystemBlobStore:
    """A :class:`~domain.kernel.blobs.BlobStore` under ``root``; file IO runs in worker threads."""

    __slots__ = ("_root",)

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        path = self._path(key)
        header = _header(validate_content_type(content_type))
        try:
            await asyncio.to_thread(_write_atomically, path, header, data)
        except OSError as exc:
            raise BlobStoreUnavailableError("cannot write blob file") from exc

    async def get(self, key: str) -> Blob:
        path = self._path(key)
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise BlobNotFoundError() from exc
        except OSError as exc:
            raise BlobStoreUnavailableError("cannot read blob file") from exc
        content_type, data = _parse(raw)
        return Blob(key=key, data=data, content_type=content_type)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except NotADirectoryError:
            return
        except OSError as exc:
            raise BlobStoreUnavailableError("cannot delete blob file") from exc

    async def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.is_file)
        except OSError as exc:
            raise BlobStoreUnavailableError("cannot stat blob file") from exc

    def _path(self, key: str) -> Path:
        *folders, name = validate_blob_key(key).split("/")
        return self._root.joinpath(*folders, name + _SUFFIX)


def _header(content_type: str) -> bytes:
    encoded = content_type.encode("ascii")
    return _MAGIC + len(encoded).to_bytes(2, "big") + encoded


def _parse(raw: bytes) -> tuple[str, bytes]:
    start = len(_MAGIC) + 2
    if len(raw) < start or not raw.startswith(_MAGIC):
        raise BlobStoreUnavailableError("blob file has no valid header")
    end = start + int.from_bytes(raw[len(_MAGIC) : start], "big")
    if len(raw) < end:
        raise BlobStoreUnavailableError("blob file header is truncated")
    try:
        content_type = raw[start:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise BlobStoreUnavailableError("blob file header is corrupt") from exc
    return content_type, raw[end:]


def _write_atomically(path: Path, header: bytes, data: bytes) -> None:
    """Write to a temporary file in the target folder, flush it to disk, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name.removesuffix(_SUFFIX)}~{secrets.token_hex(8)}.tmp")
    try:
        with temporary.open("xb") as file:
            file.write(header)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
