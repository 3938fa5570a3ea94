"""One contract for every blob store adapter (DESIGN D5), and for the encrypting wrapper over each."""

from __future__ import annotations

import base64
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from moto.server import ThreadedMotoServer

from domain.kernel.blobs import (
    ENCRYPTED_CONTENT_TYPE,
    BlobCipher,
    BlobContentTypeError,
    BlobKeyError,
    BlobNotFoundError,
    BlobStore,
    BlobStoreUnavailableError,
    EncryptedBlobStore,
    FieldCipherBlobs,
)
from domain.kernel.crypto import DecryptionError
from integrations.storage import FilesystemBlobStore, S3BlobStore

REGION = "eu-west-1"
PDF = b"%PDF-1.7\n" + "检验报告：血常规 正常".encode() + bytes(range(256)) * 8

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "a/../../b",
    "a/./b",
    "a//b",
    "trailing/",
    "with space",
    "back\\slash",
    "nul\x00byte",
    "报告.pdf",
    "tilde~blob",
    "x" * 1025,
]


# -- test doubles of the crypto port ------------------------------------------------------------------------


class AesGcmBlobCipher:
    """AES-256-GCM with the context as associated data: a minimal stand-in for the real suite."""

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def encrypt(self, data: bytes, *, context: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, context.encode())

    def decrypt(self, data: bytes, *, context: str) -> bytes:
        try:
            return self._aead.decrypt(data[:12], data[12:], context.encode())
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("blob does not decrypt") from exc


class AesGcmFieldCipher:
    """A text-token field cipher over the same primitive, to exercise :class:`FieldCipherBlobs`."""

    def __init__(self) -> None:
        self._blobs = AesGcmBlobCipher()

    def encrypt(self, plaintext: bytes, *, context: str) -> str:
        sealed = self._blobs.encrypt(plaintext, context=context)
        return "t1." + base64.urlsafe_b64encode(sealed).decode("ascii")

    def decrypt(self, token: str, *, context: str) -> bytes:
        if not token.startswith("t1."):
            raise DecryptionError("unknown token")
        try:
            sealed = base64.urlsafe_b64decode(token[3:])
        except ValueError as exc:  # binascii.Error: a tampered token may not even be base64
            raise DecryptionError("blob does not decrypt") from exc
        return self._blobs.decrypt(sealed, context=context)

    def needs_rotation(self, token: str) -> bool:
        return False


# -- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blob_s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback for this module; stopped afterwards."""
    request_log = logging.getLogger("werkzeug")
    previous_level = request_log.level
    request_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        request_log.setLevel(previous_level)


def _s3_store(endpoint_url: str, bucket: str | None = None) -> S3BlobStore:
    """A store on a fresh bucket (or ``bucket``), created on open."""
    return S3BlobStore(
        endpoint_url=endpoint_url,
        bucket=bucket or f"blobs-{uuid.uuid4().hex[:16]}",
        region=REGION,
        access_key_id="testing",
        secret_access_key="testing",
        create_bucket=True,
    )


@pytest.fixture(params=["filesystem", "s3"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path, blob_s3_endpoint: str) -> AsyncIterator[BlobStore]:
    if request.param == "filesystem":
        yield FilesystemBlobStore(tmp_path / "blobs")
        return
    async with _s3_store(blob_s3_endpoint) as store:
        yield store


@pytest.fixture(params=["blob-cipher", "field-cipher-tokens", "intl", "sm"])
def blob_cipher(request: pytest.FixtureRequest) -> BlobCipher:
    """The in-test doubles, and each real suite's field cipher through :class:`FieldCipherBlobs`."""
    if request.param == "blob-cipher":
        return AesGcmBlobCipher()
    if request.param == "field-cipher-tokens":
        return FieldCipherBlobs(AesGcmFieldCipher())
    from integrations.crypto.keys import Keyring, generate_keyring_config
    from integrations.crypto.suite import build_suite

    keyring = Keyring.from_config(**generate_keyring_config())
    return FieldCipherBlobs(build_suite(request.param, keyring).cipher)


# -- the plain contract ------------------------------------------------------------------------------------


async def test_put_get_round_trip_keeps_data_and_content_type(blob_store: BlobStore) -> None:
    await blob_store.put("reports/2024/r-1.pdf", PDF, content_type="application/pdf")

    blob = await blob_store.get("reports/2024/r-1.pdf")

    assert blob.key == "reports/2024/r-1.pdf"
    assert blob.data == PDF
    assert blob.content_type == "application/pdf"


async def test_empty_blob_round_trips(blob_store: BlobStore) -> None:
    await blob_store.put("empty", b"", content_type="text/plain; charset=utf-8")

    blob = await blob_store.get("empty")

    assert blob.data == b""
    assert blob.content_type == "text/plain; charset=utf-8"


async def test_put_overwrites_data_and_content_type(blob_store: BlobStore) -> None:
    await blob_store.put("chat/p1", b"first", content_type="image/png")
    await blob_store.put("chat/p1", b"second", content_type="image/jpeg")

    blob = await blob_store.get("chat/p1")

    assert (blob.data, blob.content_type) == (b"second", "image/jpeg")


async def test_exists_and_delete(blob_store: BlobStore) -> None:
    assert not await blob_store.exists("img/a.jpg")
    await blob_store.put("img/a.jpg", b"jpeg", content_type="image/jpeg")
    assert await blob_store.exists("img/a.jpg")

    await blob_store.delete("img/a.jpg")

    assert not await blob_store.exists("img/a.jpg")
    with pytest.raises(BlobNotFoundError):
        await blob_store.get("img/a.jpg")


async def test_delete_of_a_missing_key_is_a_no_op(blob_store: BlobStore) -> None:
    await blob_store.delete("never/written")
    assert not await blob_store.exists("never/written")


async def test_missing_key_raises_blob_not_found(blob_store: BlobStore) -> None:
    with pytest.raises(BlobNotFoundError) as caught:
        await blob_store.get("missing/key.pdf")

    assert caught.value.code == "blob.not_found"
    assert caught.value.status == 404


async def test_a_key_and_a_key_below_it_coexist(blob_store: BlobStore) -> None:
    await blob_store.put("nest", b"parent", content_type="text/plain")
    await blob_store.put("nest/child", b"child", content_type="text/plain")

    assert (await blob_store.get("nest")).data == b"parent"
    assert (await blob_store.get("nest/child")).data == b"child"
    assert not await blob_store.exists("nest/child/grandchild")
    with pytest.raises(BlobNotFoundError):
        await blob_store.get("nest/child/grandchild")


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_refused_everywhere(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(BlobKeyError) as caught:
        await blob_store.put(key, b"x", content_type="text/plain")
    assert caught.value.code == "blob.bad_key"
    with pytest.raises(BlobKeyError):
        await blob_store.get(key)
    with pytest.raises(BlobKeyError):
        await blob_store.exists(key)
    with pytest.raises(BlobKeyError):
        await blob_store.delete(key)


@pytest.mark.parametrize("content_type", ["", "text/plain\r\nX-Injected: 1", "图片/png", "a" * 256])
async def test_bad_content_types_are_refused(blob_store: BlobStore, content_type: str) -> None:
    with pytest.raises(BlobContentTypeError):
        await blob_store.put("ok", b"x", content_type=content_type)
    assert not await blob_store.exists("ok")


# -- encryption over every adapter --------------------------------------------------------------------------


async def test_encrypted_store_round_trips(blob_store: BlobStore, blob_cipher: BlobCipher) -> None:
    encrypted = EncryptedBlobStore(blob_store, blob_cipher)
    await encrypted.put("reports/r-2.pdf", PDF, content_type="application/pdf")

    blob = await encrypted.get("reports/r-2.pdf")

    assert (blob.key, blob.data, blob.content_type) == ("reports/r-2.pdf", PDF, "application/pdf")
    assert await encrypted.exists("reports/r-2.pdf")
    await encrypted.delete("reports/r-2.pdf")
    assert not await blob_store.exists("reports/r-2.pdf")
    with pytest.raises(BlobNotFoundError):
        await encrypted.get("reports/r-2.pdf")


async def test_inner_store_holds_only_ciphertext(blob_store: BlobStore, blob_cipher: BlobCipher) -> None:
    encrypted = EncryptedBlobStore(blob_store, blob_cipher)
    await encrypted.put("reports/r-3.pdf", PDF, content_type="application/pdf")

    raw = await blob_store.get("reports/r-3.pdf")

    assert raw.content_type == ENCRYPTED_CONTENT_TYPE
    assert PDF[:32] not in raw.data
    assert "血常规".encode() not in raw.data
    assert b"application/pdf" not in raw.data
    if isinstance(blob_store, FilesystemBlobStore):
        for path in blob_store.root.rglob("*"):
            if path.is_file():
                assert PDF[:32] not in path.read_bytes()


async def test_blob_copied_to_another_key_is_refused(blob_store: BlobStore, blob_cipher: BlobCipher) -> None:
    encrypted = EncryptedBlobStore(blob_store, blob_cipher)
    await encrypted.put("patients/a/report", PDF, content_type="application/pdf")
    raw = await blob_store.get("patients/a/report")

    await blob_store.put("patients/b/report", raw.data, content_type=raw.content_type)

    with pytest.raises(DecryptionError):
        await encrypted.get("patients/b/report")
    assert (await encrypted.get("patients/a/report")).data == PDF


async def test_tampered_ciphertext_is_refused(blob_store: BlobStore, blob_cipher: BlobCipher) -> None:
    encrypted = EncryptedBlobStore(blob_store, blob_cipher)
    await encrypted.put("img/x.png", b"\x89PNG image", content_type="image/png")
    raw = await blob_store.get("img/x.png")
    tampered = bytearray(raw.data)
    tampered[len(tampered) // 2] ^= 0x01

    await blob_store.put("img/x.png", bytes(tampered), content_type=raw.content_type)

    with pytest.raises(DecryptionError):
        await encrypted.get("img/x.png")


async def test_encrypted_store_refuses_bad_keys(blob_store: BlobStore, blob_cipher: BlobCipher) -> None:
    encrypted = EncryptedBlobStore(blob_store, blob_cipher)
    with pytest.raises(BlobKeyError):
        await encrypted.put("../escape", b"x", content_type="text/plain")
    with pytest.raises(BlobKeyError):
        await encrypted.get("/abs")


# -- adapter specifics --------------------------------------------------------------------------------------


async def test_filesystem_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    for round_ in range(3):
        await store.put("a/b/c.pdf", b"v%d" % round_, content_type="application/pdf")

    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())

    assert names == ["a/b/c.pdf~blob"]


async def test_filesystem_corrupt_file_is_reported(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    (tmp_path / "junk~blob").write_bytes(b"not a blob")

    with pytest.raises(BlobStoreUnavailableError):
        await store.get("junk")


async def test_s3_store_must_be_opened(blob_s3_endpoint: str) -> None:
    store = _s3_store(blob_s3_endpoint)
    with pytest.raises(RuntimeError):
        await store.get("k")

    await store.open()
    try:
        with pytest.raises(RuntimeError):
            await store.open()
        await store.put("k", b"v", content_type="text/plain")
        assert (await store.get("k")).data == b"v"
    finally:
        await store.close()
    await store.close()

    with pytest.raises(RuntimeError):
        await store.exists("k")


async def test_s3_store_reopens_an_existing_bucket(blob_s3_endpoint: str) -> None:
    bucket = f"blobs-{uuid.uuid4().hex[:16]}"
    async with _s3_store(blob_s3_endpoint, bucket) as first:
        await first.put("kept", b"v", content_type="text/plain")

    async with _s3_store(blob_s3_endpoint, bucket) as second:
        assert (await second.get("kept")).data == b"v"


async def test_s3_unreachable_endpoint_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = S3BlobStore(
        endpoint_url=f"http://127.0.0.1:{port}",
        bucket="nowhere",
        region=REGION,
        access_key_id="testing",
        secret_access_key="testing",
        connect_timeout=1.0,
        read_timeout=1.0,
        max_attempts=1,
    )
    async with store:
        with pytest.raises(BlobStoreUnavailableError) as caught:
            await store.get("patients/p-42/report.pdf")

    assert caught.value.code == "blob.store_unavailable"
    assert caught.value.status == 503
    assert "p-42" not in caught.value.detail
