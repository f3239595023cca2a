"""码上说: what a resident typed, checked and turned into a report (mobile.resident)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gridflow.core import intake
from gridflow.core.refdata import load_reference_data
from mobile.places import door_plate
from mobile.resident import FormRefused, check_fields, extra_data, report_data

REF = load_reference_data()
NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)
TYPED = {"report_id": "qr-0123456789abcdef", "service_code": "litter",
         "description": "  门口  垃圾桶满溢 ", "phone": "138 0000-1234", "name": "王先生"}


def test_the_fields_are_cleaned() -> None:
    fields = check_fields(REF, TYPED)
    assert fields == {"report_id": "qr-0123456789abcdef", "service_code": "litter",
                      "description": "门口 垃圾桶满溢", "phone": "13800001234", "name": "王先生"}
    assert check_fields(REF, {**TYPED, "phone": "0719-8123456"})["phone"] == "07198123456"
    assert check_fields(REF, {**TYPED, "report_id": ""})["report_id"].startswith("qr-")


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"service_code": "nope"}, "service_code", "请选择问题类型"),
    ({"description": "   "}, "description", "请简单描述问题"),
    ({"description": "长" * 501}, "description", "不能超过500字"),
    ({"phone": ""}, "phone", "请留下联系电话"),
    ({"phone": "12345"}, "phone", "联系电话格式不正确"),
    ({"report_id": "bad id!"}, "report_id", "页面已失效"),
])
def test_what_cannot_be_used_is_named_in_chinese(change: dict[str, str], field: str,
                                                  says: str) -> None:
    with pytest.raises(FormRefused) as refused:
        check_fields(REF, {**TYPED, **change})
    assert refused.value.field == field and says in refused.value.message_zh


def test_the_report_comes_from_the_place_and_keeps_the_phone_out_of_the_reporter_id() -> None:
    plate = door_plate(REF, "石门村一组12号", 32.16, 109.96)
    assert plate is not None
    fields = check_fields(REF, TYPED)
    data = report_data(REF, plate, fields, NOW)
    assert (data["lat"], data["lon"], data["category_code"]) == (32.16, 109.96, "E0102")
    assert data["reporter"].startswith("resident:c") and "13800001234" not in data["reporter"]
    assert data["address"] == "青石镇 石门村 石门村一组网格 石门村一组12号"
    report = intake.validate_report({**data, "photos": []}, NOW)
    assert report.reporter_kind == "resident"
    extra = extra_data(plate, fields)
    assert extra["contact"]["phone"] == "13800001234" and extra["place"]["door_plate"] is True
