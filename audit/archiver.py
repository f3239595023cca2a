"""The segment archiver: copies the log into immutable, object-locked segment files.

Adapter. Guarantee: for each partition the segments continue each other from offset 0 without
gap or overlap; a segment is put once, whole, with its sha256, under object-lock retention,
and only then its manifest (which names the previous manifest's sha256); re-running writes
nothing for segments that exist and finishes a segment whose manifest a crash left unwritten.
A partition whose unarchived records Kafka already deleted is refused (ArchiveGap), not skipped.

Time here is real time only (`wall_now`, the wall clock): the lock's retain-until date (which
the object store compares with its own clock), a tail's age (against Kafka's record
timestamps) and a manifest's `archived_at`. Never pass the simulated clock.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from minio import Minio
from minio.commonconfig import COMPLIANCE, GOVERNANCE
from minio.retention import Retention

from audit import logsource
from audit import segments as seg
from audit.segments import LogRecord
from gridflow.clock import wall_clock
from gridflow.events import iso
from objectstore import object_exists, read_object, retain_until

log = logging.getLogger("gridflow.audit.archiver")

SEGMENT_RECORDS = 1000
LOCK_MODES = {"GOVERNANCE": GOVERNANCE, "COMPLIANCE": COMPLIANCE}


class ArchiveGap(RuntimeError):
    """Records were deleted from Kafka before the archiver copied them."""


@dataclass
class ArchiveResult:
    written: list[dict[str, Any]] = field(default_factory=list)  # manifests written this run
    completed: list[dict[str, Any]] = field(default_factory=list)  # orphans given a manifest
    pending: dict[str, int] = field(default_factory=dict)  # "topic[p]" -> records not sealed yet

    @property
    def records(self) -> int:
        return sum(m["count"] for m in self.written)


@dataclass(frozen=True)
class ArchiveConfig:
    bucket: str
    segment_records: int = SEGMENT_RECORDS
    seal_after_s: float | None = None  # seal a partial tail whose newest record is this old
    seal_partial: bool = False  # seal every tail now (one-shot archiving, tests)
    retention_days: int = 3650
    lock_mode: str = "GOVERNANCE"


def archive_log(kc: KafkaConsumer, store: Minio, topics: list[str], cfg: ArchiveConfig, *,
                wall_now: Callable[[], datetime] = wall_clock) -> ArchiveResult:
    """Archive every partition of `topics` up to the current end offsets. Idempotent.

    `wall_now` (for tests) must be a real-time clock: see the module docstring."""
    now = wall_now
    result = ArchiveResult()
    for topic in topics:
        tps = [TopicPartition(topic, p) for p in logsource.partitions(kc, topic)]
        starts, ends = kc.beginning_offsets(tps), kc.end_offsets(tps)
        for tp in tps:
            _archive_partition(kc, store, cfg, tp, int(starts[tp]), int(ends[tp]), now, result)
    return result


def _archive_partition(kc: KafkaConsumer, store: Minio, cfg: ArchiveConfig, tp: TopicPartition,
                       kafka_start: int, kafka_end: int, now: Callable[[], datetime],
                       result: ArchiveResult) -> None:
    keys = logsource.manifest_keys(store, cfg.bucket, tp.topic, tp.partition)
    last = read_object(store, cfg.bucket, keys[-1]) if keys else None
    prev_sha = seg.sha256(last) if last is not None else ""
    start = int(json.loads(last)["next_offset"]) if last is not None else 0
    orphan = _orphan_segment(store, cfg.bucket, tp, start)
    if orphan is not None:  # a crash between the segment and its manifest: finish it
        key, records, data = orphan
        prev_sha, start = _put_manifest(store, cfg, tp, start, records, data, prev_sha, now)
        result.completed.append({"segment_key": key, "count": len(records)})
    if start >= kafka_end:
        return
    if kafka_start > start:
        raise ArchiveGap(f"{tp.topic}[{tp.partition}]: Kafka no longer holds offsets "
                         f"{start}..{kafka_start - 1}, which were never archived / 日志已被删除而未归档")
    plan = logsource.PartitionPlan(tp.topic, tp.partition, start, kafka_end, kafka_end)
    pending: list[LogRecord] = []
    for batch in logsource.read(kc, [plan]):
        for r in batch:
            pending.append(r)
            if len(pending) == cfg.segment_records:
                prev_sha, start = _write(store, cfg, tp, start, pending, prev_sha, now, result)
                pending = []
    if pending:
        newest = pending[-1].timestamp or 0
        age_s = now().timestamp() - newest / 1000
        if cfg.seal_partial or (cfg.seal_after_s is not None and age_s >= cfg.seal_after_s):
            _write(store, cfg, tp, start, pending, prev_sha, now, result)
        else:
            result.pending[f"{tp.topic}[{tp.partition}]"] = len(pending)


def _write(store: Minio, cfg: ArchiveConfig, tp: TopicPartition, start: int,
           records: list[LogRecord], prev_sha: str, now: Callable[[], datetime],
           result: ArchiveResult) -> tuple[str, int]:
    data = seg.encode_segment(records)
    key = seg.segment_key(tp.topic, tp.partition, records[0].offset, records[-1].offset)
    existing = read_object(store, cfg.bucket, key) if object_exists(store, cfg.bucket, key) else None
    if existing is None:
        _put(store, cfg, key, data, "application/gzip", now)
    elif existing != data:
        raise seg.SegmentError(f"{key} exists with other content; the archive is not extended")
    sha, nxt = _put_manifest(store, cfg, tp, start, records, data, prev_sha, now)
    result.written.append({"segment_key": key, "count": len(records),
                           "first_offset": records[0].offset, "last_offset": records[-1].offset})
    log.info("archived %s (%d records)", key, len(records))
    return sha, nxt


def _put_manifest(store: Minio, cfg: ArchiveConfig, tp: TopicPartition, start: int,
                  records: list[LogRecord], data: bytes, prev_sha: str,
                  now: Callable[[], datetime]) -> tuple[str, int]:
    manifest = seg.build_manifest(tp.topic, tp.partition, start, records, data, prev_sha,
                                  iso(now()))
    body = seg.encode_manifest(manifest)
    key = seg.manifest_key(tp.topic, tp.partition, records[0].offset, records[-1].offset)
    _put(store, cfg, key, body, "application/json", now)
    return seg.sha256(body), int(manifest["next_offset"])


def _put(store: Minio, cfg: ArchiveConfig, key: str, data: bytes, content_type: str,
         now: Callable[[], datetime]) -> None:
    mode = LOCK_MODES[cfg.lock_mode]
    retention = Retention(mode, retain_until(cfg.retention_days, now))
    store.put_object(cfg.bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                     metadata={"x-amz-meta-sha256": seg.sha256(data)}, retention=retention)


def _orphan_segment(store: Minio, bucket: str, tp: TopicPartition,
                    start: int) -> tuple[str, list[LogRecord], bytes] | None:
    """A segment written at `start` whose manifest is missing (the run crashed in between)."""
    prefix = seg.partition_prefix(tp.topic, tp.partition)
    after = f"{prefix}{start:020d}"
    for obj in store.list_objects(bucket, prefix=prefix, recursive=True, start_after=after):
        key = obj.object_name or ""
        if not key.endswith(".jsonl.gz"):
            continue
        first = int(key.rsplit("/", 1)[-1].split("-", 1)[0])
        if first < start:
            continue
        data = read_object(store, bucket, key)
        if data is None:
            continue
        records = seg.decode_segment(data, tp.topic, tp.partition)
        if records and records[0].offset >= start:
            return key, records, data
    return None


def ensure_bucket(store: Minio, bucket: str) -> None:
    """The archive bucket must exist with object lock; created so if missing."""
    if not store.bucket_exists(bucket):
        store.make_bucket(bucket, object_lock=True)
