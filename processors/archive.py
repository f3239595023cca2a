"""Photo archive: verify each incoming photo, keep a content-addressed, retention-locked copy.

For each photo an event references: read the incoming object, check its size and
sha256 against the claim check, check the image and read EXIF (one decode, reduced
scale, which also gives the thumbnail), write the archive copy under
`sha256/<aa>/<sha>.<ext>` with object-lock retention and an EXIF-stripped
thumbnail (side by side, each one conditional PUT: a key already there is a photo
already archived), then ask the case processor to record PhotoArchived, and only
then delete the incoming copy (`remove_incoming`, or `remove_incoming_many` for a
batch with one request). The lock's retain-until date is real time (the wall clock at the
moment of writing plus the retention period, `objectstore.retain_until`), never the
simulated clock the case decisions run on. Every step is idempotent, so a crash anywhere and a
re-run yields the same archive and the same command id. Object-store errors
propagate to the caller, which retries with backoff: nothing is dropped.

The command records which version of each key it archived (`archive_version_id`,
`thumbnail_version_id`) and the lock it put on the copy (`lock_mode`, `retain_until`): the
archive bucket is versioned, so a plain DELETE only hides the locked version behind a delete
marker and an overwrite only adds a newer one; readers read the recorded version and
`gridflow audit case` tells what happened to the key since. A redelivery finds the versions
and the lock the first write left (`original_version`, `retention_of`), so it records the
same data.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.retention import Retention

from gridflow import events as ev
from gridflow.clock import Clock, wall_clock
from gridflow.core import photos as photo_core
from gridflow.events import Message, iso
from objectstore import (
    original_version,
    put_once,
    read_object,
    retain_until,
    retention_of,
)
from processors.steps import command

# Events whose data carries photos, and where.
PHOTO_FIELDS = {
    ev.CASE_FILED: ("report", "photos"),
    ev.CASE_NOT_FILED: ("report", "photos"),  # kept as evidence even when not filed
    ev.REPORT_MERGED: ("report", "photos"),
    ev.TASK_RESOLVED: ("photos",),
    ev.TASK_PROGRESS_NOTED: ("photos",),
    ev.TASK_VERIFIED: ("photos",),
    ev.TASK_REOPENED: ("photos",),  # a failed verification's photos (核查不通过)
}
EXT = {"image/jpeg": "jpg", "image/png": "png", "image/heic": "heic"}
# The archive agent (processors.app): events taken at most BATCH at a time (waiting at most
# BATCH_WITHIN_S for more), their photos archived at most CONCURRENCY at once.
BATCH = 16
BATCH_WITHIN_S = 0.05
CONCURRENCY = 4
# Thumbnail writes run here, beside the archive write of the same photo (I/O only).
_SIDE = ThreadPoolExecutor(max_workers=2 * CONCURRENCY, thread_name_prefix="archive-thumb")


@dataclass(frozen=True)
class ArchiveConfig:
    archive_bucket: str
    retention_days: int
    max_bytes: int
    max_pixels: int
    lock_mode: str = "GOVERNANCE"  # GRIDFLOW_ARCHIVE_LOCK_MODE: GOVERNANCE | COMPLIANCE


def photos_of(event: Message) -> list[dict[str, Any]]:
    path = PHOTO_FIELDS.get(event.type)
    if path is None:
        return []
    node: Any = event.data
    for part in path:
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return [p for p in node if isinstance(p, dict)] if isinstance(node, list) else []


def archive_key(sha256: str, content_type: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256}.{EXT.get(content_type, 'bin')}"


def thumbnail_key(sha256: str) -> str:
    return f"thumbs/{sha256[:2]}/{sha256}.jpg"


def archive_photo(client: Minio, cfg: ArchiveConfig, event: Message, ref: dict[str, Any], *,
                  wall_now: Clock = wall_clock) -> Message:
    """Archive one photo; return the RecordPhotoArchived command for the case processor.

    The command is the event's (its time is the event's, domain time). The archive copy is
    locked until `objectstore.retain_until(cfg.retention_days, wall_now)`: real time, which the
    object store compares with its own clock. `wall_now` is there for tests; never pass the
    simulated clock (a retain-until date in the server's past is refused, one years ahead
    locks real storage for years).
    """
    sha = str(ref.get("sha256", ""))
    content_type = str(ref.get("content_type", "application/octet-stream"))
    akey, tkey = archive_key(sha, content_type), thumbnail_key(sha)
    base = {
        "source_bucket": ref.get("bucket"), "source_key": ref.get("key"), "sha256": sha,
        "size": ref.get("size"), "role": ref.get("role", "before"),
        "report_id": (event.data.get("report") or {}).get("report_id", ""),
        "task_id": event.data.get("task_id", ""), "archive_bucket": cfg.archive_bucket,
    }
    data = read_object(client, str(ref.get("bucket")), str(ref.get("key")))
    if data is None:
        # The incoming copy is gone: archived before (a redelivery after its removal), unless
        # the archive has no version of the key either. A delete marker hides nothing here.
        vid = original_version(client, cfg.archive_bucket, akey)
        status = "archived" if vid is not None else "missing"
        result = {**base, "status": status, "archive_key": akey if status == "archived" else "",
                  "thumbnail_key": tkey if status == "archived" else "", "exif": {}}
        if vid is not None:
            result.update(_recorded_versions(client, cfg, akey, tkey, vid, None))
        return _recorded(event, sha, ref, result)
    problem = ""
    if len(data) != int(ref.get("size", -1)) or hashlib.sha256(data).hexdigest() != sha:
        problem = "sha256 or size does not match the claim check"
    info, thumb = None, b""
    if not problem:
        try:  # one reduced-scale decode: the full check, the EXIF facts and the thumbnail
            info, thumb = photo_core.inspect_with_thumbnail(
                data, max_bytes=cfg.max_bytes, max_pixels=cfg.max_pixels, sha256=sha)
        except photo_core.PhotoRejected as exc:
            problem = f"not a valid photo: {exc.message_en}"
    if problem or info is None:
        result = {**base, "status": "corrupt", "problem": problem, "archive_key": "",
                  "thumbnail_key": "", "exif": {}}
        return _recorded(event, sha, ref, result)
    # Two conditional PUTs (no stat first: the keys are content-addressed, so "already there"
    # means "already archived"), the thumbnail's beside the locked copy's.
    thumb_put = _SIDE.submit(put_once, client, cfg.archive_bucket, tkey, thumb,
                             content_type="image/jpeg")
    until = retain_until(cfg.retention_days, wall_now)
    try:
        created, vid = put_once(client, cfg.archive_bucket, akey, data,
                                content_type=content_type, metadata={"x-amz-meta-sha256": sha},
                                retention=Retention(cfg.lock_mode, until))
    finally:
        thumb_created, tvid = thumb_put.result()  # waited for even when the first put failed
    if created and thumb_created:
        versions = {"archive_version_id": vid or "", "thumbnail_version_id": tvid or "",
                    "lock_mode": cfg.lock_mode, "retain_until": iso(until)}
    else:  # written before (a redelivery): what the first write left
        versions = _recorded_versions(client, cfg, akey, tkey, vid if created else None,
                                      data, tvid if thumb_created else None, thumb)
    exif = {
        "taken_at": iso(info.taken_at) if info.taken_at is not None else None,
        "lat": info.gps_lat, "lon": info.gps_lon,
    }
    result = {**base, "status": "archived", "archive_key": akey, "thumbnail_key": tkey,
              **versions, "width": info.width, "height": info.height, "exif": exif}
    return _recorded(event, sha, ref, result)


def _recorded(event: Message, sha: str, ref: dict[str, Any], result: dict[str, Any]) -> Message:
    """The RecordPhotoArchived command for `event`'s photo `ref`: the event's time (domain
    time), an id derived from the event and the photo, and the seq of the event, so that a
    case whose state is behind the log waits for it (gridflow.core.case)."""
    if event.seq:
        result = {**result, "event_seq": event.seq}
    return command(ev.RECORD_PHOTO_ARCHIVED, event.case_id, event.at, result,
                   cause=f"{event.id}:{sha}:{ref.get('key')}")


def _recorded_versions(client: Minio, cfg: ArchiveConfig, akey: str, tkey: str,
                       vid: str | None, data: bytes | None, tvid: str | None = None,
                       thumb: bytes | None = None) -> dict[str, str]:
    """The versions and the lock of an archive copy written earlier: the key's first version
    (the one whose bytes are `data`, when known), its thumbnail's, and the lock as the store
    reports it now. A key with no version yet (the thumbnail of a copy archived before
    thumbnails existed) records ""."""
    vid = vid if vid is not None else original_version(client, cfg.archive_bucket, akey, data)
    if tvid is None:
        tvid = original_version(client, cfg.archive_bucket, tkey, thumb)
    lock = retention_of(client, cfg.archive_bucket, akey, vid) if vid is not None else None
    return {"archive_version_id": vid or "", "thumbnail_version_id": tvid or "",
            "lock_mode": lock[0] if lock else "", "retain_until": iso(lock[1]) if lock else ""}


def remove_incoming(client: Minio, ref: dict[str, Any]) -> None:
    try:
        client.remove_object(str(ref.get("bucket")), str(ref.get("key")))
    except S3Error as exc:
        if exc.code not in {"NoSuchKey", "NoSuchObject"}:
            raise


class RemoveFailed(OSError):
    """Some incoming copies could not be removed (per-key errors of a DeleteObjects request)."""

    def __init__(self, bucket: str, failed: list[tuple[str, str]]) -> None:
        key, code = failed[0]
        super().__init__(f"{len(failed)} incoming copies not removed from {bucket}, "
                         f"e.g. {key}: {code}")
        self.bucket, self.failed = bucket, failed


def remove_incoming_many(client: Minio, refs: list[dict[str, Any]]) -> None:
    """`remove_incoming` for many photos with one DeleteObjects request per bucket (per 1,000
    keys): a quarter of the CPU and of the wait of one request per photo. Idempotent (a key
    already gone counts as deleted); any other per-key error is raised, so the caller retries
    the whole call."""
    by_bucket: dict[str, dict[str, None]] = {}  # keys once each (a photo of two events)
    for ref in refs:
        by_bucket.setdefault(str(ref.get("bucket")), {})[str(ref.get("key"))] = None
    for bucket, unique in by_bucket.items():
        keys = list(unique)
        for i in range(0, len(keys), 1000):
            errors = [e for e in client.remove_objects(
                          bucket, [DeleteObject(k) for k in keys[i:i + 1000]])
                      if e.code not in {"NoSuchKey", "NoSuchObject"}]
            if errors:
                raise RemoveFailed(bucket, [(e.name or "", e.code) for e in errors])
