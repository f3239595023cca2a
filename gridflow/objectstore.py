"""The one place that builds a MinIO/S3 client from settings, and the small reads and writes
every user needs."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import Any

from minio import Minio
from minio.error import S3Error
from minio.helpers import genheaders
from minio.retention import Retention

from gridflow.clock import Clock, wall_clock
from gridflow.settings import Settings


def make_client(settings: Settings, cls: type[Minio] = Minio, http_client: Any = None) -> Minio:
    """A MinIO client for the configured server (`cls`: a Minio subclass; `http_client`: a
    urllib3 pool of one's own, e.g. sized to a thread pool; the SDK's default otherwise)."""
    return cls(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
        http_client=http_client,
    )


def retain_until(retention_days: int, wall_now: Clock = wall_clock) -> datetime:
    """Until when an object written now stays locked: the wall clock at the moment of writing
    plus the retention period.

    Retention is a fact of the storage in real time: the server compares the date with its own
    clock (MinIO refuses one that is not in the future) and keeps the object until then. So it
    is never computed from the simulated clock (`GRIDFLOW_CLOCK`, domain time only: deadlines,
    warnings, escalations) nor from an event's time. Not the later of the event time and the
    wall clock either: in production an object is written after its event, so the wall clock
    is already the later one (a backlog archived late is kept longer, never shorter); an event
    time past the wall clock only comes from a simulated or skewed clock, and it must not lock
    real storage for years (irrevocably under COMPLIANCE). `wall_now` is injectable for tests;
    give it a real-time clock only.
    """
    return wall_now() + timedelta(days=retention_days)


_MISSING = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}


def read_object(client: Minio, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None if there is no such object (other errors propagate)."""
    try:
        resp = client.get_object(bucket, key)
    except S3Error as exc:
        if exc.code in _MISSING:
            return None
        raise
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


def object_exists(client: Minio, bucket: str, key: str) -> bool:
    try:
        client.stat_object(bucket, key)
        return True
    except S3Error as exc:
        if exc.code in _MISSING:
            return False
        raise


def put_if_absent(client: Minio, bucket: str, key: str, data: bytes, *,
                  content_type: str = "application/octet-stream",
                  metadata: dict[str, Any] | None = None,
                  retention: Retention | None = None) -> bool:
    """Write `data` at `key` unless an object is already there, in one request: a conditional
    PUT (`If-None-Match: *`; MinIO and S3 answer 412 PreconditionFailed when the key exists).
    True if this call wrote it, False if it was already there (nothing written: on a versioned
    or object-lock bucket no second version, no second retention period).

    Meant for content-addressed keys (the same key always carries the same bytes), where
    "already there" means "done": a retry after a lost response, or a redelivery, gets False.
    One single-part PUT whatever the size (S3 allows up to 5 GiB). The SDK's `put_object`
    cannot send the header; its single-part `_put_object` can. Should that private method be
    gone (another minio version), the object is statted first and written with `put_object`
    (two requests, same result).
    A server that ignored the header would write a second, identical version (the pinned
    MinIO honours it: tests/integration/test_archive.py checks).
    """
    headers = genheaders(metadata, None, None, retention, False)
    headers["Content-Type"] = content_type
    headers["If-None-Match"] = "*"
    put = getattr(client, "_put_object", None)
    if put is None:
        if object_exists(client, bucket, key):
            return False
        client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                          metadata=metadata, retention=retention)
        return True
    try:
        put(bucket, key, data, headers)
    except S3Error as exc:
        if exc.code == "PreconditionFailed":
            return False
        raise
    return True
