"""The board's indicators are counted by the database (workbench.board.indicator_counts) but
defined row by row in gridflow.core.metrics: on random read-model rows of every shape, for
ranges and moments before, inside and after them, both give the very same indicators."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from gridflow.core import case as core
from gridflow.core.metrics import department_indicators
from gridflow.core.refdata import load_reference_data
from sinks.models import Case, Task, create_schema, make_engine
from workbench import board as bd

T0 = datetime(2026, 10, 1, 2, 0, tzinfo=UTC)
STATES = (core.DISPATCHED, core.SIGNED, core.IN_PROGRESS, core.RESOLVED, core.CLOSED,
          core.SENT_BACK, core.CANCELLED)


def maybe(rng: random.Random, value: datetime, p: float = 0.7) -> datetime | None:
    return value if rng.random() < p else None


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('ind') / 'rm.db'}")
    create_schema(eng)
    rng = random.Random(5)
    grids = ["421099101201001", "421099201202003", "421099001001001"]
    cases, tasks = [], []
    for i in range(600):
        filed = T0 + timedelta(hours=rng.uniform(0, 24 * 40))
        grid = rng.choice(grids)
        rating = rng.choice((None, None, 1, 3, 5))
        cases.append({"case_id": f"C{i}", "status": "open", "grid_code": grid,
                      "township_code": grid[:9], "filed_at": filed, "rating": rating,
                      "rated_at": maybe(rng, filed + timedelta(days=rng.uniform(0, 20)))
                      if rating else None})
        for n in range(rng.choice((1, 1, 2))):
            state = rng.choice(STATES)
            def h(lo: float, hi: float, filed: datetime = filed) -> datetime:
                return filed + timedelta(hours=rng.uniform(lo, hi))

            tasks.append({
                "task_id": f"C{i}-T0{n + 1}", "case_id": f"C{i}",
                "department": rng.choice(("d.a", "d.b", "d.c")), "state": state,
                "grid_code": grid, "dispatched_at": filed,
                "resolve_due": maybe(rng, h(10, 200), 0.9), "resolved_at": maybe(rng, h(1, 300), 0.5),
                "closed_at": h(2, 400) if state in (core.CLOSED, core.SENT_BACK, core.CANCELLED)
                and rng.random() < 0.9 else None,
                "extensions": rng.choice((0, 0, 1, 2)), "reopened": rng.choice((0, 0, 1)),
                "sent_back": state == core.SENT_BACK or rng.random() < 0.05,
            })
    with eng.begin() as conn:
        conn.execute(insert(Case), cases)
        conn.execute(insert(Task), tasks)
    yield eng
    eng.dispose()


@pytest.mark.parametrize("first, last, now", [
    (date(2026, 10, 1), date(2026, 11, 30), T0 + timedelta(days=90)),  # all, long after
    (date(2026, 10, 5), date(2026, 10, 20), T0 + timedelta(days=90)),  # a slice, after it
    (date(2026, 10, 1), date(2026, 11, 30), T0 + timedelta(days=12)),  # now inside the range
    (date(2026, 10, 10), date(2026, 10, 10), T0 + timedelta(days=9, hours=6)),  # one day, today
])
def test_the_database_counts_what_the_metrics_define(engine, first, last, now) -> None:  # type: ignore[no-untyped-def]
    ref = load_reference_data()
    r = bd.Range(first, last)
    for scope in (bd.Scope(None), bd.Scope(("421099101",)), bd.Scope(()),):
        with Session(engine) as session:
            ours = bd.indicators(session, ref, scope, r, now)
            rows = bd.indicator_rows(session, scope, r)
        expected = department_indicators(rows, r.as_of(now))
        assert [line.values for line in ours] == expected
    assert ours is not None


def test_some_rows_of_every_kind_were_counted(engine) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        [*_, total] = bd.indicators(session, load_reference_data(), bd.Scope(None),
                                    bd.Range(date(2026, 10, 1), date(2026, 11, 30)),
                                    T0 + timedelta(days=30))
    v = total.values
    assert min(v.dispatched, v.open, v.overdue, v.closed, v.sent_back, v.cancelled, v.reworked,
               v.extended, v.rated, v.closed_on_time) > 0


def test_weeks_summed_from_days_are_the_weeks_the_database_counts(engine) -> None:  # type: ignore[no-untyped-def]
    r = bd.Range(date(2026, 10, 3), date(2026, 11, 12))  # starts on a Saturday
    with Session(engine) as session:
        days = bd.trends(session, bd.Scope(None), r, "day")
        weeks = bd.trends(session, bd.Scope(None), r, "week")
    assert bd.weeks_of(days) == weeks and sum(w.filed for w in weeks) > 0
