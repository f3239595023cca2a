"""The incoming photo bucket as the API sees it: put whole objects, remove them, link to them.

Guarantee: `put` returns only once the object is stored (S3 PUT is atomic: an object is
either all there or not there); `remove` of a missing object is not an error, so cleanup
after a failed request can always run to the end.
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Protocol

from minio import Minio
from minio.error import MinioException
from urllib3.exceptions import HTTPError

from gridflow.objectstore import make_client
from gridflow.settings import Settings


class StoreError(Exception):
    """The object store could not be reached or refused the operation."""


_STORE_ERRORS = (MinioException, HTTPError, OSError)


class ObjectStore(Protocol):
    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None: ...

    def remove(self, bucket: str, key: str) -> None: ...

    def url(self, bucket: str, key: str, expires_s: int = 3600) -> str: ...


class MinioStore:
    def __init__(self, client: Minio) -> None:
        # The client carries its region, so presigning never has to ask the server.
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> MinioStore:
        return cls(make_client(settings))

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        try:
            self.client.put_object(
                bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata=metadata or None,
            )
        except _STORE_ERRORS as exc:
            raise StoreError(f"put {bucket}/{key} failed: {exc}") from exc

    def remove(self, bucket: str, key: str) -> None:
        try:
            self.client.remove_object(bucket, key)
        except _STORE_ERRORS as exc:
            raise StoreError(f"remove {bucket}/{key} failed: {exc}") from exc

    def url(self, bucket: str, key: str, expires_s: int = 3600) -> str:
        return self.client.presigned_get_object(bucket, key, expires=timedelta(seconds=expires_s))
