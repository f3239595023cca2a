"""Deadline book: a day of ticks, restart from the same maps, cancel, escalation, tick cost."""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gridflow import events as ev
from gridflow.core.calendar import load_bundled_calendar
from gridflow.core.case import decide, new_case
from gridflow.core.deadlines import (
    BREACH,
    ESCALATE,
    WARN,
    DeadlineBook,
    DeadlineEntry,
    Due,
    DueItem,
    decode_entry,
    encode_entry,
    plan_deadlines,
)
from gridflow.core.sla import SlaPlanner, load_bundled_policy
from gridflow.events import Message, iso

CST = ZoneInfo("Asia/Shanghai")
CAL = load_bundled_calendar()
POLICY = load_bundled_policy()


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=CST)


def minute_of(bucket_key: str) -> int | None:
    """The minute of a bucket key: "<minute>" (a book from before the shards) or
    "<minute>.<shard>"; None for the cursor."""
    head = bucket_key.split(".")[0]
    return int(head) if head.isdigit() else None


class CountingMap(MutableMapping[str, Any]):
    """A dict that records which keys were read or written, and any full scans."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = dict(data or {})
        self.touched: set[str] = set()
        self.writes: dict[str, int] = {}
        self.log: list[str] = []  # keys written or deleted, in order
        self.scans = 0

    def __getitem__(self, key: str) -> Any:
        self.touched.add(key)
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        json.dumps(value)  # values must be JSON, as in a faust table
        self.touched.add(key)
        self.writes[key] = self.writes.get(key, 0) + 1
        self.log.append(key)
        self.data[key] = value

    def __delitem__(self, key: str) -> None:
        self.touched.add(key)
        self.log.append(key)
        del self.data[key]

    def __iter__(self) -> Iterator[str]:
        self.scans += 1
        return iter(self.data)

    def __len__(self) -> int:
        self.scans += 1
        return len(self.data)


def plan(
    task_id: str,
    start: datetime,
    stage: str = "sign",
    code: str = "E0101",
    severity: int = 1,
    **kw: Any,
) -> DeadlineEntry:
    return plan_deadlines(
        case_id=f"C-{task_id}",
        task_id=task_id,
        stage=stage,
        start=start,
        policy=POLICY,
        calendar=CAL,
        category_code=code,
        severity=severity,
        **kw,
    )


def tick(
    book: DeadlineBook, start: datetime, end: datetime, step: timedelta = timedelta(minutes=1)
) -> list[tuple[datetime, DueItem]]:
    fired: list[tuple[datetime, DueItem]] = []
    now = start
    while now <= end:
        fired.extend((now, item) for item in book.pop_due(now))
        now += step
    return fired


# --- planning -------------------------------------------------------------------------


def test_plan_deadlines_from_policy_and_calendar() -> None:
    entry = plan("T1", local(2026, 9, 30, 9, 0), stage="resolve")  # E01: 3 working days
    assert entry.key == "T1#resolve" and entry.case_id == "C-T1"
    assert entry.due_at.astimezone(CST) == local(2026, 10, 10, 9, 0)  # 国庆, then 调休 Saturday
    assert [(d.kind, d.fraction) for d in entry.dues] == [(WARN, 0.5), (WARN, 0.8), (BREACH, None)]
    assert entry.dues[0].at.astimezone(CST) == local(2026, 10, 8, 14, 30)
    buckets = tuple(int(d.at.timestamp() // 60) for d in entry.dues)
    assert decode_entry(entry.key, encode_entry(entry, buckets, 60), 60) == (entry, buckets)


def test_plan_with_a_given_due_and_not_before_skips_stale_warnings() -> None:
    start, due = local(2026, 11, 23, 9, 0), local(2026, 11, 24, 9, 0)
    entry = plan("T1", start, stage="resolve", due_at=due, not_before=local(2026, 11, 23, 15, 0))
    assert [(d.kind, d.fraction) for d in entry.dues] == [(WARN, 0.8), (BREACH, None)]
    assert entry.due_at == due.astimezone(UTC)


# --- a day of ticks -------------------------------------------------------------------------


def seeded_book(
    entries: MutableMapping[str, Any] | None = None, buckets: MutableMapping[str, Any] | None = None
) -> tuple[DeadlineBook, list]:
    book = DeadlineBook(entries, buckets, policy=POLICY, calendar=CAL)
    planned = []
    t0 = local(2026, 11, 23, 8, 0)
    for i in range(120):  # a task every 7 minutes over ~14 hours, sign and resolve clocks
        start = t0 + timedelta(minutes=7 * i)
        code = ["E0101", "E0102", "E0501", "P0101"][i % 4]
        for stage in ("sign", "resolve"):
            planned.append(book.upsert(plan(f"T{i:03d}", start, stage=stage, code=code)))
    return book, planned


def test_one_day_of_ticks_fires_each_due_once_on_time_and_in_order() -> None:
    book, planned = seeded_book()
    day_start, day_end = local(2026, 11, 23, 8, 0), local(2026, 11, 24, 8, 0)
    fired = tick(book, day_start, day_end)
    ids = [item.id for _, item in fired]
    assert len(ids) == len(set(ids))
    for at, item in fired:
        assert item.fire_at <= at < item.fire_at + timedelta(minutes=1)
    planned_in_day = {
        (e.task_id, e.stage, d.kind, d.fraction) for e in planned for d in e.dues if d.at <= day_end
    }
    fired_plain = {(i.task_id, i.stage, i.kind, i.fraction) for _, i in fired if i.kind != ESCALATE}
    assert fired_plain == planned_in_day
    assert any(i.kind == ESCALATE for _, i in fired)  # breached sign clocks went up the ladder
    times = [i.fire_at for _, i in fired]
    per_tick: dict[datetime, list[datetime]] = {}
    for at, item in fired:
        per_tick.setdefault(at, []).append(item.fire_at)
    assert all(v == sorted(v) for v in per_tick.values())
    assert len(times) > 200


def test_restart_from_the_same_maps_loses_nothing_and_fires_nothing_twice() -> None:
    day_start, noon, day_end = (
        local(2026, 11, 23, 8, 0),
        local(2026, 11, 23, 12, 0),
        local(2026, 11, 24, 8, 0),
    )
    reference, _ = seeded_book()
    expected = [i.id for _, i in tick(reference, day_start, day_end)]

    entries: dict[str, Any] = {}
    buckets: dict[str, Any] = {}
    first, planned = seeded_book(entries, buckets)
    before = [i.id for _, i in tick(first, day_start, noon)]
    # The worker dies; a new one restores the tables (JSON, as from the changelog).
    entries2, buckets2 = json.loads(json.dumps(entries)), json.loads(json.dumps(buckets))
    second = DeadlineBook(entries2, buckets2, policy=POLICY, calendar=CAL)
    assert second.pop_due(noon) == []  # the same tick again: nothing twice
    for entry in planned:  # the source events are redelivered: re-planning changes nothing
        second.upsert(entry)
    after = [i.id for _, i in tick(second, noon + timedelta(minutes=1), day_end)]
    assert before + after == expected


def test_cancel_stops_firing_and_is_idempotent() -> None:
    book = DeadlineBook(policy=POLICY, calendar=CAL)
    start = local(2026, 11, 23, 9, 0)
    book.upsert(plan("T1", start, stage="sign"))
    book.upsert(plan("T1", start, stage="resolve"))
    book.upsert(plan("T2", start, stage="sign"))
    assert book.cancel("T1", "sign") == 1  # signed: the sign clock stops
    assert book.cancel("T1", "sign") == 0
    fired = tick(book, start, local(2026, 11, 23, 12, 0))
    assert {(i.task_id, i.stage) for _, i in fired} == {("T2", "sign")}
    assert book.cancel("T1") == 1  # closed: every remaining clock of the task
    later = tick(book, local(2026, 11, 23, 12, 1), local(2026, 12, 31, 0, 0), timedelta(hours=1))
    assert all(i.task_id == "T2" for _, i in later)
    assert book.get("T1", "resolve") is None


# --- the stored form ------------------------------------------------------------------------


def test_stored_entries_are_short_strings_that_round_trip() -> None:
    at = datetime(2026, 11, 23, 1, 0, 10, 123456, tzinfo=UTC)
    entry = DeadlineEntry(
        task_id="AJ20261123-00000042-T01", stage="resolve", case_id="AJ20261123-00000042",
        start=datetime(2026, 11, 22, 23, 0, tzinfo=UTC), due_at=at,
        dues=(Due(WARN, at - timedelta(hours=1), 0.8), Due(ESCALATE, at + timedelta(days=1), level=2)),
        base_level=1, level=1, fired=("w0.5", "b"),
    )
    b = int(at.timestamp() // 60)
    raw = encode_entry(entry, (b - 60, b + 5), 60)  # the second one filed late, under b + 5
    assert json.loads(json.dumps(raw)) == raw and len(raw) < 100
    assert raw.endswith("|w0.5,b|")  # the case id is the task id's prefix: not stored
    assert decode_entry(entry.key, raw, 60) == (entry, (b - 60, b + 5))
    other = DeadlineEntry(task_id="T|1", stage="sign", case_id="C|x", start=at, due_at=at,
                          dues=(Due(BREACH, at),))
    assert decode_entry(other.key, encode_entry(other, (b,), 60), 60) == (other, (b,))
    nameless = DeadlineEntry(task_id="T", stage="sign", case_id="", start=at, due_at=at, dues=())
    assert decode_entry(nameless.key, encode_entry(nameless, (), 60), 60)[0] == nameless


def test_a_task_id_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        DeadlineBook().upsert(plan("T\n1", local(2026, 11, 23, 9, 0)))


def test_the_escalations_one_tick_files_write_each_bucket_once() -> None:
    entries, buckets = CountingMap(), CountingMap()
    book = DeadlineBook(entries, buckets, policy=POLICY, calendar=CAL)
    start = local(2026, 11, 23, 9, 0)
    for i in range(50):  # fifty sign clocks breaching at the same instant
        book.upsert(plan(f"T{i:02d}", start, stage="sign"))
    book.pop_due(start)
    buckets.writes.clear()
    buckets.log.clear()
    breach = local(2026, 11, 23, 11, 0)
    items = book.pop_due(breach)
    assert [i.kind for i in items].count(BREACH) == 50
    escalations = {b for k in entries.data for b in book._decode(k, entries.data[k])[1]}
    assert len(escalations) == 1
    escalation = escalations.pop()
    written = {k: n for k, n in buckets.writes.items() if minute_of(k) == escalation}
    assert len(written) > 1 and set(written.values()) == {1}  # each shard written once
    # the keys reach their new bucket before they leave the one that listed them: their
    # earliest due's (the first warning's); the breach's own minute never listed them
    left = [i for i, k in enumerate(buckets.log) if minute_of(k) not in (None, escalation)]
    first_warning = min(book._bucket_of(d.at) for d in plan("T00", start, stage="sign").dues)
    assert left and {minute_of(buckets.log[i]) for i in left} == {first_warning}
    assert max(i for i, k in enumerate(buckets.log) if minute_of(k) == escalation) < min(left)


# --- what a tick costs ------------------------------------------------------------------------


def test_pop_due_touches_only_due_buckets_and_fired_entries() -> None:
    entries, buckets = CountingMap(), CountingMap()
    book = DeadlineBook(entries, buckets, policy=POLICY, calendar=CAL)
    t0 = local(2026, 11, 2, 8, 30)
    for i in range(600):  # six hundred open tasks over a week
        book.upsert(plan(f"T{i:04d}", t0 + timedelta(minutes=17 * i), stage="sign"))
    book.pop_due(local(2026, 11, 2, 8, 29))
    now = local(2026, 11, 2, 12, 0)
    entries.touched.clear()
    buckets.touched.clear()
    items = book.pop_due(now)
    assert items, "something is due by noon"
    fired_keys = {f"{i.task_id}#{i.stage}" for i in items}
    assert entries.touched == fired_keys
    lo, hi = int(local(2026, 11, 2, 8, 29).timestamp() // 60), int(now.timestamp() // 60)
    # Firing a breach files the next escalation: that bucket is written too, nothing else.
    scheduled = {b for k in fired_keys for b in book._decode(k, entries.data[k])[1]}
    outside = {m for k in buckets.touched - {"~cursor"} if not lo <= (m := minute_of(k) or 0) <= hi}
    assert outside <= scheduled
    assert entries.scans == 0 and buckets.scans == 0
    # The next tick a second later reads one bucket and the cursor only.
    entries.touched.clear()
    buckets.touched.clear()
    assert book.pop_due(now + timedelta(seconds=1)) == []
    assert entries.touched == set()
    assert {minute_of(k) for k in buckets.touched - {"~cursor"}} <= {hi}


def test_a_tick_from_the_past_reads_nothing_and_keeps_the_cursor() -> None:
    entries, buckets = CountingMap(), CountingMap()
    book = DeadlineBook(entries, buckets, policy=POLICY, calendar=CAL)
    t0 = local(2026, 11, 2, 8, 30)
    book.upsert(plan("T1", t0, stage="sign"))
    later = t0 + timedelta(days=30)
    book.pop_due(later)
    cursor = dict(buckets.data["~cursor"])
    entries.touched.clear()
    buckets.touched.clear()
    assert book.pop_due(t0) == []  # e.g. a second worker's clock a little behind
    assert buckets.data["~cursor"] == cursor
    assert entries.touched == set() and buckets.touched == {"~cursor"}


# --- escalation one level at a time ---------------------------------------------------------


def breached_book(base_level: int = 0) -> tuple[DeadlineBook, DeadlineEntry]:
    book = DeadlineBook(policy=POLICY, calendar=CAL)
    entry = book.upsert(plan("T1", local(2026, 9, 29, 15, 0), stage="sign", base_level=base_level))
    return book, entry


def test_breach_then_escalation_up_the_ladder_in_working_hours() -> None:
    book, entry = breached_book()
    fired = [
        i
        for _, i in tick(
            book, local(2026, 9, 29, 15, 0), local(2026, 10, 20, 0, 0), timedelta(minutes=5)
        )
    ]
    kinds = [(i.kind, i.level, i.level_code) for i in fired]
    assert kinds == [
        (WARN, None, ""),
        (WARN, None, ""),
        (BREACH, 0, "grid"),
        (ESCALATE, 1, "village"),
        (ESCALATE, 2, "township"),
        (ESCALATE, 3, "county_department"),
        (ESCALATE, 4, "county_leadership"),
    ]
    breach, village = fired[2], fired[3]
    assert breach.fire_at.astimezone(CST) == local(2026, 9, 29, 17, 0)  # 2 working hours
    # grid waits 3.5 working hours: 17:00-17:30 on 9-29, then 08:30-11:30 on 9-30.
    assert village.fire_at.astimezone(CST) == local(2026, 9, 30, 11, 30)
    # township waits 14 h after village's 7 h, across 国庆.
    assert fired[4].fire_at.astimezone(CST) == local(2026, 10, 8, 11, 30)
    assert all(i.due_at == entry.due_at for i in fired)
    data = fired[3].command_data()
    assert data["level"] == 1 and data["level_name"] == "村(社区)" and data["stage"] == "sign"
    assert data["due_at"] == iso(entry.due_at) and data["notify"]
    assert fired[3].command_type == ev.ESCALATE_TASK


def test_county_department_task_starts_high_and_stops_at_the_top() -> None:
    book, _ = breached_book(base_level=POLICY.start_level("county"))
    fired = [
        i
        for _, i in tick(
            book, local(2026, 9, 29, 15, 0), local(2026, 10, 30, 0, 0), timedelta(minutes=30)
        )
    ]
    assert [(i.kind, i.level) for i in fired if i.kind != WARN] == [(BREACH, 3), (ESCALATE, 4)]


def test_catch_up_after_downtime_climbs_one_level_per_tick() -> None:
    book, _ = breached_book()
    book.pop_due(local(2026, 9, 29, 15, 0))
    back = local(2026, 10, 30, 0, 0)  # the worker was down for a month
    rounds = [[i.kind for i in book.pop_due(back + timedelta(minutes=n))] for n in range(6)]
    assert rounds == [[WARN, WARN, BREACH], [ESCALATE], [ESCALATE], [ESCALATE], [ESCALATE], []]


def test_peek_shows_what_pop_will_fire_and_changes_nothing() -> None:
    book, _ = breached_book()
    book.pop_due(local(2026, 9, 29, 15, 0))
    now = local(2026, 9, 29, 17, 0)
    snapshot = json.dumps([book.entries, book.buckets], sort_keys=True)
    peeked = book.peek_due(now)
    assert json.dumps([book.entries, book.buckets], sort_keys=True) == snapshot
    assert [i.kind for i in peeked] == [WARN, WARN, BREACH]
    assert book.pop_due(now) == peeked
    assert book.peek_due(now) == []


def test_progress_restarts_the_wait_at_the_current_level() -> None:
    book, _ = breached_book()
    tick(book, local(2026, 9, 29, 15, 0), local(2026, 9, 29, 17, 0))  # breached at 17:00
    assert book.get("T1", "sign").level == 0
    book.note_progress("T1", "sign", local(2026, 9, 30, 10, 0))
    nxt = [d for d in book.get("T1", "sign").dues if d.kind == ESCALATE]
    assert [(d.level, d.at.astimezone(CST)) for d in nxt] == [(1, local(2026, 9, 30, 15, 30))]
    items = tick(book, local(2026, 9, 29, 17, 1), local(2026, 9, 30, 15, 30))
    assert [(i.kind, i.level) for _, i in items] == [(ESCALATE, 1)]


# --- extension, idempotence, late planning --------------------------------------------------


def test_reschedule_moves_the_deadline_and_is_idempotent() -> None:
    book = DeadlineBook(policy=POLICY, calendar=CAL)
    start = local(2026, 11, 23, 9, 0)
    entry = book.upsert(plan("T1", start, stage="resolve", code="E0102"))  # 1 working day
    decided = local(2026, 11, 24, 8, 45)  # before the 09:00 deadline, after both warnings
    first = [i for _, i in tick(book, start, decided)]
    assert [i.fraction for i in first] == [0.5, 0.8]
    new_due = CAL.add_working_days(entry.due_at, 0.5)  # ExtensionGranted: +0.5 working day
    assert new_due.astimezone(CST) == local(2026, 11, 24, 14, 30)
    deadline = POLICY.deadline_until("E0102", "resolve", start, new_due, CAL)
    book.reschedule("T1", "resolve", deadline, not_before=decided)
    snapshot = json.dumps([book.entries, book.buckets], sort_keys=True)
    book.reschedule("T1", "resolve", deadline, not_before=decided)
    assert json.dumps([book.entries, book.buckets], sort_keys=True) == snapshot
    later = [i for _, i in tick(book, decided, local(2026, 11, 27, 0, 0), timedelta(minutes=10))]
    # The new 50% mark (11-23 16:15) lies before the decision: only 80% (11-24 10:24) warns.
    assert [(i.kind, i.fraction) for i in later if i.kind != ESCALATE] == [
        (WARN, 0.8),
        (BREACH, None),
    ]
    assert all(i.due_at == new_due for i in later)
    assert later[-1].kind == ESCALATE
    assert book.reschedule("T9", "resolve", deadline) is None


def test_upsert_twice_changes_nothing_and_ids_are_deterministic() -> None:
    a, b = DeadlineBook(), DeadlineBook()
    start = local(2026, 11, 23, 9, 0)
    a.upsert(plan("T1", start))
    snapshot = json.dumps([a.entries, a.buckets], sort_keys=True)
    a.upsert(plan("T1", start))
    assert json.dumps([a.entries, a.buckets], sort_keys=True) == snapshot
    b.upsert(plan("T1", start))
    end = local(2026, 11, 23, 18, 0)
    assert [i.id for _, i in tick(a, start, end)] == [i.id for _, i in tick(b, start, end)]


def test_a_deadline_planned_after_it_passed_fires_on_the_next_tick() -> None:
    book = DeadlineBook()
    book.pop_due(local(2026, 11, 23, 12, 0))
    book.upsert(plan("T1", local(2026, 11, 23, 9, 0)))  # sign due 11:00, planned at 12:00
    items = book.pop_due(local(2026, 11, 23, 12, 0))
    assert [i.kind for i in items] == [WARN, WARN, BREACH]
    assert items[-1].fire_at.astimezone(CST) == local(2026, 11, 23, 11, 0)


def test_entries_planned_before_the_first_tick_all_fire() -> None:
    book = DeadlineBook()
    book.upsert(plan("T1", local(2026, 11, 24, 9, 0)))  # tomorrow
    book.upsert(plan("T2", local(2026, 11, 23, 9, 0)))  # today, filed later
    book.pop_due(local(2026, 11, 23, 8, 0))
    book.upsert(plan("T3", local(2026, 11, 23, 9, 30)))  # after the first tick, still future
    fired = tick(book, local(2026, 11, 23, 8, 1), local(2026, 11, 24, 12, 0))
    assert {i.task_id for _, i in fired if i.kind == BREACH} == {"T1", "T2", "T3"}
    assert all(i.fire_at <= at < i.fire_at + timedelta(minutes=1) for at, i in fired)


def test_namespaces_keep_partition_books_apart() -> None:
    entries: dict[str, Any] = {}
    buckets: dict[str, Any] = {}
    p0 = DeadlineBook(entries, buckets, namespace="p0:")
    p1 = DeadlineBook(entries, buckets, namespace="p1:")
    p0.upsert(plan("A", local(2026, 11, 23, 9, 0)))
    p1.upsert(plan("B", local(2026, 11, 23, 9, 0)))
    end = local(2026, 11, 23, 18, 0)
    assert {i.task_id for _, i in tick(p0, local(2026, 11, 23, 9, 0), end)} == {"A"}
    assert {i.task_id for _, i in tick(p1, local(2026, 11, 23, 9, 0), end)} == {"B"}


def test_book_needs_policy_and_calendar_together() -> None:
    with pytest.raises(ValueError):
        DeadlineBook(policy=POLICY)


# --- the case aggregate accepts what the book fires -------------------------------------------


def test_fired_items_become_commands_the_case_accepts() -> None:
    planner = SlaPlanner(POLICY, CAL)
    at = local(2026, 11, 23, 9, 0).astimezone(UTC)
    filing = Message(
        id="c1",
        type=ev.FILE_REPORT,
        case_id="AJ1",
        at=iso(at),
        actor="worker:W1@G1",
        data={
            "report": {"report_id": "r1", "reporter": "worker:W1@G1"},
            "category_code": "E0102",
            "severity": 1,
            "grid_code": "G1",
            "departments": ["county.chengguan"],
        },
    )
    decision = decide(new_case("AJ1"), filing, planner)
    dispatched = next(e for e in decision.events if e.type == ev.TASK_DISPATCHED).data
    book = DeadlineBook(policy=POLICY, calendar=CAL)
    book.upsert(
        plan_deadlines(
            case_id="AJ1",
            task_id=dispatched["task_id"],
            stage="sign",
            start=at,
            due_at=ev.parse_ts(dispatched["sign_due"]),
            policy=POLICY,
            calendar=CAL,
            category_code="E0102",
        )
    )
    state = decision.state
    out = []
    for _, item in tick(book, at, local(2026, 11, 24, 9, 0), timedelta(minutes=5)):
        command = Message(
            id=ev.derived_id(item.id, item.command_type),
            type=item.command_type,
            case_id=item.case_id,
            at=iso(item.fire_at),
            actor="system",
            data=item.command_data(),
        )
        decision = decide(state, command, planner)
        state = decision.state
        out.extend(e.type for e in decision.events)
    assert out[:3] == [ev.DEADLINE_WARNED, ev.DEADLINE_WARNED, ev.DEADLINE_BREACHED]
    assert out[3:] and set(out[3:]) == {ev.TASK_ESCALATED}


# --- minute buckets split in shards ---------------------------------------------------------


def test_filing_a_burst_rewrites_a_shard_not_the_whole_minute() -> None:
    """Four hundred clocks breaching in the same minute: each filing rewrites one shard, so no
    bucket write carries more than a small share of the minute's keys."""
    from gridflow.core.deadlines.book import SHARDS

    sizes: list[int] = []

    class Sizing(CountingMap):
        def __setitem__(self, key: str, value: Any) -> None:
            if minute_of(key) is not None:
                sizes.append(len(value.split("\n")))
            super().__setitem__(key, value)

    buckets = Sizing()
    book = DeadlineBook({}, buckets, policy=POLICY, calendar=CAL)
    start = local(2026, 11, 23, 9, 0)
    for i in range(400):
        book.upsert(plan(f"T{i:03d}", start, stage="sign"))
    # every key is listed under its earliest due's minute (the first warning's), only there
    first = min(book._bucket_of(d.at) for d in plan("T000", start, stage="sign").dues)
    assert {minute_of(k) for k in buckets.data} - {None} == {first}
    parts = [k for k in buckets.data if minute_of(k) == first]
    assert len(parts) == SHARDS
    assert sum(len(buckets.data[k].split("\n")) for k in parts) == 400
    assert max(sizes) <= 3 * 400 // SHARDS  # whole-minute rewrites would reach 400
    items = book.pop_due(local(2026, 11, 23, 11, 0))
    assert sorted(i.task_id for i in items if i.kind == BREACH) == [f"T{i:03d}" for i in range(400)]


def test_a_book_from_before_the_shards_fires_and_cancels_its_unsharded_buckets() -> None:
    """Buckets written before the split ("<minute>" holding every key of the minute) are read
    and drained, a restated clock is not filed twice, and a cancel finds its key there."""
    from gridflow.core.deadlines.codec import decode_entry

    new = DeadlineBook({}, {}, policy=POLICY, calendar=CAL)
    start = local(2026, 11, 23, 9, 0)
    entries = [plan(f"T{i}", start, stage="sign") for i in range(6)]
    for entry in entries:
        new.upsert(entry)
    # The same book as an old worker stored it: each minute's keys in one unsharded value.
    legacy: dict[str, Any] = {}
    for key, value in new.buckets.items():
        minute = minute_of(key)
        if minute is None:
            legacy[key] = value
        else:
            legacy[str(minute)] = "\n".join(filter(None, [legacy.get(str(minute), ""), value]))
    old = DeadlineBook(dict(new.entries), legacy, policy=POLICY, calendar=CAL)
    assert all("." not in k for k in old.buckets)
    old.upsert(entries[0])  # a redelivered event restates a clock: no second filing
    assert all("." not in k for k in old.buckets)
    assert old.cancel("T5", "sign") == 1
    assert not any("T5#sign" in str(v) for v in old.buckets.values())
    breach = local(2026, 11, 23, 11, 0)
    assert sorted((i.task_id, i.kind) for i in old.peek_due(breach)) == sorted(
        (i.task_id, i.kind) for i in old.pop_due(breach))
    fired = [i for i in new.pop_due(breach) if i.task_id != "T5"]
    assert old.pop_due(breach) == []  # popped once
    assert {i.task_id for i in fired} == {f"T{i}" for i in range(5)}
    for key, raw in old.entries.items():  # escalations filed since live in shards
        for b in decode_entry(key, raw, old.bucket_seconds)[1]:
            assert any(key in str(v) for k, v in old.buckets.items() if minute_of(k) == b)


# --- a key listed under its earliest due only -------------------------------------------------


def _list_under_every_due(book: DeadlineBook, task_id: str, stage: str) -> None:
    """Lists a clock's key under the bucket of each of its dues, as books written before the
    key was listed under its earliest due only keep their keys."""
    key = f"{task_id}#{stage}"
    _, filed = book._decode(key, book.entries[key])
    for b in sorted(set(filed)):
        book._bucket_extend(b, [key])


def test_filing_a_clock_writes_its_entry_and_one_shard() -> None:
    entries, buckets = CountingMap(), CountingMap()
    book = DeadlineBook(entries, buckets, policy=POLICY, calendar=CAL)
    start = local(2026, 11, 23, 9, 0)
    book.upsert(plan("T00", start, stage="sign"))  # primes the cursor
    buckets.writes.clear()
    entry = book.upsert(plan("T01", start, stage="sign"))
    assert len({book._bucket_of(d.at) for d in entry.dues}) >= 3  # warnings and breach apart
    assert [minute_of(k) for k in buckets.writes] == [min(book._bucket_of(d.at) for d in entry.dues)]


def test_the_key_moves_on_as_each_due_fires_and_each_fires_once() -> None:
    book = DeadlineBook({}, {}, policy=POLICY, calendar=CAL)
    start = local(2026, 11, 23, 9, 0)
    entry = book.upsert(plan("T1", start, stage="sign"))
    fired: list[tuple[str, float | int | None]] = []
    t = start
    while t < start + timedelta(days=20):
        t += timedelta(minutes=7)
        for item in book.pop_due(t):
            fired.append((item.kind, item.fraction if item.kind == WARN else item.level))
            assert item.fire_at <= t
        listed = [k for k in book.buckets if not k.endswith("cursor")
                  and "T1#sign" in book.buckets[k].split("\n")]
        assert len(listed) <= 1  # never under more than one minute
    warns = [f for f in fired if f[0] == WARN]
    assert sorted(w[1] for w in warns) == sorted(d.fraction for d in entry.dues if d.kind == WARN)
    assert [f[0] for f in fired].count(BREACH) == 1
    levels = [f[1] for f in fired if f[0] == ESCALATE]
    assert levels and levels == sorted(set(levels))  # the ladder, one level at a time, once each


@pytest.mark.parametrize("seed", range(6))
def test_a_book_listing_keys_under_every_due_fires_exactly_as_one_listing_the_earliest(
        seed: int) -> None:
    """The same clocks, ticked at the same (random, sometimes days apart) instants, with some
    clocks cancelled, restated or progressed in between: a book whose keys are listed under
    every due's bucket (an older book) and one listing each under its earliest due return the
    same items at the same ticks, and the older one's extra listings drain as they fire."""
    import random

    rnd = random.Random(seed)
    new = DeadlineBook({}, {}, policy=POLICY, calendar=CAL)
    old = DeadlineBook({}, {}, policy=POLICY, calendar=CAL)
    start = local(2026, 11, 23, 8, 30)
    clocks = [(f"T{i:02d}", rnd.choice(["sign", "resolve"]),
               start + timedelta(minutes=rnd.randrange(0, 600)), rnd.choice(["E0101", "E0301"]))
              for i in range(40)]
    for task_id, stage, at, code in clocks[:30]:
        for book in (new, old):
            book.upsert(plan(task_id, at, stage=stage, code=code))
        _list_under_every_due(old, task_id, stage)
    t = start
    for step in range(60):
        t += timedelta(minutes=rnd.choice([1, 5, 30, 90, 600, 3000]))
        a, b = new.peek_due(t), old.peek_due(t)
        got_new, got_old = new.pop_due(t), old.pop_due(t)
        assert [i.id for i in got_new] == [i.id for i in a]
        assert [i.id for i in got_old] == [i.id for i in b]
        assert [i.id for i in got_new] == [i.id for i in got_old], (seed, step)
        if step == 10:  # later clocks, and changes to some of the first ones
            for task_id, stage, at, code in clocks[30:]:
                for book in (new, old):
                    book.upsert(plan(task_id, max(at, t), stage=stage, code=code))
            for task_id, stage, _, _ in clocks[:5]:
                assert new.cancel(task_id, stage) == old.cancel(task_id, stage)
            for task_id, stage, _, _ in clocks[5:10]:
                new.note_progress(task_id, stage, t)
                old.note_progress(task_id, stage, t)
    assert new.entries == old.entries
    # every extra listing of the old book is gone once its due fired or its clock stopped
    for book in (new, old):
        for k, v in book.buckets.items():
            if k.endswith("cursor"):
                continue
            for key in v.split("\n"):
                raw = book.entries.get(key)
                assert raw is not None, (k, key)
                _, filed = book._decode(key, raw)
                assert filed and min(filed) == minute_of(k), (k, key, filed)
