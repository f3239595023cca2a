"""What-if re-runs against an in-process model of a live partition with a coarse tick clock:
the recorded policy reproduces the record hash for hash (a perfect clock would not), a
stricter policy breaches more, and the command stream is rebuilt from the events."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from audit import whatif
from audit.whatif import IDEAL, Recorded, Regime
from gridflow import events as ev
from gridflow.core.calendar import UNKNOWN_YEARS_WEEKDAYS, load_bundled_calendar
from gridflow.core.case import CaseState, decide, new_case
from gridflow.core.deadlines import DeadlineBook, command_for, follow_event
from gridflow.core.refdata import load_reference_data
from gridflow.core.sla import REFDATA_DIR, SlaPlanner, SlaPolicy, load_bundled_policy, warn_instants
from gridflow.events import Message, iso, parse_ts

T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)  # Monday 09:00 in Beijing
GRID = "421099101201001"
VILLAGE = "421099101201.cwh"  # a village committee
WORKER = f"worker:GW0001@{GRID}"
LEVELS = {code: d.level for code, d in load_reference_data().departments.items()}
CALENDAR = replace(load_bundled_calendar(), unknown_years=UNKNOWN_YEARS_WEEKDAYS)
RECORDED = Regime(load_bundled_policy(), CALENDAR, LEVELS)


def stricter() -> Regime:
    raw = json.loads((REFDATA_DIR / "sla_policy.json").read_text(encoding="utf-8"))
    raw["default"]["sign"] = {"hours": 0.5}
    raw["default"]["resolve"] = {"hours": 4}
    raw["rules"] = []
    return Regime(SlaPolicy.load(raw), CALENDAR, LEVELS)


class LivePartition:
    """The case processor and the deadline processor of one partition, in arrival order:
    commands are decided as they come, the deadline book follows every event, and due
    decisions reach their cases only on clock ticks, as in processors/."""

    def __init__(self, regime: Regime) -> None:
        self.regime = regime
        self.planner = SlaPlanner(regime.policy, regime.calendar)
        self.book = DeadlineBook(policy=regime.policy, calendar=regime.calendar, namespace="p0:")
        self.states: dict[str, CaseState] = {}
        self.log: list[Recorded] = []

    def command(self, cmd: Message) -> list[Message]:
        state = self.states.get(cmd.case_id) or new_case(cmd.case_id)
        decision = decide(state, cmd, self.planner)
        self.states[cmd.case_id] = decision.state
        for m in decision.events:
            self.log.append(Recorded(0, len(self.log), m))
            follow_event(self.book, m, self.regime.policy, self.regime.calendar, LEVELS)
        return decision.events

    def tick(self, now: datetime) -> None:
        for item in self.book.pop_due(now):
            self.command(command_for(item))


def cmd(type_: str, case_id: str, at: datetime, actor: str, **data: Any) -> Message:
    return Message(id=f"{type_}-{case_id}-{iso(at)}", type=type_, case_id=case_id, at=iso(at),
                   actor=actor, data=data)


def file(case_id: str, at: datetime, category: str = "E0301") -> Message:
    return cmd(ev.FILE_REPORT, case_id, at, WORKER,
               report={"report_id": f"r-{case_id}", "reporter": WORKER, "photos": []},
               category_code=category, severity=1, grid_code=GRID, village_code=GRID[:12],
               township_code=GRID[:9], departments=[VILLAGE])


def task(case_id: str) -> str:
    return f"{case_id}-T01"


def run_county(tick_minutes: int = 30) -> tuple[LivePartition, dict[str, datetime]]:
    """Six cases over three working days, ticks every `tick_minutes`; returns the model and
    the instants the scenario was built around."""
    live = LivePartition(RECORDED)
    dept = f"dept:{VILLAGE}"
    b_filed = T0 + timedelta(minutes=5)
    b_due = CALENDAR.add_working_hours(b_filed, 2)  # the bundled policy's sign-for limit
    b_w80 = warn_instants(b_filed, b_due, (0.5, 0.8), CALENDAR)[1]
    script: list[tuple[datetime, Message]] = [
        (T0, file("AJ-A", T0)),  # nobody signs: warnings, breach, escalations
        (b_filed, file("AJ-B", b_filed)),
        # signed after its 80% warning was due but before the next tick: stale live
        (b_w80 + timedelta(minutes=5), cmd(ev.SIGN_TASK, "AJ-B", b_w80 + timedelta(minutes=5),
                                           dept, task_id=task("AJ-B"))),
        (T0 + timedelta(minutes=10), file("AJ-C", T0 + timedelta(minutes=10), "E0102")),
        (T0 + timedelta(minutes=40), cmd(ev.SIGN_TASK, "AJ-C", T0 + timedelta(minutes=40), dept,
                                         task_id=task("AJ-C"))),
        (T0 + timedelta(minutes=15), file("AJ-D", T0 + timedelta(minutes=15))),
        (T0 + timedelta(minutes=50), cmd(ev.SIGN_TASK, "AJ-D", T0 + timedelta(minutes=50), dept,
                                         task_id=task("AJ-D"))),
        (T0 + timedelta(hours=3), cmd(ev.REQUEST_EXTENSION, "AJ-D", T0 + timedelta(hours=3),
                                      dept, task_id=task("AJ-D"), days=2, reason="协调")),
        (T0 + timedelta(hours=4), cmd(ev.DECIDE_EXTENSION, "AJ-D", T0 + timedelta(hours=4),
                                      "supervisor:S1", task_id=task("AJ-D"), approve=True)),
        (T0 + timedelta(minutes=20), file("AJ-E", T0 + timedelta(minutes=20))),
        (T0 + timedelta(minutes=25), cmd(ev.SIGN_TASK, "AJ-E", T0 + timedelta(minutes=25),
                                         "dept:someone.else", task_id=task("AJ-E"))),  # refused
        (T0 + timedelta(minutes=30), file("AJ-F", T0 + timedelta(minutes=30))),
        (T0 + timedelta(minutes=45), cmd(ev.SIGN_TASK, "AJ-F", T0 + timedelta(minutes=45), dept,
                                         task_id=task("AJ-F"))),
        (T0 + timedelta(hours=2), cmd(ev.RESOLVE_TASK, "AJ-F", T0 + timedelta(hours=2), dept,
                                      task_id=task("AJ-F"), note="已清理", photos=[_photo()])),
        (T0 + timedelta(hours=3), cmd(ev.REJECT_TASK, "AJ-F", T0 + timedelta(hours=3), WORKER,
                                      task_id=task("AJ-F"), reason="整改不到位")),
    ]
    # AJ-C (exposed rubbish: resolve within 1 working day) breaches, then notes progress
    c_due = CALENDAR.add_working_days(T0 + timedelta(minutes=10), 1)
    script.append((c_due + timedelta(hours=5), cmd(ev.NOTE_PROGRESS, "AJ-C",
                                                   c_due + timedelta(hours=5), dept,
                                                   task_id=task("AJ-C"), note="正在清运")))
    script.append((c_due + timedelta(days=1, hours=1), cmd(
        ev.RESOLVE_TASK, "AJ-C", c_due + timedelta(days=1, hours=1), dept, task_id=task("AJ-C"),
        note="已清运", photos=[_photo()])))
    end = T0 + timedelta(days=4)
    ticks = []
    t = T0
    while t <= end:
        ticks.append(t)
        t += timedelta(minutes=tick_minutes)
    timeline = sorted([(at, 1, c) for at, c in script] + [(at, 0, None) for at in ticks],
                      key=lambda x: (x[0], x[1]))
    for at, _, c in timeline:
        if c is None:
            live.tick(at)
        else:
            live.command(c)
    return live, {"b_w80": b_w80}


def _photo() -> dict[str, Any]:
    return {"bucket": "in", "key": "k.jpg", "size": 10, "sha256": "a" * 64,
            "content_type": "image/jpeg"}


def deadline_events(log: list[Recorded]) -> list[Message]:
    return [r.message for r in log if whatif.is_deadline_decision(r.message)]


def test_the_live_model_produces_a_rich_record() -> None:
    live, _ = run_county()
    types = {r.message.type for r in live.log}
    assert {ev.DEADLINE_WARNED, ev.DEADLINE_BREACHED, ev.TASK_ESCALATED, ev.COMMAND_REFUSED,
            ev.EXTENSION_GRANTED, ev.TASK_REOPENED, ev.TASK_PROGRESS_NOTED} <= types
    levels = {r.message.data["level"] for r in live.log if r.message.type == ev.TASK_ESCALATED}
    assert len(levels) >= 2  # the ladder was climbed


def test_recorded_policy_reproduces_the_record_hash_for_hash() -> None:
    live, _ = run_county()
    run = whatif.simulate(live.log, RECORDED)
    rep = whatif.reproduction(live.log, run)
    assert rep.mismatches == [] and run.unmatched_markers == []
    assert rep.exact and rep.identical == len(live.log)
    assert rep.deadline_reproduced == rep.deadline_recorded == len(deadline_events(live.log))
    # the same warnings, breaches and escalations, counted the same way
    assert whatif.recorded_tally(live.log).escalations == run.tally.escalations
    assert whatif.recorded_tally(live.log).breaches == run.tally.breaches


def test_a_perfect_clock_would_not_match_a_record_made_with_coarse_ticks() -> None:
    live, _ = run_county()
    b_warnings = [m for m in deadline_events(live.log)
                  if m.case_id == "AJ-B" and m.type == ev.DEADLINE_WARNED
                  and m.data["stage"] == "sign"]
    assert [m.data["fraction"] for m in b_warnings] == [0.5]  # the 80% one went stale live
    ideal = whatif.simulate(live.log, RECORDED, clock=IDEAL)
    fired = [m for m in ideal.events["AJ-B"]
             if m.type == ev.DEADLINE_WARNED and m.data["stage"] == "sign"]
    assert [m.data["fraction"] for m in fired] == [0.5, 0.8]
    assert not whatif.reproduction(live.log, ideal).exact


def test_fine_ticks_make_both_clocks_agree() -> None:
    live, _ = run_county(tick_minutes=1)
    assert whatif.reproduction(live.log, whatif.simulate(live.log, RECORDED)).exact


def test_a_stricter_policy_breaches_and_escalates_more_and_closes_fewer_on_time() -> None:
    live, _ = run_county()
    c = whatif.compare(live.log, RECORDED, stricter())
    assert c.reproduction.exact
    assert sum(c.whatif.breaches.values()) > sum(c.recorded.breaches.values())
    assert sum(c.whatif.escalations.values()) >= sum(c.recorded.escalations.values())
    rec, wi = c.recorded.overall, c.whatif.overall
    assert rec is not None and wi is not None
    assert (wi.on_time_close_rate or 0) <= (rec.on_time_close_rate or 0)
    # the what-if's own deadlines are the stricter ones
    dispatched = [m for m in c.run.events["AJ-A"] if m.type == ev.TASK_DISPATCHED][0]
    assert parse_ts(dispatched.data["sign_due"]) == CALENDAR.add_working_hours(T0, 0.5)
    # nothing fires earlier than the record proves the clock had got
    for p, until in c.run.clock_until.items():
        assert until <= max(c.baseline.markers[p].values())


def test_the_same_policy_as_what_if_changes_nothing() -> None:
    live, _ = run_county()
    c = whatif.compare(live.log, RECORDED, RECORDED)
    assert c.recorded.escalations == c.whatif.escalations
    assert c.recorded.overall == c.whatif.overall


def test_commands_are_rebuilt_from_their_events() -> None:
    live, _ = run_county()
    by_cause: dict[str, list[Recorded]] = {}
    for step in whatif.steps(live.log):
        assert len({r.message.causation_id for r in step}) == 1
        by_cause[step[0].message.causation_id] = step
    filed = whatif.command_of(by_cause["FileReport-AJ-A-" + iso(T0)])
    assert filed is not None and filed.type == ev.FILE_REPORT
    assert filed.data["departments"] == [VILLAGE] and filed.at == iso(T0)
    refused = next(s for s in by_cause.values() if s[0].message.type == ev.COMMAND_REFUSED)
    assert whatif.command_of(refused) is None  # carried over as recorded
    warned = next(s for s in by_cause.values() if s[0].message.type == ev.DEADLINE_WARNED)
    assert whatif.command_of(warned) is None  # re-decided, not replayed


def test_redelivered_events_are_dropped_and_partitions_kept_apart() -> None:
    live, _ = run_county()
    doubled = live.log + [Recorded(0, 10_000 + i, r.message) for i, r in enumerate(live.log[:5])]
    other = [Recorded(1, r.offset, replace(r.message, id="X" + r.message.id,
                                          case_id="X" + r.message.case_id))
             for r in live.log[:3]]
    parts = whatif.by_partition(doubled + other)
    assert len(parts[0]) == len(live.log) and len(parts[1]) == 3


def test_carry_over_rechains_a_refusal() -> None:
    state = new_case("AJ-Z")
    refusal = Message(id="e1", type=ev.COMMAND_REFUSED, case_id="AJ-Z", at=iso(T0), actor="x",
                      data={"command_id": "c1"}, causation_id="c1", seq=7, prev_hash="zz")
    state, out = whatif.carry_over(state, [refusal])
    assert out[0].seq == 1 and out[0].prev_hash == "" and state.last_hash == out[0].hash()
    assert "c1" in state.recent_commands


def test_a_max_tick_lag_no_smaller_than_the_tick_interval_keeps_the_record_exact() -> None:
    live, _ = run_county(tick_minutes=30)
    assumed = whatif.simulate(live.log, RECORDED, max_lag=timedelta(minutes=30))
    assert whatif.reproduction(live.log, assumed).exact
    plain = whatif.simulate(live.log, RECORDED)
    last_event = max(r.message.at_dt for r in live.log)
    # the assurance lets the clock run on past the last recorded decision, to the end
    assert assumed.clock_until[0] >= last_event - timedelta(minutes=30)
    assert assumed.clock_until[0] >= plain.clock_until[0]
    too_small = whatif.simulate(live.log, RECORDED, max_lag=timedelta(0))
    assert not whatif.reproduction(live.log, too_small).exact
