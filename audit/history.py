"""`audit case`: the full, ordered history of one case, its chain checked, its photos verified.

The history itself (`build_history`, `expected_photos`) is pure; `load_from_ledger`,
`load_from_log` and `check_photos` are the adapters. Guarantee: every event of the case is
listed in chain order with who, when (Beijing time) and what (in Chinese); any break in the
case's chain is named; every photo an event references is looked up in the object store and
reported present-and-matching, missing, or mismatched (size or sha256), never assumed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka.partitioner.default import murmur2
from minio import Minio
from minio.error import S3Error
from sqlalchemy import Engine, select

from audit import logsource
from audit.chain import ChainVerifier, Finding, position
from audit.summaries import TYPE_ZH, actor_zh, summarize
from gridflow import events as ev
from gridflow.events import Message, SchemaError, decode_message, iso
from sinks.models import CaseEvent, table_of

OK, MISSING, SIZE_MISMATCH, SHA_MISMATCH, NOT_ARCHIVED = (
    "ok", "missing", "size_mismatch", "sha256_mismatch", "not_archived")
STATUS_ZH = {OK: "存在且一致", MISSING: "缺失", SIZE_MISMATCH: "大小不符",
             SHA_MISMATCH: "sha256 不符", NOT_ARCHIVED: "未归档"}
PHOTO_PATHS = {
    ev.CASE_FILED: ("report", "photos"), ev.CASE_NOT_FILED: ("report", "photos"),
    ev.REPORT_MERGED: ("report", "photos"), ev.TASK_RESOLVED: ("photos",),
    ev.TASK_PROGRESS_NOTED: ("photos",), ev.TASK_VERIFIED: ("photos",),
    ev.TASK_REOPENED: ("photos",),
}


@dataclass
class Entry:
    seq: int
    type: str
    at: str
    actor: str
    who: str
    what: str
    event_id: str
    hash: str
    where: str


@dataclass
class PhotoCheck:
    role: str
    sha256: str
    size: int | None
    seq: int  # the event that referenced it
    source: str  # incoming bucket/key the report carried
    archive_bucket: str = ""
    archive_key: str = ""
    archive_status: str = ""  # as PhotoArchived recorded it
    status: str = ""  # this check: ok | missing | size_mismatch | sha256_mismatch | not_archived
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass
class CaseHistory:
    case_id: str
    source: str
    entries: list[Entry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    photos: list[PhotoCheck] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings and all(p.ok for p in self.photos)


# --- pure -----------------------------------------------------------------------------------


def build_history(case_id: str, source: str, events: Iterable[tuple[Message, str, str | None]],
                  names: Mapping[str, str] | None = None) -> CaseHistory:
    """(event, log position, hash stored by the ledger or None) in chain order -> the history."""
    h = CaseHistory(case_id, source)
    chain = ChainVerifier()
    for m, where, stored in events:
        digest = m.hash()
        chain.feed_message(m, where, digest)
        if stored is not None and stored != digest:
            h.findings.append(Finding("ledger_edited", case_id, m.seq, m.id, where,
                                      f"the ledger row hashes to {digest[:12]}… but stores "
                                      f"{stored[:12]}…: edited in the database"))
        h.entries.append(Entry(m.seq, m.type, m.at, m.actor, actor_zh(m.actor, names),
                               summarize(m, names), m.id, digest, where))
    h.findings = chain.report.findings + h.findings
    return h


def expected_photos(events: Iterable[Message]) -> list[PhotoCheck]:
    """Every photo the case's events reference, with what PhotoArchived recorded for it."""
    photos: list[PhotoCheck] = []
    by_ref: dict[tuple[str, str], PhotoCheck] = {}
    for m in events:
        path = PHOTO_PATHS.get(m.type)
        if path is not None:
            node: Any = m.data
            for part in path:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            for p in node if isinstance(node, list) else []:
                if not isinstance(p, dict):
                    continue
                check = PhotoCheck(str(p.get("role", "")), str(p.get("sha256", "")),
                                   _int(p.get("size")), m.seq,
                                   f"{p.get('bucket', '')}/{p.get('key', '')}")
                by_ref.setdefault((check.sha256, str(p.get("key", ""))), check)
                photos.append(check)
        elif m.type == ev.PHOTO_ARCHIVED:
            d = m.data
            ref = (str(d.get("sha256", "")), str(d.get("source_key", "")))
            found = by_ref.get(ref)
            if found is None:
                check = PhotoCheck(str(d.get("role", "")), ref[0], _int(d.get("size")), m.seq,
                                   f"{d.get('source_bucket', '')}/{ref[1]}")
                by_ref[ref] = check
                photos.append(check)
            else:
                check = found
            check.archive_bucket = str(d.get("archive_bucket", "") or "")
            check.archive_key = str(d.get("archive_key", "") or "")
            check.archive_status = str(d.get("status", "") or "")
    return photos


def _int(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


# --- adapters -------------------------------------------------------------------------------


Located = tuple[Message, str, str | None]  # an event, its log position, the ledger's hash


def load_from_ledger(engine: Engine, case_id: str) -> list[Located]:
    t = table_of(CaseEvent)
    with engine.connect() as conn:
        rows = conn.execute(select(t).where(t.c.case_id == case_id)
                            .order_by(t.c.seq, t.c.partition, t.c.offset)).mappings().all()
    out: list[Located] = []
    for row in rows:
        m = Message(id=row["event_id"], type=row["type"], case_id=row["case_id"],
                    at=iso(row["at"]), actor=row["actor"], data=row["data"] or {},
                    schema=row["schema"], causation_id=row["causation_id"] or "",
                    seq=row["seq"], prev_hash=row["prev_hash"] or "")
        stored = str(row["hash"])
        out.append((m, position(row["partition"], row["offset"]), stored))
    return out


def load_from_log(kc: Any, topic: str, case_id: str, *, store: Minio | None = None,
                  bucket: str = "") -> list[Located]:
    """The case's events from its partition of the log (all partitions if not found there)."""
    parts = logsource.partitions(kc, topic)
    home = (murmur2(case_id.encode()) & 0x7FFFFFFF) % len(parts)
    for candidates in ([home], [p for p in parts if p != home]):
        plans = [p for p in logsource.plan(kc, [topic], store=store, bucket=bucket)
                 if p.partition in candidates]
        found: list[Located] = []
        for batch in logsource.read(kc, plans, store=store, bucket=bucket):
            for r in batch:
                if r.key is not None and r.key != case_id.encode():
                    continue
                try:
                    m = decode_message(r.value or b"")
                except SchemaError:
                    continue
                if m.case_id == case_id:
                    found.append((m, position(r.partition, r.offset), None))
        if found:
            return found
    return []


def check_photos(store: Minio, photos: list[PhotoCheck]) -> None:
    """Look every photo up in the object store: present, same size, same sha256."""
    for p in photos:
        if p.archive_key:
            bucket, key = p.archive_bucket, p.archive_key
        else:
            p.status, p.detail = NOT_ARCHIVED, (f"未归档 not archived (PhotoArchived says "
                                                f"{p.archive_status or 'nothing'})")
            bucket, key = p.source.split("/", 1) if "/" in p.source else ("", "")
            if not bucket or not key:
                continue
        status, detail = _check_object(store, bucket, key, p.size, p.sha256)
        if p.archive_key:
            p.status, p.detail = status, detail
        else:
            p.detail += f"; incoming copy {bucket}/{key}: {STATUS_ZH[status]} {detail}".rstrip()


def _check_object(store: Minio, bucket: str, key: str, size: int | None,
                  sha: str) -> tuple[str, str]:
    try:
        stat = store.stat_object(bucket, key)
    except S3Error as exc:
        if exc.code in {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"}:
            return MISSING, f"s3://{bucket}/{key} does not exist"
        raise
    if size is not None and stat.size != size:
        return SIZE_MISMATCH, f"stored {stat.size} bytes, the event says {size}"
    digest = hashlib.sha256()
    resp = store.get_object(bucket, key)
    try:
        for chunk in resp.stream(1 << 20):
            digest.update(chunk)
    finally:
        resp.close()
        resp.release_conn()
    if digest.hexdigest() != sha:
        return SHA_MISMATCH, f"stored object hashes to {digest.hexdigest()[:16]}…"
    return OK, f"{stat.size} bytes"


def type_zh(t: str) -> str:
    return TYPE_ZH.get(t, t)
