"""Reading the log for an audit: a topic's partitions from the segment archive and/or Kafka.

Adapter. Guarantee: records come back per partition in offset order, each exactly once, from
the archive's first segment (verified against its manifest) on into Kafka at the archive's
next offset; `plan` refuses (LogGap) a partition whose history is incomplete — Kafka no longer
holding records before its earliest offset that no archive covers — rather than replay part of
it silently. Optional stop offsets cut each partition (what a live database had read), optional
start offsets skip what was read already.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from minio import Minio
from minio.error import S3Error

from audit import segments as seg
from audit.segments import LogRecord
from objectstore import read_object

BATCH = 2000


class LogGap(RuntimeError):
    """Part of a partition's history is neither in Kafka nor in the archive."""


class LogUnavailable(RuntimeError):
    """Kafka or the object store cannot be read (unreachable, no such topic or bucket)."""


@dataclass
class PartitionPlan:
    topic: str
    partition: int
    kafka_start: int  # earliest offset Kafka still holds
    kafka_end: int  # end offset (next offset to be written) when planned
    stop: int  # read below this offset
    manifests: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # archive
    start: int = 0  # read from this offset on (what lies before it was read already)

    @property
    def archive_next(self) -> int:
        return self.manifests[-1][0]["next_offset"] if self.manifests else 0

    @property
    def kafka_from(self) -> int:
        return max(self.archive_next, self.kafka_start, self.start)

    @property
    def total(self) -> int:
        """Offsets this plan covers (records, less any transaction markers)."""
        return max(0, self.stop)


def consumer(bootstrap: str, client_id: str = "gridflow-audit") -> KafkaConsumer:
    try:
        return KafkaConsumer(
            bootstrap_servers=bootstrap, client_id=client_id, group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed", request_timeout_ms=30000,
        )
    except KafkaError as exc:
        raise LogUnavailable(f"Kafka at {bootstrap} is unreachable ({type(exc).__name__}: {exc})"
                             " / 无法连接 Kafka") from exc


def partitions(kc: KafkaConsumer, topic: str) -> list[int]:
    try:
        found = kc.partitions_for_topic(topic)
    except KafkaError as exc:
        raise LogUnavailable(f"reading metadata of {topic} failed: {exc}") from exc
    if not found:
        raise LogUnavailable(f"no such topic {topic!r} / 主题不存在 (check --prefix)")
    return sorted(found)


def plan(kc: KafkaConsumer, topics: list[str], *, store: Minio | None = None,
         bucket: str = "", stops: Mapping[tuple[str, int], int] | None = None,
         allow_trimmed: bool = False) -> list[PartitionPlan]:
    """What to read for each partition of `topics`; with `store`, the archive comes first.

    Raises LogGap when records before Kafka's earliest offset are not in the archive, unless
    `allow_trimmed`: then the plan reads what Kafka still holds (its `kafka_start` tells the
    caller where that begins).
    """
    plans: list[PartitionPlan] = []
    gaps: list[str] = []
    for topic in topics:
        tps = [TopicPartition(topic, p) for p in partitions(kc, topic)]
        try:
            starts, ends = kc.beginning_offsets(tps), kc.end_offsets(tps)
        except KafkaError as exc:
            raise LogUnavailable(f"reading offsets of {topic} failed: {exc}") from exc
        for tp in tps:
            p = PartitionPlan(topic, tp.partition, int(starts[tp]), int(ends[tp]), int(ends[tp]))
            if stops is not None and (topic, tp.partition) in stops:
                p.stop = int(stops[(topic, tp.partition)])
            if store is not None:
                p.manifests = list_manifests(store, bucket, topic, tp.partition)
                problems = seg.check_chain(p.manifests)
                if problems:
                    gaps += [f"{topic}[{tp.partition}]: archive: {x}" for x in problems]
            if p.kafka_start > p.archive_next and p.stop > p.archive_next and not allow_trimmed:
                source = (f"the archive ends at offset {p.archive_next}" if p.manifests
                          else "no archive segments cover them" if store is not None
                          else "replay with --from-archive to read them from the segment archive")
                gaps.append(f"{topic}[{tp.partition}]: Kafka keeps offsets from {p.kafka_start} on "
                            f"only; offsets {p.archive_next}..{p.kafka_start - 1} are gone and "
                            f"{source}")
            plans.append(p)
    if gaps:
        raise LogGap("the log is incomplete / 日志不完整:\n  " + "\n  ".join(gaps))
    return plans


def read(kc: KafkaConsumer, plans: list[PartitionPlan], *, store: Minio | None = None,
         bucket: str = "", batch: int = BATCH, kafka: bool = True) -> Iterator[list[LogRecord]]:
    """Batches of records, partition after partition, each in offset order (archive, Kafka)."""
    for p in plans:
        if store is not None:
            for manifest, _ in p.manifests:
                if manifest["first_offset"] >= p.stop:
                    break
                if manifest["last_offset"] < p.start:
                    continue
                records = read_segment(store, bucket, manifest)
                cut = [r for r in records if p.start <= r.offset < p.stop]
                for i in range(0, len(cut), batch):
                    yield cut[i : i + batch]
        if kafka and p.kafka_from < p.stop:
            yield from _read_kafka(kc, p, batch)


def _read_kafka(kc: KafkaConsumer, p: PartitionPlan, batch: int) -> Iterator[list[LogRecord]]:
    tp = TopicPartition(p.topic, p.partition)
    kc.assign([tp])
    kc.seek(tp, p.kafka_from)
    idle = 0
    while True:
        position = kc.position(tp)
        if position is None or position >= p.stop:
            return
        polled = kc.poll(timeout_ms=1000, max_records=batch)
        records = [
            LogRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
            for r in polled.get(tp, []) if r.offset < p.stop
        ]
        if records:
            idle = 0
            yield records
        else:
            idle += 1
            if idle > 60:
                raise LogUnavailable(f"{p.topic}[{p.partition}]: no records for a minute at "
                                     f"offset {position}, expected up to {p.stop}")


def read_segment(store: Minio, bucket: str, manifest: dict[str, Any]) -> list[LogRecord]:
    data = read_object(store, bucket, manifest["segment_key"])
    if data is None:
        raise seg.SegmentError(f"{manifest['segment_key']}: segment object missing / 分段缺失")
    return seg.verify_segment(manifest, data)


def manifest_keys(store: Minio, bucket: str, topic: str, partition: int) -> list[str]:
    """The manifest object keys of one partition, in offset order (zero-padded names)."""
    prefix = seg.partition_prefix(topic, partition)
    try:
        return sorted(o.object_name for o in store.list_objects(bucket, prefix=prefix,
                                                                  recursive=True)
                      if o.object_name and o.object_name.endswith(".manifest.json"))
    except S3Error as exc:
        raise LogUnavailable(f"cannot list s3://{bucket}/{prefix}: {exc.code}") from exc


def list_manifests(store: Minio, bucket: str, topic: str,
                   partition: int) -> list[tuple[dict[str, Any], str]]:
    """(manifest, sha256 of its bytes) of one partition, in offset order."""
    out = []
    for key in manifest_keys(store, bucket, topic, partition):
        data = read_object(store, bucket, key)
        if data is None:
            continue
        out.append((json.loads(data), seg.sha256(data)))
    out.sort(key=lambda m: m[0]["first_offset"])
    return out

