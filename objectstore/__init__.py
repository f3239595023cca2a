"""The one place that builds a MinIO/S3 client from settings, and the small reads and writes
every user needs (the API's photo store, the archive agent, the audit, the board, the
workbench). An adapter of its own, beside its users, so that the independent adapters can
share it: it imports gridflow's settings and clock, nothing of the pipeline."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    give it a real-time clock only. Whole seconds (rounded down): the date as the server
    keeps and reports it, so what the archive records is what a later reader finds.
    """
    return (wall_now() + timedelta(days=retention_days)).replace(microsecond=0)


# Object-lock modes (GRIDFLOW_ARCHIVE_LOCK_MODE): GOVERNANCE can be lifted or shortened by a
# credential with the bypass permission (the object store's administrator has it);
# COMPLIANCE by nobody until the date has passed.
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MISSING = {"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchVersion"}


def read_object(client: Minio, bucket: str, key: str,
                version_id: str | None = None) -> bytes | None:
    """The object's bytes, or None if there is no such object (other errors propagate).

    With `version_id`, that version, whatever was written or deleted at the key later (a
    plain DELETE on a versioned bucket only adds a delete marker: without the version id the
    read answers "no such key" although the locked version is there)."""
    try:
        resp = client.get_object(bucket, key, version_id=version_id or None)
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


@dataclass(frozen=True)
class Version:
    """One version of a key on a versioned bucket, as the version listing gives it."""

    version_id: str
    delete_marker: bool
    last_modified: datetime | None
    size: int | None
    etag: str


def versions_of(client: Minio, bucket: str, key: str) -> list[Version]:
    """Every version of `key` (delete markers included), oldest first."""
    found = []
    for o in client.list_objects(bucket, prefix=key, include_version=True):
        if o.object_name != key:
            continue
        found.append(Version(str(o.version_id or ""), bool(o.is_delete_marker), o.last_modified,
                             o.size, (o.etag or "").strip('"')))
    # The listing gives a key's versions newest first; ties on the time keep that order.
    found.reverse()
    found.sort(key=lambda v: v.last_modified or _EPOCH)
    return found


def original_version(client: Minio, bucket: str, key: str, data: bytes | None = None) -> str | None:
    """The version id of the first write of a content-addressed key: the oldest version that
    is not a delete marker (with `data`, the oldest whose ETag is the MD5 of `data`, a
    single-part PUT's ETag, so a later overwrite is never taken for it); None if there is
    none. "" on an unversioned bucket."""
    versions = [v for v in versions_of(client, bucket, key) if not v.delete_marker]
    if data is not None:
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        same = [v for v in versions if v.etag == md5]
        versions = same or versions
    return versions[0].version_id if versions else None


def retention_of(client: Minio, bucket: str, key: str,
                 version_id: str | None = None) -> tuple[str, datetime] | None:
    """The object-lock retention of a version: (mode, retain-until), or None if it has none."""
    try:
        found = client.get_object_retention(bucket, key, version_id=version_id or None)
    except S3Error as exc:
        if exc.code in {"NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError"}:
            return None
        raise
    if found is None or found.retain_until_date is None or not found.mode:
        return None
    return str(found.mode), found.retain_until_date


def put_once(client: Minio, bucket: str, key: str, data: bytes, *,
             content_type: str = "application/octet-stream",
             metadata: dict[str, Any] | None = None,
             retention: Retention | None = None) -> tuple[bool, str | None]:
    """`put_if_absent` that also gives the version id this call wrote: (True, version id), or
    (False, None) when the key was already there (the caller finds the version it needs,
    e.g. with `original_version`)."""
    headers = genheaders(metadata, None, None, retention, False)
    headers["Content-Type"] = content_type
    headers["If-None-Match"] = "*"
    put = getattr(client, "_put_object", None)
    if put is None:
        if object_exists(client, bucket, key):
            return False, None
        written = client.put_object(bucket, key, io.BytesIO(data), len(data),
                                    content_type=content_type, metadata=metadata,
                                    retention=retention)
        return True, written.version_id
    try:
        result = put(bucket, key, data, headers)
    except S3Error as exc:
        if exc.code == "PreconditionFailed":
            return False, None
        raise
    return True, getattr(result, "version_id", None)


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
    return put_once(client, bucket, key, data, content_type=content_type, metadata=metadata,
                    retention=retention)[0]
