"""The departments' workbench on the real stack, as a browser without scripts uses it: the
inbox with its tabs and filters, the case page, and the forms (签收, 进展 with a photo, 办结
with after-photos, 退单, 延期申请), each showing the case processor's decision.

What a user would check: their task is in their inbox and nobody else's; a form that lacks
something says what, at the top and beside the field; after submitting, the page says whether
it was done, or why not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from gridflow.settings import Settings
from tests.integration.workbench_env import (
    CENTRE,
    VILLAGE,
    WorkbenchEnv,
    outcomes_of,
    photo,
    running_workbench,
    text_of,
)

pytestmark = pytest.mark.integration


@pytest.fixture(name="wb")
def wb_fixture(stack: Any, stack_settings: Settings, pg_url: str) -> Iterator[WorkbenchEnv]:
    yield from running_workbench(stack, stack_settings, pg_url)


def test_the_inbox_lists_the_departments_task_sorted_with_counts(wb: WorkbenchEnv) -> None:
    first = wb.file_report()
    second = wb.file_report(lat=32.1605, lon=109.9605, description="路边垃圾无人清运")
    staff = wb.staff(VILLAGE)

    r = staff.get(f"/w/d/{VILLAGE}/inbox")

    assert r.status_code == 200, r.text[:500]
    page = text_of(r.text)
    assert first in page and second in page and "全部在办 2" in page and "待签收 2" in page
    assert "剩余" in page and "签收期限" in page
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert "<script>" not in r.text and "style=" not in r.text  # CSP: no inline script or style
    filtered = text_of(staff.get(f"/w/d/{VILLAGE}/inbox", params={"category": "P01"}).text)
    assert first not in filtered and "没有符合筛选条件的任务" in filtered
    by_grid = text_of(staff.get(f"/w/d/{VILLAGE}/inbox",
                                params={"grid": "421099101201001", "tab": "sign"}).text)
    assert first in by_grid and second in by_grid


def test_another_department_sees_the_task_neither_by_list_nor_by_link(wb: WorkbenchEnv) -> None:
    case_id = wb.file_report()
    other = wb.staff("county.chengguan")

    assert other.get(f"/w/d/{VILLAGE}/inbox").status_code == 404
    assert case_id not in other.get("/w/d/county.chengguan/inbox").text
    assert other.get(f"/w/cases/{case_id}").status_code == 404
    assert other.get(f"/w/tasks/{case_id}-T01/resolve").status_code == 404
    r = other.post(f"/w/tasks/{case_id}-T01/sign", {"form_key": "k"})
    assert r.status_code == 404 and "未找到" in r.text


def test_sign_progress_with_a_photo_and_resolve_show_each_decision(wb: WorkbenchEnv) -> None:
    case_id = wb.file_report()
    task = f"{case_id}-T01"
    staff = wb.staff(VILLAGE)

    signed = staff.post(f"/w/tasks/{task}/sign", {"form_key": "sign-1"})
    [cid] = wb.decide(signed)
    page = text_of(staff.get(signed.headers["location"]).text)
    assert "签收已执行" in page and "已签收" in page

    empty = staff.post(f"/w/tasks/{task}/progress", {"form_key": "p-1", "note": ""},
                       files=[("photos", ("", b"", "application/octet-stream"))])
    assert empty.status_code == 422
    assert "请更正以下问题" in empty.text and text_of(empty.text).count("请填写处置进展") == 2

    noted = staff.post(f"/w/tasks/{task}/progress", {"form_key": "p-1", "note": "已到现场"},
                       files=[("photos", ("site.jpg", photo(5), "image/jpeg"))])
    wb.decide(noted)
    page = text_of(staff.get(noted.headers["location"]).text)
    assert "填报进展已执行" in page and "已到现场(照片1张)" in page and "处置进展照片" in page
    assert any(k.startswith(f"tasks/{task}/") for k in wb.objects("tasks/"))

    no_photo = staff.post(f"/w/tasks/{task}/resolve", {"form_key": "r-1", "note": "已清运"},
                          files=[("photos", ("", b"", "application/octet-stream"))])
    assert no_photo.status_code == 422 and "请上传1至9张整改后照片" in no_photo.text
    not_a_photo = staff.post(f"/w/tasks/{task}/resolve", {"form_key": "r-1", "note": "已清运"},
                             files=[("photos", ("a.jpg", b"not a picture", "image/jpeg"))])
    assert not_a_photo.status_code == 422 and "照片「a.jpg」" in not_a_photo.text

    resolved = staff.post(f"/w/tasks/{task}/resolve", {"form_key": "r-1", "note": "已清运"},
                          files=[("photos", ("after.jpg", photo(6), "image/jpeg"))])
    wb.decide(resolved)
    page = text_of(staff.get(resolved.headers["location"]).text)
    assert "办结已执行" in page and "已办结待核查" in page and "整改后照片" in page
    done = text_of(staff.get(f"/w/d/{VILLAGE}/inbox", params={"tab": "done"}).text)
    assert case_id in done


def test_a_form_without_its_csrf_field_is_refused(wb: WorkbenchEnv) -> None:
    case_id = wb.file_report()
    r = wb.staff(VILLAGE).post(f"/w/tasks/{case_id}-T01/sign", {"form_key": "x"}, csrf=False)
    assert r.status_code == 403 and "页面已过期" in r.text


def test_a_send_back_lands_in_the_township_centres_inbox(wb: WorkbenchEnv) -> None:
    case_id = wb.file_report()
    staff = wb.staff(VILLAGE)
    form = staff.get(f"/w/tasks/{case_id}-T01/send-back")
    assert form.status_code == 200 and "青石镇综治中心(默认)" in form.text

    blank = staff.post(f"/w/tasks/{case_id}-T01/send-back",
                       {"form_key": "sb", "reason": " ", "reroute_to": CENTRE})
    assert blank.status_code == 422 and "请填写退单理由" in blank.text
    sent = staff.post(f"/w/tasks/{case_id}-T01/send-back",
                      {"form_key": "sb", "reason": "属道路养护, 非村委会职责", "reroute_to": CENTRE})
    wb.decide(sent)

    assert "退单已执行" in text_of(staff.get(sent.headers["location"]).text)
    centre = text_of(wb.staff(CENTRE).get(f"/w/d/{CENTRE}/inbox").text)
    assert f"{case_id}-T02" in centre
    assert case_id not in text_of(staff.get(f"/w/d/{VILLAGE}/inbox").text)


def test_an_extension_request_waits_for_a_supervisor(wb: WorkbenchEnv) -> None:
    case_id = wb.file_report()
    task = f"{case_id}-T01"
    staff = wb.staff(VILLAGE)
    wb.decide(staff.post(f"/w/tasks/{task}/sign", {"form_key": "s"}))
    form = staff.get(f"/w/tasks/{task}/extension")
    assert "每项任务最多延期1次" in text_of(form.text)
    bad = staff.post(f"/w/tasks/{task}/extension", {"form_key": "e", "days": "abc", "reason": ""})
    assert bad.status_code == 422
    assert "请填写延期工作日数" in bad.text and "请填写延期理由" in bad.text

    asked = staff.post(f"/w/tasks/{task}/extension",
                       {"form_key": "e", "days": "2", "reason": "需协调清运车辆"})
    wb.decide(asked)

    page = text_of(staff.get(asked.headers["location"]).text)
    assert "延期申请已执行" in page and "延期申请待审批: 2 个工作日" in page


def test_two_people_sign_at_once_one_wins_the_other_sees_why_not(wb: WorkbenchEnv) -> None:
    case_id = wb.file_report(category="P0101", lat=32.161, lon=109.962)  # 住建局's task
    a, b = wb.person("ds0005"), wb.person("ds0028")  # both of 住建局
    inbox = a.get("/w/d/county.zhujian/inbox")
    assert f"{case_id}-T01" in inbox.text

    def click(who: tuple[object, str]) -> httpx.Response:
        person, key = who
        return person.post(f"/w/tasks/{case_id}-T01/sign", {"form_key": key})  # type: ignore[attr-defined]

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(click, [(a, "page-of-a"), (b, "page-of-b")]))
    for answer in answers:
        wb.decide(answer)

    pages = [outcomes_of(a.get(x.headers["location"]).text) for x in answers]
    assert sorted(status for [(status, _)] in pages) == ["accepted", "refused"], pages
    [(_, why)] = next(p for p in pages if p[0][0] == "refused")
    assert why == "签收未执行: 任务当前状态为「已签收」, 不能执行此操作"


def test_a_browser_without_a_session_is_sent_to_sign_in_and_scripts_get_401(
    wb: WorkbenchEnv,
) -> None:
    r = httpx.get(f"{wb.url}/w/d/{VILLAGE}/inbox", headers={"Accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"].startswith("/w/sign-in?next=")
    r = httpx.get(f"{wb.url}/w/d/{VILLAGE}/inbox")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_signing_in_with_a_password_sets_the_session_cookie(wb: WorkbenchEnv) -> None:
    store = wb.sessions.store
    code = store.reset_password("ds0019", "test")
    store.set_password("ds0019", code, "村委会-值班-密码-2026", "127.0.0.1")
    with httpx.Client(base_url=wb.url, follow_redirects=False) as http:
        form = http.get("/w/sign-in")
        [csrf] = re.findall(r'name="login_csrf" value="([^"]+)"', form.text)
        forged = http.post("/w/sign-in", data={"login": "ds0019", "password": "x",
                                               "login_csrf": "another-sites-guess-000000"})
        assert forged.status_code == 403 and "页面已过期" in forged.text
        wrong = http.post("/w/sign-in", data={"login": "ds0019", "password": "nope",
                                              "login_csrf": csrf})
        assert wrong.status_code == 401 and "请更正以下问题" in wrong.text
        ok = http.post("/w/sign-in", data={"login": "ds0019", "password": "村委会-值班-密码-2026",
                                           "login_csrf": csrf, "next": f"/w/d/{VILLAGE}/inbox"})
        assert ok.status_code == 303 and ok.headers["location"] == f"/w/d/{VILLAGE}/inbox"
        cookie = ok.headers["set-cookie"]
        assert "gridflow_session=" in cookie and "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower()
        inbox = http.get(ok.headers["location"], headers={"Accept": "text/html"})
        assert inbox.status_code == 200 and "全部在办" in inbox.text
