"""Within a department, on the real stack: the head assigns tasks to a named staff member (二次派遣,
one at a time or in bulk), each person sees 我的任务, and the department's reply templates
(常用回复) fill progress notes and resolutions, kept by the head only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gridflow.settings import Settings
from tests.integration.workbench_env import (
    WorkbenchEnv,
    outcomes_of,
    running_workbench,
    text_of,
)

pytestmark = pytest.mark.integration

DEPT = "county.zhujian"  # 住建局: DS0005 heads it (workbench.json), DS0028 works there
HEAD, STAFF = "ds0005", "ds0028"


@pytest.fixture(name="wb")
def wb_fixture(stack: Any, stack_settings: Settings, pg_url: str) -> Iterator[WorkbenchEnv]:
    yield from running_workbench(stack, stack_settings, pg_url)


def zhujian_case(wb: WorkbenchEnv, n: int) -> str:
    return wb.file_report(category="P0101", lat=32.16 + n * 0.0004, lon=109.96,
                          description=f"井盖破损 {n}")


def test_the_head_assigns_in_bulk_and_the_assignee_sees_them_as_my_tasks(wb: WorkbenchEnv) -> None:
    first, second = zhujian_case(wb, 1), zhujian_case(wb, 2)
    head, staff = wb.person(HEAD), wb.person(STAFF)
    inbox = head.get(f"/w/d/{DEPT}/inbox").text
    assert 'id="select-all"' in inbox and "二次派遣" in inbox

    with head.client() as c:
        answer = c.post(f"/w/d/{DEPT}/assign", data={
            "csrf_token": head.csrf, "form_key": "bulk-1", "assignee": STAFF.upper(),
            "task_id": [f"{first}-T01", f"{second}-T01"], "back": f"/w/d/{DEPT}/inbox"})
    wb.decide(answer)
    assert [s for s, _ in outcomes_of(head.get(answer.headers["location"]).text)] == [
        "accepted", "accepted"]

    mine = text_of(staff.get(f"/w/d/{DEPT}/inbox", params={"mine": STAFF.upper()}).text)
    assert first in mine and second in mine and "我的任务 2" in mine
    assert "住建局城建监察员" in mine  # the 承办人 column
    page = text_of(staff.get(f"/w/cases/{first}").text)
    assert "承办人: 住建局城建监察员" in page
    assert "二次派遣 青山县住房和城乡建设局 · 住建局值班员" in page and "分派给 住建局城建监察员" in page
    assert "我的任务 0" in text_of(head.get(f"/w/d/{DEPT}/inbox").text)


def test_one_task_is_reassigned_from_its_page_and_only_the_head_may(wb: WorkbenchEnv) -> None:
    case_id = zhujian_case(wb, 3)
    task = f"{case_id}-T01"
    head, staff = wb.person(HEAD), wb.person(STAFF)
    form = head.get(f"/w/tasks/{task}/assign")
    assert form.status_code == 200 and "住建局城建监察员" in form.text
    none = head.post(f"/w/tasks/{task}/assign", {"form_key": "a0"})
    assert none.status_code == 422 and "请选择本部门的承办人" in none.text
    wb.decide(head.post(f"/w/tasks/{task}/assign", {"form_key": "a1", "assignee": STAFF.upper()}))
    again = head.post(f"/w/tasks/{task}/assign", {"form_key": "a2", "assignee": STAFF.upper()})
    wb.decide(again)
    [(status, why)] = outcomes_of(head.get(again.headers["location"]).text)
    assert status == "refused" and why == "分派未执行: 该任务已由此人承办"

    assert staff.get(f"/w/tasks/{task}/assign").status_code == 403
    refused = staff.post(f"/w/d/{DEPT}/assign", {"form_key": "x", "assignee": HEAD.upper(),
                                                 "task_id": task})
    assert refused.status_code == 403 and "仅部门负责人可以分派任务" in refused.text
    outsider = wb.person("ds0003")  # 城管局: not their task, not their department
    assert outsider.get(f"/w/tasks/{task}/assign").status_code == 404
    assert outsider.post(f"/w/d/{DEPT}/assign", {"form_key": "y", "assignee": "DS0003",
                                                 "task_id": task}).status_code == 404


def test_reply_templates_fill_notes_and_only_the_head_keeps_them(wb: WorkbenchEnv) -> None:
    head, staff = wb.person(HEAD), wb.person(STAFF)
    blank = head.post(f"/w/d/{DEPT}/templates", {"title": "", "body": "", "kind": "progress"})
    assert blank.status_code == 422
    assert "请填写常用回复的标题" in blank.text and "请填写常用回复的内容" in blank.text
    saved = head.post(f"/w/d/{DEPT}/templates", {"title": "已到场处置", "kind": "progress",
                                                 "body": "已派员到现场核实, 正在组织维修。"})
    assert saved.status_code == 303
    template_id = saved.headers["location"].rsplit("#tpl-", 1)[1]
    head.post(f"/w/d/{DEPT}/templates", {"title": "已修复", "kind": "resolve",
                                         "body": "井盖已更换并加固。"})

    listed = text_of(staff.get(f"/w/d/{DEPT}/templates").text)
    assert "已到场处置" in listed and "由部门负责人维护" in listed
    assert staff.post(f"/w/d/{DEPT}/templates", {"title": "x", "body": "y",
                                                 "kind": "any"}).status_code == 403
    assert staff.post(f"/w/d/{DEPT}/templates/{template_id}/delete", {}).status_code == 403
    assert wb.person("ds0003").get(f"/w/d/{DEPT}/templates").status_code == 404

    case_id = zhujian_case(wb, 4)
    task = f"{case_id}-T01"
    wb.decide(staff.post(f"/w/tasks/{task}/sign", {"form_key": "s"}))
    progress_form = staff.get(f"/w/tasks/{task}/progress").text
    assert "已到场处置" in progress_form and "已修复" not in progress_form  # resolve's only
    assert "已修复" in staff.get(f"/w/tasks/{task}/resolve").text
    noted = staff.post(f"/w/tasks/{task}/progress", {"form_key": "p", "note": "",
                                                     "template_note": template_id},
                       files=[("photos", ("", b"", "application/octet-stream"))])
    wb.decide(noted)  # without scripts: the chosen template is the note
    assert "已派员到现场核实, 正在组织维修。" in text_of(staff.get(f"/w/cases/{case_id}").text)

    changed = head.post(f"/w/d/{DEPT}/templates", {"template_id": template_id, "title": "已到场",
                                                   "kind": "any", "body": "已到场。"})
    assert changed.status_code == 303
    assert head.post(f"/w/d/{DEPT}/templates/{template_id}/delete", {}).status_code == 303
    assert "已到场。" not in text_of(head.get(f"/w/d/{DEPT}/templates").text)
