"""Pure parts of the ingest API: report fields → event data, intake refusals → HTTP errors,
Open311 forms → reports and read models → GeoReport v2, task ids, command outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from accounts.roles import GRID_WORKER, Grant, Principal
from gridflow.core import intake, photos
from gridflow.core.refdata import load_reference_data
from gridflow.events import PhotoRef
from producers import commands, open311, reports, status, submission
from producers.errors import ApiError
from producers.status import Open311Error
from producers.uploads import rejected

REF = load_reference_data()
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
WORKER = Principal("GW0001", "赵建军", (Grant(GRID_WORKER, "421099101201001"),))
SHA = "ab" * 32


def chinese(text: str | None) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text or "")


def client_report(**overrides: Any) -> dict[str, Any]:
    report = {
        "report_id": "r-20261123-0001",
        "category_code": "E0102",
        "description": " 垃圾满溢 ",
        "lat": 32.16,
        "lon": 109.96,
        "captured_at": "2026-11-23T17:20:00+08:00",
    }
    report.update(overrides)
    return report


def photo_refs(n: int) -> list[dict[str, Any]]:
    return [
        {
            "bucket": "in",
            "key": f"reports/r/{i}-x.jpg",
            "size": 10,
            "sha256": SHA,
            "content_type": "image/jpeg",
            "role": "before",
        }
        for i in range(1, n + 1)
    ]


# --- grid worker reports -----------------------------------------------------------------


def test_the_api_sets_who_reports_and_what_photos_there_are() -> None:
    data = reports.worker_report_data(
        client_report(reporter="worker:GW9999", photos=[{"forged": True}], source="x"), WORKER
    )
    assert data["reporter"] == "worker:GW0001@421099101201001"
    assert data["worker_grid_code"] == "421099101201001"
    assert (data["source"], data["channel"], data["photos"]) == ("grid_worker", "app", [])


def test_event_data_is_normalised_and_keeps_the_full_reporter() -> None:
    data = reports.worker_report_data(client_report(address="石门村村口"), WORKER)
    out = submission.finalize(data, photo_refs(2), NOW)
    assert out["reporter"] == "worker:GW0001@421099101201001"
    assert out["description"] == "垃圾满溢" and out["captured_at"] == "2026-11-23T09:20:00.000000Z"
    assert [p["role"] for p in out["photos"]] == ["before", "before"]
    assert out["source"] == "grid_worker" and out["address"] == "石门村村口"
    assert intake.validate_report(out, NOW).report_id == "r-20261123-0001"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"lat": "32.16"}, "lat"),
        ({"lon": 200}, "lon"),
        ({"report_id": "short"}, "report_id"),
        ({"category_code": None}, "category_code"),
        ({"captured_at": "2026-11-23 09:00"}, "captured_at"),
        ({"captured_at": (NOW + timedelta(hours=2)).isoformat()}, "captured_at"),
    ],
)
def test_intake_refusals_become_422_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    data = reports.worker_report_data(client_report(**overrides), WORKER)
    with pytest.raises(ApiError) as err:
        reports.precheck(data, NOW)
    assert err.value.status == 422 and err.value.field == field
    assert chinese(err.value.message_zh) and err.value.message_en


@pytest.mark.parametrize(("count", "ok"), [(0, False), (1, True), (9, True), (10, False)])
def test_a_grid_worker_report_carries_one_to_nine_photos(count: int, ok: bool) -> None:
    data = reports.worker_report_data(client_report(), WORKER)
    if ok:
        assert len(submission.finalize(data, photo_refs(count), NOW)["photos"]) == count
    else:
        with pytest.raises(ApiError) as err:
            submission.finalize(data, photo_refs(count), NOW)
        assert (err.value.status, err.value.field) == (422, "photos")


def test_malformed_report_parts_are_400() -> None:
    for raw in (b"{not json", b"[1, 2]", "报告".encode("gbk")):
        with pytest.raises(ApiError) as err:
            reports.parse_report_part(raw)
        assert err.value.status == 400 and err.value.field == "report"
        assert chinese(err.value.message_zh)


def test_request_hash_ignores_key_order_but_not_the_reporter() -> None:
    a = submission.request_hash("worker:A", {"x": 1, "y": "二"})
    assert a == submission.request_hash("worker:A", {"y": "二", "x": 1})
    assert a != submission.request_hash("worker:B", {"x": 1, "y": "二"})


def test_the_event_id_depends_on_the_report_id_only() -> None:
    data = submission.finalize(reports.worker_report_data(client_report(), WORKER), photo_refs(1), NOW)
    first = submission.report_submitted(data, NOW)
    later = submission.report_submitted(data, NOW + timedelta(minutes=5))
    assert first.id == later.id and first.type == "ReportSubmitted" and first.case_id == ""
    assert first.actor == data["reporter"]


@pytest.mark.parametrize(
    ("code", "http"),
    [
        ("not_image", 415),
        ("heic_unsupported", 415),
        ("too_large", 413),
        ("truncated", 422),
        ("corrupt", 422),
        ("pixel_bomb", 422),
        ("empty", 422),
    ],
)
def test_photo_refusals_map_to_http_statuses(code: str, http: int) -> None:
    err = rejected(photos.PhotoRejected(code, "照片有问题", "bad photo"), "photos[2]")
    assert (err.status, err.code, err.field) == (http, f"photo_{code}", "photos[2]")
    assert err.message_zh == "照片有问题"


# --- commands ---------------------------------------------------------------------------


def test_task_ids_name_their_case() -> None:
    assert commands.case_of_task("AJ20261123-ABCDEFGH-T01") == "AJ20261123-ABCDEFGH"
    assert commands.case_of_task("AJ20261123-ABCDEFGH-T12") == "AJ20261123-ABCDEFGH"
    for bad in ("AJ20261123-ABCDEFGH", "-T01", "AJ2026/../x-T01", "AJ-T1"):
        with pytest.raises(ApiError) as err:
            commands.case_of_task(bad)
        assert err.value.status == 422 and chinese(err.value.message_zh)


def test_send_back_defaults_to_each_townships_centre() -> None:
    for township in REF.townships:
        centre = commands.township_centre(REF, township)
        assert centre == f"{township}.zongzhi" and REF.departments[centre].short_name == "综治中心"
    assert commands.township_centre(REF, "999999999") is None


def test_an_idempotency_key_makes_the_command_id_deterministic() -> None:
    a = commands.command_id_for("dept:x", "SignTask", "T", "key-1")
    assert a == commands.command_id_for("dept:x", "SignTask", "T", "key-1")
    assert a != commands.command_id_for("dept:y", "SignTask", "T", "key-1")
    assert commands.command_id_for("dept:x", "SignTask", "T", None) != commands.command_id_for(
        "dept:x", "SignTask", "T", None
    )


def test_unknown_departments_are_refused() -> None:
    assert commands.check_department(REF, "county.chengguan", "reroute_to") == "county.chengguan"
    with pytest.raises(ApiError) as err:
        commands.check_department(REF, "county.nope", "reroute_to")
    assert (err.value.status, err.value.field) == (422, "reroute_to")


def test_command_outcomes() -> None:
    assert status.command_view(None, "c1")["status"] == "pending"
    refused = status.command_view(
        {"accepted": False, "code": "bad_state", "reason_zh": "不能", "reason_en": "no", "at": NOW},
        "c1",
    )
    assert (refused["status"], refused["code"], refused["at"]) == (
        "refused",
        "bad_state",
        "2026-11-23T09:30:00.000000Z",
    )
    assert status.command_view({"accepted": True}, "c1")["status"] == "accepted"


# --- report status ------------------------------------------------------------------------


def found(**overrides: Any) -> dict[str, Any]:
    task = {
        "task_id": "AJ1-T01",
        "department": "county.chengguan",
        "state": "dispatched",
        "sign_due": NOW + timedelta(hours=2),
        "resolve_due": NOW + timedelta(days=3),
        "verify_due": None,
    }
    row = {
        "report_id": "r1",
        "case_id": "AJ1",
        "merged": False,
        "status": "open",
        "tasks": [task],
        "photos": [],
        "not_filed": None,
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "filed"),
        ({"merged": True}, "merged"),
        ({"status": "closed"}, "closed"),
        ({"status": "not_filed", "tasks": []}, "not_filed"),
        ({"status": "new", "tasks": []}, "accepted"),
    ],
)
def test_report_status_in_words(overrides: dict[str, Any], expected: str) -> None:
    view = status.report_view(REF, found(**overrides), lambda *_: None)
    assert view["status"] == expected and chinese(view["status_zh"])


def test_report_status_names_departments_and_the_next_deadline() -> None:
    view = status.report_view(REF, found(grid_code="421099101201001"), lambda *_: None)
    assert view["departments"] == [{"code": "county.chengguan", "name": "青山县城市管理执法局"}]
    assert (view["grid_name"], view["grid_code"]) == ("石门村一组网格", "421099101201001")
    assert view["next_due_at"] == "2026-11-23T11:30:00.000000Z"
    assert view["tasks"][0]["due_at"] == view["next_due_at"]


def test_photo_links_prefer_the_archived_copy() -> None:
    link = lambda b, k, v: f"{b}/{k}" + (f"@{v}" if v else "")  # noqa: E731
    pending = status.photo_view({"incoming_bucket": "in", "incoming_key": "k1"}, link)
    archived = status.photo_view(
        {
            "incoming_bucket": "in",
            "incoming_key": "k1",
            "archive_status": "archived",
            "archive_bucket": "ar",
            "archive_key": "sha/x.jpg",
            "thumbnail_key": "t/x.jpg",
        },
        link,
    )
    assert (pending["url"], pending["thumbnail_url"], pending["archive_status"]) == (
        "in/k1",
        None,
        "pending",
    )
    assert (archived["url"], archived["thumbnail_url"]) == ("ar/sha/x.jpg", "ar/t/x.jpg")


def test_photo_links_name_the_recorded_versions() -> None:
    """A plain DELETE or an overwrite at the archive key does not change what a link shows:
    it names the version PhotoArchived recorded (events without one: the latest)."""
    link = lambda b, k, v: f"{b}/{k}" + (f"@{v}" if v else "")  # noqa: E731
    view = status.photo_view(
        {"incoming_bucket": "in", "incoming_key": "k1", "archive_status": "archived",
         "archive_bucket": "ar", "archive_key": "sha/x.jpg", "thumbnail_key": "t/x.jpg",
         "archive_version_id": "v1", "thumbnail_version_id": "t1"},
        link,
    )
    assert (view["url"], view["thumbnail_url"]) == ("ar/sha/x.jpg@v1", "ar/t/x.jpg@t1")
    # not archived yet: the upload, never with the archive's version
    pending = status.photo_view({"incoming_bucket": "in", "incoming_key": "k1",
                                 "archive_version_id": "v1"}, link)
    assert pending["url"] == "in/k1"


# --- Open311 ------------------------------------------------------------------------------


def form(**overrides: str) -> dict[str, str]:
    f = {
        "service_code": "litter",
        "lat": "32.16",
        "long": "109.96",
        "description": "垃圾桶满了",
        "device_id": "dev-1",
    }
    f.update(overrides)
    return f


def test_services_follow_the_reference_data() -> None:
    listed = open311.service_list(REF)
    assert [s["service_code"] for s in listed] == list(REF.services)
    litter = next(s for s in listed if s["service_code"] == "litter")
    assert litter == {
        "service_code": "litter",
        "service_name": "暴露垃圾",
        "description": "垃圾乱堆乱放、垃圾桶满溢",
        "metadata": False,
        "type": "realtime",
        "keywords": "垃圾,满溢",
        "group": "市容环境",
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"account_id": "acct-9", "device_id": "dev-1"}, "acct-9"),
        ({"device_id": "dev-1"}, "dev-1"),
        ({"device_id": "AA:BB:CC"}, None),  # not a plain token: hashed
        ({"device_id": "", "phone": "139 0000 1234"}, None),
        ({"device_id": ""}, "anonymous"),
    ],
)
def test_who_a_resident_is(fields: dict[str, str], expected: str | None) -> None:
    rid = open311.resident_id(form(**fields))
    if expected:
        assert rid == expected
    else:
        assert rid.startswith(("h", "c")) and len(rid) == 25
    assert (
        f"resident:{rid}"
        == intake.validate_report(
            {**open311.resident_request(form(**fields), REF, NOW).data}, NOW
        ).reporter
    )


def test_a_complaint_becomes_a_resident_report() -> None:
    req = open311.resident_request(
        form(media_url="https://x/1.jpg", address_string="西街"), REF, NOW
    )
    d = req.data
    assert d["category_code"] == "E0102" and d["reporter"] == "resident:dev-1"
    assert (d["source"], d["channel"], d["photos"]) == ("resident", "open311", [])
    assert (d["lat"], d["lon"], d["address"]) == (32.16, 109.96, "西街")
    assert d["media_url"] == "https://x/1.jpg" and d["report_id"].startswith("o311-")
    report = intake.validate_report(d, NOW)
    assert report.reporter_kind == "resident" and report.photos == ()


def test_a_retried_complaint_is_the_same_report_on_the_same_day_only() -> None:
    same = open311.resident_request(form(), REF, NOW)
    assert (
        same.report_id == open311.resident_request(form(), REF, NOW + timedelta(hours=1)).report_id
    )
    assert same.report_id != open311.resident_request(form(description="别的"), REF, NOW).report_id
    assert (
        same.report_id != open311.resident_request(form(), REF, NOW + timedelta(days=1)).report_id
    )
    keyed = open311.resident_request(form(), REF, NOW, idempotency_key="k1")
    assert (
        keyed.report_id == open311.resident_request(form(description="x"), REF, NOW, "k1").report_id
    )
    assert (
        keyed.request_hash
        != open311.resident_request(form(description="x"), REF, NOW, "k1").request_hash
    )


@pytest.mark.parametrize(
    ("fields", "http"),
    [
        ({"service_code": "nope"}, 404),
        ({"service_code": ""}, 400),
        ({"lat": ""}, 400),
        ({"long": "abc"}, 400),
        ({"lat": "91"}, 400),
        ({"long": "nan"}, 400),
        ({"description": "长" * 2001}, 400),
    ],
)
def test_bad_complaints_are_spec_errors(fields: dict[str, str], http: int) -> None:
    with pytest.raises(Open311Error) as err:
        open311.resident_request(form(**fields), REF, NOW)
    assert err.value.status == http and chinese(err.value.description())


def test_open311_filters() -> None:
    f = status.Open311Filters.parse(REF, NOW, None, "litter,dust", None, None, "open")
    assert f.category_codes == ("E0102", "E0302") and f.statuses == ("new", "open")
    assert f.start == NOW - timedelta(days=90) and f.end is None
    ids = status.Open311Filters.parse(REF, NOW, "A,B", None, None, None, "closed")
    assert ids.ids == ("A", "B") and ids.start is None and ids.statuses == ("closed", "not_filed")
    for args, http in [
        ((None, None, None, None, "pending"), 400),
        ((None, "nope", None, None, None), 404),
        ((None, None, "2026-13-01", None, None), 400),
    ]:
        with pytest.raises(Open311Error) as err:
            status.Open311Filters.parse(REF, NOW, *args)
        assert err.value.status == http


def test_a_case_as_a_georeport_request() -> None:
    case = {
        "case_id": "AJ1",
        "status": "open",
        "category_code": "E0402",
        "filed_at": NOW,
        "updated_at": NOW + timedelta(hours=1),
        "lat": 32.1,
        "lon": 109.9,
        "description": "车辆堵塞消防通道",
        "address": "西街",
    }
    tasks = [
        {
            "department": "421099101.zhifa",
            "state": "signed",
            "resolve_due": NOW + timedelta(days=2),
        },
        {"department": "county.chengguan", "state": "sent_back", "resolve_due": NOW},
    ]
    view = status.open311_view(REF, "AJ1", case, tasks, None)
    assert view["status"] == "open" and view["service_code"] == "illegal-parking"
    assert view["agency_responsible"] == "青石镇综合执法办"
    assert view["expected_datetime"] == "2026-11-25T09:30:00.000000Z"
    assert "已签收" in view["status_notes"] and (view["lat"], view["long"]) == (32.1, 109.9)
    not_filed = status.open311_view(
        REF, "AJ2", {"status": "not_filed", "not_filed_reason_zh": "不在本县"}, [], None
    )
    assert not_filed["status"] == "closed" and "不在本县" in not_filed["status_notes"]


def test_photo_refs_round_trip_through_the_event_schema() -> None:
    ref = PhotoRef.from_dict(photo_refs(1)[0])
    assert ref.role == "before" and ref.sha256 == SHA


def test_the_phones_own_facts_travel_with_the_report_cleaned() -> None:
    sent = client_report(location_accuracy_m=12.34, location_source="gps", photo_exif=[
        {"taken_at": "2026-11-23T09:18:00+08:00", "lat": 32.16, "lon": 109.96},
        {"taken_at": 7, "lat": "north", "lon": 999}, "junk"])
    out = submission.finalize(reports.worker_report_data(sent, WORKER), photo_refs(1), NOW)
    assert out["device"] == {"location_accuracy_m": 12.3, "location_source": "gps", "photo_exif": [
        {"taken_at": "2026-11-23T09:18:00+08:00", "lat": 32.16, "lon": 109.96},
        {"taken_at": None, "lat": None, "lon": None},
        {"taken_at": None, "lat": None, "lon": None}]}
    plain = submission.finalize(reports.worker_report_data(client_report(location_source="x"),
                                                        WORKER), photo_refs(1), NOW)
    assert "device" not in plain
