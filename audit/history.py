"""`audit case`: the full, ordered history of one case, its chain checked, its photos verified.

The history itself (`build_history`, `expected_photos`) is pure; `load_from_ledger`,
`load_from_log` and `check_photos` are the adapters. Guarantee: every event of the case is
listed in chain order with who, when (Beijing time) and what (in Chinese); any break in the
case's chain is named; every photo an event references is looked up in the object store and
reported present-and-matching, missing, or mismatched (size or sha256), never assumed.

The archive bucket is versioned (object lock), so a photo is checked by the version
PhotoArchived recorded (`archive_version_id`; the key's first version for events written
before versions were recorded), and the key's other versions say what happened to it since:
a delete marker (a plain DELETE: readers of the latest version see nothing, the locked version
is there), a newer version (an overwrite), a retention earlier than the one recorded
(shortened with the bypass permission under GOVERNANCE). `judge` turns what the store holds
into one status and a sentence; `check_photos` asks the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kafka.partitioner.default import murmur2
from minio import Minio
from minio.error import S3Error
from sqlalchemy import Engine, select

from audit import logsource
from audit.chain import ChainVerifier, Finding, position
from audit.moments import beijing
from audit.summaries import actor_zh, summarize
from gridflow import events as ev
from gridflow.events import Message, SchemaError, decode_message, iso, label_zh, parse_ts
from objectstore import Version, retention_of, versions_of
from sinks.models import CaseEvent, table_of

OK, MISSING, SIZE_MISMATCH, SHA_MISMATCH, NOT_ARCHIVED = (
    "ok", "missing", "size_mismatch", "sha256_mismatch", "not_archived")
# Tampering that left the recorded version's bytes intact (the photo is still proven).
DELETE_MARKED, OVERWRITTEN, RETENTION_SHORTENED = (
    "delete_marker", "overwritten", "retention_shortened")
TAMPERED_INTACT = frozenset({DELETE_MARKED, OVERWRITTEN, RETENTION_SHORTENED})
STATUS_ZH = {OK: "存在且一致", MISSING: "缺失", SIZE_MISMATCH: "大小不符",
             SHA_MISMATCH: "sha256 不符", NOT_ARCHIVED: "未归档",
             DELETE_MARKED: "被加删除标记, 锁定版本完好",
             OVERWRITTEN: "被覆盖, 记录的版本完好",
             RETENTION_SHORTENED: "保留期被缩短"}
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
    archive_version_id: str = ""  # as PhotoArchived recorded it ("" before versions were)
    lock_mode: str = ""  # the lock PhotoArchived recorded ("" before locks were recorded)
    retain_until: str = ""
    # this check: ok | missing | size_mismatch | sha256_mismatch | not_archived |
    # delete_marker | overwritten | retention_shortened
    status: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def intact(self) -> bool:
        """The recorded version is there with the recorded bytes (tampered with or not)."""
        return self.status == OK or self.status in TAMPERED_INTACT


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
            check.archive_version_id = str(d.get("archive_version_id", "") or "")
            check.lock_mode = str(d.get("lock_mode", "") or "")
            check.retain_until = str(d.get("retain_until", "") or "")
    return photos


@dataclass
class Found:
    """What the object store holds at a photo's archive key (gathered by `check_photos`)."""

    versions: list[Version]  # every version of the key, delete markers too, oldest first
    checked: str | None  # the version whose bytes were checked; None: none to check
    content: str  # OK | SIZE_MISMATCH | SHA_MISMATCH | MISSING, for `checked`
    content_detail: str
    lock: tuple[str, datetime] | None  # the checked version's retention now


def judge(p: PhotoCheck, found: Found) -> tuple[str, str]:
    """One status and a sentence (Chinese, then English) for an archived photo.

    Precedence: missing; the bytes do not match; the retention is earlier than recorded; a
    delete marker hides the recorded version from latest-version readers; a newer version
    was written over it; otherwise ok. Every finding is in the sentence, whatever the status.
    """
    where = f"version {found.checked}" if found.checked else "the key"
    if found.checked is None or found.content == MISSING:
        had = _describe(found.versions)
        wanted = (f"记录的版本 {p.archive_version_id} 不存在 / the recorded version "
                  f"{p.archive_version_id} does not exist" if p.archive_version_id
                  else "没有任何版本 / no version of the key exists")
        return MISSING, wanted + (f"; {had}" if had else "")
    status = found.content
    notes = [found.content_detail + f" ({where})"]
    recorded = _when(p.retain_until)
    if found.lock is not None:
        mode, until = found.lock
        notes.append(f"锁定 {mode} 至 {beijing(until)} 北京时间 / locked {mode} until "
                     f"{iso(until)}" + ("; 任何凭证都无法解除 / no credential can lift it"
                                        if mode == "COMPLIANCE" else ""))
    if recorded is not None and (found.lock is None or found.lock[1] < recorded):
        now = beijing(found.lock[1]) if found.lock else "无锁定 / no lock"
        notes.append(f"保留期被缩短: 归档时锁定至 {beijing(recorded)} 北京时间, 现为 {now} / retention "
                     f"shortened: recorded until {iso(recorded)}, now "
                     f"{iso(found.lock[1]) if found.lock else 'none'}")
        status = RETENTION_SHORTENED if status == OK else status
    elif recorded is not None:
        notes.append("保留期与归档记录一致, 缩短保留期的尝试未成功 / retention as recorded: "
                     "no attempt to shorten it succeeded")
    later = _after(found.versions, found.checked)
    markers = [v for v in later if v.delete_marker]
    newer = [v for v in later if not v.delete_marker]
    latest = found.versions[-1] if found.versions else None
    if markers:
        at = ", ".join(_bj(v.last_modified) for v in markers)
        notes.append(f"删除标记添加于 {at}: 按最新版本读取者看不到此照片, 锁定版本完好 / "
                     f"delete marker added at {_utc(markers[-1].last_modified)} (a plain "
                     "DELETE): hidden from readers of the latest version, the locked "
                     "version intact")
    if newer:
        last = newer[-1]
        notes.append(f"有 {len(newer)} 个更新的版本, 最新写于 {_bj(last.last_modified)} "
                     f"({last.size} 字节) / overwritten: {len(newer)} newer version(s), the "
                     f"last written at {_utc(last.last_modified)} ({last.size} B); the "
                     "recorded version intact")
    if status == OK and latest is not None and latest.delete_marker:
        status = DELETE_MARKED
    elif status == OK and newer:
        status = OVERWRITTEN
    elif status == OK and markers:
        status = DELETE_MARKED
    return status, "; ".join(notes)


def _after(versions: list[Version], checked: str | None) -> list[Version]:
    ids = [v.version_id for v in versions]
    return versions[ids.index(checked) + 1:] if checked in ids else []


def _describe(versions: list[Version]) -> str:
    if not versions:
        return ""
    parts = [(f"删除标记 delete marker {_utc(v.last_modified)}" if v.delete_marker else
              f"版本 version {v.version_id} {_utc(v.last_modified)} ({v.size} B)")
             for v in versions]
    return "该键现有 / the key holds: " + ", ".join(parts)


def _when(text: str) -> datetime | None:
    try:
        return parse_ts(text) if text else None
    except SchemaError:
        return None


def _bj(at: datetime | None) -> str:
    return f"{beijing(at)} 北京时间" if at else "—"


def _utc(at: datetime | None) -> str:
    return iso(at) if at else "—"


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
                    m = decode_message(r.value or b"", typed=False)
                except SchemaError:
                    continue
                if m.case_id == case_id:
                    found.append((m, position(r.partition, r.offset), None))
        if found:
            return found
    return []


def check_photos(store: Minio, photos: list[PhotoCheck]) -> None:
    """Look every photo up in the object store: the recorded version present, same size,
    same sha256, its lock, and what else was done at its key (`judge`). A photo never
    archived: its incoming copy is looked up instead."""
    for p in photos:
        if p.archive_key:
            p.status, p.detail = judge(p, _inspect(store, p))
            continue
        p.status, p.detail = NOT_ARCHIVED, (f"未归档 not archived (PhotoArchived says "
                                            f"{p.archive_status or 'nothing'})")
        bucket, key = p.source.split("/", 1) if "/" in p.source else ("", "")
        if bucket and key:
            status, detail = _check_object(store, bucket, key, p.size, p.sha256)
            p.detail += f"; incoming copy {bucket}/{key}: {STATUS_ZH[status]} {detail}".rstrip()


def _inspect(store: Minio, p: PhotoCheck) -> Found:
    bucket, key = p.archive_bucket, p.archive_key
    try:
        versions = versions_of(store, bucket, key)
    except S3Error as exc:
        if exc.code != "NoSuchBucket":
            raise
        versions = []
    kept = {v.version_id for v in versions if not v.delete_marker}
    # Events from before versions were recorded: the key's first version is the archive's
    # own write (content-addressed, conditional PUT); anything later was written over it.
    target = p.archive_version_id or next((v.version_id for v in versions
                                           if not v.delete_marker), None)
    if target is None or target not in kept:
        return Found(versions, target, MISSING, f"s3://{bucket}/{key} does not exist", None)
    content, detail = _check_object(store, bucket, key, p.size, p.sha256, target)
    lock = retention_of(store, bucket, key, target) if content != MISSING else None
    return Found(versions, target, content, detail, lock)


def _check_object(store: Minio, bucket: str, key: str, size: int | None,
                  sha: str, version_id: str | None = None) -> tuple[str, str]:
    try:
        stat = store.stat_object(bucket, key, version_id=version_id or None)
    except S3Error as exc:
        if exc.code in {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound",
                        "NoSuchVersion"}:
            return MISSING, f"s3://{bucket}/{key} does not exist"
        raise
    if size is not None and stat.size != size:
        return SIZE_MISMATCH, f"stored {stat.size} bytes, the event says {size}"
    digest = hashlib.sha256()
    resp = store.get_object(bucket, key, version_id=version_id or None)
    try:
        for chunk in resp.stream(1 << 20):
            digest.update(chunk)
    finally:
        resp.close()
        resp.release_conn()
    if digest.hexdigest() != sha:
        return SHA_MISMATCH, f"stored object hashes to {digest.hexdigest()[:16]}…"
    return OK, f"{stat.size} bytes, sha256 matches"


def type_zh(t: str) -> str:
    return label_zh(t)
