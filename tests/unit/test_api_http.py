"""The HTTP mapping of the ingest API in-process, with an in-memory publisher and store and an
in-memory SQLite: which status, which code, which Chinese message, and what is left behind.
The same paths against real Kafka, MinIO and PostgreSQL are in tests/integration/test_api_*.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.pool import StaticPool

from accounts.sample import SampleSessions
from accounts.store import AccountStore
from demo import images
from gridflow.core import geo
from gridflow.core.refdata import load_reference_data
from gridflow.events import Message
from gridflow.settings import Settings
from producers.app import Deps, create_app
from producers.publisher import PublishError

REF = load_reference_data()
WORKER = REF.workers["GW0001"]
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


class MemoryPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Message]] = []
        self.failure: PublishError | None = None

    def publish(self, topic: str, key: str, message: Message) -> None:
        if self.failure:
            raise self.failure
        self.sent.append((topic, key, message))

    def close(self) -> None:
        pass


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.objects[(bucket, key)] = data

    def remove(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)

    def url(self, bucket: str, key: str, expires_s: int = 3600,
            version_id: str | None = None) -> str:
        return f"memory://{bucket}/{key}" + (f"?versionId={version_id}" if version_id else "")


class Api:
    def __init__(self, server: bool = False) -> None:
        self.publisher, self.store = MemoryPublisher(), MemoryStore()
        self.now = NOW
        engine = create_engine(
            "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
        accounts = AccountStore(engine, REF, hasher=PasswordHasher.from_parameters(CHEAPEST))
        deps = Deps(REF, self.publisher, self.store, engine, clock=lambda: self.now,
                    accounts=accounts)
        self.client = TestClient(create_app(Settings(max_photo_bytes=200_000), deps,
                                            server=server))
        self.worker = SampleSessions(accounts, "unit").bearer(WORKER.id)  # GW0001 signed in

    def upload(
        self, report: dict[str, Any] | bytes, photos: list[bytes], token: str | None = "worker"
    ) -> Any:
        part = report if isinstance(report, bytes) else json.dumps(report).encode()
        files = [("report", (None, part, "application/json"))]
        files += [("photos", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)]
        headers = (self.worker if token == "worker"
                   else {"Authorization": f"Bearer {token}"} if token else {})
        return self.client.post("/api/v1/reports", files=files, headers=headers)


@pytest.fixture
def api() -> Iterator[Api]:
    a = Api()
    with a.client:
        yield a


def chinese(text: str | None) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text or "")


def report(report_id: str = "unit-report-0001", **kw: Any) -> dict[str, Any]:
    r = {
        "report_id": report_id,
        "category_code": "E0102",
        "description": "垃圾",
        "lat": 32.16,
        "lon": 109.96,
        "captured_at": (NOW - timedelta(minutes=1)).isoformat(),
    }
    r.update(kw)
    return r


JPEG = images.make_jpeg(64, 48, seed=1)
JPEG2 = images.make_jpeg(64, 48, seed=2)


def test_accepted_report_uses_the_injected_clock(api: Api) -> None:
    r = api.upload(report(), [JPEG, JPEG2])
    assert r.status_code == 202, r.text
    assert r.json()["case_id"].startswith("AJ20261123-")
    [(topic, key, msg)] = api.publisher.sent
    # keyed by the township the report is in (issue 16): the worker files it in one step
    grid = geo.locate(REF, 32.16, 109.96)
    assert grid is not None and topic == "gridflow.reports" and key == grid.township_code
    assert msg.data["report_id"] == "unit-report-0001"
    assert msg.at == "2026-11-23T09:30:00.000000Z" and len(msg.data["photos"]) == 2
    assert len(api.store.objects) == 2


def test_a_one_photo_report_does_its_blocking_work_in_one_thread_hop(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from producers import reports, submission, uploads

    hops: list[str] = []

    def counting(module: Any) -> Any:
        real = module.run_in_threadpool

        async def hop(fn: Any, *args: Any, **kw: Any) -> Any:
            hops.append(getattr(fn, "__qualname__", repr(fn)))
            return await real(fn, *args, **kw)

        return hop

    monkeypatch.setattr(reports, "run_in_threadpool", counting(reports))
    monkeypatch.setattr(submission, "run_in_threadpool", counting(submission))
    monkeypatch.setattr(uploads, "run_in_threadpool", counting(uploads))
    assert api.upload(report(), [JPEG]).status_code == 202
    assert hops == ["Submission.run"], "claim, check, put, publish and receipt: one hop"
    hops.clear()
    assert api.upload(report("unit-report-0002"), [JPEG, JPEG2, JPEG]).status_code == 202
    assert hops == ["Submission.run"] * 3, "one hop per photo, the publish with the last"


def test_photos_are_stored_in_order_under_their_position(api: Api) -> None:
    r = api.upload(report(), [JPEG, JPEG2, JPEG])
    assert r.status_code == 202, r.text
    [(_, _, msg)] = api.publisher.sent
    keys = [p["key"] for p in msg.data["photos"]]
    assert [k.split("/")[-1].split("-")[0] for k in keys] == ["1", "2", "3"]
    assert keys[0] != keys[2] and sorted(k for _, k in api.store.objects) == sorted(keys)


def test_a_bad_later_photo_removes_the_stored_ones_and_frees_the_report_id(api: Api) -> None:
    r = api.upload(report(), [JPEG, b"not a picture at all" * 10])
    assert r.status_code == 415 and r.json()["field"] == "photos[1]"
    assert api.store.objects == {} and api.publisher.sent == []
    assert api.upload(report(), [JPEG, JPEG2]).status_code == 202


def test_a_retry_of_an_accepted_report_stores_nothing_new(api: Api) -> None:
    first = api.upload(report(), [JPEG, JPEG2])
    stored = dict(api.store.objects)
    again = api.upload(report(), [JPEG, JPEG2])
    assert again.status_code == 200 and again.json() == first.json()
    assert api.store.objects == stored and len(api.publisher.sent) == 1
    other = api.upload(report(), [JPEG2, JPEG])
    assert other.status_code == 409 and other.json()["code"] == "report_id_conflict"


def test_the_report_part_must_come_first(api: Api) -> None:
    files = [
        ("photos", ("a.jpg", JPEG, "image/jpeg")),
        ("report", (None, json.dumps(report()).encode(), "application/json")),
    ]
    r = api.client.post(
        "/api/v1/reports", files=files, headers=api.worker
    )
    assert r.status_code == 400 and r.json()["code"] == "missing_part"
    assert chinese(r.json()["message_zh"]) and api.store.objects == {}


def test_unexpected_parts_are_refused_and_cleaned_up(api: Api) -> None:
    files = [
        ("report", (None, json.dumps(report()).encode(), "application/json")),
        ("photos", ("a.jpg", JPEG, "image/jpeg")),
        ("video", ("v.mp4", b"....", "video/mp4")),
    ]
    r = api.client.post(
        "/api/v1/reports", files=files, headers=api.worker
    )
    assert r.status_code == 400 and r.json()["code"] == "unexpected_part"
    assert api.store.objects == {} and api.publisher.sent == []


def test_a_form_instead_of_multipart_is_400(api: Api) -> None:
    r = api.client.post(
        "/api/v1/reports",
        data={"report": json.dumps(report())},
        headers=api.worker,
    )
    assert r.status_code == 400 and r.json()["code"] == "not_multipart"


def test_over_the_byte_limit_is_413_and_nothing_stays(api: Api) -> None:
    big = images.make_jpeg(seed=3, target_bytes=260_000)
    r = api.upload(report(), [JPEG, big])
    assert r.status_code == 413 and r.json()["field"] == "photos[1]"
    assert chinese(r.json()["message_zh"]) and api.store.objects == {}


def test_log_down_is_503_with_retry_after_and_removes_the_photos(api: Api) -> None:
    api.publisher.failure = PublishError("no brokers")
    r = api.upload(report(), [JPEG])
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert chinese(r.json()["message_zh"]) and api.store.objects == {}
    api.publisher.failure = None
    assert api.upload(report(), [JPEG]).status_code == 202


def test_an_ack_timeout_keeps_the_photos_and_the_retry_republishes_the_same_event(api: Api) -> None:
    api.publisher.failure = PublishError("ack timed out", maybe_written=True)
    first = api.upload(report(), [JPEG])
    assert first.status_code == 503
    kept = dict(api.store.objects)
    assert len(kept) == 1, "the event may be on the log: its photo must stay"

    api.publisher.failure = None
    api.now = NOW + timedelta(days=1)  # the retry comes the next day
    again = api.upload(report(), [JPEG])

    assert again.status_code == 202
    [(_, _, msg)] = api.publisher.sent
    assert msg.at == "2026-11-23T09:30:00.000000Z", "same event: same time, so same ticket"
    assert again.json()["case_id"].startswith("AJ20261123-")
    assert api.store.objects == kept


def test_the_retry_after_an_ack_timeout_must_carry_the_same_photos(api: Api) -> None:
    api.publisher.failure = PublishError("ack timed out", maybe_written=True)
    assert api.upload(report(), [JPEG]).status_code == 503
    api.publisher.failure = None
    for _ in range(2):  # refused every time, not only the first
        r = api.upload(report(), [JPEG2])
        assert r.status_code == 409 and r.json()["code"] == "report_id_conflict"
    assert api.publisher.sent == []
    assert api.upload(report(), [JPEG]).status_code == 202


def test_status_of_an_accepted_report_before_filing(api: Api) -> None:
    assert api.upload(report(), [JPEG]).status_code == 202
    r = api.client.get(
        "/api/v1/reports/unit-report-0001", headers=api.worker
    )
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    assert r.json()["status_zh"] == "已受理, 处理中"
    unknown = api.client.get(
        "/api/v1/reports/nope-nope-nope", headers=api.worker
    )
    assert unknown.status_code == 404 and chinese(unknown.json()["message_zh"])
    assert api.client.get("/api/v1/reports/unit-report-0001").status_code == 401


def test_validation_errors_of_json_bodies_are_bilingual(api: Api) -> None:
    r = api.client.post(
        "/api/v1/cases/AJ20261123-ABCDEFGH/rating",
        json={"score": "5", "extra": 1},
        headers=api.worker,
    )
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "invalid_request" and chinese(body["message_zh"])
    assert {e["field"] for e in body["errors"]} == {"score", "extra"}


def test_open311_validation_errors_are_spec_arrays(api: Api) -> None:
    r = api.client.get("/open311/v2/requests.json", params={"service_code": "x"},
                       headers=api.worker)
    assert r.status_code == 404
    [err] = r.json()
    assert err["code"] == 404 and chinese(err["description"])


def test_database_trouble_is_503(api: Api) -> None:
    from sqlalchemy import text

    with api.client.app.state.ctx.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("DROP TABLE ingest_receipts"))
    r = api.upload(report("unit-report-0002"), [JPEG])
    assert r.status_code == 503 and r.json()["code"] == "database_unavailable"
    assert api.store.objects == {} and api.publisher.sent == []


# --- Open311: every error in the spec's shape, form bodies as UTF-8 ---------------------------


def assert_open311_error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    [err] = r.json()
    assert set(err) == {"code", "description"} and err["code"] == status
    assert isinstance(err["description"], str) and chinese(err["description"])
    return dict(err)


@pytest.mark.parametrize(
    "path",
    [
        "/open311/v2/services/illegal-parking.json",  # a service definition: none has metadata
        "/open311/v2/nothing-here.json",
        "/open311/v2/",
        "/open311/v2/requests/A/B.json",
    ],
)
def test_unknown_open311_paths_are_spec_errors(api: Api, path: str) -> None:
    assert_open311_error(api.client.get(path), 404)


def test_a_method_an_open311_path_does_not_take_is_a_405_spec_error(api: Api) -> None:
    r = api.client.delete("/open311/v2/requests.json")
    assert_open311_error(r, 405)
    assert r.headers["Allow"]
    assert_open311_error(api.client.post("/open311/v2/services.json"), 405)


def test_open311_xml_paths_answer_their_errors_in_xml(api: Api) -> None:
    import xml.etree.ElementTree as ET

    r = api.client.get("/open311/v2/services.xml")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(r.content)
    [error] = root.findall("error")
    assert root.tag == "errors" and error.findtext("code") == "404"
    assert chinese(error.findtext("description"))


def test_errors_outside_open311_keep_the_api_shape(api: Api) -> None:
    r = api.client.get("/api/v1/no-such-route")
    assert r.status_code == 404 and isinstance(r.json(), dict)


def test_an_open311_crash_is_a_500_spec_error(api: Api) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    client = TestClient(api.client.app, raise_server_exceptions=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("producers.open311.open311_request", broken)
        assert_open311_error(client.get("/open311/v2/requests/AJ20261123-AAAAAAAA.json"), 500)


def post_form(api: Api, body: bytes, content_type: str) -> Any:
    return api.client.post(
        "/open311/v2/requests.json", content=body, headers={"Content-Type": content_type}
    )


FORM = "service_code=litter&lat=32.16&long=109.96&device_id=dev-utf8&description="


def published_description(api: Api) -> str:
    [(_, _, message)] = api.publisher.sent
    return str(message.data["description"])


def test_a_raw_utf8_form_body_without_charset_is_read_as_utf8(api: Api) -> None:
    """What `curl -d description=测试垃圾` sends: raw UTF-8 bytes, no charset."""
    r = post_form(api, (FORM + "测试垃圾").encode(), "application/x-www-form-urlencoded")
    assert r.status_code == 201, r.text
    assert published_description(api) == "测试垃圾"


def test_a_percent_encoded_form_body_reads_the_same(api: Api) -> None:
    from urllib.parse import quote_plus

    body = FORM + quote_plus("测试 垃圾")
    r = post_form(api, body.encode(), "application/x-www-form-urlencoded")
    assert r.status_code == 201, r.text
    assert published_description(api) == "测试 垃圾"


def test_a_form_body_in_the_charset_its_content_type_names(api: Api) -> None:
    r = post_form(
        api, (FORM + "测试垃圾").encode("gb18030"), "application/x-www-form-urlencoded; charset=GBK"
    )
    assert r.status_code == 201, r.text
    assert published_description(api) == "测试垃圾"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ((FORM + "测试垃圾").encode("gb18030"), "application/x-www-form-urlencoded"),
        ((FORM + "%FF%FE").encode(), "application/x-www-form-urlencoded"),
        ((FORM + "x").encode(), "application/x-www-form-urlencoded; charset=no-such-charset"),
    ],
    ids=["gbk-bytes-without-charset", "percent-encoded-non-utf8", "unknown-charset"],
)
def test_undecodable_form_bodies_are_400_spec_errors(
    api: Api, body: bytes, content_type: str
) -> None:
    err = assert_open311_error(post_form(api, body, content_type), 400)
    assert "UTF-8" in err["description"]
    assert api.publisher.sent == []


# --- browser sessions on the API: cookie + CSRF, security headers, local docs ------------------


def test_a_cookie_session_needs_its_csrf_token_for_a_command(api: Api) -> None:
    from accounts.access import CSRF_HEADER, SESSION_COOKIE
    from accounts.credentials import csrf_token

    token = api.worker["Authorization"].removeprefix("Bearer ")
    api.client.cookies.set(SESSION_COOKIE, token)
    try:
        url = "/api/v1/tasks/AJ20261123-ABCDEFGH-T01/verify"
        forged = api.client.post(url, json={})
        assert forged.status_code == 403 and forged.json()["code"] == "csrf"
        assert chinese(forged.json()["message_zh"])
        ok = api.client.post(url, json={}, headers={CSRF_HEADER: csrf_token(token)})
        assert ok.status_code == 404  # past the CSRF check: no such task
        assert api.client.get("/api/v1/auth/me").json()["account_id"] == "GW0001"
    finally:
        api.client.cookies.clear()
    assert api.publisher.sent == []


def test_the_api_sends_security_headers_and_documents_itself_without_scripts(api: Api) -> None:
    r = api.client.get("/docs")
    assert r.status_code == 200 and "/api/v1/reports" in r.text and "谁可调用" in r.text
    assert "<script" not in r.text and "cdn" not in r.text.lower()
    for resp in (r, api.client.get("/api/v1/health")):
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "unsafe-inline" not in resp.headers["content-security-policy"]
    assert api.client.get("/redoc").status_code == 404
