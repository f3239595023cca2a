"""A case's whole life on the real pipeline: a grid worker's phone upload, the departments'
work, verification and rating — through the HTTP API only, with the real worker, SQL sink,
API and notifier running as child processes on a simulated clock.

What a user would check: the report's page (GET /api/v1/reports/{id}) shows every step;
the right department is told (its webhook gets the 新任务 / 超时预警 notice) and sees the task
in its inbox; a send-back, a failed verification and an extension do what the rules say;
two conflicting clicks at once end with exactly one done and the other refused with a reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from e2e_pipeline import REF, Pipeline, Upload

from bootstrap import bundled_planner
from gridflow.core.routing import route
from gridflow.events import iso, parse_ts

GW_A = REF.workers["GW0001"]  # 石门村一组网格 (青石镇)
GW_B = REF.workers["GW0016"]  # a grid of 白鹤乡
VILLAGE = "421099101201.cwh"  # 石门村村委会


def chinese(text: str | None) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text or "")


def only_task(s: dict[str, Any]) -> dict[str, Any]:
    [task] = s["tasks"]
    return task


def steps(s: dict[str, Any]) -> list[str]:
    return [step["step_zh"] for step in s["timeline"]]


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in parallel threads released together (two clicks at the same instant)."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.fixture(scope="module")
def early(pipeline: Pipeline) -> Upload:
    """A 燃气管道破裂 report filed first thing: its 30-minute sign-for limit runs out while the
    other tests run (the inbox test needs an overdue task)."""
    up = pipeline.upload(GW_A, "E0503", photos=1, description="燃气管道破裂, 有气味")
    pipeline.filed(up)
    return up


def test_a_phone_report_is_filed_worked_verified_rated_and_closed(pipeline: Pipeline, early):
    up = pipeline.upload(GW_A, "E0102", photos=2, description="村口垃圾堆积, 无人清运")
    s = pipeline.filed(up)
    grid = REF.grids[GW_A.grid_code]
    assert [t["department"] for t in s["tasks"]] == list(route(REF, "E0102", grid).departments)
    task = only_task(s)
    task_id, dept = task["task_id"], task["department"]
    assert (dept, task["state"], s["stage"]) == (VILLAGE, "dispatched", "dispatched")
    assert s["case_id"] == up.case_id and chinese(s["status_zh"]) and chinese(s["stage_zh"])
    assert task["sign_due"] and task["resolve_due"] and s["next_due_at"] == task["sign_due"]
    assert steps(s) == ["立案", "派遣"]
    # the two photos from the phone are archived (content-addressed copy under object lock)
    s = pipeline.report_when(up, "the report's photos archived", lambda s: len(s["photos"]) == 2
                             and all(p["archive_status"] == "archived" for p in s["photos"]))
    assert {p["role"] for p in s["photos"]} == {"before"}
    assert all(httpx.get(p["url"]).status_code == 200 for p in s["photos"])
    # the village committee is told, and has it in its inbox
    [notice] = pipeline.wait("the new-task notice", lambda: pipeline.webhooks.notices(
        kind="new_task", task_id=task_id))
    assert notice["path"] == f"/{VILLAGE}" and "签收" in notice["text_zh"]
    token = pipeline.dept(VILLAGE)
    assert task_id in pipeline.inbox(VILLAGE, token)

    pipeline.do(f"/api/v1/tasks/{task_id}/sign", token, json={"note": "已签收"})
    s = pipeline.report(up)
    assert only_task(s)["state"] == "signed" and only_task(s)["signed_at"]
    assert s["stage"] == "in_progress" and steps(s)[-1] == "签收"

    pipeline.do(f"/api/v1/tasks/{task_id}/progress", token, json={"note": "已安排保洁员清运"})
    assert only_task(pipeline.report(up))["state"] == "in_progress"

    pipeline.resolve(task_id, token, photos=2)
    s = pipeline.report(up)
    assert only_task(s)["state"] == "resolved" and s["stage"] == "awaiting_verification"
    assert sorted(p["role"] for p in s["photos"]) == ["after", "after", "before", "before"]

    pipeline.do(f"/api/v1/tasks/{task_id}/verify", pipeline.worker(GW_A), json={"note": "现场已整洁"})
    s = pipeline.report(up)
    assert s["status"] == "closed" and s["stage"] == "closed" and s["closed_at"]
    assert only_task(s)["state"] == "closed"

    pipeline.do(f"/api/v1/cases/{up.case_id}/rating", pipeline.worker(GW_A),
                json={"score": 5, "comment": "处理及时, 很满意"})
    s = pipeline.report(up)
    assert s["rating"] == 5 and s["status_zh"] == "已办结"
    assert steps(s) == ["立案", "派遣", "签收", "处置进展", "办结", "核查通过", "结案", "回访评价"]
    assert all(step["task_id"] in (None, task_id) for step in s["timeline"])
    assert task_id not in pipeline.inbox(VILLAGE, token)  # done: off the open inbox


def test_a_send_back_reroutes_the_task_to_another_department(pipeline: Pipeline):
    up = pipeline.upload(GW_A, "E0601", photos=1, description="邻里因宅基地边界发生纠纷")
    task_id = only_task(pipeline.filed(up))["task_id"]
    assert only_task(pipeline.report(up))["department"] == VILLAGE
    centre = "421099101.zongzhi"  # 青石镇综治中心

    pipeline.do(f"/api/v1/tasks/{task_id}/send-back", pipeline.dept(VILLAGE),
                json={"reason": "涉及土地权属, 超出村委会调处权限", "reroute_to": centre})

    s = pipeline.report_when(up, "the re-routed task", lambda s: len(s["tasks"]) == 2)
    old, new = sorted(s["tasks"], key=lambda t: t["task_id"])
    assert (old["task_id"], old["state"], old["sent_back"]) == (task_id, "sent_back", True)
    assert old["reroute_to"] == centre
    assert (new["department"], new["state"]) == (centre, "dispatched")
    assert steps(s)[-2:] == ["退单", "派遣"]
    assert new["task_id"] in pipeline.inbox(centre, pipeline.dept(centre))
    assert task_id not in pipeline.inbox(VILLAGE, pipeline.dept(VILLAGE))
    [notice] = pipeline.wait("the re-routed department's notice", lambda: pipeline.webhooks.notices(
        kind="new_task", task_id=new["task_id"]))
    assert notice["path"] == f"/{centre}" and notice["text_zh"].startswith("退单改派")
    assert notice["replaces_task"] == task_id


def test_a_failed_verification_sends_the_work_back_and_counts_as_rework(pipeline: Pipeline):
    up = pipeline.upload(GW_A, "E0201", photos=1, description="电线杆上贴满小广告")
    task_id = only_task(pipeline.filed(up))["task_id"]
    dept = only_task(pipeline.report(up))["department"]
    token = pipeline.dept(dept)
    pipeline.do(f"/api/v1/tasks/{task_id}/sign", token, json={})
    pipeline.resolve(task_id, token, photos=1)

    pipeline.do(f"/api/v1/tasks/{task_id}/reject", pipeline.worker(GW_A), json={"reason": "仍有残留广告"})
    task = only_task(pipeline.report(up))
    assert (task["state"], task["reopened"]) == ("in_progress", 1)
    assert steps(pipeline.report(up))[-1] == "返工"

    pipeline.resolve(task_id, token, photos=1)
    pipeline.do(f"/api/v1/tasks/{task_id}/verify", pipeline.worker(GW_A), json={})
    s = pipeline.report(up)
    assert s["status"] == "closed" and only_task(s)["reopened"] == 1


def test_an_approved_extension_moves_the_deadline_and_a_second_one_is_refused(pipeline: Pipeline):
    up = pipeline.upload(GW_A, "E0301", photos=1, description="夜间施工噪声扰民")
    task_id = only_task(pipeline.filed(up))["task_id"]
    dept = only_task(pipeline.report(up))["department"]
    token = pipeline.dept(dept)
    pipeline.do(f"/api/v1/tasks/{task_id}/sign", token, json={})
    before = only_task(pipeline.report(up))["resolve_due"]

    pipeline.do(f"/api/v1/tasks/{task_id}/extension", token,
                json={"days": 2, "reason": "需协调施工单位调整工期"})
    assert only_task(pipeline.report(up))["resolve_due"] == before  # asked, not yet granted
    pipeline.do(f"/api/v1/tasks/{task_id}/extension/decision", pipeline.supervisor,
                json={"approve": True})

    task = only_task(pipeline.report(up))
    planner = bundled_planner()
    assert task["resolve_due"] == iso(planner.add_working_days(parse_ts(before), 2))
    assert task["extensions"] == 1 and steps(pipeline.report(up))[-1] == "批准延期"

    again = pipeline.outcome(pipeline.post(f"/api/v1/tasks/{task_id}/extension", token,
                                           json={"days": 1, "reason": "再次延期"}))
    assert again["status"] == "refused" and again["code"] == "extension_count"
    assert "最多延期1次" in again["reason_zh"] and "at most 1 extension" in again["reason_en"]
    assert only_task(pipeline.report(up))["resolve_due"] == task["resolve_due"]


def test_conflicting_commands_at_once_one_wins_the_other_is_refused(pipeline: Pipeline):
    dept = "county.zhujian"
    first, second = pipeline.dept(dept, 0), pipeline.dept(dept, 1)  # two staff of 住建局
    uploads = [pipeline.upload(GW_A, cat, photos=1) for cat in ("E0501", "E0502", "E0504")]
    tasks = [only_task(pipeline.filed(up))["task_id"] for up in uploads]
    assert all(only_task(pipeline.report(up))["department"] == dept for up in uploads)

    # two staff members sign the same task at the same instant
    path = f"/api/v1/tasks/{tasks[0]}/sign"
    a, b = at_once(lambda: pipeline.post(path, first, key="click-a", json={}),
                   lambda: pipeline.post(path, second, key="click-b", json={}))
    outcomes = [pipeline.outcome(a), pipeline.outcome(b)]
    assert sorted(o["status"] for o in outcomes) == ["accepted", "refused"]
    [refused] = [o for o in outcomes if o["status"] == "refused"]
    assert refused["code"] == "bad_state" and "已签收" in refused["reason_zh"]
    assert refused["task_id"] == tasks[0] and refused["reason_en"]

    # one member double-clicks: two keys are two commands; the same key twice is one
    path = f"/api/v1/tasks/{tasks[1]}/sign"
    a, b, c = at_once(lambda: pipeline.post(path, first, key="dbl-1", json={}),
                      lambda: pipeline.post(path, first, key="dbl-2", json={}),
                      lambda: pipeline.post(path, first, key="dbl-1", json={}))
    assert a["command_id"] == c["command_id"] != b["command_id"]
    assert sorted(pipeline.outcome(x)["status"] for x in (a, b)) == ["accepted", "refused"]

    # sign and send back at once: whichever comes first, the other cannot follow
    sign_path, back_path = f"/api/v1/tasks/{tasks[2]}/sign", f"/api/v1/tasks/{tasks[2]}/send-back"
    sign, back = at_once(
        lambda: pipeline.post(sign_path, first, json={}),
        lambda: pipeline.post(back_path, second,
                              json={"reason": "非本局职责", "reroute_to": "county.chengguan"}))
    sign_o, back_o = pipeline.outcome(sign), pipeline.outcome(back)
    assert sorted([sign_o["status"], back_o["status"]]) == ["accepted", "refused"]
    loser = sign_o if sign_o["status"] == "refused" else back_o
    assert loser["code"] == "bad_state" and chinese(loser["reason_zh"])
    s = pipeline.report_when(uploads[2], "the winner applied", lambda s: s["tasks"][0]["state"]
                             in ("signed", "sent_back"))
    state = sorted(s["tasks"], key=lambda t: t["task_id"])[0]["state"]
    assert state == ("signed" if sign_o["status"] == "accepted" else "sent_back")
    assert ("已退单" if state == "sent_back" else "已签收") in loser["reason_zh"]


def test_the_inbox_filters_by_state_overdue_category_and_grid(pipeline: Pipeline, early):
    dept = "county.yingji"  # 应急管理局: only this test (and `early`) give it work
    token = pipeline.dept(dept)
    a = pipeline.upload(GW_A, "E0803", photos=1, description="沿街商铺消防通道堵塞")
    b = pipeline.upload(GW_B, "E0803", photos=1, description="集镇加油站旁违规储存燃料")
    t_early = only_task(pipeline.report(early))["task_id"]
    t_a, t_b = (only_task(pipeline.filed(up))["task_id"] for up in (a, b))
    assert {only_task(pipeline.report(up))["department"] for up in (early, a, b)} == {dept}
    pipeline.do(f"/api/v1/tasks/{t_b}/sign", token, json={})

    # 燃气管道破裂 must be signed for within 30 working minutes: it is overdue by now
    pipeline.wait("the early task to be overdue",
                  lambda: pipeline.inbox(dept, token, overdue="true") == [t_early], timeout_s=90)
    assert pipeline.inbox(dept, token) == sorted([t_early, t_a, t_b])
    assert pipeline.inbox(dept, token, overdue="false") == sorted([t_a, t_b])
    assert pipeline.inbox(dept, token, state="signed") == [t_b]
    assert pipeline.inbox(dept, token, state="dispatched") == sorted([t_early, t_a])
    assert pipeline.inbox(dept, token, state="signed,dispatched") == sorted([t_early, t_a, t_b])
    assert pipeline.inbox(dept, token, category="E05") == [t_early]
    assert pipeline.inbox(dept, token, category="E0803") == sorted([t_a, t_b])
    assert pipeline.inbox(dept, token, grid=GW_B.grid_code) == [t_b]
    assert pipeline.inbox(dept, token, grid=GW_A.grid_code) == sorted([t_early, t_a])
    assert pipeline.inbox(dept, token, state="dispatched", category="E08",
                          grid=GW_A.grid_code, overdue="false") == [t_a]
    assert pipeline.inbox(dept, pipeline.supervisor, category="E05") == [t_early]
    other = pipeline.http.get(f"/api/v1/departments/{dept}/inbox",
                              headers=pipeline.auth(pipeline.dept(VILLAGE)))
    # another department's inbox is outside the village committee's scope: as if it did not exist
    assert other.status_code == 404 and chinese(other.json()["message_zh"])
    bad = pipeline.http.get(f"/api/v1/departments/{dept}/inbox", params={"state": "lost"},
                            headers=pipeline.auth(token))
    assert bad.status_code == 422 and bad.json()["code"] == "bad_state"
    # and the department heard of it before it ran out: 超时预警 on its webhook
    warned = pipeline.wait("the deadline warning", lambda: pipeline.webhooks.notices(
        kind="deadline_warning", task_id=t_early))
    assert warned[0]["path"] == f"/{dept}" and "签收时限" in warned[0]["text_zh"]


def test_a_supervisor_whistles_departments_up_and_each_is_told_once(pipeline: Pipeline):
    up = pipeline.upload(GW_B, "E0702", photos=1, description="河边养殖场污水直排入河")
    first = only_task(pipeline.filed(up))
    assert first["department"] == "county.huanjing"

    pipeline.do(f"/api/v1/cases/{up.case_id}/whistle", pipeline.supervisor,
                json={"departments": ["county.shuili", "county.huanjing"],
                      "reason": "污染已入河道, 需水利局协同"})

    s = pipeline.report_when(up, "the whistled department's task", lambda s: len(s["tasks"]) == 2)
    new = next(t for t in s["tasks"] if t["task_id"] != first["task_id"])
    assert (new["department"], new["state"]) == ("county.shuili", "dispatched")
    assert steps(s)[-2:] == ["吹哨报到", "派遣"]
    [notice] = pipeline.wait("the whistle-up notice", lambda: pipeline.webhooks.notices(
        kind="whistle", case_id=up.case_id))
    assert (notice["path"], notice["task_id"]) == ("/county.shuili", new["task_id"])
    assert "吹哨报到" in notice["text_zh"] and "水利局协同" in notice["text_zh"]
    # one notice per department called: no second, new-task notice for the same task
    assert pipeline.webhooks.notices(task_id=new["task_id"], kind="new_task") == []
