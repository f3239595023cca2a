"""Scenario: tampering with the photo archive, as someone holding the object store's credentials.

A report with one photo goes through the real worker (intake, filing, case processor, photo
archive); then, against that freshly archived photo, one act after another:

1. a plain DELETE of the archive copy: on the versioned, object-lock bucket it only adds a
   delete marker, so readers of the latest version find nothing, while the locked version
   is untouched;
2. an overwrite: a PUT at the same key adds a newer version, the recorded one stays;
3. shortening the retention of the recorded version: without the bypass header it is refused
   in both lock modes; with it (a credential with s3:BypassGovernanceRetention, which the
   store's administrator has) GOVERNANCE lets it through and COMPLIANCE refuses;
4. deleting the recorded version itself with the bypass header: GOVERNANCE lets it through
   (the photo is gone), COMPLIANCE refuses.

After each act the scenario reads the photo as the readers do (by the recorded version) and as
a latest-version reader would, and prints what `gridflow audit case` says about it (the same
code, in-process, the case's events read from the log). The verdict is clean when the audit named every act for what it was. The
lock mode is GRIDFLOW_ARCHIVE_LOCK_MODE's; retention is one day. Under COMPLIANCE the photo
and its buckets stay until the day is over (nobody can remove them earlier).

The acts are functions of their own, used by tests/integration/test_archive_tamper.py.
"""

from __future__ import annotations

import io
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.helpers import md5sum_hash
from minio.retention import Retention
from minio.xml import marshal

from gridflow import events as ev
from gridflow import topics
from gridflow.core.refdata import load_reference_data
from gridflow.events import Message, decode_message
from gridflow.settings import Settings
from infra import services
from objectstore import make_client, read_object, retention_of

BYPASS = {"x-amz-bypass-governance-retention": "true"}
Echo = Callable[[str], None]


# --- the acts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    done: bool  # the store let it through
    said: str  # what the store answered

    def line(self) -> str:
        return ("accepted / 存储接受了" if self.done else "refused / 存储拒绝了") + f": {self.said}"


def plain_delete(s3: Minio, bucket: str, key: str) -> Outcome:
    """DELETE without a version id, as `mc rm` or any S3 client does by default."""
    try:
        s3.remove_object(bucket, key)
    except S3Error as exc:
        return Outcome(False, f"{exc.code}: {exc.message}")
    return Outcome(True, "204 No Content (a delete marker was added)")


def overwrite(s3: Minio, bucket: str, key: str, data: bytes) -> Outcome:
    """A plain PUT at the key (other bytes, no condition)."""
    try:
        written = s3.put_object(bucket, key, io.BytesIO(data), len(data),
                                content_type="image/jpeg")
    except S3Error as exc:
        return Outcome(False, f"{exc.code}: {exc.message}")
    return Outcome(True, f"200 OK, new version {written.version_id}")


def shorten_retention(s3: Minio, bucket: str, key: str, version_id: str, until: datetime, *,
                      bypass: bool) -> Outcome:
    """Set the version's retain-until date earlier (keeping its mode), with or without the
    header that bypasses GOVERNANCE retention."""
    lock = retention_of(s3, bucket, key, version_id)
    mode = lock[0] if lock else "GOVERNANCE"
    body = marshal(Retention(mode, until))
    headers: dict[str, Any] = {"Content-MD5": str(md5sum_hash(body)),
                               **(BYPASS if bypass else {})}
    try:
        s3._execute("PUT", bucket, object_name=key, body=body, headers=headers,
                    query_params={"retention": "", "versionId": version_id})
    except S3Error as exc:
        return Outcome(False, f"{exc.code}: {exc.message}")
    return Outcome(True, f"200 OK, retain-until now {until.isoformat()}")


def delete_version(s3: Minio, bucket: str, key: str, version_id: str, *,
                   bypass: bool) -> Outcome:
    """DELETE of the version itself (permanent), with or without the bypass header."""
    try:
        s3._execute("DELETE", bucket, object_name=key,
                    headers=dict[str, Any](BYPASS) if bypass else None,
                    query_params={"versionId": version_id})
    except S3Error as exc:
        return Outcome(False, f"{exc.code}: {exc.message}")
    return Outcome(True, "204 No Content (the version is gone)")


# --- the scenario -------------------------------------------------------------------------------


@dataclass
class Step:
    act: str
    outcome: Outcome | None
    expected: str  # the audit status that tells the truth
    status: str = ""
    detail: str = ""
    recorded_read: bool = False  # a reader by the recorded version got the photo's bytes
    latest_read: str = ""  # what a reader of the latest version got

    @property
    def ok(self) -> bool:
        return self.status == self.expected


@dataclass
class TamperReport:
    prefix: str
    lock_mode: str
    case_id: str = ""
    photo: str = ""  # s3://bucket/key version
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    @property
    def clean(self) -> bool:
        return not self.error and bool(self.steps) and all(s.ok for s in self.steps)

    def lines(self) -> list[str]:
        out = [f"tamper: lock mode {self.lock_mode}, prefix {self.prefix}, {self.seconds:.0f} s",
               f"  case {self.case_id}, photo {self.photo}"]
        for s in self.steps:
            out.append(f"  {s.act}")
            if s.outcome is not None:
                out.append(f"     the store: {s.outcome.line()}")
            out.append("     readers by the recorded version: "
                       + ("the photo / 照片可读" if s.recorded_read else "NOTHING / 读不到"))
            out.append(f"     a reader of the latest version: {s.latest_read}")
            mark = "✓" if s.ok else "✗"
            out.append(f"     gridflow audit case: {mark} {s.status} (expected {s.expected})")
            out.append(f"       {s.detail}")
        if self.error:
            out.append(f"  ERROR: {self.error}")
        if self.lock_mode == "GOVERNANCE" and len(self.steps) > 4:
            out.append("  GOVERNANCE: a credential with the bypass permission (the store's "
                       "administrator) shortened the lock and deleted the locked version; "
                       "production runs GRIDFLOW_ARCHIVE_LOCK_MODE=COMPLIANCE, which nobody can lift")
        out.append("  verdict: " + ("the audit named every act / 审计如实报告了每一次篡改"
                                    if self.clean else "THE AUDIT MISSED AN ACT / 审计未如实报告"))
        return out


def audit_photo(settings: Settings, s3: Minio, case_id: str) -> tuple[str, str]:
    """What `gridflow audit case --from-log` says about the case's one photo: (status,
    detail)."""
    from audit import history, logsource

    kc = logsource.consumer(settings.kafka_bootstrap, "gridflow-audit-case")
    try:
        events = history.load_from_log(kc, topics.CASE_EVENTS.name(settings.topic_prefix),
                                       case_id)
    finally:
        kc.close()
    photos = history.expected_photos(m for m, _, _ in events)
    history.check_photos(s3, photos)
    [photo] = photos
    return photo.status, photo.detail


def wait_archived(settings: Settings, report_id: str, timeout_s: float,
                  alive: Callable[[], None]) -> Message:
    """The PhotoArchived event of the report's photo, from the case-events topic."""
    consumer = KafkaConsumer(topics.CASE_EVENTS.name(settings.topic_prefix),
                             bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            alive()
            for batch in consumer.poll(timeout_ms=500).values():
                for r in batch:
                    m = decode_message(r.value or b"", typed=False)
                    if (m.type == ev.PHOTO_ARCHIVED and m.data.get("report_id") == report_id
                            and m.data.get("status") == "archived"):
                        return m
    finally:
        consumer.close()
    raise TimeoutError(f"the photo of {report_id} was not archived in {timeout_s:.0f} s")


def _make_buckets(s3: Minio, settings: Settings) -> None:
    s3.make_bucket(settings.bucket_incoming)
    s3.make_bucket(settings.bucket_archive, object_lock=True)


def _remove_buckets(s3: Minio, settings: Settings) -> bool:
    """Empty and remove the scenario's buckets; False when locked versions keep one."""
    removed = True
    for name in (settings.bucket_incoming, settings.bucket_archive):
        versions = [DeleteObject(o.object_name or "", o.version_id)
                    for o in s3.list_objects(name, recursive=True, include_version=True)]
        if versions and any(True for _ in s3.remove_objects(name, versions,
                                                             bypass_governance_mode=True)):
            removed = False
            continue
        try:
            s3.remove_bucket(name)
        except S3Error:
            removed = False
    return removed


def run(settings: Settings, log_dir: Path, *, timeout_s: float = 180.0,
        echo: Echo = print) -> TamperReport:
    from chaos.kill_worker import sample_report, upload_photo
    from demo.images import make_jpeg

    t0 = time.monotonic()
    prefix = f"tamper-{uuid.uuid4().hex[:8]}"
    log_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.with_(
        topic_prefix=prefix, database_url=f"sqlite:///{log_dir / (prefix + '.db')}",
        faust_data_dir=log_dir / "faust", bucket_incoming=f"{prefix}-incoming",
        bucket_archive=f"{prefix}-archive", archive_retention_days=1)
    report = TamperReport(prefix, settings.archive_lock_mode)
    s3 = make_client(settings)
    topics.ensure_topics(settings.kafka_bootstrap, prefix)
    _make_buckets(s3, settings)
    worker = services.start("worker", ["worker", "--loglevel", "info"], settings, log_dir)
    try:
        ref = load_reference_data(settings.refdata_dir)
        photo_ref = upload_photo(s3, settings.bucket_incoming, prefix, 0)
        msg = sample_report(ref, 0, random.Random(1), prefix, photo_ref)
        report_id = str(msg.data["report_id"])
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        try:
            producer.send(topics.REPORTS.name(prefix), key=report_id.encode(),
                          value=msg.encode()).get(timeout=60)
        finally:
            producer.close()
        echo(f"  report {report_id} sent; waiting for its photo to be archived")
        archived = wait_archived(settings, report_id, timeout_s, worker.check)
        worker.stop()
        d = archived.data
        bucket, key = str(d["archive_bucket"]), str(d["archive_key"])
        vid = str(d.get("archive_version_id") or "")
        report.case_id, report.photo = archived.case_id, f"s3://{bucket}/{key} version {vid}"
        original = read_object(s3, bucket, key, vid)
        forged = make_jpeg(96, 72, seed=666)

        def step(act: str, outcome: Outcome | None, expected: str) -> None:
            s = Step(act, outcome, expected)
            by_version = read_object(s3, bucket, key, vid)
            s.recorded_read = by_version is not None and by_version == original
            latest = read_object(s3, bucket, key)
            s.latest_read = ("nothing (NoSuchKey) / 读不到" if latest is None else
                             "the photo / 照片" if latest == original else
                             f"other bytes ({len(latest)} B) / 其他内容")
            s.status, s.detail = audit_photo(settings, s3, report.case_id)
            report.steps.append(s)
            echo(f"  {act}: audit says {s.status}")

        compliance = settings.archive_lock_mode == "COMPLIANCE"
        lock = retention_of(s3, bucket, key, vid)
        shorter = (lock[1] if lock else datetime.now(UTC)) - timedelta(hours=12)
        step("archived, untouched / 刚归档", None, "ok")
        step("1. plain DELETE / 普通删除", plain_delete(s3, bucket, key), "delete_marker")
        step("2. overwrite / 覆盖写入", overwrite(s3, bucket, key, forged), "overwritten")
        step("3a. shorten the retention / 缩短保留期",
             shorten_retention(s3, bucket, key, vid, shorter, bypass=False), "overwritten")
        step("3b. shorten the retention with the bypass header / 带绕过头缩短保留期",
             shorten_retention(s3, bucket, key, vid, shorter, bypass=True),
             "overwritten" if compliance else "retention_shortened")
        step("4. delete the locked version with the bypass header / 带绕过头删除锁定版本",
             delete_version(s3, bucket, key, vid, bypass=True),
             "overwritten" if compliance else "missing")
    except Exception as exc:  # noqa: BLE001 - reported as the scenario's failure
        report.error = f"{type(exc).__name__}: {exc}"
    finally:
        worker.stop()
        _remove_buckets(s3, settings)  # under COMPLIANCE the archive bucket stays a day
        topics.delete_topics(settings.kafka_bootstrap, prefix)
        report.seconds = time.monotonic() - t0
    return report


def cli(settings: Settings, log_dir: Path, options: dict[str, Any],
        echo: Echo) -> tuple[bool, list[str]]:
    """`gridflow chaos --scenario tamper`."""
    result = run(settings, log_dir, echo=echo)
    return result.clean, result.lines()
