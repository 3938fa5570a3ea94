"""A blob store in an S3-compatible bucket (AWS S3, MinIO, Ceph, OSS/COS in S3 mode), for production.

Lifecycle: one client per process. Call :meth:`S3BlobStore.open` once at start-up, inside the event loop
that serves requests, and :meth:`S3BlobStore.close` at shutdown; ``async with S3BlobStore(...) as store``
does both. The client keeps a connection pool bound to that loop, so the store must not be shared across
event loops. Calls before ``open`` or after ``close`` raise :class:`RuntimeError`.

Server-side encryption is not relied on: wrap the store in
:class:`~domain.kernel.blobs.EncryptedBlobStore`. On AWS the credentials need ``s3:ListBucket`` as well as
object access, or a missing key answers 403 instead of 404.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from domain.kernel.blobs import (
    Blob,
    BlobNotFoundError,
    BlobStoreUnavailableError,
    validate_blob_key,
    validate_content_type,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CreateBucketConfigurationTypeDef

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


class S3BlobStore:
    """A :class:`~domain.kernel.blobs.BlobStore` over one bucket, holding one aiobotocore client."""

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        bucket: str,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        create_bucket: bool = False,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        if not bucket:
            raise ValueError("bucket must not be empty")
        self._endpoint_url = endpoint_url
        self._bucket = bucket
        self._region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._create_bucket = create_bucket
        self._config = AioConfig(
            region_name=region,
            signature_version="s3v4",
            # S3-compatible servers usually want path-style URLs; AWS itself prefers virtual hosts.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            # Not every S3-compatible server understands the newer default integrity checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack: AsyncExitStack | None = None
        self._client: S3Client | None = None

    @property
    def bucket(self) -> str:
        return self._bucket

    async def open(self) -> None:
        """Create the client (and the bucket, when asked to). Call once per process."""
        if self._stack is not None:
            raise RuntimeError("S3BlobStore is already open")
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    endpoint_url=self._endpoint_url,
                    region_name=self._region,
                    aws_access_key_id=self._access_key_id,
                    aws_secret_access_key=self._secret_access_key,
                    config=self._config,
                )
            )
            if self._create_bucket:
                await self._ensure_bucket(client)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._client = client

    async def close(self) -> None:
        """Close the client and its connection pool. Safe to call twice."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> S3BlobStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        client = self._require_client()
        validate_blob_key(key)
        validate_content_type(content_type)
        try:
            await client.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("put_object", exc) from exc

    async def get(self, key: str) -> Blob:
        client = self._require_client()
        validate_blob_key(key)
        try:
            response = await client.get_object(Bucket=self._bucket, Key=key)
            async with response["Body"] as body:
                data = await body.read()
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                raise BlobNotFoundError() from exc
            raise _unavailable("get_object", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("get_object", exc) from exc
        content_type = response.get("ContentType") or "application/octet-stream"
        return Blob(key=key, data=data, content_type=content_type)

    async def delete(self, key: str) -> None:
        client = self._require_client()
        validate_blob_key(key)
        try:
            await client.delete_object(Bucket=self._bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("delete_object", exc) from exc

    async def exists(self, key: str) -> bool:
        client = self._require_client()
        validate_blob_key(key)
        try:
            await client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                return False
            raise _unavailable("head_object", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("head_object", exc) from exc
        return True

    def _require_client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3BlobStore is not open: call open() at start-up")
        return self._client

    async def _ensure_bucket(self, client: S3Client) -> None:
        try:
            if self._region == "us-east-1":
                await client.create_bucket(Bucket=self._bucket)
            else:
                # S3-compatible servers accept region names the stubs do not list.
                configuration = cast("CreateBucketConfigurationTypeDef", {"LocationConstraint": self._region})
                await client.create_bucket(Bucket=self._bucket, CreateBucketConfiguration=configuration)
        except ClientError as exc:
            if _error_code(exc) not in _BUCKET_EXISTS_CODES:
                raise


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unavailable(operation: str, exc: BotoCoreError | ClientError) -> BlobStoreUnavailableError:
    """Name the failing call and the S3 error code, never the key (it may identify a person)."""
    reason = _error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    return BlobStoreUnavailableError(f"S3 {operation} failed: {reason}")
