"""What the phone app shows of a report's case and of a task's deadline (mobile.worker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gridflow import events as ev
from mobile.worker import due_state, follow

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def step(kind: str, at: str) -> dict[str, str]:
    return {"type": kind, "at": at}


def test_the_steps_reached_and_the_state_they_make() -> None:
    view = {"status": "open", "timeline": [step(ev.CASE_FILED, "t1"), step(ev.TASK_DISPATCHED, "t2"),
                                           step(ev.TASK_DISPATCHED, "t3")]}
    out = follow(view)
    assert out["state"] == "已派遣"
    assert [(s["step"], s["done"], s["at"]) for s in out["steps"][:3]] == [
        ("立案", True, "t1"), ("派遣", True, "t2"), ("签收", False, None)]


def test_not_filed_and_merged_reports_say_so() -> None:
    refused = follow({"status": "not_filed", "timeline": [step(ev.CASE_NOT_FILED, "t1")],
                      "not_filed": {"reason_zh": "上报位置不在本县任何网格内"}})
    assert refused == {"state": "不予立案", "steps": [], "reason": "上报位置不在本县任何网格内"}
    merged = follow({"status": "open", "merged": True, "case_id": "AJ1",
                     "timeline": [step(ev.CASE_FILED, "t1"), step(ev.TASK_DISPATCHED, "t2")]})
    assert merged["state"] == "已并案 · 已派遣" and merged["merged_into"] == "AJ1"


def test_a_failed_verification_is_rework_until_resolved_again() -> None:
    timeline = [step(ev.CASE_FILED, "1"), step(ev.TASK_DISPATCHED, "2"), step(ev.TASK_SIGNED, "3"),
                step(ev.TASK_RESOLVED, "4"), step(ev.TASK_REOPENED, "5")]
    assert follow({"status": "open", "timeline": timeline})["state"] == "返工中"
    again = [*timeline, step(ev.TASK_RESOLVED, "6")]
    assert follow({"status": "open", "timeline": again})["state"] == "已办结"


def test_deadlines_near_and_past() -> None:
    assert due_state(None, NOW) == ""
    assert due_state(NOW - timedelta(minutes=1), NOW) == "late"
    assert due_state(NOW + timedelta(hours=5), NOW) == "near"
    assert due_state(NOW + timedelta(days=3), NOW) == "ok"
