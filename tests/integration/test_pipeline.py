"""The stream processors on real Kafka and MinIO: a report becomes a filed case with
tasks for the right departments and archived photos; poison goes to the dead letters."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from streams import consume_until, produce, start_worker

from demo.images import make_jpeg
from gridflow import events as ev
from gridflow.core import geo
from gridflow.core.intake import case_id_for
from gridflow.core.refdata import load_reference_data
from gridflow.events import Message, derived_id, iso
from infra import services
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

REF = load_reference_data()


@pytest.fixture(params=["asyncio"])
def worker(request, stack_settings, tmp_path: Path) -> Iterator[services.Service]:
    """A worker on the event loop `request.param` (GRIDFLOW_WORKER_LOOP): asyncio's, the one
    that is not the default; the other tests here, and the rest of the suite, run on uvloop."""
    svc = start_worker(stack_settings.with_(worker_loop=request.param), tmp_path)
    yield svc
    svc.stop()


def upload_report(s3, bucket: str, report_id: str, worker_id: str, category: str,
                  lat: float, lon: float, n_photos: int = 2) -> Message:
    worker = next(w for w in REF.workers.values() if w.id == worker_id)
    photos = []
    for i in range(n_photos):
        data = make_jpeg(320, 240, seed=i, gps=(lat, lon), taken_at=datetime(2026, 11, 2, 9, 0))
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        key = f"reports/{report_id}/{i}-{sha[:16]}.jpg"
        s3.put_object(bucket, key, io.BytesIO(data), len(data), content_type="image/jpeg")
        photos.append({"bucket": bucket, "key": key, "size": len(data), "sha256": sha,
                       "content_type": "image/jpeg", "role": "before"})
    now = datetime.now(UTC)
    actor = f"worker:{worker.id}@{worker.grid_code}"
    return Message(
        id=derived_id("report", report_id), type=ev.REPORT_SUBMITTED, case_id="", at=iso(now),
        actor=actor,
        data={"report_id": report_id, "source": "grid_worker", "channel": "app", "reporter": actor,
              "category_code": category, "description": "路边堆放大量生活垃圾", "lat": lat,
              "lon": lon, "captured_at": iso(now), "worker_grid_code": worker.grid_code,
              "photos": photos},
    )


@pytest.mark.parametrize("worker", ["uvloop", "asyncio"], indirect=True)
def test_report_is_filed_dispatched_and_its_photos_archived(request, stack, stack_settings,
                                                             buckets, worker):
    s3 = stack.s3()
    prefix = stack_settings.topic_prefix
    grid = REF.grids[next(iter(REF.grids))]
    lat, lon = geo.representative_point(grid)
    worker_id = next(w.id for w in REF.workers.values() if w.grid_code == grid.code and w.active)
    category = next(c.code for c in REF.categories.values() if c.enabled and not c.multi_department)
    msg = upload_report(s3, buckets.incoming, "rpt-pipeline-0001", worker_id, category, lat, lon)
    produce(stack.bootstrap, f"{prefix}.reports", "rpt-pipeline-0001", msg.encode())
    # a poison message, then a second report: the stream must go on past the poison
    produce(stack.bootstrap, f"{prefix}.reports", "junk", b"\xff{not json")
    dup = upload_report(s3, buckets.incoming, "rpt-pipeline-0002", worker_id, category,
                        lat + 0.00005, lon, n_photos=1)
    produce(stack.bootstrap, f"{prefix}.reports", "rpt-pipeline-0002", dup.encode())

    def complete(seen):
        types = [s["type"] for s in seen]
        return types.count(ev.PHOTO_ARCHIVED) >= 3 and ev.REPORT_MERGED in types

    events = consume_until(stack.bootstrap, f"{prefix}.case-events", complete, service=worker)
    case_id = case_id_for("rpt-pipeline-0001", msg.at_dt)
    filed = next(e for e in events if e["type"] == ev.CASE_FILED)
    assert filed["case_id"] == case_id
    assert filed["data"]["grid_code"] == grid.code
    tasks = [e for e in events if e["type"] == ev.TASK_DISPATCHED]
    from gridflow.core.routing import route

    assert [t["data"]["department"] for t in tasks] == list(route(REF, category, grid).departments)
    assert all(t["data"]["sign_due"] and t["data"]["resolve_due"] for t in tasks)
    merged = next(e for e in events if e["type"] == ev.REPORT_MERGED)
    assert merged["case_id"] == case_id  # the near-duplicate joined the open case
    assert [e["seq"] for e in events if e["case_id"] == case_id] == list(
        range(1, len([e for e in events if e["case_id"] == case_id]) + 1))

    archived = [e["data"] for e in events if e["type"] == ev.PHOTO_ARCHIVED]
    assert {a["status"] for a in archived} == {"archived"}
    for a in archived:
        stat = s3.stat_object(buckets.archive, a["archive_key"])
        assert stat.size == a["size"]
        assert s3.get_object_retention(buckets.archive, a["archive_key"]) is not None
        s3.stat_object(buckets.archive, a["thumbnail_key"])
        assert a["exif"]["lat"] == pytest.approx(lat, abs=1e-4)
    assert list(s3.list_objects(buckets.incoming, recursive=True)) == []  # claim checks redeemed

    dead = consume_until(stack.bootstrap, f"{prefix}.dead-letters", lambda s: len(s) >= 1)
    assert dead[0]["original_encoding"] == "hex" and "undecodable" in dead[0]["reason"]
    # the worker ran on the loop it was given
    assert f"event loop: {request.node.callspec.params['worker']}" in worker.log_path.read_text()


def test_report_outside_the_county_is_not_filed_with_a_reason(stack, stack_settings, buckets, worker):
    s3 = stack.s3()
    prefix = stack_settings.topic_prefix
    worker_id = next(w.id for w in REF.workers.values() if w.active)
    category = next(c.code for c in REF.categories.values() if c.enabled)
    msg = upload_report(s3, buckets.incoming, "rpt-outside-0001", worker_id, category, 39.9, 116.4, 1)
    produce(stack.bootstrap, f"{prefix}.reports", "rpt-outside-0001", msg.encode())
    events = consume_until(stack.bootstrap, f"{prefix}.case-events",
                           lambda s: any(e["type"] == ev.CASE_NOT_FILED for e in s), service=worker)
    nf = next(e for e in events if e["type"] == ev.CASE_NOT_FILED)
    assert nf["data"]["code"] == "outside_county" and nf["data"]["reason_zh"]
    assert not any(e["type"] == ev.TASK_DISPATCHED for e in events)


def failed_attempts(worker: services.Service) -> list[str]:
    """The worker's log lines of archive attempts that found MinIO unreachable (to be retried)."""
    return [line for line in worker.log_path.read_text(errors="replace").splitlines()
            if "Connection refused" in line and "retrying in" in line]


def test_archive_waits_out_a_minio_outage_and_loses_nothing(stack, stack_settings, buckets,
                                                             tmp_path: Path):
    from faults import FlakyProxy

    s3 = stack.s3()
    host, port = stack.settings.s3_endpoint.split(":")
    proxy = FlakyProxy(host, int(port))
    proxy.down()  # the worker's object store is unreachable from the start
    settings = stack_settings.with_(s3_endpoint=proxy.address)
    worker = start_worker(settings, tmp_path)
    try:
        prefix = stack_settings.topic_prefix
        grid = REF.grids[next(iter(REF.grids))]
        lat, lon = geo.representative_point(grid)
        worker_id = next(w.id for w in REF.workers.values() if w.grid_code == grid.code and w.active)
        category = next(c.code for c in REF.categories.values() if c.enabled)
        msg = upload_report(s3, buckets.incoming, "rpt-outage-0001", worker_id, category, lat, lon, 2)
        produce(stack.bootstrap, f"{prefix}.reports", "rpt-outage-0001", msg.encode())
        events = consume_until(stack.bootstrap, f"{prefix}.case-events",
                               lambda s: any(e["type"] == ev.TASK_DISPATCHED for e in s),
                               service=worker)
        # it keeps trying: more failed attempts than photos, so a photo was tried again
        wait_until("the worker to try the unreachable object store again",
                   lambda: len(failed_attempts(worker)) > 2, check=worker.check)
        assert len(list(s3.list_objects(buckets.incoming, recursive=True))) == 2  # nothing lost
        proxy.up()
        events = consume_until(stack.bootstrap, f"{prefix}.case-events",
                               lambda s: sum(e["type"] == ev.PHOTO_ARCHIVED for e in s) == 2,
                               timeout_s=120, service=worker)
    finally:
        worker.stop()
        proxy.down()
    archived = [e["data"] for e in events if e["type"] == ev.PHOTO_ARCHIVED]
    assert {a["status"] for a in archived} == {"archived"}
    for a in archived:
        assert s3.stat_object(buckets.archive, a["archive_key"]).size == a["size"]
    assert list(s3.list_objects(buckets.incoming, recursive=True)) == []
