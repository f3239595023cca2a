"""The supervisors' console on the real stack: extension requests decided from the queue (the new
deadline on the department's page; one beyond the policy refused with the reason shown), the
whistle (each department its own task, seeing only its own), cancelling a case, and the queues
of escalations, repeated send-backs and failed verifications, each inside the caller's
jurisdiction only.
"""

from __future__ import annotations

from collections.abc import Iterator
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

TOWNSHIP = "sv0102"  # 青石镇: the cases below lie there
OTHER_TOWNSHIP = "sv0103"  # 白鹤乡
COUNTY = "sv0001"


@pytest.fixture(name="wb")
def wb_fixture(stack: Any, stack_settings: Settings, pg_url: str) -> Iterator[WorkbenchEnv]:
    yield from running_workbench(stack, stack_settings, pg_url)


def signed_task(wb: WorkbenchEnv) -> tuple[str, str]:
    case_id = wb.file_report()
    wb.decide(wb.staff(VILLAGE).post(f"/w/tasks/{case_id}-T01/sign", {"form_key": "s"}))
    return case_id, f"{case_id}-T01"


def test_an_extension_approved_from_the_queue_moves_the_departments_deadline(
    wb: WorkbenchEnv,
) -> None:
    case_id, task = signed_task(wb)
    staff = wb.staff(VILLAGE)
    before = text_of(staff.get(f"/w/cases/{case_id}").text)
    wb.decide(staff.post(f"/w/tasks/{task}/extension",
                         {"form_key": "e1", "days": "2", "reason": "需协调清运车辆"}))
    supervisor = wb.person(TOWNSHIP)
    console = text_of(supervisor.get("/s/").text)
    assert "延期待审批 1" in console and task in console and "需协调清运车辆" in console
    assert task not in text_of(wb.person(OTHER_TOWNSHIP).get("/s/").text)

    approved = supervisor.post(f"/w/tasks/{task}/extension-decision",
                               {"form_key": "d1", "approve": "yes", "back": "/s/q/extensions"})
    wb.decide(approved)
    assert approved.headers["location"].startswith("/s/q/extensions?cmd=")
    assert outcomes_of(supervisor.get(approved.headers["location"]).text) == [
        ("accepted", "延期审批已执行。 延期已批准, 办结期限已顺延。")]

    after = text_of(staff.get(f"/w/cases/{case_id}").text)
    assert "延期2个工作日, 办结期限由" in after and "已延期1次" in after
    assert before != after

    again = staff.post(f"/w/tasks/{task}/extension",
                       {"form_key": "e2", "days": "3", "reason": "仍需协调"})
    wb.decide(again)
    [(status, why)] = outcomes_of(staff.get(again.headers["location"]).text)
    assert status == "refused"
    assert why == "延期申请未执行: 延期申请超出规定: 每项任务最多延期1次, 已延期1次"


def test_refusing_an_extension_needs_a_reason_which_the_department_sees(wb: WorkbenchEnv) -> None:
    case_id, task = signed_task(wb)
    wb.decide(wb.staff(VILLAGE).post(f"/w/tasks/{task}/extension",
                                     {"form_key": "e", "days": "1", "reason": "雨天"}))
    supervisor = wb.person(COUNTY)
    blank = supervisor.post(f"/w/tasks/{task}/extension-decision",
                            {"form_key": "d", "approve": "no", "reason": ""})
    assert blank.status_code == 422 and "驳回延期须填写理由" in blank.text
    refused = supervisor.post(f"/w/tasks/{task}/extension-decision",
                              {"form_key": "d", "approve": "no", "reason": "天气已好转, 请按期办结"})
    wb.decide(refused)
    page = text_of(wb.staff(VILLAGE).get(f"/w/cases/{case_id}").text)
    assert "驳回延期" in page and "理由: 天气已好转, 请按期办结" in page


def test_a_whistle_gives_each_department_its_own_task_and_each_sees_only_its_own(
    wb: WorkbenchEnv,
) -> None:
    case_id = wb.file_report()
    county = wb.person(COUNTY)
    form = county.get(f"/s/cases/{case_id}/whistle")
    assert form.status_code == 200 and "青石镇石门村村民委员会(办理中)" in text_of(form.text)
    empty = county.post(f"/s/cases/{case_id}/whistle", {"form_key": "w", "reason": ""})
    assert empty.status_code == 422
    assert "请至少选择一个报到部门" in empty.text and "请写明吹哨事由" in empty.text

    with county.client() as c:
        answer = c.post(f"/s/cases/{case_id}/whistle", data={
            "csrf_token": county.csrf, "form_key": "w",
            "departments": ["county.huanjing", "county.zhujian"],
            "reason": "垃圾倾倒入河, 涉及违建, 需联合处置"})
    wb.decide(answer)

    page = county.get(f"/w/cases/{case_id}").text
    assert outcomes_of(county.get(answer.headers["location"]).text)[0][0] == "accepted"
    cards = [text_of(x) for x in page.split('<article class="task-card"')[1:]]
    assert len(cards) == 3 and "side-by-side" in page
    assert ["十堰市生态环境局青山分局" in cards[1], "青山县住房和城乡建设局" in cards[2]] == [True, True]

    for dept, own, other in (("county.huanjing", "T02", "T03"), ("county.zhujian", "T03", "T02")):
        staff = wb.staff(dept)
        inbox = text_of(staff.get(f"/w/d/{dept}/inbox").text)
        assert f"{case_id}-{own}" in inbox and f"{case_id}-{other}" not in inbox
        case_page = staff.get(f"/w/cases/{case_id}").text
        assert f"{case_id}-{own}" in case_page and f"{case_id}-{other}" not in case_page
        assert f"{case_id}-T01" not in case_page  # the village committee's task is not theirs
        other_dept = "county.zhujian" if dept == "county.huanjing" else "county.huanjing"
        assert staff.get(f"/w/d/{other_dept}/inbox").status_code == 404


def test_cancelling_a_case_cancels_every_open_task_with_the_reason(wb: WorkbenchEnv) -> None:
    case_id = wb.file_report()
    township = wb.person(TOWNSHIP)
    assert wb.person(OTHER_TOWNSHIP).get(f"/s/cases/{case_id}/cancel").status_code == 404
    blank = township.post(f"/s/cases/{case_id}/cancel", {"form_key": "c", "reason": " "})
    assert blank.status_code == 422 and "请填写撤销理由" in blank.text
    done = township.post(f"/s/cases/{case_id}/cancel", {"form_key": "c", "reason": "重复上报"})
    wb.decide(done)
    page = township.get(done.headers["location"]).text
    assert [s for s, _ in outcomes_of(page)] == ["accepted"]
    assert "已结案" in text_of(page) and "理由: 重复上报" in text_of(page)


def test_the_queues_hold_repeated_send_backs_and_failed_verifications(wb: WorkbenchEnv) -> None:
    bounced = wb.file_report()
    wb.decide(wb.staff(VILLAGE).post(f"/w/tasks/{bounced}-T01/send-back", {
        "form_key": "b1", "reason": "非本村职责", "reroute_to": CENTRE}))
    wb.decide(wb.staff(CENTRE).post(f"/w/tasks/{bounced}-T02/send-back", {
        "form_key": "b2", "reason": "属城管职责", "reroute_to": "county.chengguan"}))

    reworked, task = signed_task(wb)
    wb.decide(wb.staff(VILLAGE).post(f"/w/tasks/{task}/resolve", {"form_key": "r", "note": "已清运"},
                                     files=[("photos", ("a.jpg", photo(7), "image/jpeg"))]))
    r = httpx.post(f"{wb.url}/api/v1/tasks/{task}/reject", json={"reason": "现场仍有垃圾"},
                   headers=wb.sessions.bearer("gw0001"), timeout=30)
    assert r.status_code == 202, r.text
    wb.decide_id(r.json()["command_id"])

    township = wb.person(TOWNSHIP)
    sent_back = text_of(township.get("/s/q/sent-back").text)
    assert f"{bounced}-T03" in sent_back and "2 次" in sent_back
    rework = text_of(township.get("/s/q/reopened").text)
    assert task in rework and "1 次" in rework
    assert bounced not in text_of(wb.person(OTHER_TOWNSHIP).get("/s/q/sent-back").text)
    assert wb.staff(VILLAGE).get("/s/").status_code == 403

