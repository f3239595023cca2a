"""The archive step on the real MinIO: the locked, content-addressed copy and the thumbnail are
written once with one conditional PUT each (a redelivery writes no second version), fakes are
refused, and object-store errors propagate (the agent retries) instead of becoming a result.
The lock follows real time whatever the simulated clock says: events from years in the past
and years in the future are archived alike, locked from the wall clock on."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3
from minio import Minio
from minio.error import S3Error
from PIL import Image

from demo import images
from gridflow import events as ev
from gridflow.events import Message, iso
from objectstore import put_if_absent
from processors import archive

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
# Simulated times (domain time) far from today, whenever the tests run.
SIM_TIMES = {"years-past": datetime(2019, 3, 4, 1, 0, tzinfo=UTC),
             "years-ahead": datetime(2061, 11, 21, 1, 0, tzinfo=UTC)}


def _upload(s3: Minio, bucket: str, key: str, data: bytes) -> dict[str, Any]:
    s3.put_object(bucket, key, io.BytesIO(data), len(data), content_type="image/jpeg")
    return {"bucket": bucket, "key": key, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "content_type": "image/jpeg",
            "role": "before"}


def _event(ref: dict[str, Any], at: datetime = NOW) -> Message:
    return Message(id="evt-1", type=ev.CASE_FILED, case_id="AJ-TEST-1", at=iso(at),
                   actor="worker:W1", data={"report": {"report_id": "r1", "photos": [ref]}},
                   seq=1)


def _versions(s3: Minio, bucket: str) -> list[tuple[str, str | None]]:
    return sorted((o.object_name or "", o.version_id)
                  for o in s3.list_objects(bucket, recursive=True, include_version=True))


@pytest.fixture(params=sorted(SIM_TIMES), ids=sorted(SIM_TIMES))
def sim_now(request: pytest.FixtureRequest) -> datetime:
    """The simulated clock's time, which the events carry: years before or after today."""
    return SIM_TIMES[request.param]


@pytest.fixture
def cfg(buckets) -> archive.ArchiveConfig:  # type: ignore[no-untyped-def]
    return archive.ArchiveConfig(buckets.archive, 1, 10 * 1024 * 1024, 40_000_000)


def test_put_if_absent_writes_once(stack, buckets) -> None:  # type: ignore[no-untyped-def]
    s3 = stack.s3()
    assert put_if_absent(s3, buckets.archive, "k/1", b"one", content_type="text/plain")
    assert not put_if_absent(s3, buckets.archive, "k/1", b"one", content_type="text/plain")
    assert len(_versions(s3, buckets.archive)) == 1
    stat = s3.stat_object(buckets.archive, "k/1")
    assert (stat.size, stat.content_type) == (3, "text/plain")


class _OlderSdk:
    """The real client without the private single-part put (another minio SDK version)."""

    def __init__(self, real: Minio) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        if name == "_put_object":
            raise AttributeError(name)
        return getattr(self._real, name)


def test_put_if_absent_without_the_private_put_stats_first(stack, buckets) -> None:  # type: ignore[no-untyped-def]
    s3 = stack.s3()
    older = _OlderSdk(s3)
    assert put_if_absent(older, buckets.archive, "k/2", b"two", content_type="text/plain")  # type: ignore[arg-type]
    assert not put_if_absent(older, buckets.archive, "k/2", b"two")  # type: ignore[arg-type]
    assert not put_if_absent(s3, buckets.archive, "k/2", b"two")
    assert len(_versions(s3, buckets.archive)) == 1


def test_archive_writes_a_locked_copy_and_a_thumbnail_once(stack, buckets, cfg, sim_now) -> None:  # type: ignore[no-untyped-def]
    s3 = stack.s3()
    data = images.make_jpeg(1600, 1200, seed=3)
    ref = _upload(s3, buckets.incoming, "reports/r1/1.jpg", data)
    before = datetime.now(UTC).replace(microsecond=0)
    cmd = archive.archive_photo(s3, cfg, _event(ref, sim_now), ref)
    after = datetime.now(UTC)
    d = cmd.data
    assert d["status"] == "archived" and (d["width"], d["height"]) == (1600, 1200)
    assert d["archive_key"] == archive.archive_key(ref["sha256"], "image/jpeg")
    stat = s3.stat_object(buckets.archive, d["archive_key"])
    assert stat.size == len(data) and stat.content_type == "image/jpeg"
    assert stat.metadata.get("x-amz-meta-sha256") == ref["sha256"]
    retention = s3.get_object_retention(buckets.archive, d["archive_key"])
    assert retention.mode == "GOVERNANCE"
    # locked for the retention period from the wall clock, not from the simulated time
    assert before + timedelta(days=1) <= retention.retain_until_date <= after + timedelta(days=1)
    assert cmd.at == iso(sim_now)  # the command keeps the event's (domain) time
    assert d["event_seq"] == 1  # a case whose state is behind the event waits for it
    thumb = s3.get_object(buckets.archive, d["thumbnail_key"])
    try:
        assert Image.open(io.BytesIO(thumb.read())).size == (320, 240)
    finally:
        thumb.close()
        thumb.release_conn()
    written = _versions(s3, buckets.archive)
    assert len(written) == 2

    # Redelivered with the incoming copy still there: the same command, nothing written again.
    again = archive.archive_photo(s3, cfg, _event(ref, sim_now), ref)
    assert (again.id, again.data) == (cmd.id, cmd.data)
    assert _versions(s3, buckets.archive) == written
    # ... and after the incoming copy went: still archived, same command.
    archive.remove_incoming(s3, ref)
    archive.remove_incoming(s3, ref)  # idempotent
    gone = archive.archive_photo(s3, cfg, _event(ref, sim_now), ref)
    assert (gone.id, gone.data["status"], gone.data["archive_key"]) == (
        cmd.id, "archived", d["archive_key"])


def test_the_lock_runs_from_the_injected_wall_clock(stack, buckets, cfg) -> None:  # type: ignore[no-untyped-def]
    s3 = stack.s3()
    ref = _upload(s3, buckets.incoming, "reports/r1/w.jpg", images.make_jpeg(320, 240, seed=7))
    wall = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=5)
    cmd = archive.archive_photo(s3, cfg, _event(ref, SIM_TIMES["years-past"]), ref,
                                wall_now=lambda: wall)
    retention = s3.get_object_retention(buckets.archive, cmd.data["archive_key"])
    assert retention.retain_until_date == wall + timedelta(days=cfg.retention_days)


def test_fakes_and_mismatches_are_refused_and_nothing_is_written(stack, buckets, cfg) -> None:  # type: ignore[no-untyped-def]
    s3 = stack.s3()
    fake = b"\xff\xd8\xff" + b"not really a jpeg" * 100
    ref = _upload(s3, buckets.incoming, "reports/r1/fake.jpg", fake)
    assert archive.archive_photo(s3, cfg, _event(ref), ref).data["status"] == "corrupt"
    cut = images.truncated_jpeg(images.make_jpeg(800, 600, seed=4))
    ref = _upload(s3, buckets.incoming, "reports/r1/cut.jpg", cut)
    assert archive.archive_photo(s3, cfg, _event(ref), ref).data["status"] == "corrupt"
    good = images.make_jpeg(640, 480, seed=5)
    ref = {**_upload(s3, buckets.incoming, "reports/r1/2.jpg", good), "sha256": "0" * 64}
    result = archive.archive_photo(s3, cfg, _event(ref), ref).data
    assert result["status"] == "corrupt" and "sha256" in result["problem"]
    assert _versions(s3, buckets.archive) == []


class _ThumbnailPutFails:
    """The real client, except that writing a thumbnail fails as a broken connection would."""

    def __init__(self, real: Minio) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def _put_object(self, bucket: str, key: str, *args: Any, **kw: Any) -> Any:
        if key.startswith("thumbs/"):
            raise urllib3.exceptions.ProtocolError("connection broken")
        return self._real._put_object(bucket, key, *args, **kw)


def test_object_store_errors_propagate_and_a_retry_completes(stack, buckets, cfg, sim_now) -> None:  # type: ignore[no-untyped-def]
    s3 = stack.s3()
    data = images.make_jpeg(640, 480, seed=6)
    ref = _upload(s3, buckets.incoming, "reports/r1/3.jpg", data)
    event = _event(ref, sim_now)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        archive.archive_photo(_ThumbnailPutFails(s3), cfg, event, ref)  # type: ignore[arg-type]
    unreachable = Minio("127.0.0.1:9", access_key="x", secret_key="y", secure=False,
                        http_client=urllib3.PoolManager(retries=urllib3.Retry(total=0)))
    with pytest.raises(urllib3.exceptions.HTTPError):
        archive.archive_photo(unreachable, cfg, event, ref)
    with pytest.raises(S3Error):  # no such bucket: not "missing", an error the agent retries
        archive.archive_photo(s3, archive.ArchiveConfig("no-such-bucket-gridflow", 1,
                              cfg.max_bytes, cfg.max_pixels), event, ref)
    cmd = archive.archive_photo(s3, cfg, event, ref)  # the retry
    assert cmd.data["status"] == "archived"
    assert len(_versions(s3, buckets.archive)) == 2


def test_incoming_copies_removed_in_one_request_idempotently(stack, buckets) -> None:  # type: ignore[no-untyped-def]
    s3 = stack.s3()
    refs = [_upload(s3, bucket, f"reports/r{i}/1.jpg", b"x" * i)
            for i in range(1, 6) for bucket in (buckets.incoming, buckets.archive)]
    archive.remove_incoming_many(s3, refs[:6] + refs[:2])  # a photo of two events: once
    archive.remove_incoming_many(s3, refs)  # the first six again: already gone, no error
    archive.remove_incoming_many(s3, [])
    assert list(s3.list_objects(buckets.incoming, recursive=True)) == []
    assert list(s3.list_objects(buckets.archive, recursive=True)) == []
    with pytest.raises(S3Error):  # a failed request is raised (the agent retries it)
        archive.remove_incoming_many(s3, [{"bucket": "no-such-bucket-gridflow", "key": "k"}])
