"""What the demo's simulated county supervisor does: whistle several departments up to a big
case (吹哨报到), a few times a run, and how the demo's summary shows it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from demo import run as demo
from gridflow.core.refdata import load_reference_data

REF = load_reference_data()
GRID = REF.grids["421099101201001"]  # 石门村一组网格, 青石镇


def case(**kw: Any) -> dict[str, Any]:
    row = {"case_id": "AJ20261116-AAAAAAAA", "status": "open", "severity": 1,
           "category_code": "E0102", "grid_code": GRID.code, "whistled_at": None}
    row.update(kw)
    return row


def task(department: str = "county.chengguan", state: str = "dispatched",
         escalation_level: int = 0) -> dict[str, Any]:
    return {"task_id": "AJ20261116-AAAAAAAA-T01", "department": department, "state": state,
            "escalation_level": escalation_level}


def test_an_escalated_case_is_whistled_up_to_the_other_departments_of_its_class() -> None:
    w = demo.whistle_for(case(), [task(escalation_level=1)], REF)
    assert w is not None and w.case_id == "AJ20261116-AAAAAAAA"
    # 市容环境 (E01): 城管局 already has the task; 生态环境局 and the township's 综合执法办 are called.
    assert w.departments == ("county.huanjing", f"{GRID.township_code}.zhifa")
    assert "吹哨" in w.reason and "生态环境局" in w.reason


def test_a_serious_case_is_whistled_up_before_any_deadline_passes() -> None:
    w = demo.whistle_for(case(severity=2), [task()], REF)
    assert w is not None and len(w.departments) >= 2 and "案情重大" in w.reason


def test_ordinary_finished_or_already_whistled_cases_are_left_alone() -> None:
    escalated = [task(escalation_level=2)]
    assert demo.whistle_for(case(), [task()], REF) is None  # 一般, on time
    assert demo.whistle_for(case(status="closed"), escalated, REF) is None
    assert demo.whistle_for(case(whistled_at=datetime.now(UTC)), escalated, REF) is None
    # an escalated task that is finished no longer counts
    assert demo.whistle_for(case(), [task(state="verified", escalation_level=2)], REF) is None


def test_one_department_to_call_is_no_whistle_up() -> None:
    # 宣传广告 (E02) is 城管局's alone: only the 综合执法办 would be left to call.
    assert demo.whistle_for(case(category_code="E0201"), [task(escalation_level=1)], REF) is None


class FakeSessions:
    """Stands in for accounts.sample.SampleSessions: a made-up token per person."""

    def token(self, login: str) -> str:
        return f"gfs_test-{login}"


class FakeHttp:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []

    def post(self, path: str, headers: dict[str, str], **kw: Any) -> Any:
        self.posts.append((path, {"headers": headers, **kw}))
        return type("R", (), {"status_code": 202})()


def test_the_supervisor_whistles_through_the_api_once_per_case_and_a_few_per_run() -> None:
    cast = demo.Cast.load(REF, FakeSessions())
    director = demo.Director("http://127.0.0.1:9", cast, None, lambda: datetime.now(UTC), 7)
    director.http = FakeHttp()  # type: ignore[assignment]
    row = {"case_status": "open", "severity": 1, "case_category": "E0102",
           "case_grid": GRID.code, "whistled_at": None, **task(escalation_level=1)}
    for i in range(demo.MAX_WHISTLES + 2):
        director._supervise(f"AJ20261116-AAAAAAA{i}", [row])
        director._supervise(f"AJ20261116-AAAAAAA{i}", [row])  # the next step: not again
    posts = director.http.posts
    assert len(posts) == demo.MAX_WHISTLES == director.actions["吹哨"]
    path, kw = posts[0]
    assert path == "/api/v1/cases/AJ20261116-AAAAAAA0/whistle"
    assert kw["headers"] == {"Authorization": f"Bearer {cast.supervisor_token}"}
    assert kw["json"]["departments"] == ["county.huanjing", f"{GRID.township_code}.zhifa"]


def test_the_summary_names_the_departments_called_and_their_tasks() -> None:
    whistle = {
        "case_id": "AJ1", "at": datetime(2026, 11, 17, 6, 0, tzinfo=UTC),
        "category_name": "暴露垃圾", "grid_code": GRID.code,
        "data": {"reason": "任务超时升级仍未处置, 吹哨召集",
                 "tasks": [{"task_id": "AJ1-T02", "department": "county.huanjing"},
                           {"task_id": "AJ1-T03", "department": "421099101.zhifa"}]},
    }
    text = "\n".join(demo.render_whistles([whistle], {"AJ1-T02": "signed"}, REF))
    assert "吹哨报到 / whistle-ups: 1" in text
    assert "石门村一组网格 421099101201001" in text and "11-17 14:00" in text
    assert "十堰市生态环境局青山分局 (county.huanjing)  任务 AJ1-T02: 已签收" in text
    assert "青石镇综合执法办 (421099101.zhifa)  任务 AJ1-T03" in text


def test_a_department_whistled_up_signs_the_task_instead_of_sending_it_back() -> None:
    task_id = next(  # a task whose script sends it back
        t for t in (f"AJ20261116-AAAAAAAA-T{i:02d}" for i in range(100))
        if demo.TaskScript.for_task(t, 7).send_back
        and demo.TaskScript.for_task(t, 7).sign_after_h is not None
    )
    row = {"task_id": task_id, "case_id": "AJ20261116-AAAAAAAA", "state": "dispatched",
           "department": "county.huanjing", "dispatched_at": datetime(2026, 11, 16, tzinfo=UTC),
           "replaces_task": None, "case_grid": GRID.code, "case_status": "open", "rating": None,
           "reporter": "worker:GW0001@" + GRID.code}
    done = []
    for reason in ("routing", "whistle"):
        director = demo.Director("http://127.0.0.1:9", demo.Cast.load(REF, FakeSessions()), None,
                                 lambda: datetime.now(UTC), 7)
        director.http = FakeHttp()  # type: ignore[assignment]
        director._act({**row, "dispatch_reason": reason}, datetime(2026, 11, 17, tzinfo=UTC))
        done += [path.rsplit("/", 1)[1] for path, _ in director.http.posts]
    assert done == ["send-back", "sign"]
