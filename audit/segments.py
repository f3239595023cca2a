"""Log segments for long retention: the records of one partition, in offset order, as gzip JSONL.

Pure. Guarantee: encoding is deterministic (the same records always give the same bytes and
sha256), decoding gives back every record byte for byte (key, value, offset, timestamp), and
`check_chain` names every gap, overlap or broken link between a partition's manifests, so a
replay from segments either has the partition's whole history or says what is missing.

Object layout (prefix `log-segments/`):
  <topic>/<partition>/<first offset:020d>-<last offset:020d>.jsonl.gz   the records
  <topic>/<partition>/<first offset:020d>-<last offset:020d>.manifest.json   its manifest
A manifest names the segment's offsets (start = where reading began, i.e. the previous
segment's next offset; first/last record; next = after the last), its record count, its
sha256 and size, and the sha256 of the previous manifest: the manifests form a chain.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gridflow.events import canonical_json

FORMAT = "gridflow-log-segment/1"
PREFIX = "log-segments"


class SegmentError(ValueError):
    """A segment or manifest that does not match what it claims; the message says how."""


@dataclass(frozen=True)
class LogRecord:
    """One Kafka record as the archive keeps it."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None  # epoch milliseconds, as Kafka stamped it
    key: bytes | None
    value: bytes | None


def partition_prefix(topic: str, partition: int) -> str:
    return f"{PREFIX}/{topic}/{partition}/"


def segment_key(topic: str, partition: int, first: int, last: int) -> str:
    return f"{partition_prefix(topic, partition)}{first:020d}-{last:020d}.jsonl.gz"


def manifest_key(topic: str, partition: int, first: int, last: int) -> str:
    return f"{partition_prefix(topic, partition)}{first:020d}-{last:020d}.manifest.json"


def _put_bytes(out: dict[str, Any], name: str, value: bytes | None) -> None:
    if value is None:
        out[name] = None
        return
    try:
        out[name] = value.decode("utf-8")
    except UnicodeDecodeError:
        out[f"{name}_b64"] = base64.b64encode(value).decode("ascii")


def _get_bytes(line: dict[str, Any], name: str) -> bytes | None:
    if f"{name}_b64" in line:
        return base64.b64decode(line[f"{name}_b64"])
    value = line.get(name)
    return None if value is None else str(value).encode("utf-8")


def encode_segment(records: Sequence[LogRecord]) -> bytes:
    """gzip'd JSON lines, one record a line, deterministic (gzip mtime 0)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz:
        for r in records:
            line: dict[str, Any] = {"offset": r.offset, "timestamp": r.timestamp}
            _put_bytes(line, "key", r.key)
            _put_bytes(line, "value", r.value)
            gz.write(canonical_json(line) + b"\n")
    return buf.getvalue()


def decode_segment(data: bytes, topic: str, partition: int) -> list[LogRecord]:
    try:
        text = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise SegmentError(f"not a gzip segment: {exc}") from exc
    records = []
    for n, raw in enumerate(text.splitlines(), 1):
        try:
            line = json.loads(raw)
            records.append(LogRecord(topic, partition, int(line["offset"]), line.get("timestamp"),
                                     _get_bytes(line, "key"), _get_bytes(line, "value")))
        except (ValueError, KeyError, TypeError) as exc:
            raise SegmentError(f"line {n} is not a record: {exc!r}") from exc
    return records


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_manifest(topic: str, partition: int, start_offset: int, records: Sequence[LogRecord],
                   data: bytes, prev_manifest_sha256: str, created_at: str) -> dict[str, Any]:
    """The manifest entry of a segment made of `records` (non-empty, offset order)."""
    if not records:
        raise SegmentError("a segment needs at least one record")
    first, last = records[0].offset, records[-1].offset
    return {
        "format": FORMAT,
        "topic": topic,
        "partition": partition,
        "start_offset": start_offset,
        "first_offset": first,
        "last_offset": last,
        "next_offset": last + 1,
        "count": len(records),
        "sha256": sha256(data),
        "size": len(data),
        "segment_key": segment_key(topic, partition, first, last),
        "first_timestamp": records[0].timestamp,
        "last_timestamp": records[-1].timestamp,
        "prev_manifest_sha256": prev_manifest_sha256,
        "created_at": created_at,
    }


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    return canonical_json(manifest)


def verify_segment(manifest: dict[str, Any], data: bytes) -> list[LogRecord]:
    """Decode a segment and check it against its manifest; raises SegmentError on any mismatch."""
    where = manifest.get("segment_key", "?")
    if sha256(data) != manifest["sha256"] or len(data) != manifest["size"]:
        raise SegmentError(
            f"{where}: sha256/size {sha256(data)[:12]}…/{len(data)} do not match the manifest's "
            f"{str(manifest['sha256'])[:12]}…/{manifest['size']}"
        )
    records = decode_segment(data, manifest["topic"], manifest["partition"])
    offsets = [r.offset for r in records]
    if len(records) != manifest["count"] or offsets != sorted(set(offsets)):
        raise SegmentError(f"{where}: {len(records)} records in order "
                           f"{offsets == sorted(set(offsets))}, the manifest says {manifest['count']}")
    if offsets[0] != manifest["first_offset"] or offsets[-1] != manifest["last_offset"]:
        raise SegmentError(f"{where}: offsets {offsets[0]}..{offsets[-1]} do not match the manifest")
    return records


def check_chain(manifests: Iterable[tuple[dict[str, Any], str]]) -> list[str]:
    """Problems in one partition's (manifest, its sha256) list sorted by first offset.

    Empty when the segments continue each other from offset 0 and each names its predecessor.
    """
    problems: list[str] = []
    prev: dict[str, Any] | None = None
    prev_sha = ""
    for m, m_sha in manifests:
        where = m.get("segment_key", "?")
        if m.get("format") != FORMAT:
            problems.append(f"{where}: unknown format {m.get('format')!r}")
        expected_start = 0 if prev is None else prev["next_offset"]
        if m["start_offset"] != expected_start:
            what = "gap" if m["start_offset"] > expected_start else "overlap"
            problems.append(f"{where}: starts at offset {m['start_offset']}, expected "
                            f"{expected_start} ({what})")
        if not m["start_offset"] <= m["first_offset"] <= m["last_offset"] < m["next_offset"]:
            problems.append(f"{where}: inconsistent offsets {m['start_offset']}/"
                            f"{m['first_offset']}/{m['last_offset']}/{m['next_offset']}")
        if m["prev_manifest_sha256"] != prev_sha:
            problems.append(f"{where}: names previous manifest {m['prev_manifest_sha256'][:12]}…, "
                            f"the previous manifest is {prev_sha[:12] or '(none)'}…")
        prev, prev_sha = m, m_sha
    return problems
