"""码上说: a resident scans a door plate's or a grid's QR code and reports without signing in,
at phone size in Chromium, against the real API; the report becomes a dispatched case."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Site, wait_for

from demo import images
from mobile.places import door_plate
from sinks.models import Report, Task

GRID = "421099101201001"  # 石门村一组网格, 青石镇


def photo_file(name: str, seed: int, width: int = 1600, height: int = 1200) -> dict[str, Any]:
    return {"name": name, "mimeType": "image/jpeg",
            "buffer": images.make_jpeg(width, height, seed=seed, gps=(32.16, 109.96))}


def test_a_resident_reports_from_a_door_plate_code_without_signing_in(
    site: Site, phone: Any, shoot: Callable[[Any, str], Path]
) -> None:
    plate = door_plate(site.app.state.ctx.ref, "石门村一组12号", 32.16, 109.96)
    assert plate is not None and plate.grid_code == GRID
    page = phone.new_page()
    page.goto(site.url + plate.path())
    page.get_by_text("石门村一组网格 石门村一组12号").wait_for()
    page.get_by_label("问题类型").select_option("litter")
    page.get_by_label("问题描述").fill("门口垃圾桶满溢, 三天没人清运")
    page.get_by_label("联系电话(用于回访, 不会公开)").fill("13800001234")
    page.locator("#photos").set_input_files([photo_file("a.jpg", 1)])
    page.locator("#photo-thumbs img").first.wait_for()
    shoot(page, "resident-form")
    page.get_by_role("button", name="提交").click()
    page.wait_for_url("**/r/t/*?new=1")
    ticket = page.locator("#ticket-no").inner_text().strip()
    assert ticket.startswith("AJ")
    page.get_by_text("已受理").first.wait_for()

    [report] = wait_for("the report in the read models",
                        lambda: site.rows(Report, Report.case_id == ticket))
    assert report.source == "resident" and report.photo_count == 1
    assert report.reporter.startswith("resident:c")  # never the phone number itself
    assert abs(report.lat - 32.16) < 1e-6 and abs(report.lon - 109.96) < 1e-6
    wait_for("the case dispatched", lambda: site.rows(Task, Task.case_id == ticket))
    page.goto(f"{site.url}/r/t/{ticket}")
    page.get_by_text("已派遣").first.wait_for()
    shoot(page, "resident-ticket")
    assert site.pump.errors == []


def test_the_form_works_without_javascript_and_says_what_to_fix(
    site: Site, new_phone: Callable[..., Any], shoot: Callable[[Any, str], Path]
) -> None:
    page = new_phone(java_script_enabled=False).new_page()
    page.goto(f"{site.url}/r/{GRID}")
    page.get_by_label("问题类型").select_option("street-light")
    page.get_by_label("问题描述").fill("村口路灯不亮")
    page.get_by_label("联系电话(用于回访, 不会公开)").fill("12345")
    page.get_by_role("button", name="提交").click()
    summary = page.locator("#error-summary")
    assert "联系电话格式不正确" in summary.inner_text()
    assert page.get_by_label("问题描述").input_value() == "村口路灯不亮"  # nothing typed is lost
    shoot(page, "resident-error")
    page.get_by_label("联系电话(用于回访, 不会公开)").fill("0719-8123456")
    page.get_by_role("button", name="提交").click()
    page.wait_for_url("**/r/t/*?new=1")
    assert page.locator("#ticket-no").inner_text().startswith("AJ")


def test_an_unknown_code_says_so(site: Site, phone: Any) -> None:
    page = phone.new_page()
    response = page.goto(f"{site.url}/r/421099999999999")
    assert response is not None and response.status == 404
    page.get_by_text("二维码无效或已停用").wait_for()
