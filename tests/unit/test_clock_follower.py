"""The case processor files the stage clocks of the events it decides in the same step
(processors.deadlines.ClockFollower, issue 16 step 4): the book it builds from the decided
objects is the one the deadline agent builds from the same events read back from the log, and
the deadline agent skips exactly the events marked as filed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.load import County
from gridflow import events as ev
from gridflow.core.calendar import UNKNOWN_YEARS_WEEKDAYS, load_bundled_calendar
from gridflow.core.deadlines import DeadlineBook, follow_event
from gridflow.core.sla import SlaPlanner, load_bundled_policy
from gridflow.events import Message, decode_message, iso
from processors import steps
from processors.deadlines import FOLLOWED_HEADER, FOLLOWED_HEADERS, ClockFollower, _followed

PHOTO = {"bucket": "in", "key": "k1", "size": 10, "sha256": "a" * 64, "content_type": "image/jpeg"}
T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)
POLICY = load_bundled_policy()
CALENDAR = replace(load_bundled_calendar(), unknown_years=UNKNOWN_YEARS_WEEKDAYS)
PLANNER = SlaPlanner(POLICY, CALENDAR)
REF = County().ref
LEVELS = {code: dept.level for code, dept in REF.departments.items()}


def _file(case_id: str, grid: Any) -> Message:
    dept = sorted(REF.departments)[0]
    return Message(
        id=f"file-{case_id}", type=ev.FILE_REPORT, case_id=case_id, at=iso(T0),
        actor="worker:GW0001@" + grid.code,
        data={"report": {"report_id": f"rep-{case_id}", "reporter": "worker:GW0001@" + grid.code,
                         "photos": []},
              "category_code": "E0301", "severity": 1, "grid_code": grid.code,
              "village_code": grid.village_code, "township_code": grid.township_code,
              "departments": [dept]})


def _story(n: int) -> list[tuple[str, Message]]:
    """Cases filed, then signed, progressed, resolved, reopened, verified: each a command."""
    grids = sorted(REF.grids.values(), key=lambda g: g.code)
    cmds: list[tuple[str, Message]] = []
    for i in range(n):
        cmds.append((f"AJ-F{i:03d}", _file(f"AJ-F{i:03d}", grids[i % len(grids)])))
    return cmds


def _task_commands(case_id: str, task_id: str, dept: str, i: int) -> list[Message]:
    at = T0 + timedelta(minutes=10 + i)
    actor = f"dept:{dept}"
    out = [Message(id=f"sign-{case_id}", type=ev.SIGN_TASK, case_id=case_id, at=iso(at),
                   actor=actor, data={"task_id": task_id})]
    if i % 4 == 1:
        out.append(Message(id=f"progress-{case_id}", type=ev.NOTE_PROGRESS, case_id=case_id,
                           at=iso(at + timedelta(hours=1)), actor=actor,
                           data={"task_id": task_id, "note": "处置中"}))
    if i % 2:
        out.append(Message(id=f"resolve-{case_id}", type=ev.RESOLVE_TASK, case_id=case_id,
                           at=iso(at + timedelta(hours=2)), actor=actor,
                           data={"task_id": task_id, "note": "已处理", "photos": [PHOTO]}))
    return out


def test_the_book_filed_inline_is_the_book_followed_from_the_log() -> None:
    inline_entries: dict[str, Any] = {}
    inline_buckets: dict[str, Any] = {}
    follower = ClockFollower(inline_entries, inline_buckets, POLICY, CALENDAR, LEVELS)
    log_book = DeadlineBook({}, {}, policy=POLICY, calendar=CALENDAR, namespace="p2:")
    states: dict[str, Any] = {}
    followed_types: set[str] = set()

    def run(case_id: str, cmd: Message) -> list[Message]:
        out, state = steps.case_step(cmd.encode(), states.get(case_id), PLANNER, T0,
                                     "t.case-commands", case_id, 2, 0)
        if state is not None:
            states[case_id] = state
        follower.follow(2, out.events)
        raws = [value for suffix, _, value in out.sends if suffix == "case-events"]
        assert [e.encode() for e in out.events] == raws  # the objects are the bytes sent
        for raw in raws:  # what the deadline agent reads back from the log
            follow_event(log_book, decode_message(raw, ev.EVENT_TYPES), POLICY, CALENDAR, LEVELS)
        followed_types.update(e.type for e in out.events)
        return out.events

    for i, (case_id, cmd) in enumerate(_story(24)):
        events = run(case_id, cmd)
        dispatched = [e for e in events if e.type == ev.TASK_DISPATCHED]
        assert dispatched, [e.type for e in events]
        for e in dispatched:
            for follow_up in _task_commands(case_id, e.data["task_id"], e.data["department"], i):
                run(case_id, follow_up)

    assert {ev.TASK_DISPATCHED, ev.TASK_SIGNED, ev.TASK_PROGRESS_NOTED,
            ev.TASK_RESOLVED} <= followed_types
    assert inline_entries and inline_buckets
    assert inline_entries == log_book.entries
    assert inline_buckets == log_book.buckets
    # and the same items fall due from either
    inline_book = follower.book(2)
    later = T0 + timedelta(days=40)
    assert [d.id for d in inline_book.peek_due(later)] == [d.id for d in log_book.peek_due(later)]


def test_nothing_is_filed_for_events_no_clock_follows() -> None:
    entries: dict[str, Any] = {}
    buckets: dict[str, Any] = {}
    follower = ClockFollower(entries, buckets, POLICY, CALENDAR, LEVELS)
    refused = Message(id="x", type=ev.COMMAND_REFUSED, case_id="AJ-X", at=iso(T0),
                      actor="system", data={"command_id": "c", "command_type": "SignTask",
                                            "code": "no_task", "reason_zh": "无", "reason_en": "no"})
    follower.follow(0, [refused])
    assert entries == {} and buckets == {}


def test_the_mark_is_read_off_the_headers_in_any_shape() -> None:
    assert _followed(FOLLOWED_HEADERS)
    assert _followed([("traceparent", b"00-abc"), (FOLLOWED_HEADER, b"1")])
    assert _followed({FOLLOWED_HEADER: b"1"})
    for none in (None, [], {}, [("traceparent", b"x")], {"other": b"1"}):
        assert not _followed(none)
