"""数字城管 indicators: each definition on a small known set, as_of slicing, empty denominators."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from gridflow.core.metrics import (
    INDICATOR_LABELS,
    Indicators,
    TaskRow,
    department_indicators,
    format_rate,
)
from gridflow.events import iso

D0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)  # Monday 09:00 Beijing
AS_OF = D0 + timedelta(days=10)


def day(n: float) -> datetime:
    return D0 + timedelta(days=n)


def row(dept: str = "城管局", state: str = "closed", **kw: object) -> TaskRow:
    base: dict[str, object] = {"dispatched_at": day(0), "resolve_due_at": day(5)}
    base.update(kw)
    return TaskRow(department=dept, state=state, **base)  # type: ignore[arg-type]


CHENGGUAN = [
    # closed on time, rated 5
    row(resolved_at=day(2), closed_at=day(3), rating=5),
    # resolved on time, verified after the deadline: still 按期 (the resolution counts)
    row(resolved_at=day(4), closed_at=day(6), rating=4),
    # closed late, after one extension and one rework
    row(resolved_at=day(7), closed_at=day(8), extended=1, reopened=1, rating=2),
    # open, past its deadline, in progress: overdue and due to close
    row(state="in_progress"),
    # resolved, awaiting verification, past the deadline: due, not overdue
    row(state="resolved", resolved_at=day(6)),
    # open, deadline not yet come: neither due nor overdue
    row(state="signed", resolve_due_at=day(12)),
    # sent back (退单) to another department: off this department's books
    row(state="sent_back", closed_at=day(0.1), sent_back=1),
    # dispatched after as_of: not counted at all
    row(state="dispatched", dispatched_at=day(11)),
]
ZHUJIAN = [
    # closed early, before its deadline came: counts as due to close and on time
    row("住建局", resolved_at=day(1), closed_at=day(1.5), resolve_due_at=day(20)),
    # cancelled by a supervisor
    row("住建局", state="cancelled", closed_at=day(1)),
]


def by_department(lines: list[Indicators]) -> dict[str | None, Indicators]:
    return {line.department: line for line in lines}


def test_counts_and_rates_of_one_department() -> None:
    cg = by_department(department_indicators(CHENGGUAN + ZHUJIAN, AS_OF))["城管局"]
    assert (cg.dispatched, cg.sent_back, cg.cancelled, cg.accepted) == (7, 1, 0, 6)
    assert (cg.closed, cg.open, cg.overdue) == (3, 3, 1)
    assert (cg.due_to_close, cg.closed_on_time) == (5, 2)
    assert (cg.resolved, cg.reworked, cg.extended, cg.rated) == (4, 1, 1, 3)
    assert cg.close_rate == pytest.approx(3 / 6)  # 结案率
    assert cg.on_time_close_rate == pytest.approx(2 / 5)  # 按期结案率
    assert cg.rework_rate == pytest.approx(1 / 4)  # 返工率
    assert cg.extension_rate == pytest.approx(1 / 6)  # 延期率
    assert cg.send_back_rate == pytest.approx(1 / 7)  # 退单率
    assert cg.mean_satisfaction == pytest.approx(11 / 3)


def test_departments_sorted_then_overall() -> None:
    lines = department_indicators(CHENGGUAN + ZHUJIAN, AS_OF)
    assert [line.department for line in lines] == ["住建局", "城管局", None]
    zj, overall = lines[0], lines[-1]
    assert (zj.dispatched, zj.cancelled, zj.accepted, zj.closed) == (2, 1, 1, 1)
    assert (zj.due_to_close, zj.closed_on_time, zj.on_time_close_rate) == (1, 1, 1.0)
    assert overall.dispatched == 9 and overall.accepted == 7 and overall.closed == 4
    assert overall.on_time_close_rate == pytest.approx(3 / 6)


def test_as_of_shows_the_board_of_an_earlier_day() -> None:
    cg = by_department(department_indicators(CHENGGUAN, day(3.5)))["城管局"]
    # Day 3.5: one task closed, nothing due yet; the send-back already happened.
    assert (cg.dispatched, cg.accepted, cg.closed, cg.open, cg.overdue) == (7, 6, 1, 5, 0)
    assert (cg.due_to_close, cg.closed_on_time) == (1, 1)
    assert cg.rated == 3  # ratings without rated_at count whenever present
    rated_later = [row(resolved_at=day(2), closed_at=day(3), rating=5, rated_at=day(4))]
    assert department_indicators(rated_later, day(3.5))[0].mean_satisfaction is None


def test_empty_denominators_are_none_and_show_a_dash() -> None:
    only_sent_back = [row("交通运输局", state="sent_back", closed_at=day(0.1))]
    line = department_indicators(only_sent_back, AS_OF)[0]
    assert line.accepted == 0 and line.send_back_rate == 1.0
    assert line.close_rate is None and line.on_time_close_rate is None
    assert line.rework_rate is None and line.mean_satisfaction is None
    shown = line.display()
    assert shown["结案率"] == "—" and shown["退单率"] == "100.0%" and shown["满意度"] == "—"
    assert department_indicators([], AS_OF) == [Indicators(department=None)]
    assert Indicators(department=None).display()["部门"] == "全部"


def test_every_indicator_has_a_chinese_label() -> None:
    assert [f.name for f in fields(Indicators)] == list(INDICATOR_LABELS)
    assert INDICATOR_LABELS["on_time_close_rate"] == "按期结案率"
    assert format_rate(2 / 3) == "66.7%" and format_rate(None) == "—"


def test_rows_from_dicts_as_the_case_keeps_them() -> None:
    task_state = {  # gridflow.core.case.TaskState as a dict: ISO strings, "" for absent
        "task_id": "AJ1-T01",
        "department": "城管局",
        "state": "resolved",
        "dispatched_at": iso(day(0)),
        "sign_due": iso(day(0.1)),
        "resolve_due": iso(day(5)),
        "verify_due": iso(day(7)),
        "signed_at": iso(day(0.05)),
        "resolved_at": iso(day(4)),
        "closed_at": "",
        "reopened": 0,
        "extensions": 1,
        "pending_extension": None,
        "escalation_level": 0,
        "whistled": False,
    }
    line = department_indicators([task_state], AS_OF)[0]
    assert (line.dispatched, line.resolved, line.extended, line.overdue, line.open) == (
        1,
        1,
        1,
        0,
        1,
    )


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"state": "lost"}, "unknown state"),
        ({"rating": 6}, "rating must be an integer 1-5"),
        ({"department": ""}, "department is required"),
        ({"dispatched_at": "yesterday"}, "not ISO 8601"),
        ({"reopened": -1}, "must be a count"),
    ],
)
def test_malformed_rows_name_the_task_and_the_reason(bad: dict, reason: str) -> None:
    good = {
        "task_id": "AJ9-T01",
        "department": "城管局",
        "state": "closed",
        "dispatched_at": iso(day(0)),
    }
    with pytest.raises(ValueError, match=reason) as info:
        department_indicators([{**good, **bad}], AS_OF)
    assert "AJ9-T01" in str(info.value)
