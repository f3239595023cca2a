"""Tampering with the photo archive on the real MinIO, as a holder of the store's credentials
would: each act, what the store does with it, what the readers show and what
`gridflow audit case` says.

- the archive records the version it wrote and the lock it put on it (a redelivery records
  the same);
- a plain DELETE only adds a delete marker: readers by the recorded version still show the
  photo, the audit says "delete marker added at T, the locked version intact";
- an overwrite adds a newer version: the recorded one is read and reported intact;
- shortening the retention is refused without the bypass header; with it GOVERNANCE gives in
  (the audit names the shortened date), COMPLIANCE does not (nor to deleting the version);
- the locked version deleted with the bypass header (GOVERNANCE) is missing;
- events written before versions were recorded stay readable and auditable;
- the board, the workbench, the phone app and the API's report links read the recorded
  versions through the real pipeline steps and read models.
"""

from __future__ import annotations

import hashlib
import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3
from fastapi.testclient import TestClient
from minio import Minio

from accounts.sample import SampleSessions
from audit import history, report
from chaos import tamper
from chaos.kill_worker import sample_report
from dashboard.app import create_dashboard
from demo import images
from demo.live import InProcessPipeline, real_deps
from gridflow import events as ev
from gridflow.core.refdata import load_reference_data
from gridflow.events import Message, iso
from objectstore import read_object, retention_of, versions_of
from processors import archive
from producers.app import create_app

REF = load_reference_data()
DAY = 1  # retention: the date comes from the wall clock; a COMPLIANCE object stays a day


def _upload(s3: Minio, bucket: str, data: bytes, key: str = "reports/r1/1.jpg") -> dict[str, Any]:
    s3.put_object(bucket, key, io.BytesIO(data), len(data), content_type="image/jpeg")
    return {"bucket": bucket, "key": key, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "content_type": "image/jpeg",
            "role": "before"}


def _filed(ref: dict[str, Any]) -> Message:
    return Message(id="evt-1", type=ev.CASE_FILED, case_id="AJ-TAMPER-1",
                   at=iso(datetime.now(UTC)), actor="worker:W1", seq=1,
                   data={"report": {"report_id": "r1", "photos": [ref]}})


class Archived:
    """One photo archived by the real archive step, and the audit of it."""

    def __init__(self, s3: Minio, buckets: Any, lock_mode: str = "GOVERNANCE",
                 seed: int = 11) -> None:
        self.s3 = s3
        self.data = images.make_jpeg(640, 480, seed=seed)
        self.ref = _upload(s3, buckets.incoming, self.data)
        self.cfg = archive.ArchiveConfig(buckets.archive, DAY, 10 * 1024 * 1024, 40_000_000,
                                         lock_mode)
        self.filed = _filed(self.ref)
        self.command = archive.archive_photo(s3, self.cfg, self.filed, self.ref)
        d = self.command.data
        self.bucket, self.key, self.vid = d["archive_bucket"], d["archive_key"], d["archive_version_id"]
        self.event = Message(id="evt-2", type=ev.PHOTO_ARCHIVED, case_id=self.filed.case_id,
                             at=self.filed.at, actor="system", seq=2, data=dict(d))

    def audit(self, event: Message | None = None) -> history.PhotoCheck:
        [photo] = history.expected_photos([self.filed, event or self.event])
        history.check_photos(self.s3, [photo])
        return photo

    def by_version(self) -> bytes | None:
        return read_object(self.s3, self.bucket, self.key, self.vid)

    def latest(self) -> bytes | None:
        return read_object(self.s3, self.bucket, self.key)


@pytest.fixture
def s3(stack) -> Minio:  # type: ignore[no-untyped-def]
    return stack.s3()


def test_the_archive_records_the_version_it_wrote_and_its_lock(s3, buckets) -> None:  # type: ignore[no-untyped-def]
    a = Archived(s3, buckets)
    d = a.command.data
    [first] = versions_of(s3, a.bucket, a.key)
    [thumb] = versions_of(s3, a.bucket, d["thumbnail_key"])
    assert (d["archive_version_id"], d["thumbnail_version_id"]) == (first.version_id,
                                                                     thumb.version_id)
    assert d["lock_mode"] == "GOVERNANCE"
    assert retention_of(s3, a.bucket, a.key, a.vid) == ("GOVERNANCE",
                                                        datetime.fromisoformat(d["retain_until"]))
    # Redelivered (incoming copy still there), then after the incoming copy went: the same.
    assert archive.archive_photo(s3, a.cfg, a.filed, a.ref).data == d
    archive.remove_incoming(s3, a.ref)
    gone = archive.archive_photo(s3, a.cfg, a.filed, a.ref).data
    assert {k: gone[k] for k in ("status", "archive_version_id", "thumbnail_version_id",
                                 "lock_mode", "retain_until")} == {
        "status": "archived", **{k: d[k] for k in ("archive_version_id", "thumbnail_version_id",
                                                   "lock_mode", "retain_until")}}
    assert a.audit().status == history.OK


def test_a_plain_delete_adds_a_marker_and_hides_nothing_from_readers_or_the_audit(s3, buckets) -> None:  # type: ignore[no-untyped-def]
    a = Archived(s3, buckets)
    outcome = tamper.plain_delete(s3, a.bucket, a.key)
    assert outcome.done  # a new user's surprise: the DELETE "succeeds"
    assert a.latest() is None and a.by_version() == a.data
    photo = a.audit()
    assert photo.status == history.DELETE_MARKED and photo.intact and not photo.ok
    [marker] = [v for v in versions_of(s3, a.bucket, a.key) if v.delete_marker]
    assert marker.last_modified is not None
    assert f"delete marker added at {iso(marker.last_modified)}" in photo.detail
    assert "锁定版本完好" in photo.detail
    # A presigned link names the version: it still shows the photo; one without does not.
    http = urllib3.PoolManager()
    for version, status in ((a.vid, 200), (None, 404)):
        url = s3.presigned_get_object(a.bucket, a.key, timedelta(minutes=5), version_id=version)
        got = http.request("GET", url)
        assert got.status == status and (status != 200 or got.data == a.data)
    # The redelivered archive step after the incoming copy went: still archived, same version.
    archive.remove_incoming(s3, a.ref)
    again = archive.archive_photo(s3, a.cfg, a.filed, a.ref).data
    assert (again["status"], again["archive_version_id"]) == ("archived", a.vid)
    # The audit's words for the auditor
    lines = "\n".join(report.history_lines(
        history.CaseHistory("AJ-TAMPER-1", "test", photos=[photo]), checked_photos=True))
    assert "被加删除标记, 锁定版本完好 / delete_marker" in lines and f"version {a.vid}" in lines
    assert "every recorded version intact" in lines


def test_an_overwrite_adds_a_newer_version_and_the_recorded_one_is_read(s3, buckets) -> None:  # type: ignore[no-untyped-def]
    a = Archived(s3, buckets)
    forged = images.make_jpeg(640, 480, seed=99)
    assert tamper.overwrite(s3, a.bucket, a.key, forged).done
    assert a.latest() == forged and a.by_version() == a.data
    photo = a.audit()
    assert photo.status == history.OVERWRITTEN and photo.intact
    assert f"({len(forged)} B); the recorded version intact" in photo.detail


def test_shortening_the_retention_is_refused_without_bypass_and_named_with_it(s3, buckets) -> None:  # type: ignore[no-untyped-def]
    a = Archived(s3, buckets)
    recorded = datetime.fromisoformat(a.command.data["retain_until"])
    shorter = recorded - timedelta(hours=12)
    refused = tamper.shorten_retention(s3, a.bucket, a.key, a.vid, shorter, bypass=False)
    assert not refused.done
    assert retention_of(s3, a.bucket, a.key, a.vid) == ("GOVERNANCE", recorded)
    photo = a.audit()
    assert photo.status == history.OK and "retention as recorded" in photo.detail
    # GOVERNANCE gives in to the bypass header (the store's administrator has the permission)
    assert tamper.shorten_retention(s3, a.bucket, a.key, a.vid, shorter, bypass=True).done
    photo = a.audit()
    assert photo.status == history.RETENTION_SHORTENED and photo.intact
    assert f"recorded until {iso(recorded)}, now {iso(shorter)}" in photo.detail


def test_the_locked_version_deleted_with_the_bypass_header_is_missing(s3, buckets) -> None:  # type: ignore[no-untyped-def]
    a = Archived(s3, buckets)
    assert not tamper.delete_version(s3, a.bucket, a.key, a.vid, bypass=False).done
    assert a.audit().status == history.OK
    assert tamper.delete_version(s3, a.bucket, a.key, a.vid, bypass=True).done  # GOVERNANCE
    photo = a.audit()
    assert photo.status == history.MISSING and not photo.intact
    assert f"the recorded version {a.vid} does not exist" in photo.detail


def test_compliance_is_lifted_by_no_credential(s3, buckets) -> None:  # type: ignore[no-untyped-def]
    """COMPLIANCE on real MinIO, one day: the object and its bucket stay until then (the
    fixture leaves a bucket it cannot empty)."""
    a = Archived(s3, buckets, lock_mode="COMPLIANCE", seed=12)
    recorded = datetime.fromisoformat(a.command.data["retain_until"])
    assert a.command.data["lock_mode"] == "COMPLIANCE"
    assert retention_of(s3, a.bucket, a.key, a.vid) == ("COMPLIANCE", recorded)
    for bypass in (False, True):
        assert not tamper.shorten_retention(s3, a.bucket, a.key, a.vid,
                                            recorded - timedelta(hours=12), bypass=bypass).done
        assert not tamper.delete_version(s3, a.bucket, a.key, a.vid, bypass=bypass).done
    assert tamper.plain_delete(s3, a.bucket, a.key).done  # a marker is still allowed
    photo = a.audit()
    assert photo.status == history.DELETE_MARKED and a.by_version() == a.data
    assert "locked COMPLIANCE" in photo.detail and "no credential can lift it" in photo.detail
    assert "retention as recorded" in photo.detail


def test_events_without_a_version_stay_readable_and_auditable(s3, buckets) -> None:  # type: ignore[no-untyped-def]
    """PhotoArchived from before versions were recorded: the audit checks the key's first
    version, so a later delete marker or overwrite is still told apart from a loss."""
    a = Archived(s3, buckets)
    old = Message(id=a.event.id, type=a.event.type, case_id=a.event.case_id, at=a.event.at,
                  actor="system", seq=2,
                  data={k: v for k, v in a.event.data.items()
                        if k not in {"archive_version_id", "thumbnail_version_id", "lock_mode",
                                     "retain_until"}})
    assert a.audit(old).status == history.OK
    tamper.overwrite(s3, a.bucket, a.key, b"forged")
    tamper.plain_delete(s3, a.bucket, a.key)
    photo = a.audit(old)
    assert photo.status == history.DELETE_MARKED and "newer version" in photo.detail
    assert "retention as recorded" not in photo.detail  # nothing recorded to compare with


def test_every_reader_reads_the_recorded_version(stack, stack_settings, buckets) -> None:  # type: ignore[no-untyped-def]
    """A report through the real steps into the read models, its photo archived; then the
    archive copy and its thumbnail plainly DELETEd: the board's thumbnail, the workbench's
    thumbnail and original, the phone app's photo and the API's report link still show it."""
    s3 = stack.s3()
    settings = stack_settings.with_(archive_retention_days=DAY)
    deps = real_deps(settings, s3, REF)
    api = create_app(settings, deps)
    board = create_dashboard(settings, deps.engine, REF, lambda: datetime.now(UTC), s3,
                             accounts=api.state.accounts)
    try:
        data = images.make_jpeg(800, 600, seed=21)
        photo_ref = _upload(s3, settings.bucket_incoming, data, "reports/tamper-0/0.jpg")
        msg = sample_report(REF, 0, random.Random(1), "tamper", photo_ref)
        reporter = msg.actor.split(":")[1].split("@")[0].lower()
        pipeline = InProcessPipeline(deps.engine, REF)
        now = datetime.now(UTC)
        pipeline.report(msg.encode(), now)
        [filed] = [e for e in pipeline.events if e.type == ev.CASE_FILED]
        cfg = archive.ArchiveConfig(settings.bucket_archive, DAY, 10 * 1024 * 1024, 40_000_000)
        [photo] = archive.photos_of(filed)
        cmd = archive.archive_photo(s3, cfg, filed, photo)
        pipeline.command(cmd.encode(), filed.case_id, now)
        from sqlalchemy import select

        from sinks.models import Photo, table_of

        t = table_of(Photo)
        with deps.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.case_id == filed.case_id)).mappings().one()
        assert (row["archive_version_id"], row["thumbnail_version_id"]) == (
            cmd.data["archive_version_id"], cmd.data["thumbnail_version_id"])
        thumb = read_object(s3, settings.bucket_archive, row["thumbnail_key"])
        assert thumb is not None
        for key in (row["archive_key"], row["thumbnail_key"]):
            assert tamper.plain_delete(s3, settings.bucket_archive, key).done
            assert read_object(s3, settings.bucket_archive, key) is None

        sessions = SampleSessions(api.state.accounts, "tamper")
        auditor, worker = sessions.bearer("au0001"), sessions.bearer(reporter)
        with TestClient(board, headers=auditor) as c:
            got = c.get(f"/thumbs/{row['sha256']}")
            assert got.status_code == 200 and got.content == thumb
        with TestClient(api) as c:
            got = c.get(f"/w/photos/{row['id']}/thumb", headers=auditor)
            assert got.status_code == 200 and got.content == thumb
            got = c.get(f"/w/photos/{row['id']}/original", headers=auditor)
            assert got.status_code == 200 and got.content == data
            got = c.get(f"/m/api/photos/{row['id']}", headers=worker)
            assert got.status_code == 200 and got.content == thumb
            status = c.get(f"/api/v1/reports/{msg.data['report_id']}", headers=worker)
            assert status.status_code == 200, status.text
            [view] = status.json()["photos"]
        http = urllib3.PoolManager()
        assert http.request("GET", view["url"]).data == data
        assert http.request("GET", view["thumbnail_url"]).data == thumb
    finally:
        deps.engine.dispose()


def test_the_tamper_scenario_names_every_act(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`gridflow chaos --scenario tamper` (GOVERNANCE): a report through the real worker, the
    acts against its archived photo, the audit after each."""
    result = tamper.run(stack.settings, tmp_path, echo=lambda _: None)
    assert result.clean, "\n".join(result.lines())
    assert [s.status for s in result.steps] == [
        "ok", "delete_marker", "overwritten", "overwritten", "retention_shortened", "missing"]
    assert [s.recorded_read for s in result.steps] == [True] * 5 + [False]
    assert result.steps[3].outcome is not None and not result.steps[3].outcome.done
