"""Read helpers over the sink's tables: what a reporter, a department and the dashboard see."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from demo import histories as sample
from gridflow import events as ev
from sinks import queries
from sinks.models import create_schema, make_engine
from sinks.sql import SqlSink

TOPIC = "t.case-events"
T0 = sample.T0


@pytest.fixture
def session(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'read-models.db'}")
    create_schema(engine)
    cases = [
        sample.eventful_lifecycle("AJ1"),
        sample.not_filed("AJ2"),
        open_case("AJ3", signed=False),  # D-CG, sign due T0+2h
        open_case("AJ4", signed=True),  # D-CG, resolve due T0+48h
        open_case("AJ5", signed=True, category="E0301", grid="G2"),
    ]
    SqlSink(engine, "q").apply_batch(sample.interleaved(cases, TOPIC))
    with Session(engine) as s:
        yield s
    engine.dispose()


def open_case(case_id: str, signed: bool, category: str = "E0102", grid: str = "G1"):
    s = sample.Script(case_id)
    s.file(f"{case_id}-R1", category_code=category, grid_code=grid)
    if signed:
        s.do(ev.SIGN_TASK, {"task_id": s.task(1)}, "dept:D-CG", minutes=20)
    return s.events


def test_report_status_tells_the_reporter_where_the_case_stands(session):
    status = queries.report_status(session, "AJ1-R1")
    assert status["case_id"] == "AJ1" and status["status_zh"] == "已结案"
    assert status["rating"] == 5 and status["not_filed"] is None
    assert [t["department"] for t in status["tasks"]] == ["D-CG", "D-ST", "D-SL", "D-HB"]
    assert status["tasks"][1]["state_zh"] == "已退单"
    archived = [p for p in status["photos"] if p["archive_key"]]
    assert {p["role"] for p in archived} == {"before", "after"}
    merged = queries.report_status(session, "AJ1-R2")
    assert merged["merged"] and merged["case_id"] == "AJ1" and merged["distance_m"] == 12.5
    waiting = queries.report_status(session, "AJ3-R1")
    assert (waiting["stage"], waiting["stage_zh"]) == ("dispatched", "已派遣待签收")
    assert waiting["tasks"][0]["sign_due"] == T0 + timedelta(hours=2)
    assert queries.report_status(session, "nope") is None


def test_a_refused_report_shows_why(session):
    status = queries.report_status(session, "AJ2-R1")
    assert status["status"] == "not_filed" and status["status_zh"] == "不予立案"
    assert status["not_filed"]["code"] == "outside_county"
    assert status["not_filed"]["reason_zh"] == "上报位置不在本县任何网格内"
    assert status["tasks"] == []


def test_case_detail_has_every_task_with_its_timeline_and_the_ledger(session):
    detail = queries.case_detail(session, "AJ1")
    assert detail["status"] == "closed" and len(detail["reports"]) == 2
    assert [e["seq"] for e in detail["events"]] == list(range(1, detail["event_count"] + 1))
    t2 = next(t for t in detail["tasks"] if t["task_id"] == "AJ1-T02")
    assert [h["type"] for h in t2["history"]] == [ev.TASK_DISPATCHED, ev.TASK_SENT_BACK]
    assert t2["history"][1]["summary"]["reason"] == "属水利站职责"
    assert detail["refusals"][0]["code"] == "bad_state"
    assert queries.case_detail(session, "nope") is None


def test_department_inbox_filters_by_state_deadline_category_and_grid(session):
    def inbox(**kw):
        return [t["case_id"] for t in queries.department_inbox(session, "D-CG", **kw)]

    early = T0 + timedelta(hours=1)
    assert inbox(now=early) == ["AJ3", "AJ4", "AJ5"]  # open tasks, nearest deadline first
    assert inbox(now=early, overdue=True) == []
    late = T0 + timedelta(hours=3)  # AJ3 missed its sign-for deadline
    assert inbox(now=late, overdue=True) == ["AJ3"]
    assert inbox(now=late, overdue=False) == ["AJ4", "AJ5"]
    assert inbox(now=late, state="dispatched") == ["AJ3"]
    assert inbox(now=late, state=["closed"]) == ["AJ1"]
    assert inbox(now=late, category="E03") == ["AJ5"]
    assert inbox(now=late, grid="G2") == ["AJ5"]
    row = queries.department_inbox(session, "D-CG", state="dispatched", now=late)[0]
    assert row["overdue"] and row["stage"] == "sign" and row["remaining_s"] == -3600
    assert row["state_zh"] == "已派遣" and row["category_name"] == "暴露垃圾"


def test_task_rows_for_metrics_carry_what_the_rates_need(session):
    rows = {r["task_id"]: r for r in queries.task_rows_for_metrics(session)}
    t1 = rows["AJ1-T01"]
    assert t1["department"] == "D-CG" and t1["state"] == "closed" and t1["rating"] == 5
    assert t1["extensions"] == 1 and t1["reopened"] == 2 and not t1["sent_back"]
    assert t1["resolve_due_at"] > t1["dispatched_at"] and t1["closed_at"] is not None
    assert rows["AJ1-T02"]["sent_back"]
    assert len(rows) == 4 + 3


def test_command_outcome_says_accepted_or_refused_with_the_reason(session):
    refused = queries.command_outcome(session, "AJ1-c20")
    assert refused["accepted"] is False and refused["command_type"] == ev.SIGN_TASK
    assert refused["reason_zh"].startswith("任务当前状态为")
    accepted = queries.command_outcome(session, "AJ1-c1")
    assert accepted["accepted"] is True and accepted["event_type"] == ev.CASE_FILED
    assert queries.command_outcome(session, "never-sent") is None
