"""What-if: re-run the deadline and escalation decisions over the recorded log under another
SLA policy or working calendar, and compare on-time rates and escalations with the record.

Pure: recorded events in, outcomes out (no clock, no I/O). Each case's command stream is
rebuilt from its events (a command's events share its causation id: CaseFiled -> FileReport,
TaskSigned -> SignTask, ...); `decide` runs them again with a planner of the policy under
test, and a deadline book per partition (the live processor's `follow_event` keeps it)
decides warnings, breaches and escalations anew; recorded deadline decisions are not
replayed, refusals are carried over as they were.

The clock of the re-run
-----------------------
Live, the deadline processor fires what is due on clock ticks, so a decision reaches its
case some time after its instant, and a department acting in between makes it stale. The
record proves how far each partition's deadline clock had got at each point of its log:
every recorded deadline decision was fired by a tick at or after its instant. The re-run
(`RECORD` clock, the default) fires due decisions exactly there — at each recorded
deadline decision, up to the latest instant recorded so far in that partition — never
earlier than the live system could have. Under the recorded policy this reproduces the
record event for event (`calibrate` checks that, hash for hash); under another policy the
same clock is used, so the comparison measures the policy, not the clock. Decisions due
after the last recorded one in a partition are not simulated (the record says nothing
about the clock there), unless `max_lag` is given: the auditor's assurance that the live
deadline clock never trailed event time by more than that (a tick interval plus processing,
e.g. 30 minutes of simulated time in the demo, seconds in production); the clock then also
stands at least at each event's time less `max_lag`, and at the end of the log less it. Too
small a `max_lag` shows as an inexact reproduction. `IDEAL` fires every decision at its exact
instant (at each event's time and at the end): a perfect clock, which the record need not
match.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from gridflow import events as ev
from gridflow.core.calendar import WorkingCalendar
from gridflow.core.case import CaseState, decide, new_case
from gridflow.core.deadlines import DeadlineBook, DueItem
from gridflow.core.metrics import Indicators, department_indicators
from gridflow.core.sla import SlaPlanner, SlaPolicy
from gridflow.events import Message, iso, parse_ts

RECORD, IDEAL = "record", "ideal"
DEADLINE_EVENTS = frozenset({ev.DEADLINE_WARNED, ev.DEADLINE_BREACHED, ev.TASK_ESCALATED})

@dataclass(frozen=True)
class Recorded:
    """One event of the log and where it lies."""

    partition: int
    offset: int
    message: Message


@dataclass(frozen=True)
class Regime:
    """What decides deadlines: a policy over a calendar, and the departments' levels."""

    policy: SlaPolicy
    calendar: WorkingCalendar
    department_levels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Tally:
    """Deadline decisions and indicators of one run (or of the record)."""

    warnings: Counter[str] = field(default_factory=Counter)  # by stage
    breaches: Counter[str] = field(default_factory=Counter)  # by stage
    escalations: Counter[tuple[int, str]] = field(default_factory=Counter)  # (level, name)
    indicators: list[Indicators] = field(default_factory=list)

    def count(self, m: Message) -> None:
        match typed(m):
            case ev.DeadlineWarned(stage=stage):
                self.warnings[stage] += 1
            case ev.DeadlineBreached(stage=stage):
                self.breaches[stage] += 1
            case ev.TaskEscalated(level=level, level_name=name):
                self.escalations[(level or 0, name)] += 1

    @property
    def overall(self) -> Indicators | None:
        return self.indicators[-1] if self.indicators else None


@dataclass
class Run:
    """The re-run's events and final state of every case."""

    events: dict[str, list[Message]] = field(default_factory=dict)
    states: dict[str, CaseState] = field(default_factory=dict)
    markers: dict[int, dict[int, datetime]] = field(default_factory=dict)  # p -> offset -> instant
    clock_until: dict[int, datetime] = field(default_factory=dict)  # p -> last instant fired
    passed_through: int = 0  # steps carried over as recorded (refusals, unknown types)
    unmatched_markers: list[str] = field(default_factory=list)  # calibration: not in the book
    tally: Tally = field(default_factory=Tally)


@dataclass
class Reproduction:
    """How exactly a re-run under the recorded policy matches the record."""

    events: int = 0
    identical: int = 0  # same id, same hash, same place in its case's chain
    deadline_recorded: int = 0
    deadline_reproduced: int = 0
    mismatches: list[str] = field(default_factory=list)  # first divergence of each case

    @property
    def exact(self) -> bool:
        return self.identical == self.events and not self.mismatches


@dataclass
class Comparison:
    as_of: datetime
    cases: int
    recorded: Tally
    whatif: Tally
    reproduction: Reproduction
    baseline: Run
    run: Run


# --- the log, as steps ---------------------------------------------------------------------


def by_partition(events: Iterable[Recorded]) -> dict[int, list[Recorded]]:
    """Each partition's events in offset order, exact redeliveries (same event id) dropped."""
    out: dict[int, list[Recorded]] = {}
    seen: set[str] = set()
    for r in sorted(events, key=lambda r: (r.partition, r.offset)):
        if r.message.id in seen:
            continue
        seen.add(r.message.id)
        out.setdefault(r.partition, []).append(r)
    return out


def steps(events: Sequence[Recorded]) -> list[list[Recorded]]:
    """Consecutive events of one case with one causation id: the output of one command."""
    out: list[list[Recorded]] = []
    for r in events:
        last = out[-1][-1].message if out else None
        m = r.message
        if last is not None and last.case_id == m.case_id and last.causation_id == m.causation_id:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def typed(m: Message) -> ev.Payload | None:
    """The event's typed payload; None for a type this build does not know, or a payload that
    does not match its type (the audit reads the log as it was written)."""
    try:
        return m.body if m.known else None
    except ev.SchemaError:
        return None


def is_deadline_decision(m: Message) -> bool:
    return m.type in DEADLINE_EVENTS and m.actor.startswith("system")


def command_of(step: Sequence[Recorded]) -> Message | None:
    """The command that produced a step's events, or None to carry the step over as is."""
    first = step[0].message
    d = first.data if isinstance(first.data, dict) else {}
    kind, data = "", {}
    if first.type == ev.CASE_FILED:
        kind, data = ev.FILE_REPORT, dict(d)
    elif first.type == ev.REPORT_MERGED:
        kind, data = ev.FILE_REPORT, {"report": d.get("report", {}),
                                      "distance_m": d.get("distance_m")}
    elif first.type == ev.PHOTO_ARCHIVED:
        kind, data = ev.RECORD_PHOTO_ARCHIVED, dict(d)
    elif first.type in (ev.EXTENSION_GRANTED, ev.EXTENSION_REFUSED):
        kind = ev.DECIDE_EXTENSION
        data = {"task_id": d.get("task_id"), "approve": first.type == ev.EXTENSION_GRANTED,
                "reason": d.get("reason", "")}
    elif first.type in ev.COMMAND_OF_EVENT and not is_deadline_decision(first):
        # the command its first event reveals (gridflow.contract), with the data it took: the
        # event's fields the command has
        kind = ev.COMMAND_OF_EVENT[first.type]
        fields = ev.PAYLOADS[kind].__struct_fields__
        data = {k: d[k] for k in fields if k in d}
    if not kind:
        return None
    return Message(id=first.causation_id, type=kind, case_id=first.case_id, at=first.at,
                   actor=first.actor, data=data, causation_id=first.causation_id)


def deadline_command(item: DueItem) -> Message:
    """What the live deadline processor sends for a due item (processors.deadlines)."""
    from gridflow.core.deadlines import command_for

    return command_for(item)


# --- one run -------------------------------------------------------------------------------


class _Partition:
    """One partition's cases and deadline book, re-deciding in log order."""

    def __init__(self, partition: int, regime: Regime, run: Run) -> None:
        from gridflow.core.deadlines import follow_event

        self.p = partition
        self.regime = regime
        self.planner = SlaPlanner(regime.policy, regime.calendar)
        self.book = DeadlineBook(policy=regime.policy, calendar=regime.calendar,
                                 namespace=f"p{partition}:")
        self.follow = follow_event
        self.run = run
        self.fired: dict[str, datetime] = {}  # item id -> its instant (calibration lookups)
        self.clock: datetime | None = None

    def state(self, case_id: str) -> CaseState:
        return self.run.states.get(case_id) or new_case(case_id)

    def emit(self, case_id: str, state: CaseState, new: list[Message]) -> None:
        self.run.states[case_id] = state
        self.run.events.setdefault(case_id, []).extend(new)
        for m in new:
            self.run.tally.count(m)
            self.follow(self.book, m, self.regime.policy, self.regime.calendar,
                        dict(self.regime.department_levels))

    def apply(self, step: Sequence[Recorded]) -> None:
        case_id = step[0].message.case_id
        state = self.state(case_id)
        cmd = command_of(step)
        if cmd is None:
            state, new = carry_over(state, [r.message for r in step])
            self.run.passed_through += 1
        else:
            decision = decide(state, cmd, self.planner)
            state, new = decision.state, decision.events
        self.emit(case_id, state, new)

    def tick(self, now: datetime) -> None:
        self.clock = now if self.clock is None else max(self.clock, now)
        self.run.clock_until[self.p] = self.clock
        for item in self.book.pop_due(self.clock):
            self.fired[item.id] = item.fire_at
            state = self.state(item.case_id)
            decision = decide(state, deadline_command(item), self.planner)
            self.emit(item.case_id, decision.state, decision.events)

    def instant_of(self, m: Message) -> datetime | None:
        """When the recorded deadline decision `m` was due, by this book (calibration)."""
        item_id = m.causation_id
        if item_id in self.fired:
            return self.fired[item_id]
        body = typed(m)
        if not isinstance(body, ev.DeadlineWarned | ev.DeadlineBreached | ev.TaskEscalated):
            return None
        entry = self.book.get(body.task_id, body.stage)
        for due in entry.dues if entry is not None else ():
            if entry is not None and entry.due_id(due) == item_id:
                return due.at
        return None


def carry_over(state: CaseState, recorded: Sequence[Message]) -> tuple[CaseState, list[Message]]:
    """Append recorded events unchanged but for their place in this run's chain."""
    out = []
    for m in recorded:
        at = m.at_dt
        if state.last_at:
            at = max(at, parse_ts(state.last_at))
        msg = replace(m, at=iso(at), seq=state.seq + 1, prev_hash=state.last_hash)
        state = replace(state, seq=msg.seq, last_hash=msg.hash(), last_at=msg.at)
        out.append(msg)
    if recorded:
        cmd = recorded[0].causation_id
        state = replace(state, recent_commands=(*state.recent_commands, cmd)[-200:])
    return state, out


def simulate(log: Iterable[Recorded], regime: Regime, *, clock: str = RECORD,
             markers: Mapping[int, Mapping[int, datetime]] | None = None,
             max_lag: timedelta | None = None) -> Run:
    """Re-decide every case of the log under `regime`.

    With the RECORD clock, `markers` (partition -> offset -> instant, from the run under the
    recorded policy) say where the record proves the deadline clock stood; without them the
    instants are looked up in this run's own book (the run under the recorded policy).
    """
    run = Run()
    parts = by_partition(log)
    lag = timedelta(0) if clock == IDEAL else max_lag
    for p, events in parts.items():
        part = _Partition(p, regime, run)
        for step in steps(events):
            first = step[0]
            if is_deadline_decision(first.message):
                if clock != RECORD:
                    continue
                instant = _marker_instant(part, first, markers)
                run.markers.setdefault(p, {})[first.offset] = instant
                part.tick(instant)
                continue
            if lag is not None:
                part.tick(first.message.at_dt - lag)
            part.apply(step)
        if lag is not None and events:
            part.tick(max(r.message.at_dt for r in events) - lag)
    return run


def _marker_instant(part: _Partition, r: Recorded,
                    markers: Mapping[int, Mapping[int, datetime]] | None) -> datetime:
    if markers is not None:
        known = markers.get(r.partition, {}).get(r.offset)
        if known is not None:
            return known
    instant = part.instant_of(r.message)
    if instant is None:
        part.run.unmatched_markers.append(
            f"case {r.message.case_id} seq {r.message.seq} p{r.partition}@{r.offset}: the "
            f"recorded {r.message.type} is not due in the re-run's book")
        # the record itself: it cannot be later than the tick that fired it
        body = typed(r.message)
        instant = parse_ts(body.due_at) if isinstance(body, ev.DeadlineBreached) \
            else r.message.at_dt
    return instant


# --- comparing -----------------------------------------------------------------------------


def task_rows(states: Iterable[CaseState]) -> list[dict[str, Any]]:
    """Rows for gridflow.core.metrics from the aggregates' task states."""
    rows = []
    for s in states:
        for t in s.tasks.values():
            rows.append({
                "task_id": t.task_id, "department": t.department, "state": t.state,
                "dispatched_at": t.dispatched_at, "resolve_due": t.resolve_due,
                "resolved_at": t.resolved_at, "closed_at": t.closed_at,
                "extensions": t.extensions, "sent_back": t.state == "sent_back",
                "reopened": t.reopened, "rating": s.rating,
            })
    return rows


def recorded_tally(log: Iterable[Recorded]) -> Tally:
    tally = Tally()
    for events in by_partition(log).values():
        for r in events:
            tally.count(r.message)
    return tally


def reproduction(log: Iterable[Recorded], run: Run, limit: int = 20) -> Reproduction:
    """Compare a re-run with the record, case by case, event by event (ids and hashes)."""
    rep = Reproduction()
    recorded: dict[str, list[Message]] = {}
    for events in by_partition(log).values():
        for r in events:
            recorded.setdefault(r.message.case_id, []).append(r.message)
    for case_id, want in recorded.items():
        got = run.events.get(case_id, [])
        rep.events += len(want)
        ids = {m.id for m in got}
        diverged = False
        for i, m in enumerate(want):
            if is_deadline_decision(m):
                rep.deadline_recorded += 1
                rep.deadline_reproduced += m.id in ids
            if i < len(got) and got[i].id == m.id and got[i].hash() == m.hash():
                rep.identical += 1
            elif not diverged:  # the first divergence of a case; the rest follows from it
                diverged = True
                other = f"{got[i].type} {got[i].id[:12]}…" if i < len(got) else "nothing"
                if len(rep.mismatches) < limit:
                    rep.mismatches.append(f"case {case_id} seq {m.seq}: recorded {m.type} "
                                          f"{m.id[:12]}…, re-run has {other}")
        if len(got) > len(want) and not diverged and len(rep.mismatches) < limit:
            extra = ", ".join(m.type for m in got[len(want):][:5])
            rep.mismatches.append(f"case {case_id}: the re-run has {len(got) - len(want)} more "
                                  f"event(s): {extra}")
    return rep


def compare(log: Sequence[Recorded], recorded_regime: Regime, whatif_regime: Regime,
            *, clock: str = RECORD, max_lag: timedelta | None = None) -> Comparison:
    """The record (re-run under its own policy, checked) against the what-if regime."""
    baseline = simulate(log, recorded_regime, clock=clock, max_lag=max_lag)
    run = simulate(log, whatif_regime, clock=clock, max_lag=max_lag,
                   markers=baseline.markers if clock == RECORD else None)
    as_of = max((r.message.at_dt for r in log), default=None)
    if as_of is None:
        raise ValueError("the log holds no case events / 日志中没有案件事件")
    recorded = recorded_tally(log)
    recorded.indicators = department_indicators(task_rows(baseline.states.values()), as_of)
    run.tally.indicators = department_indicators(task_rows(run.states.values()), as_of)
    return Comparison(as_of, len(baseline.states), recorded, run.tally,
                      reproduction(log, baseline), baseline, run)
