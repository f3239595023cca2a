"""Finished cases leave the case table after a period (gridflow.core.eviction): found through an
index by hour, never by a scan; a later command for one is refused on its own chain."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from gridflow import events as ev
from gridflow.core.case import decide, new_case
from gridflow.core.eviction import (
    EVICTED_CODE,
    EvictionIndex,
    evict_due,
    filed_on,
    stub_of,
    tick_time,
)
from gridflow.core.intake import case_id_for
from gridflow.events import Message, decode_message, iso
from processors.steps import case_step, evicted_case_step
from tests.unit.test_case import PLANNER, T0, cmd, filed

DAY = timedelta(days=1)


class CountingMap(dict):
    """A dict that counts reads, to show a tick reads a few keys, not every case."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key, default=None):
        self.reads += 1
        return super().get(key, default)


def closed_case(case_id: str, at_minutes: int = 0) -> dict:
    """A case filed, signed, resolved and verified (closed) around T0 + at_minutes."""
    state = new_case(case_id)
    m = at_minutes
    file_cmd = filed()
    file_cmd = Message(id=f"f-{case_id}", type=file_cmd.type, case_id=case_id,
                       at=iso(T0 + timedelta(minutes=m)), actor=file_cmd.actor, data=file_cmd.data)
    state = decide(state, file_cmd, PLANNER).state
    tid = next(iter(state.tasks))
    for type_, actor, extra in [
        (ev.SIGN_TASK, "dept:D-CG", {}),
        (ev.RESOLVE_TASK, "dept:D-CG", {"note": "done", "photos": [
            {"bucket": "in", "key": "k2", "size": 10, "sha256": "b" * 64,
             "content_type": "image/jpeg"}]}),
        (ev.VERIFY_TASK, "worker:W1@G1", {}),
    ]:
        m += 10
        c = cmd(type_, {"task_id": tid, **extra}, actor, case_id=case_id, minutes=m)
        state = decide(state, c, PLANNER).state
    assert state.status == "closed"
    return state.to_dict()


def test_a_closed_case_is_evicted_after_the_period_and_not_before():
    cases, evicted, table = {}, {}, {}
    index = EvictionIndex(table, "p0:")
    state = closed_case("AJ20261102-AAAAAAAA")
    cases[state["case_id"]] = state
    assert index.note(None, state)
    last = datetime.fromisoformat(state["last_at"].replace("Z", "+00:00"))
    assert evict_due(cases, evicted, index, last + 29 * DAY, 30) == []
    assert state["case_id"] in cases
    assert evict_due(cases, evicted, index, last + 30 * DAY + timedelta(hours=2), 30) == [
        state["case_id"]]
    assert state["case_id"] not in cases  # deleted: a tombstone on the changelog
    stub = evicted[state["case_id"]]
    assert stub["seq"] == state["seq"] and stub["last_hash"] == state["last_hash"]
    assert len(json.dumps(stub)) < 600  # what is kept is small, whatever the case held
    assert table == {"p0:slots": []}  # the index empties itself


def test_an_open_case_and_a_case_touched_since_stay():
    cases, evicted, table = {}, {}, {}
    index = EvictionIndex(table, "p1:")
    open_state = decide(new_case("AJ20261102-BBBBBBBB"), filed(), PLANNER).state.to_dict()
    open_state["case_id"] = "AJ20261102-BBBBBBBB"
    cases[open_state["case_id"]] = open_state
    assert not index.note(None, open_state)  # only finished cases are indexed
    closed = closed_case("AJ20261102-CCCCCCCC")
    cases[closed["case_id"]] = closed
    index.note(None, closed)
    later = {**closed, "seq": closed["seq"] + 1, "last_at": iso(T0 + 20 * DAY)}  # rated later
    cases[closed["case_id"]] = later
    index.note(closed, later)
    assert evict_due(cases, evicted, index, T0 + 35 * DAY, 30) == []  # the first bucket: touched
    assert closed["case_id"] in cases
    assert evict_due(cases, evicted, index, T0 + 51 * DAY, 30) == [closed["case_id"]]
    assert open_state["case_id"] in cases and evicted.keys() == {closed["case_id"]}


def test_a_tick_reads_the_due_buckets_only_and_evicts_a_bounded_number():
    cases, evicted = {}, {}
    table = CountingMap()
    index = EvictionIndex(table, "p2:")
    template = closed_case("AJ20261102-DDDDDDDD")
    for n in range(1200):
        case_id = f"AJ20261102-{n:08d}"
        state = {**template, "case_id": case_id}
        cases[case_id] = state
        index.note(None, state)
    # 1,000 cases not yet due in a later bucket
    for n in range(1000):
        case_id = f"AJ20261201-{n:08d}"
        state = {**template, "case_id": case_id, "last_at": iso(T0 + 29 * DAY)}
        cases[case_id] = state
        index.note(None, state)
    now = T0 + 31 * DAY
    table.reads = 0
    first = evict_due(cases, evicted, index, now, 30, limit=500)
    assert len(first) == 500 and table.reads <= 4  # the slot list and one bucket
    assert len(evict_due(cases, evicted, index, now, 30, limit=500)) == 500
    assert len(evict_due(cases, evicted, index, now, 30, limit=500)) == 200
    assert evict_due(cases, evicted, index, now, 30, limit=500) == []
    assert len(cases) == 1000 and len(evicted) == 1200


def test_eviction_off_keeps_everything():
    cases, evicted, table = {}, {}, {}
    index = EvictionIndex(table)
    state = closed_case("AJ20261102-EEEEEEEE")
    cases[state["case_id"]] = state
    index.note(None, state)
    assert evict_due(cases, evicted, index, T0 + 400 * DAY, 0) == []
    assert state["case_id"] in cases


def test_a_late_command_for_an_evicted_case_is_refused_on_its_chain():
    state = closed_case("AJ20261102-FFFFFFFF")
    stub = stub_of(state)
    rate = cmd(ev.RATE_CASE, {"rating": 1}, "worker:W1@G1", case_id=state["case_id"],
               minutes=60 * 24 * 40)
    out, kept = evicted_case_step(rate.encode(), stub, T0, "case-commands", 0, 7)
    [(topic, key, raw)] = out.sends
    refusal = decode_message(raw, ev.EVENT_TYPES)
    assert topic == "case-events" and key == state["case_id"]
    assert refusal.type == ev.COMMAND_REFUSED and refusal.data["code"] == EVICTED_CODE
    assert "归档" in refusal.data["reason_zh"]
    assert refusal.seq == state["seq"] + 1 and refusal.prev_hash == state["last_hash"]
    assert kept is not None and kept["seq"] == refusal.seq and kept["last_hash"] == refusal.hash()
    # the same command again (redelivered): nothing new, the stub stays
    again, unchanged = evicted_case_step(rate.encode(), kept, T0, "case-commands", 0, 7)
    assert again.sends == [] and unchanged is None
    # and the case is not recreated: without the stub it would be a new case at seq 1
    out, fresh = case_step(rate.encode(), None, PLANNER, T0, "case-commands", state["case_id"])
    assert decode_message(out.sends[-1][2], ev.EVENT_TYPES).seq == 1  # what the stub prevents


def test_a_near_duplicate_report_for_an_evicted_case_is_filed_as_its_own_case():
    state = closed_case("AJ20261102-GGGGGGGG")
    dup = filed(report_id="r2")
    dup = Message(id="dup1", type=dup.type, case_id=state["case_id"], at=dup.at, actor=dup.actor,
                  data={**dup.data, "own_case_id": "AJ20261215-HHHHHHHH", "distance_m": 12.0})
    out, kept = evicted_case_step(dup.encode(), stub_of(state), T0, "case-commands")
    [(topic, key, raw)] = out.sends
    refile = decode_message(raw, ev.COMMAND_TYPES)
    assert topic == "case-commands" and key == "AJ20261215-HHHHHHHH"
    assert refile.type == ev.FILE_REPORT and "own_case_id" not in refile.data
    assert kept is None


def test_an_undecodable_command_for_an_evicted_case_is_a_dead_letter():
    state = closed_case("AJ20261102-JJJJJJJJ")
    out, kept = evicted_case_step(b"{not json", stub_of(state), T0, "case-commands", 1, 2)
    assert [s[0] for s in out.sends] == ["dead-letters"] and kept is None


def test_the_case_id_carries_its_filing_date_and_ticks_their_time():
    case_id = case_id_for("r-1", datetime(2026, 3, 1, 20, 0, tzinfo=UTC))  # 04:00 in Beijing
    assert filed_on(case_id) == datetime(2026, 3, 2).date()
    assert filed_on("not-a-case") is None and filed_on("AJ20261399-XXXXXXXX") is None
    assert tick_time(json.dumps({"now": iso(T0)}).encode()) == T0
    assert tick_time(b"{}") is None and tick_time(b"garbage") is None
