"""Scenario: more than one worker in a consumer group, one killed and another added under load.

Three workers share the pipeline's consumer group on one topic prefix (each its own static
group instance id); reports with photos arrive at a steady rate on a simulated clock fast
enough that sign-for deadlines warn and breach within the run. A third of the way in, one
worker is killed with SIGKILL (its partitions, and the faust tables behind them, move to the
others once its session times out); two thirds in, a fourth worker joins (partitions move
again). With `split`, the photo archive runs in workers of its own (`--role archive`, its own
group) beside the pipeline workers, and one of each kind is killed.

Afterwards: every report reached the read models once, no deadline fired twice, every task
whose sign-for deadline has passed unsigned was warned and breached (the deadline books moved
with their partitions), and `gridflow audit verify` is clean (one writer per case: no seq
claimed twice in a hash chain).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from chaos.kill_worker import ReportProducer, audit_verdict, report_rows, reports_on_topic
from gridflow import events as ev
from gridflow import topics
from gridflow.clock import clock_from_spec, scaled_spec
from gridflow.core.refdata import load_reference_data
from gridflow.settings import Settings
from infra import services
from sinks.models import CaseEvent, Task, create_schema, make_engine, table_of

# Monday 2026-11-16 08:30 in Beijing: the simulated run starts at the opening of business.
SIM_START = datetime(2026, 11, 16, 0, 30, tzinfo=UTC)
# How far past a sign-for deadline a task must be before its breach is required to be there.
DEADLINE_SLACK = timedelta(minutes=30)


@dataclass
class ScaleOutReport:
    prefix: str
    split: bool
    events: list[str] = field(default_factory=list)  # what was done when
    sent: int = 0
    kept: int = 0
    lost: list[tuple[int, int, str]] = field(default_factory=list)
    duplicate_rows: int = 0
    deadline_events: int = 0
    deadlines_twice: int = 0
    breaches_missing: list[str] = field(default_factory=list)  # task ids
    tasks_past_due: int = 0
    catch_up_s: float = 0.0
    seconds: float = 0.0
    audit_clean: bool | None = None
    audit_lines: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (not self.lost and self.kept == self.sent and self.duplicate_rows == 0
                and self.deadlines_twice == 0 and not self.breaches_missing
                and self.audit_clean is not False)

    def lines(self) -> list[str]:
        kind = "pipeline + archive workers" if self.split else "workers (all agents)"
        out = [f"scale-out: {kind}, prefix {self.prefix}, {self.seconds:.0f} s"]
        out += [f"  {e}" for e in self.events]
        out += [
            f"  reports acknowledged:                 {self.sent}",
            f"  reports in the read models:           {self.kept}",
            f"  lost (acknowledged, absent):          {len(self.lost)}",
            f"  duplicated rows:                      {self.duplicate_rows}",
            f"  deadline events (warned/breached):    {self.deadline_events}",
            f"  deadlines fired twice:                {self.deadlines_twice}",
            f"  tasks past their sign-for deadline:   {self.tasks_past_due}, "
            f"breach missing for {len(self.breaches_missing)}",
            f"  caught up after the last change in:   {self.catch_up_s:.1f} s",
        ]
        out += [f"  LOST {rid} at reports[{p}]@{o}" for p, o, rid in self.lost[:20]]
        out += [f"  NO BREACH for task {t}" for t in self.breaches_missing[:20]]
        if self.audit_clean is not None:
            out.append("  gridflow audit verify:                "
                       + ("clean" if self.audit_clean else "DIFFERENCES"))
            if not self.audit_clean:
                out += ["    " + line for line in self.audit_lines[:40]]
        out.append("  verdict: " + ("nothing lost, nothing twice / 无丢失、无重复" if self.clean
                                    else "FAILED / 未通过"))
        return out


def deadline_accounting(database_url: str, now: datetime) -> tuple[int, int, int, list[str]]:
    """(deadline events, repeats, tasks past due, tasks past due without a breach).

    A repeat is a second DeadlineWarned / DeadlineBreached for the same task, stage and
    warning fraction: the case processor must decide each due item once."""
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        e, t = table_of(CaseEvent).c, table_of(Task).c
        kinds = (ev.DEADLINE_WARNED, ev.DEADLINE_BREACHED)
        with engine.connect() as conn:
            rows = conn.execute(select(e.type, e.data).where(e.type.in_(kinds))).all()
            seen: dict[tuple[str, str, str, str], int] = {}
            breached: set[str] = set()
            for type_, data in rows:
                data = data or {}
                key = (type_, str(data.get("task_id")), str(data.get("stage")),
                       str(data.get("fraction")))
                seen[key] = seen.get(key, 0) + 1
                if type_ == ev.DEADLINE_BREACHED and data.get("stage") == "sign":
                    breached.add(str(data.get("task_id")))
            past = conn.execute(select(t.task_id).where(
                t.signed_at.is_(None), t.sign_due.is_not(None),
                t.sign_due < now - DEADLINE_SLACK, t.state.in_(("dispatched",)))).scalars().all()
            total = conn.execute(select(func.count()).select_from(table_of(CaseEvent)).where(
                e.type.in_(kinds))).scalar_one()
        repeats = sum(n - 1 for n in seen.values())
        return int(total), repeats, len(past), sorted(set(past) - breached)
    finally:
        engine.dispose()


def run(settings: Settings, log_dir: Path, *, split: bool = False, seconds: float = 60.0,
        rate: float = 8.0, speed: float = 600.0, session_timeout_s: float = 6.0,
        settle_s: float = 150.0, seed: int = 5,
        echo: Callable[[str], None] = print) -> ScaleOutReport:
    """Run the scenario on a fresh prefix and SQLite database; return its accounting.

    `seconds` of reports at `rate`; the simulated clock runs `speed` times real time; after the
    reports, up to `settle_s` more for the read models to catch up and the deadlines due to
    fire."""
    prefix = f"scale-{uuid.uuid4().hex[:8]}"
    log_dir.mkdir(parents=True, exist_ok=True)
    spec = scaled_spec(SIM_START, speed)
    settings = settings.with_(
        topic_prefix=prefix, database_url=f"sqlite:///{log_dir / (prefix + '.db')}",
        worker_session_timeout_s=session_timeout_s, clock=spec)
    clock = clock_from_spec(spec)
    topics.ensure_topics(settings.kafka_bootstrap, prefix)
    report = ScaleOutReport(prefix, split)
    t0 = time.monotonic()
    procs: dict[str, services.Service] = {}

    def start(name: str, role: str) -> None:
        (log_dir / name).mkdir(parents=True, exist_ok=True)
        own = settings.with_(worker_instance_id=f"{prefix}-{name}",
                             faust_data_dir=log_dir / name / "faust")
        args = ["worker", "--loglevel", "info", "--role", role]
        procs[name] = services.start(name, args, own, log_dir)
        report.events.append(f"t={time.monotonic() - t0:5.1f} s: started {name} ({role})")

    def kill(name: str) -> None:
        procs.pop(name).kill()
        report.events.append(f"t={time.monotonic() - t0:5.1f} s: killed {name} (SIGKILL)")

    pipeline_role = "pipeline" if split else "all"
    for n in (1, 2, 3):
        start(f"worker{n}", pipeline_role)
    if split:
        start("archive1", "archive")
        start("archive2", "archive")
    sink = services.start("sink", ["sink"], settings, log_dir)
    producer = ReportProducer(settings, load_reference_data(settings.refdata_dir), rate, seed,
                              clock)
    producer.start()

    def wait(s: float) -> None:  # a dead process fails the run at once, with its log
        end = time.monotonic() + s
        while time.monotonic() < end:
            for svc in [*procs.values(), sink]:
                svc.check()
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))

    try:
        wait(seconds / 3)
        kill("worker2")
        if split:
            kill("archive1")
        echo(f"  {report.events[-1]}; {len(producer.sent)} reports so far")
        wait(seconds / 3)
        start("worker4", pipeline_role)
        last_change = time.monotonic()
        echo(f"  {report.events[-1]}; {len(producer.sent)} reports so far")
        wait(seconds / 3)
        producer.finish()
        on_topic = reports_on_topic(settings)
        report.sent = len(on_topic)
        echo(f"  {report.sent} reports acknowledged; waiting for the read models and the "
             "deadlines")
        caught_up = False
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            for svc in [*procs.values(), sink]:
                svc.check()
            ids, repeats = report_rows(settings.database_url)
            if not caught_up and on_topic.keys() <= ids:
                caught_up = True
                report.catch_up_s = time.monotonic() - last_change
            _, _, past, missing = deadline_accounting(settings.database_url, clock())
            if caught_up and past and not missing and clock() > _last_due(settings):
                break
            time.sleep(2.0)
        ids, report.duplicate_rows = report_rows(settings.database_url)
        report.kept = len(ids & on_topic.keys())
        report.lost = sorted((*on_topic[rid], rid) for rid in on_topic.keys() - ids)
        (report.deadline_events, report.deadlines_twice, report.tasks_past_due,
         report.breaches_missing) = deadline_accounting(settings.database_url, clock())
        report.audit_clean, report.audit_lines = audit_verdict(settings, echo)
    finally:
        producer.stop_event.set()
        for svc in [*procs.values(), sink]:
            svc.stop()
        topics.delete_topics(settings.kafka_bootstrap, prefix)  # as chaos.kill_worker does
        report.seconds = time.monotonic() - t0
    return report


def _last_due(settings: Settings) -> datetime:
    """The latest sign-for deadline among the tasks (plus the slack): by then every one of
    them must have been warned and breached."""
    engine = make_engine(settings.database_url)
    try:
        t = table_of(Task).c
        with engine.connect() as conn:
            latest = conn.execute(select(func.max(t.sign_due))).scalar_one()
        return (latest or SIM_START) + DEADLINE_SLACK
    finally:
        engine.dispose()


def cli(settings: Settings, log_dir: Path, options: dict[str, Any],
        echo: Callable[[str], None]) -> tuple[bool, list[str]]:
    """`gridflow chaos --scenario scale-out [--split] [--full]`."""
    result = run(settings, log_dir, split=bool(options.get("split")),
                 seconds=180.0 if options.get("full") else 60.0,
                 rate=options.get("rate") or 8.0,
                 session_timeout_s=options.get("session_timeout") or 6.0,
                 seed=options.get("seed") or 5, echo=echo)
    return result.clean, result.lines()
