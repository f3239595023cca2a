"""Intake: a malformed report is refused with the field and reason; a valid one is always
decided (filed where it lies, or not filed with a reason), never dropped."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gridflow.core import geo, intake
from gridflow.core.intake import ReportInvalid, case_id_for, file_report, validate_report
from gridflow.core.refdata import ReferenceData, load_reference_data

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in 青山县
GRID_A = "421099101202001"  # 桃园村一组 (worker GW0004's grid)
GRID_B = "421099201202003"  # 白鹤村集镇
SHA = "ab" * 32


@pytest.fixture(scope="module")
def ref() -> ReferenceData:
    return load_reference_data()


def worker_of(ref: ReferenceData, grid: str) -> str:
    return next(w.id for w in ref.workers.values() if w.grid_code == grid and w.active)


def photo(i: int = 0, **over: Any) -> dict[str, Any]:
    return {"bucket": "gridflow-incoming", "key": f"r/{i}.jpg", "size": 1000 + i,
            "sha256": SHA, "content_type": "image/jpeg", **over}


def payload(ref: ReferenceData, grid: str = GRID_A, reporter: str | None = None,
            **over: Any) -> dict[str, Any]:
    lat, lon = geo.representative_point(ref.grids[grid])
    data = {
        "report_id": "r-20261123-0001", "reporter": reporter or f"worker:{worker_of(ref, GRID_A)}",
        "category_code": "E0102", "description": "路边垃圾堆积, 已三天无人清运",
        "lat": lat, "lon": lon, "captured_at": "2026-11-23T09:55:00+08:00", "photos": [photo()],
    }
    data.update(over)
    return data


# --- validation ---------------------------------------------------------------------------


def test_valid_worker_report(ref: ReferenceData) -> None:
    r = validate_report(payload(ref), NOW)
    assert r.report_id == "r-20261123-0001"
    assert r.reporter_kind == "worker" and r.reporter == f"worker:{r.reporter_id}"
    assert r.captured_at == datetime(2026, 11, 23, 1, 55, tzinfo=UTC)
    assert r.photos[0].role == "before" and r.photos[0].size == 1000
    assert r.severity is None


def test_report_round_trips_through_its_json_form(ref: ReferenceData) -> None:
    r = validate_report(payload(ref, severity=2, address="桃园村一组村口"), NOW)
    again = validate_report(json.loads(json.dumps(r.to_dict())), NOW)
    assert again == r


def test_resident_may_send_no_photos(ref: ReferenceData) -> None:
    r = validate_report(payload(ref, reporter="resident:13900001111", photos=[]), NOW)
    assert r.reporter_kind == "resident" and r.photos == ()


@pytest.mark.parametrize("field, value, zh_fragment", [
    ("report_id", "short", "8至64位"),
    ("report_id", "x" * 65, "8至64位"),
    ("report_id", "has space 123", "8至64位"),
    ("report_id", 12345678, "必须是文本"),
    ("reporter", "GW0001", "worker:<编号>"),
    ("reporter", "admin:root", "worker:<编号>"),
    ("category_code", None, "缺少必填项"),
    ("description", "很" * 2001, "不能超过2000字"),
    ("description", ["a"], "必须是文本"),
    ("lat", "32.2", "必须是数字"),
    ("lat", True, "必须是数字"),
    ("lat", 91.0, "超出范围"),
    ("lon", float("nan"), "超出范围"),
    ("lon", -181, "超出范围"),
    ("captured_at", "2026-11-23T09:55:00", "带时区"),
    ("captured_at", "yesterday", "带时区"),
    ("captured_at", "2026-11-23T10:11:00+08:00", "超过10分钟"),
    ("photos", [], "1至9张"),
    ("photos", [photo(i) for i in range(10)], "1至9张"),
    ("photos", "a.jpg", "必须是列表"),
    ("severity", "high", "整数"),
    ("address", 5, "地址"),
])
def test_invalid_field_is_named_with_reasons(ref: ReferenceData, field: str, value: Any,
                                             zh_fragment: str) -> None:
    with pytest.raises(ReportInvalid) as err:
        validate_report(payload(ref, **{field: value}), NOW)
    assert err.value.field == field
    assert zh_fragment in err.value.reason_zh
    assert err.value.reason_en


def test_missing_field(ref: ReferenceData) -> None:
    data = payload(ref)
    del data["lon"]
    with pytest.raises(ReportInvalid) as err:
        validate_report(data, NOW)
    assert (err.value.field, err.value.reason_en) == ("lon", "required field is missing")


@pytest.mark.parametrize("bad_photo, zh_fragment", [
    ({"bucket": "b"}, "不完整"),
    (photo(sha256="AB" * 32), "sha256"),
    (photo(content_type="application/pdf"), "JPEG/PNG"),
    (photo(size=0), "大于0"),
    ("r/0.jpg", "必须是对象"),
])
def test_bad_photo_reference(ref: ReferenceData, bad_photo: Any, zh_fragment: str) -> None:
    with pytest.raises(ReportInvalid) as err:
        validate_report(payload(ref, photos=[photo(), bad_photo]), NOW)
    assert err.value.field == "photos[1]"
    assert zh_fragment in err.value.reason_zh


def test_slightly_fast_phone_clock_is_tolerated(ref: ReferenceData) -> None:
    r = validate_report(payload(ref, captured_at="2026-11-23T10:05:00+08:00"), NOW)
    assert r.captured_at > NOW
    with pytest.raises(ReportInvalid):
        validate_report(payload(ref, captured_at="2026-11-23T10:05:00+08:00"), NOW,
                        max_future=timedelta(minutes=1))


def test_not_an_object() -> None:
    with pytest.raises(ReportInvalid):
        validate_report(["not", "a", "dict"], NOW)  # type: ignore[arg-type]


# --- filing -------------------------------------------------------------------------------


def test_worker_in_own_grid_is_filed_and_routed(ref: ReferenceData) -> None:
    f = file_report(ref, validate_report(payload(ref), NOW), NOW)
    assert f.filed
    assert f.grid_code == GRID_A
    assert f.village_code == "421099101202" and f.township_code == "421099101"
    assert not f.cross_grid and f.worker_grid_code == GRID_A
    assert f.departments == ("421099101.zhifa",)  # 暴露垃圾 in 青石镇: township enforcement
    assert f.category_name == "暴露垃圾" and f.severity == 1
    assert f.route is not None and f.route.source == "rule"


def test_worker_reporting_in_another_grid_is_cross_grid(ref: ReferenceData) -> None:
    f = file_report(ref, validate_report(payload(ref, grid=GRID_B), NOW), NOW)
    assert f.filed and f.grid_code == GRID_B and f.cross_grid
    assert f.worker_grid_code == GRID_A
    assert f.township_code == "421099201"


def test_resident_is_never_cross_grid(ref: ReferenceData) -> None:
    r = validate_report(payload(ref, grid=GRID_B, reporter="resident:u-778"), NOW)
    f = file_report(ref, r, NOW)
    assert f.filed and not f.cross_grid and f.worker_grid_code == ""


def test_multi_department_category(ref: ReferenceData) -> None:
    f = file_report(ref, validate_report(payload(ref, category_code="E0505"), NOW), NOW)
    assert f.filed and f.severity == 3 and len(f.departments) == 3


@pytest.mark.parametrize("over, code, zh", [
    ({"lat": 39.9042, "lon": 116.4074}, "outside_county", "不在本县任何网格内"),
    ({"category_code": "E9999"}, "unknown_category", "未知的问题类别"),
    ({"category_code": "E0204"}, "category_disabled", "已停用"),
    ({"reporter": "worker:GW9999"}, "unknown_worker", "不存在"),
    ({"reporter": "worker:GW0024"}, "worker_suspended", "已停用"),
    ({"category_code": "E0201", "severity": 3}, "severity_not_allowed", "紧急程度"),
])
def test_not_filed_with_a_reason(ref: ReferenceData, over: dict[str, Any], code: str,
                                 zh: str) -> None:
    assert not ref.workers["GW0024"].active
    f = file_report(ref, validate_report(payload(ref, **over), NOW), NOW)
    assert not f.filed
    assert f.reason_code == code
    assert zh in f.reason_zh and f.reason_en
    assert f.case_id == case_id_for("r-20261123-0001", NOW)
    data = f.to_dict()
    assert data["code"] == code and data["filed"] is False


def test_filing_to_dict_carries_what_the_case_needs(ref: ReferenceData) -> None:
    f = file_report(ref, validate_report(payload(ref, grid=GRID_B), NOW), NOW)
    data = json.loads(json.dumps(f.to_dict(), ensure_ascii=False))
    for key in ("category_code", "category_name", "severity", "grid_code", "village_code",
                "township_code", "cross_grid", "departments", "routing_reason", "case_id"):
        assert key in data
    assert data["departments"] == list(f.departments)
    assert data["cross_grid"] is True


# --- case ids -----------------------------------------------------------------------------


def test_case_id_is_readable_and_deterministic() -> None:
    a = case_id_for("r-20261123-0001", NOW)
    assert re.fullmatch(r"AJ20261123-[A-Z2-7]{8}", a)
    assert case_id_for("r-20261123-0001", NOW + timedelta(hours=3)) == a
    assert case_id_for("r-20261123-0002", NOW) != a


def test_case_id_date_is_the_local_day() -> None:
    late_evening_utc = datetime(2026, 11, 23, 17, 30, tzinfo=UTC)  # 01:30 on the 24th in China
    assert case_id_for("r-20261123-0001", late_evening_utc).startswith("AJ20261124-")
    cst = timezone(timedelta(hours=8))
    same = datetime(2026, 11, 24, 1, 30, tzinfo=cst)
    assert case_id_for("x" * 10, same) == case_id_for("x" * 10, late_evening_utc)


def test_case_id_needs_an_aware_time() -> None:
    with pytest.raises(ValueError):
        case_id_for("r-20261123-0001", datetime(2026, 11, 23, 10, 0))


def test_not_filed_reasons_have_both_languages() -> None:
    for zh, en in intake.NOT_FILED_REASONS.values():
        assert zh and en
