"""Blob store adapters (DESIGN D5): the filesystem for the demo and tests, S3-compatible for production.

Both store whatever bytes they are given; wrap them in
:class:`~domain.kernel.blobs.EncryptedBlobStore` so that only ciphertext reaches the disk or the bucket.
"""

from __future__ import annotations

from integrations.storage.filesystem import FilesystemBlobStore
from integrations.storage.s3 import S3BlobStore

__all__ = ["FilesystemBlobStore", "S3BlobStore"]
