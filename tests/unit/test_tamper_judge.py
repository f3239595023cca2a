"""Tampering with the photo archive, judged from what the store holds (audit.history.judge):
a delete marker or a newer version leaves the recorded version intact and says so; a
retention earlier than recorded is named; a recorded version gone is missing. Old events
without a version id stay readable. The read models carry the recorded versions (a schema-2
database is migrated), and the lock mode is a setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from audit import history
from audit.history import Found, PhotoCheck, judge
from gridflow import events as ev
from gridflow.events import Message, iso
from gridflow.settings import Settings
from objectstore import Version, retain_until
from sinks import models

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
UNTIL = T0 + timedelta(days=3650)


def _photo(version: str = "v1", until: datetime | None = UNTIL) -> PhotoCheck:
    return PhotoCheck("before", "a" * 64, 100, 1, "in/k", archive_bucket="ar",
                      archive_key="sha256/aa/x.jpg", archive_status="archived",
                      archive_version_id=version, lock_mode="GOVERNANCE",
                      retain_until=iso(until) if until else "")


def _v(vid: str, minutes: int, marker: bool = False, size: int = 100) -> Version:
    return Version(vid, marker, T0 + timedelta(minutes=minutes), None if marker else size, "e")


def _found(versions: list[Version], checked: str | None = "v1", content: str = history.OK,
           lock: tuple[str, datetime] | None = ("GOVERNANCE", UNTIL)) -> Found:
    return Found(versions, checked, content, "100 bytes, sha256 matches", lock)


def test_intact() -> None:
    status, detail = judge(_photo(), _found([_v("v1", 0)]))
    assert status == history.OK
    assert "锁定 GOVERNANCE" in detail and "no attempt to shorten it succeeded" in detail


def test_a_plain_delete_is_a_delete_marker_with_the_locked_version_intact() -> None:
    status, detail = judge(_photo(), _found([_v("v1", 0), _v("dm", 90, marker=True)]))
    assert status == history.DELETE_MARKED
    assert "删除标记添加于 2026-12-01 11:30:00 北京时间" in detail
    assert "锁定版本完好" in detail and "2026-12-01T03:30:00.000000Z" in detail
    assert history.STATUS_ZH[status] == "被加删除标记, 锁定版本完好"


def test_an_overwrite_is_a_newer_version_with_the_recorded_one_intact() -> None:
    status, detail = judge(_photo(), _found([_v("v1", 0), _v("v2", 5, size=13)]))
    assert status == history.OVERWRITTEN
    assert "1 newer version(s)" in detail and "(13 B)" in detail and "recorded version intact" in detail
    # overwritten, then deleted: the latest is the marker, both are said
    status, detail = judge(_photo(), _found([_v("v1", 0), _v("v2", 5), _v("dm", 6, True)]))
    assert status == history.DELETE_MARKED and "newer version" in detail


def test_a_shortened_retention_is_named_a_refused_one_leaves_it_as_recorded() -> None:
    earlier = ("GOVERNANCE", UNTIL - timedelta(days=3000))
    status, detail = judge(_photo(), _found([_v("v1", 0), _v("dm", 1, True)], lock=earlier))
    assert status == history.RETENTION_SHORTENED  # outranks the delete marker
    assert "保留期被缩短" in detail and "删除标记" in detail
    status, detail = judge(_photo(), _found([_v("v1", 0)], lock=None))
    assert status == history.RETENTION_SHORTENED and "no lock" in detail
    status, _ = judge(_photo(), _found([_v("v1", 0)], lock=("GOVERNANCE", UNTIL + timedelta(1))))
    assert status == history.OK  # extended is allowed


def test_compliance_is_said_to_be_beyond_any_credential() -> None:
    _, detail = judge(_photo(), _found([_v("v1", 0)], lock=("COMPLIANCE", UNTIL)))
    assert "no credential can lift it" in detail


def test_the_recorded_version_gone_is_missing_and_what_the_key_holds_is_listed() -> None:
    status, detail = judge(_photo(), _found([_v("v2", 5), _v("dm", 6, True)], checked="v1",
                                            content=history.MISSING))
    assert status == history.MISSING
    assert "the recorded version v1 does not exist" in detail and "version v2" in detail
    status, detail = judge(_photo(""), _found([], checked=None, content=history.MISSING))
    assert status == history.MISSING and "no version of the key" in detail


def test_bytes_that_do_not_match_outrank_tampering_notes() -> None:
    status, _ = judge(_photo(), _found([_v("v1", 0), _v("dm", 1, True)],
                                       content=history.SHA_MISMATCH))
    assert status == history.SHA_MISMATCH


def test_events_without_versions_or_locks_stay_readable() -> None:
    """PhotoArchived written before versions were recorded: no version id, no lock; the
    audit checks the key's first version and says nothing about the retention it had."""
    old = Message(id="e1", type=ev.PHOTO_ARCHIVED, case_id="AJ1", at=iso(T0), actor="system",
                  data={"sha256": "a" * 64, "source_key": "k", "source_bucket": "in",
                        "status": "archived", "archive_bucket": "ar",
                        "archive_key": "sha256/aa/x.jpg", "size": 100})
    [p] = history.expected_photos([old])
    assert (p.archive_version_id, p.lock_mode, p.retain_until) == ("", "", "")
    status, detail = judge(p, _found([_v("v1", 0), _v("dm", 1, True)]))
    assert status == history.DELETE_MARKED and "retention as recorded" not in detail
    assert not p.ok and p.status == "" and PhotoCheck(**{**p.__dict__, "status": status}).intact


def test_retain_until_is_whole_seconds() -> None:
    wall = datetime(2026, 12, 1, 2, 0, 0, 987654, tzinfo=UTC)
    assert retain_until(1, lambda: wall) == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def test_lock_mode_setting() -> None:
    assert Settings().archive_lock_mode == "GOVERNANCE"
    assert Settings(archive_lock_mode="compliance").archive_lock_mode == "COMPLIANCE"
    with pytest.raises(ValueError, match="GRIDFLOW_ARCHIVE_LOCK_MODE"):
        Settings(archive_lock_mode="LEGAL_HOLD")


def test_a_schema_2_database_gets_the_version_columns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = models.make_engine(f"sqlite:///{tmp_path / 'rm.db'}")
    models.create_schema(engine)
    with engine.begin() as conn:  # as version 2 left it
        for name in ("archive_version_id", "thumbnail_version_id"):
            conn.execute(text(f"ALTER TABLE photos DROP COLUMN {name}"))
        conn.execute(text("UPDATE schema_version SET version = 2"))
    assert models.create_schema(engine) == models.DB_SCHEMA_VERSION >= 3  # 3 added them
    columns = {c["name"] for c in inspect(engine).get_columns("photos")}
    assert {"archive_version_id", "thumbnail_version_id"} <= columns
    with engine.connect() as conn:
        assert (conn.execute(text("SELECT version FROM schema_version")).scalar()
                == models.DB_SCHEMA_VERSION)
    engine.dispose()
