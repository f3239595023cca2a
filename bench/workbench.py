"""Workbench benchmark: the departments' inbox, the supervisors' board and the map of open cases
(workbench/, issue 14) with a year of the sample county in PostgreSQL — 100,000 cases, 10,000
open tasks — served by `gridflow api` as a child process. Target: each page's first request
answers within 300 ms (median and 95th percentile of the time until the whole page arrived,
over loopback: server time plus a loopback round trip).

The read models are written directly (COPY-speed bulk inserts of the rows the sink would have
written: cases filed over 365 days on the county's grids and categories, routed by its rules,
most closed, some sent back or whistled up, the open ones of the last weeks in every state),
because what is measured is reading them. Whether a page scans a table whole is read from
PostgreSQL's own counters (pg_stat_user_tables.seq_scan) around its requests.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.common import Context, Figure, Timer, buckets, pg_database, say, topic_prefix
from bench.ingest import start_api
from gridflow.core import case as core
from gridflow.core.geo import random_point_in
from gridflow.core.refdata import ReferenceData, load_reference_data
from gridflow.core.routing import route

CASES = 100_000
OPEN_TASKS = 10_000
DAYS = 365
TARGET_S = 0.300
ROUNDS = 25
BATCH = 5_000


# --- the year of the county, as rows ----------------------------------------------------------


def county_rows(ref: ReferenceData, cases: int, open_tasks: int, now: datetime, seed: int = 14,
                ) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(cases, tasks) rows in batches: filed evenly over DAYS days before `now`; the newest
    cases hold the open tasks (about `open_tasks` of them), everything older is closed."""
    rng = random.Random(seed)
    grids = sorted(ref.grids.values(), key=lambda g: g.code)
    categories = sorted((c for c in ref.categories.values() if c.enabled), key=lambda c: c.code)
    routes: dict[tuple[str, str], tuple[str, ...]] = {}
    open_cases = int(open_tasks / 1.08)  # some open cases have two tasks
    case_rows: list[dict[str, Any]] = []
    task_rows: list[dict[str, Any]] = []
    span = timedelta(days=DAYS)
    for i in range(cases):
        filed = now - span + span * (i + rng.random()) / cases
        grid = grids[rng.randrange(len(grids))]
        cat = categories[rng.randrange(len(categories))]
        key = (cat.code, grid.code)
        if key not in routes:
            routes[key] = route(ref, cat.code, grid).departments
        departments = list(routes[key])
        lat, lon = random_point_in(grid, rng)
        is_open = i >= cases - open_cases
        case_id = f"AJB{i:07d}"
        case = {"case_id": case_id, "status": "open" if is_open else "closed",
                "category_code": cat.code, "category_name": cat.name, "severity": 1,
                "grid_code": grid.code, "village_code": grid.village_code,
                "township_code": grid.township_code, "reporter": "worker:bench@" + grid.code,
                "report_id": f"r-{case_id}", "source": "grid_worker", "lat": lat, "lon": lon,
                "description": f"{cat.name}: 巡查发现的问题 {i}", "address": None,
                "cross_grid": False, "departments": departments, "routing_reason": "",
                "filed_at": filed, "closed_at": None, "whistled_at": None, "rating": None,
                "rated_at": None,
                "event_count": 6, "last_seq": 6, "last_hash": "", "updated_at": filed}
        if rng.random() < 0.08 and not is_open:  # one in twelve was sent back first
            departments = [f"{grid.township_code}.zongzhi", *departments]
        if rng.random() < 0.08 and is_open:  # and some open ones were whistled up
            departments = [*departments, "county.huanjing"]
            case["whistled_at"] = filed + timedelta(hours=2)
        for n, dept in enumerate(dict.fromkeys(departments), start=1):
            task = _task(rng, case, dept, n, filed, now, is_open,
                         sent_back=(not is_open and n == 1 and len(departments) > 1))
            task_rows.append(task)
            if task["closed_at"] is not None and task["state"] == core.CLOSED:
                case["closed_at"] = max(case["closed_at"] or task["closed_at"], task["closed_at"])
        if not is_open and rng.random() < 0.6:
            case["rating"] = rng.choice((3, 4, 4, 5, 5, 5))
            case["rated_at"] = case["closed_at"]
        case_rows.append(case)
        if len(case_rows) >= BATCH:
            yield case_rows, task_rows
            case_rows, task_rows = [], []
    if case_rows:
        yield case_rows, task_rows


def _task(rng: random.Random, case: dict[str, Any], dept: str, n: int, filed: datetime,
          now: datetime, is_open: bool, sent_back: bool) -> dict[str, Any]:
    sign_due = filed + timedelta(hours=2)
    resolve_due = filed + timedelta(days=3)
    row: dict[str, Any] = {
        "task_id": f"{case['case_id']}-T{n:02d}", "case_id": case["case_id"], "department": dept,
        "dispatch_reason": "whistle" if case["whistled_at"] and n > 1 else "routing",
        "category_code": case["category_code"], "grid_code": case["grid_code"], "severity": 1,
        "dispatched_at": filed, "sign_due": sign_due, "resolve_due": resolve_due,
        "verify_due": None, "signed_at": None, "resolved_at": None, "closed_at": None,
        "on_time_sign": None, "on_time_resolve": None, "reopened": 0, "extensions": 0,
        "pending_extension": None, "sent_back": sent_back, "whistled": bool(case["whistled_at"]),
        "escalation_level": 0, "deadline_state": "on_time", "updated_at": filed,
        "assignee": None, "assignee_name": None, "sent_back_reason": None,
    }
    if sent_back:
        return {**row, "state": core.SENT_BACK, "closed_at": filed + timedelta(hours=1),
                "sent_back_reason": "非本部门职责"}
    if is_open:
        state = rng.choices((core.DISPATCHED, core.SIGNED, core.IN_PROGRESS, core.RESOLVED),
                            (3, 2, 4, 1))[0]
        row["state"] = state
        if state != core.DISPATCHED:
            row.update(signed_at=filed + timedelta(minutes=40), on_time_sign=True)
        if state == core.RESOLVED:
            row.update(resolved_at=filed + timedelta(days=1), verify_due=filed + timedelta(days=3),
                       on_time_resolve=True)
        due = sign_due if state == core.DISPATCHED else resolve_due
        if due < now:
            row["deadline_state"] = "escalated" if rng.random() < 0.3 else "overdue"
            row["escalation_level"] = 1 if row["deadline_state"] == "escalated" else 0
        if state in (core.SIGNED, core.IN_PROGRESS) and rng.random() < 0.05:
            row["pending_extension"] = {"request_id": f"x{n}", "days": 2, "reason": "协调"}
        return row
    late = rng.random() < 0.1
    resolved = filed + (timedelta(days=4) if late else timedelta(hours=rng.uniform(3, 60)))
    return {**row, "state": core.CLOSED, "signed_at": filed + timedelta(minutes=30),
            "on_time_sign": True, "resolved_at": resolved, "on_time_resolve": not late,
            "verify_due": resolved + timedelta(days=2), "closed_at": resolved + timedelta(hours=20),
            "reopened": 1 if rng.random() < 0.03 else 0,
            "extensions": 1 if rng.random() < 0.04 else 0}


def load_county(db_url: str, ref: ReferenceData, cases: int, open_tasks: int,
                now: datetime) -> tuple[int, int, int, float]:
    """Write the rows; (cases, tasks, open tasks, seconds)."""
    from sqlalchemy import func, insert, select, text

    from sinks.models import Case, Task, create_schema, make_engine

    engine = make_engine(db_url)
    try:
        create_schema(engine)
        n_cases = n_tasks = 0
        with Timer() as t:
            for case_rows, task_rows in county_rows(ref, cases, open_tasks, now):
                with engine.begin() as conn:
                    conn.execute(insert(Case), case_rows)
                    conn.execute(insert(Task), task_rows)
                n_cases += len(case_rows)
                n_tasks += len(task_rows)
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
        with engine.connect() as conn:
            n_open = int(conn.execute(select(func.count()).select_from(Task).where(
                Task.state.in_(sorted(core.OPEN_TASK_STATES)))).scalar() or 0)
        return n_cases, n_tasks, n_open, t.seconds
    finally:
        engine.dispose()


# --- measuring -------------------------------------------------------------------------------------


def page_queries(session: Any, page: str, department: str, now: datetime) -> None:
    """What a page asks the database (workbench.inbox / workbench.board, as its route does)."""
    from workbench import board as bd
    from workbench import inbox as ib

    soon = now + timedelta(hours=8)
    if page == "inbox":
        ib.inbox_page(session, department, ib.Filters(), now, soon)
    elif page == "done":
        ib.inbox_page(session, department, ib.Filters(tab="done"), now, soon)
    elif page == "board":
        scope, r = bd.Scope(None), month(now)
        bd.kpis(session, scope, r, now)
        bd.indicators(session, load_reference_data(), scope, r, now)
        bd.trends(session, scope, r, "day")
    elif page == "map":
        bd.open_cases_for_map(session, bd.Scope(None), now)


def month(now: datetime) -> Any:
    """The last 30 days (Beijing), the board's range here: a whole month's tasks, whatever the
    day of the month the benchmark runs on."""
    from workbench import board as bd

    today = bd.local_day(now)
    return bd.Range(today - timedelta(days=29), today)


def whole_table_reads(db_url: str, page: str, department: str, now: datetime) -> list[str]:
    """The plan nodes of a page's queries that read the cases or tasks table whole: sequential
    scans, and index scans without a condition (a merge join walking a whole index)."""
    from sqlalchemy import text
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.orm import Session

    from sinks.models import make_engine

    engine = make_engine(db_url)
    statements: list[Any] = []
    try:
        with Session(engine) as session:
            real = session.execute

            def spy(statement: Any, *args: Any, **kwargs: Any) -> Any:
                statements.append(statement)
                return real(statement, *args, **kwargs)

            session.execute = spy  # type: ignore[method-assign]
            page_queries(session, page, department, now)
        found = []
        with engine.connect() as conn:
            for statement in statements:
                sql = str(statement.compile(dialect=postgresql.dialect(),
                                            compile_kwargs={"literal_binds": True}))
                if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
                    continue  # SET LOCAL and the like: nothing to plan
                plan = [r[0] for r in conn.execute(text(f"EXPLAIN (FORMAT TEXT) {sql}"))]
                for i, node in enumerate(plan):
                    whole = re.search(r"(Seq Scan|Index Scan|Index Only Scan)( Backward)?"
                                      r"(?: using \S+)? on (cases|tasks)\b", node)
                    if whole and (whole.group(1) == "Seq Scan" or not any(
                            "Index Cond" in later for later in plan[i + 1:i + 2])):
                        found.append(node.strip())
        return found
    finally:
        engine.dispose()


def time_page(client: httpx.Client, path: str, rounds: int) -> list[float]:
    for _ in range(2):  # warm: connections, the API's caches, PostgreSQL's buffers
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = client.get(path)
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, (path, r.status_code)
    return times


def busiest_department(db_url: str) -> tuple[str, int]:
    from sqlalchemy import func, select

    from sinks.models import Task, make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            dept, n = conn.execute(
                select(Task.department, func.count()).where(
                    Task.state.in_((core.DISPATCHED, core.SIGNED, core.IN_PROGRESS)))
                .group_by(Task.department).order_by(func.count().desc()).limit(1)).one()
        return str(dept), int(n)
    finally:
        engine.dispose()


def staff_token(db_url: str, ref: ReferenceData, department: str, *logins: str) -> dict[str, str]:
    from accounts.people import county_people
    from accounts.roles import DEPT_STAFF
    from accounts.sample import SampleSessions
    from accounts.store import AccountStore
    from sinks.models import make_engine

    engine = make_engine(db_url)
    try:
        sessions = SampleSessions(AccountStore(engine, ref), "bench")
        staff = next(p.login for p in county_people(ref) if p.active and any(
            g.role == DEPT_STAFF and g.scope == department for g in p.grants))
        return {"staff": sessions.token(staff), **{x: sessions.token(x) for x in logins}}
    finally:
        engine.dispose()


def run(ctx: Context) -> list[Figure]:
    from demo.live import free_port

    ref = load_reference_data()
    cases = ctx.n(CASES, 200)
    open_tasks = ctx.n(OPEN_TASKS, 20)
    rounds = 5 if ctx.quick else ROUNDS
    run_dir = ctx.work_dir / "workbench"
    run_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    figures: list[Figure] = []
    with topic_prefix(ctx.settings, ctx.unique("wb")) as prefix, \
            buckets(ctx.settings, ctx.unique("wb")) as (incoming, archive), \
            pg_database(ctx.settings, ctx.unique("wb")) as db_url:
        say(ctx.echo, f"workbench: writing {cases:,} cases of a year ...")
        n_cases, n_tasks, n_open, load_s = load_county(db_url, ref, cases, open_tasks, now)
        say(ctx.echo, f"workbench: {n_cases:,} cases, {n_tasks:,} tasks ({n_open:,} open) "
                      f"in {load_s:.0f} s")
        dept, dept_open = busiest_department(db_url)
        tokens = staff_token(db_url, ref, dept, "sv0001")
        settings = ctx.settings.with_(topic_prefix=prefix, bucket_incoming=incoming,
                                      bucket_archive=archive, database_url=db_url,
                                      api_port=free_port())
        api = start_api(settings, run_dir)
        try:
            pages = [
                (f"inbox, first page ({ref.departments[dept].short_name}: {dept_open:,} open)",
                 f"/w/d/{dept}/inbox", "staff", "inbox"),
                ("inbox, 已办结 tab, first page", f"/w/d/{dept}/inbox?tab=done", "staff", "done"),
                ("board (last 30 days: indicators, daily and weekly trends)",
                 f"/s/board?from={month(now).first}&to={month(now).last}", "sv0001", "board"),
                ("map of open cases (county)", "/s/map", "sv0001", "map"),
            ]
            for what, path, who, kind in pages:
                with httpx.Client(base_url=settings.api_url, timeout=60, headers={
                        "Authorization": f"Bearer {tokens[who]}"}) as client:
                    times = time_page(client, path, rounds)
                whole = whole_table_reads(db_url, kind, dept, datetime.now(UTC))
                median, p95 = statistics.median(times), sorted(times)[
                    max(0, int(0.95 * len(times)) - 1)]
                load = os.getloadavg()[0]
                say(ctx.echo, f"workbench: {what}: median {median * 1000:.0f} ms, "
                              f"p95 {p95 * 1000:.0f} ms, whole-table reads {whole}")
                figures.append(Figure(
                    f"workbench: {what}", f"{median * 1000:,.0f} ms median, "
                                          f"{p95 * 1000:,.0f} ms p95",
                    target="≤ 300 ms", met=p95 <= TARGET_S,
                    note=(f"{path}; {rounds} requests after 2 to warm up (load average "
                          f"{load:.1f} on {os.cpu_count()} CPUs); its queries' plans read "
                          + ("no table whole" if not whole else
                             f"{len(whole)} table(s) whole: {'; '.join(whole)}")),
                    raw={"median_s": median, "p95_s": p95, "whole_table_reads": whole,
                         "sizes": f"{n_cases:,} cases, {n_tasks:,} tasks ({n_open:,} open), "
                                  f"{rounds} requests"}))
        finally:
            api.stop()
    return figures

