"""The incoming photo bucket as the API sees it: put whole objects, remove them, link to them.

Guarantee: `put` returns only once the object is stored (S3 PUT is atomic: an object is
either all there or not there); `remove` of a missing object is not an error, so cleanup
after a failed request can always run to the end.
"""

from __future__ import annotations

import inspect
import io
import os
from datetime import timedelta
from typing import Any, Protocol

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException
from urllib3.exceptions import HTTPError

from gridflow.settings import Settings
from objectstore import make_client


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

    def url(self, bucket: str, key: str, expires_s: int = 3600,
            version_id: str | None = None) -> str: ...


# The header that signs a request's body (AWS SigV4): its SHA-256, hex.
CONTENT_SHA256 = "x-amz-content-sha256"


class PresignedBodyMinio(Minio):
    """A Minio client that takes a body's SHA-256 from the caller instead of hashing it again.

    Over plain HTTP the SDK (7.2) hashes every request body to sign it; the API has already
    hashed each photo while it arrived. A put whose headers carry `x-amz-content-sha256` is
    signed with that value as given; the server recomputes the hash and refuses the put if it
    does not match (XAmzContentSHA256Mismatch), so the stored bytes are still checked end to
    end. Any other request is signed as the SDK does it.
    """

    def _build_headers(
        self,
        host: str,
        headers: dict[str, Any] | None = None,
        body: bytes | None = None,
        creds: Any = None,
    ) -> tuple[dict[str, Any], Any]:
        known = (headers or {}).get(CONTENT_SHA256)
        if not known or not body or not creds or self._base_url.is_https:
            return super()._build_headers(host, headers, body, creds)  # type: ignore[misc]
        built, date = super()._build_headers(host, headers, None, creds)  # type: ignore[misc]
        built["Content-Length"] = str(len(body))
        built[CONTENT_SHA256] = known
        return built, date


def _can_presign_body() -> bool:
    """Whether this minio SDK builds headers the way `PresignedBodyMinio` expects (7.2)."""
    try:
        params = list(inspect.signature(Minio._build_headers).parameters)
    except (AttributeError, TypeError, ValueError):
        return False
    return params == ["self", "host", "headers", "body", "creds"]


def api_client(settings: Settings, connections: int) -> Minio:
    """The API's MinIO client: `PresignedBodyMinio` with a connection pool of `connections`
    (the SDK's default pool keeps 10: with more threads putting at once, connections beyond
    it are opened and thrown away per request). Timeouts and retries are the SDK's defaults."""
    timeout = 300
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
        maxsize=connections,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    cls = PresignedBodyMinio if _can_presign_body() else Minio
    return make_client(settings, cls, http)


class MinioStore:
    def __init__(self, client: Minio) -> None:
        # The client carries its region, so presigning never has to ask the server.
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings, connections: int = 10) -> MinioStore:
        return cls(api_client(settings, connections))

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """`metadata["sha256"]`, when given, is taken as the SHA-256 of `data` and signs the
        put (with a `PresignedBodyMinio` client): the server refuses the put if it is wrong."""
        headers: dict[str, Any] = dict(metadata or {})
        if "sha256" in headers and isinstance(self.client, PresignedBodyMinio):
            headers[CONTENT_SHA256] = headers["sha256"]
        try:
            self.client.put_object(
                bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata=headers or None,
            )
        except _STORE_ERRORS as exc:
            raise StoreError(f"put {bucket}/{key} failed: {exc}") from exc

    def remove(self, bucket: str, key: str) -> None:
        try:
            self.client.remove_object(bucket, key)
        except _STORE_ERRORS as exc:
            raise StoreError(f"remove {bucket}/{key} failed: {exc}") from exc

    def url(self, bucket: str, key: str, expires_s: int = 3600,
            version_id: str | None = None) -> str:
        """A presigned GET of the object (of `version_id` when given: a later delete marker
        or overwrite at the key does not change what the link shows)."""
        return self.client.presigned_get_object(bucket, key, expires=timedelta(seconds=expires_s),
                                                version_id=version_id or None)
