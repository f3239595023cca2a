"""我的待办: a grid worker verifies two resolved cases of their grid on site from the phone app,
passing one and failing the other with a reason, photos taken each time."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from conftest import Site, wait_for
from test_worker_app import IN_GRID, jpeg, sign_in

from demo import images
from sinks.models import Photo, Task

DEPT_STAFF = "ds0019"  # 石门村村委会, the department of litter in 石门村


def resolved_case(site: Site, lat: float, lon: float, text: str) -> str:
    """A worker's report in 石门村一组网格, signed and resolved with an after-photo by the
    department over the API: the task id, once the read models say it awaits verification."""
    report = {"report_id": f"v-{uuid.uuid4().hex[:16]}", "category_code": "E0102",
              "description": text, "lat": lat, "lon": lon,
              "captured_at": "2026-01-05T09:00:00+08:00"}
    photo = images.make_jpeg(640, 480, seed=hash(text) % 1000)
    r = httpx.post(f"{site.url}/api/v1/reports", headers=site.bearer("gw0002"), timeout=30,
                   files=[("report", (None, json.dumps(report, ensure_ascii=False).encode(),
                                      "application/json")),
                          ("photos", ("before.jpg", photo, "image/jpeg"))])
    assert r.status_code == 202, r.text
    case_id = r.json()["case_id"]
    [task] = wait_for("the task dispatched", lambda: site.rows(Task, Task.case_id == case_id))
    staff = site.bearer(DEPT_STAFF)
    signed = httpx.post(f"{site.url}/api/v1/tasks/{task.task_id}/sign", json={}, headers=staff)
    assert signed.status_code == 202, signed.text
    wait_for("signed", lambda: site.rows(Task, Task.task_id == task.task_id,
                                         Task.state == "signed"))
    after = images.make_jpeg(640, 480, seed=7)
    resolved = httpx.post(
        f"{site.url}/api/v1/tasks/{task.task_id}/resolve", headers=staff, timeout=30,
        files=[("resolution", (None, '{"note": "已清运完毕"}', "application/json")),
               ("photos", ("after.jpg", after, "image/jpeg"))])
    assert resolved.status_code == 202, resolved.text
    wait_for("resolved", lambda: site.rows(Task, Task.task_id == task.task_id,
                                           Task.state == "resolved"))
    return str(task.task_id)


def test_a_verification_passed_and_one_failed_with_a_reason(
    site: Site, new_phone: Callable[..., Any], shoot: Callable[[Any, str], Path]
) -> None:
    passing = resolved_case(site, 32.1605, 109.9605, "核查一: 村口垃圾")
    failing = resolved_case(site, 32.1620, 109.9620, "核查二: 桥头垃圾")
    page = new_phone(geolocation=IN_GRID, permissions=["geolocation"]).new_page()
    sign_in(site, page)
    page.goto(f"{site.url}/m/#tasks")
    for task_id in (passing, failing):
        page.locator(f"#task-list li[data-task='{task_id}']").wait_for()
    page.locator(f"#task-list li[data-task='{passing}'] .photos-row img").first.wait_for()
    # polled from here: wait_for_function evaluates with eval(), which the pages' CSP forbids
    wait_for("the after-photos shown", lambda: page.evaluate(
        "[...document.querySelectorAll('.photos-row img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"))
    shoot(page, "worker-tasks")

    page.locator(f"#task-list li[data-task='{passing}']").get_by_role("button", name="去核查").click()
    page.locator("#valbum").set_input_files([jpeg("v1.jpg", 41, 1600, 1200)])
    page.locator("#vthumbs figure img").wait_for()
    page.get_by_text("通过", exact=True).click()
    page.get_by_label("说明(不通过时必填原因)").fill("现场已清理干净")
    shoot(page, "worker-verify")
    page.get_by_role("button", name="提交核查结果").click()
    page.get_by_text("核查通过, 案件将结案").wait_for()
    wait_for("the task closed", lambda: site.rows(Task, Task.task_id == passing,
                                                  Task.state == "closed"))

    page.locator(f"#task-list li[data-task='{failing}']").get_by_role("button", name="去核查").click()
    page.get_by_text("不通过", exact=True).click()
    page.get_by_role("button", name="提交核查结果").click()
    assert "核查不通过, 请说明原因" in page.locator("#verify-errors").inner_text()
    page.locator("#vcamera").set_input_files([jpeg("v2.jpg", 42, 1600, 1200)])
    page.get_by_label("说明(不通过时必填原因)").fill("桥头仍有垃圾未清运")
    page.get_by_role("button", name="提交核查结果").click()
    page.get_by_text("核查不通过, 已退回部门返工").wait_for()
    [task] = wait_for("the task reopened", lambda: site.rows(
        Task, Task.task_id == failing, Task.state == "in_progress"))
    assert task.reopened == 1
    photos = site.rows(Photo, Photo.task_id.in_([passing, failing]), Photo.role == "verification")
    assert sorted(p.task_id for p in photos) == sorted([passing, failing])
    page.locator(f"#task-list li[data-task='{passing}']").wait_for(state="detached")
    assert site.pump.errors == []
