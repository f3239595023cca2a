"""The grid worker's upload on the real stack: HTTP (uvicorn) → MinIO incoming bucket → Kafka.

What a user would check: an accepted upload is on the log with photo references that point
at the very bytes sent; a retry is answered the same and changes nothing; every refusal says
why in Chinese and leaves no photo and no event behind; Kafka down means 503 + Retry-After,
nothing half-written, and the phone's retry later succeeds.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from accounts.sample import SampleSessions
from accounts.store import AccountStore
from demo import images
from demo.live import LiveApi, free_port, read_topic, real_deps
from gridflow import topics
from gridflow.core.refdata import load_reference_data
from gridflow.events import REPORT_SUBMITTED, decode_message, derived_id
from gridflow.settings import Settings
from producers.app import Deps, create_app
from tests.support.api import ApiEnv, chinese, report_id_of

pytestmark = pytest.mark.integration

REF = load_reference_data()
WORKER = REF.workers["GW0001"]  # 石门村一组网格
SIGNED_IN: dict[str, str] = {}  # API url -> GW0001's session token in that API's database


def sign_in(url: str, deps: Deps) -> None:
    """GW0001 signed in to the API at `url` (accounts created through the account store)."""
    SIGNED_IN[url] = SampleSessions(AccountStore(deps.engine, REF), "test").token(WORKER.id)


def build_deps(
    settings: Settings, s3: Any, bootstrap: str | None = None, timeout_s: float = 10.0
) -> Deps:
    return real_deps(settings, s3, REF, bootstrap, timeout_s)


@pytest.fixture
def env(stack: Any, stack_settings: Settings) -> Iterator[ApiEnv]:
    s3 = stack.s3()
    deps = build_deps(stack_settings, s3)
    with LiveApi(create_app(stack_settings, deps)) as api:
        sign_in(api.url, deps)
        yield ApiEnv(stack_settings, s3, deps, api.url)


def new_report(**overrides: Any) -> dict[str, Any]:
    lat, lon = 32.16, 109.96  # inside 石门村一组网格
    report = {
        "report_id": f"it-{uuid.uuid4().hex[:16]}",
        "category_code": "E0102",
        "description": "村口垃圾桶满溢, 周边散落垃圾",
        "lat": lat,
        "lon": lon,
        "captured_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "address": "石门村村口",
    }
    report.update(overrides)
    return report


def photo(seed: int) -> bytes:
    return images.make_jpeg(
        640, 480, seed=seed, gps=(32.16, 109.96), taken_at=datetime.now(UTC).replace(microsecond=0)
    )


def upload(
    url: str, report: dict[str, Any] | bytes, photos: list[bytes], token: str | None = "worker"
) -> httpx.Response:
    """Upload as GW0001 (`token` "worker"), as another token, or without one (None)."""
    token = SIGNED_IN[url] if token == "worker" else token
    part = report if isinstance(report, bytes) else json.dumps(report, ensure_ascii=False).encode()
    files = [("report", (None, part, "application/json"))]
    files += [("photos", (f"IMG_{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/api/v1/reports", files=files, headers=headers, timeout=60)


def sentinel(env: ApiEnv) -> str:
    """Upload a good report; reading the topic up to it proves nothing else was published."""
    report = new_report()
    r = upload(env.url, report, [photo(99)])
    assert r.status_code == 202, r.text
    return str(report["report_id"])


def events(env: ApiEnv, until_report: str) -> list[Any]:
    """Every record on the reports topic, read until `until_report` shows up."""
    return env.report_records(until_report)


def submitted(records: list[Any], report_id: str) -> list[Any]:
    return [r for r in records if report_id_of(r) == report_id]


# --- accepted ------------------------------------------------------------------------------


def test_upload_with_two_jpegs_is_on_the_log_and_its_photos_in_the_bucket(env: ApiEnv) -> None:
    report = new_report()
    jpegs = [photo(1), photo(2)]
    r = upload(env.url, report, jpegs)

    assert r.status_code == 202, r.text
    body = r.json()
    rid = report["report_id"]
    assert body["report_id"] == rid and body["status"] == "accepted"
    assert body["case_id"].startswith("AJ") and body["status_url"] == f"/api/v1/reports/{rid}"

    records = submitted(events(env, rid), rid)
    assert len(records) == 1
    msg = decode_message(records[0].value)
    assert msg.type == REPORT_SUBMITTED and msg.id == derived_id("report", rid)
    assert msg.actor == f"worker:{WORKER.id}@{WORKER.grid_code}"
    # the ticket answered travels with the report, on its township's partition (issue 16)
    assert msg.case_id == body["case_id"]
    assert topics.partition_of(msg.case_id, topics.CASE_PARTITIONS) == records[0].partition
    d = msg.data
    assert d["source"] == "grid_worker" and d["channel"] == "app"
    assert d["reporter"] == msg.actor and d["worker_grid_code"] == WORKER.grid_code
    assert d["category_code"] == "E0102" and d["description"] == report["description"]
    assert (d["lat"], d["lon"]) == (report["lat"], report["lon"])
    assert d["address"] == "石门村村口"

    stored = env.objects(f"reports/{rid}/")
    assert len(d["photos"]) == 2 and len(stored) == 2
    for i, (ref, sent) in enumerate(zip(d["photos"], jpegs, strict=True), start=1):
        sha = hashlib.sha256(sent).hexdigest()
        assert ref["bucket"] == env.settings.bucket_incoming
        assert ref["key"] == f"reports/{rid}/{i}-{sha[:16]}.jpg"
        assert ref["sha256"] == sha and ref["size"] == len(sent)
        assert ref["content_type"] == "image/jpeg" and ref["role"] == "before"
        assert hashlib.sha256(stored[ref["key"]]).hexdigest() == sha


def test_a_retried_upload_gets_the_first_answer_and_changes_nothing(env: ApiEnv) -> None:
    report = new_report()
    jpegs = [photo(3), photo(4)]
    first = upload(env.url, report, jpegs)
    assert first.status_code == 202, first.text
    objects_before = env.objects(f"reports/{report['report_id']}/")

    again = upload(env.url, report, jpegs)

    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    end = sentinel(env)
    assert len(submitted(events(env, end), report["report_id"])) == 1
    assert env.objects(f"reports/{report['report_id']}/") == objects_before


@pytest.fixture
def pg_env(stack: Any, stack_settings: Settings, pg_url: str) -> Iterator[ApiEnv]:
    """The API with its receipts (and read models) in PostgreSQL, as in production."""
    settings = stack_settings.with_(database_url=pg_url)
    s3 = stack.s3()
    deps = build_deps(settings, s3)
    try:
        with LiveApi(create_app(settings, deps)) as api:
            sign_in(api.url, deps)
            yield ApiEnv(settings, s3, deps, api.url)
    finally:
        deps.engine.dispose()  # the database is dropped after the test


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_concurrent_retries_publish_once(database: str, request: pytest.FixtureRequest) -> None:
    env: ApiEnv = request.getfixturevalue("env" if database == "sqlite" else "pg_env")
    report = new_report()
    jpegs = [photo(5), photo(6)]
    answers: list[httpx.Response] = []
    start = threading.Barrier(3)

    def send() -> None:
        start.wait()
        answers.append(upload(env.url, report, jpegs))

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    codes = sorted(a.status_code for a in answers)
    assert codes.count(202) == 1, [a.text for a in answers]
    assert set(codes) <= {200, 202, 409}
    for a in answers:
        if a.status_code == 200:
            assert a.json() == next(x for x in answers if x.status_code == 202).json()
        if a.status_code == 409:
            assert a.json()["code"] == "in_progress" and a.headers["Retry-After"]
    end = sentinel(env)
    assert len(submitted(events(env, end), report["report_id"])) == 1
    assert len(env.objects(f"reports/{report['report_id']}/")) == 2


def test_another_payload_under_a_used_report_id_is_refused(env: ApiEnv) -> None:
    report = new_report()
    assert upload(env.url, report, [photo(7)]).status_code == 202

    other_text = upload(env.url, {**report, "description": "另一件事"}, [photo(7)])
    other_photo = upload(env.url, report, [photo(8)])

    for r in (other_text, other_photo):
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "report_id_conflict" and chinese(r.json()["message_zh"])
    assert len(env.objects(f"reports/{report['report_id']}/")) == 1


def test_a_report_outside_the_workers_own_grid_is_accepted(env: ApiEnv) -> None:
    elsewhere = REF.grids["421099201201001"]  # 白鹤乡新发村: not GW0001's grid
    from gridflow.core.geo import representative_point

    lat, lon = representative_point(elsewhere)
    r = upload(env.url, new_report(lat=lat, lon=lon), [photo(9)])
    assert r.status_code == 202, r.text


# --- who may upload --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("gfs_not-a-token-of-anyone-000000", 401, "unauthorized"),
        ("disabled", 401, "unauthorized"),  # its sessions ended when it was disabled
        ("ds0003", 403, "wrong_role"),  # department staff do not report
    ],
)
def test_only_active_grid_workers_may_upload(
    env: ApiEnv, who: str | None, status: int, code: str
) -> None:
    sessions = SampleSessions(AccountStore(env.deps.engine, REF), "test")
    token = who if who is None or who.startswith("gfs_") else sessions.token(
        "gw0002" if who == "disabled" else who)
    if who == "disabled":
        sessions.store.set_status("gw0002", False, "test-admin")
    report = new_report()
    r = upload(env.url, report, [photo(10)], token=token)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and chinese(r.json()["message_zh"])
    end = sentinel(env)
    assert submitted(events(env, end), report["report_id"]) == []
    assert env.objects(f"reports/{report['report_id']}/") == {}


# --- bad input: a clear answer, nothing left behind -------------------------------------------


def _ten() -> list[bytes]:
    return [photo(20 + i) for i in range(10)]


BAD: dict[str, tuple[Callable[[dict[str, Any]], tuple[Any, list[bytes]]], int, str | set[str]]] = {
    "malformed JSON part": (lambda r: (b'{"report_id": "x", ', [photo(11)]), 400, "bad_json"),
    "wrong types": (lambda r: ({**r, "lat": "三十二度"}, [photo(11)]), 422, "invalid_report"),
    "missing field": (
        lambda r: ({k: v for k, v in r.items() if k != "category_code"}, [photo(11)]),
        422,
        "invalid_report",
    ),
    "10 photos": (lambda r: (r, _ten()), 422, "photo_count"),
    "0 photos": (lambda r: (r, []), 422, "photo_count"),
    "fake JPEG (text)": (lambda r: (r, [photo(11), images.text_as_jpg()]), 415, "photo_not_image"),
    "JPEG header then garbage": (
        lambda r: (r, [images.jpeg_header_then_garbage()]),
        422,
        {"photo_corrupt", "photo_truncated"},
    ),
    "truncated JPEG": (lambda r: (r, [photo(11), images.truncated_jpeg()]), 422, "photo_truncated"),
    "pixel bomb PNG": (lambda r: (r, [images.png_pixel_bomb()]), 422, "photo_pixel_bomb"),
    "over-size photo": (
        lambda r: (r, [photo(11), b"\xff\xd8\xff\xe0" + b"\0" * (10 << 20)]),
        413,
        "photo_too_large",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_upload_is_refused_in_chinese_leaving_no_photo_and_no_event(
    env: ApiEnv, case: str
) -> None:
    make, status, code = BAD[case]
    report = new_report()
    part, photos = make(report)

    r = upload(env.url, part, photos)

    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] in (code if isinstance(code, set) else {code})
    assert chinese(body["message_zh"]) and body["message_en"]
    assert env.objects() == {}, "a refused upload must not leave photos behind"
    end = sentinel(env)
    records = events(env, end)
    assert [report_id_of(r) for r in records] == [end], "a refused upload must not be published"


# --- Kafka down ---------------------------------------------------------------------------------


def test_kafka_unreachable_answers_503_keeps_nothing_and_the_retry_succeeds(
    stack: Any, stack_settings: Settings
) -> None:
    s3 = stack.s3()
    dead = build_deps(stack_settings, s3, bootstrap=f"127.0.0.1:{free_port()}", timeout_s=2)
    report = new_report()
    jpegs = [photo(30), photo(31)]
    with LiveApi(create_app(stack_settings, dead)) as api:
        sign_in(api.url, dead)
        r = upload(api.url, report, jpegs)

    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) > 0
    assert r.json()["code"] == "log_unavailable" and chinese(r.json()["message_zh"])
    bucket = stack_settings.bucket_incoming
    assert list(s3.list_objects(bucket, recursive=True)) == []

    # The phone retries once the log is back: the same report is accepted, nothing was lost.
    live = build_deps(stack_settings, s3)
    with LiveApi(create_app(stack_settings, live)) as api:
        sign_in(api.url, live)
        again = upload(api.url, report, jpegs)
    assert again.status_code == 202, again.text
    records = read_topic(
        stack_settings.kafka_bootstrap,
        topics.REPORTS.name(stack_settings.topic_prefix),
        lambda rs: len(rs) >= 1,
        timeout_s=60,
    )
    assert [report_id_of(rec) for rec in records] == [report["report_id"]]
    assert len(list(s3.list_objects(bucket, recursive=True))) == 2


def test_openapi_docs_are_served(env: ApiEnv) -> None:
    spec = httpx.get(f"{env.url}/openapi.json").json()
    assert "/api/v1/reports" in spec["paths"]
    assert "/open311/v2/requests.json" in spec["paths"]
    assert httpx.get(f"{env.url}/docs").status_code == 200
