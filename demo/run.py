"""`gridflow demo`: a simulated county's week on the real local stack, end to end.

Brings the stack up, starts the worker, the SQL sink, the ingest API and the
notifier as child processes on a fresh topic prefix and database, uploads the
sample county's grid workers' photo reports (and residents' Open311 complaints)
through HTTP, then plays the departments (sign, progress, resolve with
after-photos, send back, extensions), supervisors (extensions; whistling big
cases up to several departments, 吹哨报到) and grid workers (verify, reject,
rate) on a scaled clock so deadlines warn, breach and escalate within
minutes, and prints what happened, what departments were told, and the 数字城管
indicators per department from the read models.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import httpx
from sqlalchemy import func, select

from gridflow import topics
from gridflow.clock import Clock, scaled_spec
from gridflow.core.case import OPEN_TASK_STATES
from gridflow.core.metrics import INDICATOR_LABELS, department_indicators, format_rate
from gridflow.core.refdata import ReferenceData, load_reference_data
from gridflow.events import parse_ts
from gridflow.settings import Settings, load_settings
from infra import services

# Monday 2026-11-16 08:30 in Beijing: the simulated week starts at the opening of business.
SIM_START = datetime(2026, 11, 16, 0, 30, tzinfo=UTC)


def say(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


# --- the cast ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cast:
    ref: ReferenceData
    dept_tokens: dict[str, str]
    supervisor_token: str
    worker_tokens: dict[str, str]  # worker id -> token
    grid_workers: dict[str, str]  # grid code -> a worker id of that grid

    @classmethod
    def load(cls, ref: ReferenceData, sessions: Any) -> Cast:
        """The county's people signed in (accounts.sample.SampleSessions): the first active
        staff member of each department, the county supervisor, every active grid worker."""
        from accounts.people import county_people
        from accounts.roles import COUNTY_SUPERVISOR, DEPT_STAFF

        people = sorted((p for p in county_people(ref) if p.active), key=lambda p: p.login)
        dept_tokens: dict[str, str] = {}
        for p in people:
            for g in p.grants:
                if g.role == DEPT_STAFF and g.scope not in dept_tokens:
                    dept_tokens[g.scope] = sessions.token(p.login)
        supervisor = next((p.login for p in people
                           if any(g.role == COUNTY_SUPERVISOR for g in p.grants)), None)
        if supervisor is None:
            raise click.ClickException(
                f"{ref.source}: staff.json names no active county supervisor (area "
                f"{ref.county.code}): the demo needs one to decide extensions"
            )
        workers = {w.id: sessions.token(w.id) for w in ref.workers.values() if w.active}
        grids: dict[str, str] = {}
        for w in sorted(ref.workers.values(), key=lambda w: w.id):
            if w.active:
                grids.setdefault(w.grid_code, w.id)
        return cls(ref, dept_tokens, sessions.token(supervisor), workers, grids)


@dataclass(frozen=True)
class TaskScript:
    """What the department and the reporter will do with one task, decided by its id."""

    sign_after_h: float | None  # None: nobody signs (it breaches and escalates)
    send_back: bool
    progress: bool
    extension_days: float | None
    resolve_after_h: float
    verify_ok: bool
    rating: int

    @classmethod
    def for_task(cls, task_id: str, seed: int) -> TaskScript:
        rng = random.Random(int(hashlib.sha256(f"{seed}:{task_id}".encode()).hexdigest()[:12], 16))
        roll = rng.random()
        return cls(
            sign_after_h=None if roll < 0.12 else rng.choice([0.2, 0.5, 1.0, 1.5, 3.0, 6.0]),
            send_back=0.12 <= roll < 0.2,
            progress=rng.random() < 0.6,
            extension_days=rng.choice([1.0, 2.0]) if rng.random() < 0.12 else None,
            resolve_after_h=rng.choice([2.0, 4.0, 8.0, 16.0, 30.0, 50.0]),
            verify_ok=rng.random() < 0.85,
            rating=rng.choices([5, 4, 3, 2, 1], weights=[50, 30, 10, 6, 4])[0],
        )


# --- the county supervisor: 吹哨报到 ---------------------------------------------------------

BIG_SEVERITY = 2  # 较大 and 重大
MAX_WHISTLES = 3  # per run: whistling is for the few big cases, not a routine


@dataclass(frozen=True)
class Whistle:
    """The supervisor calling several departments to one case at once (CaseWhistled)."""

    case_id: str
    departments: tuple[str, ...]
    reason: str


def whistle_for(
    case: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]], ref: ReferenceData
) -> Whistle | None:
    """Whether the county supervisor whistles departments up to this case, and which.

    A big case: open, not whistled yet, and either 较大/重大 (severity ≥ 2) or one of its open
    tasks escalated (a deadline passed without progress). Called: the departments responsible
    for the categories of the case's class (CJ/T 214 大类, e.g. 市容环境 → 城管局 and 生态环境局)
    and the township's 综合执法办, except those already working on the case; at least two of
    them, or it is no whistle-up (one department is plain dispatch).
    """
    if case.get("status") != "open" or case.get("whistled_at"):
        return None
    open_tasks = [t for t in tasks if t.get("state") in OPEN_TASK_STATES]
    escalated = any((t.get("escalation_level") or 0) > 0 for t in open_tasks)
    big = (case.get("severity") or 0) >= BIG_SEVERITY
    grid = ref.grids.get(case.get("grid_code") or "")
    category = ref.categories.get(case.get("category_code") or "")
    if not (big or escalated) or grid is None or category is None:
        return None
    related = [
        d
        for c in sorted(ref.categories.values(), key=lambda c: c.code)
        if c.class_code == category.class_code
        for d in ref.resolve_all(c.departments, grid)
    ]
    candidates = dict.fromkeys([*related, ref.resolve("{township}.zhifa", grid)])
    working = {t.get("department") for t in open_tasks}
    called = tuple(d for d in candidates if d in ref.departments and d not in working)
    if len(called) < 2:
        return None
    why = "案情重大" if big else "任务超时升级仍未处置"
    names = "、".join(ref.departments[d].short_name for d in called)
    return Whistle(
        str(case["case_id"]), called, f"{why}, 吹哨召集{names}联合处置 ({category.name})"
    )


# --- playing the departments ---------------------------------------------------------------


class Director:
    """Reads the read models and acts, through the API, when each task's script says so."""

    def __init__(self, api: str, cast: Cast, engine: Any, clock: Clock, seed: int) -> None:
        self.http = httpx.Client(base_url=api, timeout=30)
        self.cast = cast
        self.engine = engine
        self.clock = clock
        self.seed = seed
        self.done: set[tuple[str, str]] = set()
        self.actions: Counter[str] = Counter()
        self.photo = _after_photo()
        self.whistles = 0

    def _post(self, path: str, token: str, action: str, **kwargs: Any) -> None:
        r = self.http.post(path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        self.actions[action if r.status_code < 400 else f"{action}:HTTP{r.status_code}"] += 1

    def _once(self, task_id: str, action: str) -> bool:
        if (task_id, action) in self.done:
            return False
        self.done.add((task_id, action))
        return True

    def step(self) -> None:
        from sinks.models import Case, Task

        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(select(Task.__table__, Case.reporter, Case.grid_code.label("case_grid"),
                                       Case.status.label("case_status"), Case.rating,
                                       Case.severity, Case.category_code.label("case_category"),
                                       Case.whistled_at)
                                .join(Case, Case.case_id == Task.case_id)).mappings().all()
        by_case: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            self._act(dict(row), now)
            by_case.setdefault(row["case_id"], []).append(dict(row))
        for case_id, tasks in sorted(by_case.items()):
            self._supervise(case_id, tasks)

    def _supervise(self, case_id: str, tasks: list[dict[str, Any]]) -> None:
        """The county supervisor whistles departments up to a big case (吹哨报到), a few a run."""
        if self.whistles >= MAX_WHISTLES:
            return
        first = tasks[0]
        case = {"case_id": case_id, "status": first["case_status"], "severity": first["severity"],
                "category_code": first["case_category"], "grid_code": first["case_grid"],
                "whistled_at": first["whistled_at"]}
        whistle = whistle_for(case, tasks, self.cast.ref)
        if whistle is not None and self._once(case_id, "whistle"):
            self.whistles += 1
            self._post(f"/api/v1/cases/{case_id}/whistle", self.cast.supervisor_token, "吹哨",
                       json={"departments": list(whistle.departments), "reason": whistle.reason})

    def _hours_since(self, ts: Any, now: datetime) -> float:
        if ts is None:
            return -1.0
        if isinstance(ts, str):
            ts = parse_ts(ts)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return (now - ts).total_seconds() / 3600

    def _act(self, t: dict[str, Any], now: datetime) -> None:
        task_id, state, dept = t["task_id"], t["state"], t["department"]
        script = TaskScript.for_task(task_id, self.seed)
        token = self.cast.dept_tokens.get(dept)
        verifier = self.cast.grid_workers.get(t["case_grid"] or "")
        base = f"/api/v1/tasks/{task_id}"
        if state == "dispatched" and token and script.sign_after_h is not None:
            # A department whistled up to a case reports (报到): it does not send the task back.
            send_back = script.send_back and t.get("dispatch_reason") != "whistle"
            if self._hours_since(t["dispatched_at"], now) >= script.sign_after_h:
                if send_back and not t.get("replaces_task") and self._once(task_id, "send_back"):
                    self._post(f"{base}/send-back", token, "退单", json={"reason": "不属于本部门职责"})
                elif not send_back and self._once(task_id, "sign"):
                    self._post(f"{base}/sign", token, "签收", json={"note": "已签收"})
        elif state in ("signed", "in_progress") and token:
            since = self._hours_since(t["signed_at"] or t["dispatched_at"], now)
            if script.progress and since >= 0.3 and self._once(task_id, f"progress{t['reopened']}"):
                self._post(f"{base}/progress", token, "进展", json={"note": "已安排人员到现场处置"})
            if script.extension_days and since >= 0.5 and self._once(task_id, "extension"):
                self._post(f"{base}/extension", token, "延期申请",
                           json={"days": script.extension_days, "reason": "需协调多部门, 申请延期"})
            elif script.extension_days and since >= 1.0 and self._once(task_id, "decision"):
                approve = int(task_id[-2:]) % 3 != 0
                self._post(f"{base}/extension/decision", self.cast.supervisor_token, "延期审批",
                           json={"approve": approve, "reason": "" if approve else "理由不充分"})
            if since >= script.resolve_after_h and self._once(task_id, f"resolve{t['reopened']}"):
                files = [("photos", ("after.jpg", self.photo, "image/jpeg"))]
                part = json.dumps({"note": "已处置完毕, 现场已恢复"}, ensure_ascii=False)
                self._post(f"{base}/resolve", token, "办结", data={"resolution": part}, files=files)
        elif state == "resolved" and verifier:
            wtoken = self.cast.worker_tokens[verifier]
            if self._hours_since(t["resolved_at"], now) >= 1.0 and self._once(task_id, f"verify{t['reopened']}"):
                if script.verify_ok or t["reopened"] > 0:
                    self._post(f"{base}/verify", wtoken, "核查通过", json={"note": "现场核查已整改"})
                else:
                    self._post(f"{base}/reject", wtoken, "核查不通过", json={"reason": "整改不到位"})
        if t["case_status"] == "closed" and t["rating"] is None:
            reporter = str(t["reporter"] or "")
            wid = reporter.removeprefix("worker:").split("@")[0] if reporter.startswith("worker:") else ""
            if wid in self.cast.worker_tokens and self._once(t["case_id"], "rating"):
                self._post(f"/api/v1/cases/{t['case_id']}/rating", self.cast.worker_tokens[wid],
                           "评价", json={"score": script.rating, "comment": "回访"})


def _after_photo() -> bytes:
    from demo.images import make_jpeg

    return make_jpeg(640, 480, seed=99, taken_at=datetime(2026, 11, 17, 10, 0),
                     gps=(32.2, 110.0))


# --- the summary ------------------------------------------------------------------------


def summarize(engine: Any, as_of: datetime) -> str:
    from sinks.models import Case, DeadLetter, Photo, Report, Task
    from sinks.queries import task_rows_for_metrics

    lines: list[str] = []
    with engine.connect() as conn:
        def count(q: Any) -> int:
            return int(conn.execute(q).scalar() or 0)

        reports = count(select(func.count()).select_from(Report))
        merged = count(select(func.count()).select_from(Report).where(Report.merged.is_(True)))
        filed = count(select(func.count()).select_from(Case).where(Case.status != "not_filed"))
        not_filed = count(select(func.count()).select_from(Case).where(Case.status == "not_filed"))
        closed = count(select(func.count()).select_from(Case).where(Case.status == "closed"))
        photos = count(select(func.count()).select_from(Photo))
        archived = count(select(func.count()).select_from(Photo).where(Photo.archive_key.isnot(None),
                                                                      Photo.archive_key != ""))
        dead = count(select(func.count()).select_from(DeadLetter))
        by_type = event_counts(conn)
        per_dept = conn.execute(select(Task.department, Task.state, func.count())
                                .group_by(Task.department, Task.state)).all()
    lines += [
        "",
        "== 运行结果 / what happened ==",
        f"上报 reports in: {reports}  (近重复合并 merged duplicates: {merged})",
        f"立案 cases filed: {filed}  不予立案 not filed: {not_filed}  已结案 closed: {closed}",
        f"照片 photos: {photos}  已归档 archived: {archived}  死信 dead letters: {dead}",
        f"预警 warnings: {by_type.get('DeadlineWarned', 0)}  超时 breaches: "
        f"{by_type.get('DeadlineBreached', 0)}  升级 escalations: {by_type.get('TaskEscalated', 0)}",
        f"延期 extensions granted/refused: {by_type.get('ExtensionGranted', 0)}/"
        f"{by_type.get('ExtensionRefused', 0)}  退单 sent back: {by_type.get('TaskSentBack', 0)}  "
        f"返工 reworked: {by_type.get('TaskReopened', 0)}  评价 ratings: {by_type.get('CaseRated', 0)}  "
        f"吹哨报到 whistle-ups: {by_type.get('CaseWhistled', 0)}",
        notice_line(engine),
    ]
    ref = load_reference_data()
    lines += whistle_lines(engine, ref)
    lines += [
        "",
        "== 各部门任务 / tasks per department ==",
    ]
    states: dict[str, Counter[str]] = {}
    for dept, state, n in per_dept:
        states.setdefault(dept, Counter())[state] += n
    for dept in sorted(states):
        name = ref.departments[dept].name if dept in ref.departments else dept
        detail = ", ".join(f"{s} {n}" for s, n in sorted(states[dept].items()))
        lines.append(f"  {name:<24} {sum(states[dept].values()):>4}  ({detail})")
    with engine.connect() as conn:
        from sqlalchemy.orm import Session

        with Session(bind=conn) as session:
            rows = task_rows_for_metrics(session)
    indicators = department_indicators(rows, as_of)
    keys = ["dispatched", "closed", "overdue", "close_rate", "on_time_close_rate", "rework_rate",
            "extension_rate", "mean_satisfaction"]
    header = "  ".join(f"{INDICATOR_LABELS.get(k, k):>8}" for k in keys)
    lines += ["", f"== 数字城管考核指标 / indicators (as of {as_of:%Y-%m-%d %H:%M} UTC) ==",
              f"  {'部门 department':<24} {header}"]
    for ind in indicators:
        name = "全县 overall" if ind.department is None else (
            ref.departments[ind.department].name if ind.department in ref.departments else ind.department)
        vals = "  ".join(f"{_fmt(getattr(ind, k, None), k):>8}" for k in keys)
        lines.append(f"  {name:<24} {vals}")
    return "\n".join(lines)


def whistle_lines(engine: Any, ref: ReferenceData) -> list[str]:
    """The whistle-ups of the run (CaseWhistled), each with the departments called and the
    state of the task each one got, from the read models."""
    from sinks.models import Case, CaseEvent, Task

    with engine.connect() as conn:
        whistles = conn.execute(
            select(CaseEvent.case_id, CaseEvent.at, CaseEvent.data, Case.category_name,
                   Case.grid_code)
            .join(Case, Case.case_id == CaseEvent.case_id)
            .where(CaseEvent.type == "CaseWhistled").order_by(CaseEvent.at, CaseEvent.case_id)
        ).all()
        ids = [t["task_id"] for w in whistles for t in (w.data or {}).get("tasks", [])]
        states = dict(conn.execute(select(Task.task_id, Task.state)
                                   .where(Task.task_id.in_(ids))).all()) if ids else {}
    return render_whistles([dict(w._mapping) for w in whistles], states, ref)


def render_whistles(whistles: Sequence[Mapping[str, Any]], task_states: Mapping[str, str],
                    ref: ReferenceData) -> list[str]:
    from gridflow.core.case import TASK_STATE_NAMES_ZH

    lines = ["", f"== 吹哨报到 / whistle-ups: {len(whistles)} =="]
    if not whistles:
        lines.append("  (none)")
    for w in whistles:
        data = w.get("data") or {}
        grid = w.get("grid_code") or ""
        lines.append(f"  {w['case_id']}  {w.get('category_name') or ''}  "
                     f"{ref.area_name(grid)} {grid}  {local_hm(w.get('at'))}")
        if data.get("reason"):
            lines.append(f"    {data['reason']}")
        for t in data.get("tasks", []):
            dept = t.get("department", "")
            name = ref.departments[dept].name if dept in ref.departments else dept
            state = task_states.get(t.get("task_id", ""), "")
            lines.append(f"    → {name} ({dept})  任务 {t.get('task_id')}: "
                         f"{TASK_STATE_NAMES_ZH.get(state, state or '—')}")
    return lines


def local_hm(at: Any) -> str:
    """An instant as Beijing time, e.g. 11-17 14:05 (— when unknown)."""
    if at is None:
        return "—"
    when = parse_ts(at) if isinstance(at, str) else at
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return f"{when + timedelta(hours=8):%m-%d %H:%M} 北京时间"


def notice_line(engine: Any) -> str:
    """What the notifier told departments (sinks/notify.py), by kind and send status."""
    from gridflow.core.notify import KIND_NAMES_ZH
    from sinks.notify_models import NOTIFICATIONS, STATUS_ZH, create_notify_tables

    create_notify_tables(engine)
    t = NOTIFICATIONS.c
    with engine.connect() as conn:
        kinds = dict(conn.execute(select(t.kind, func.count()).group_by(t.kind)).all())
        statuses = dict(conn.execute(select(t.status, func.count()).group_by(t.status)).all())
    by_kind = ", ".join(f"{name} {kinds.get(k, 0)}" for k, name in KIND_NAMES_ZH.items())
    by_status = ", ".join(f"{STATUS_ZH[s]} {n}" for s, n in sorted(statuses.items()))
    return f"通知 notices to departments: {by_kind} ({by_status or '—'})"


def event_counts(conn: Any) -> dict[str, int]:
    from sinks.models import CaseEvent

    return dict(conn.execute(select(CaseEvent.type, func.count()).group_by(CaseEvent.type)).all())


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    if key == "mean_satisfaction":
        return f"{value:.2f}"
    return format_rate(value)


# --- orchestration ---------------------------------------------------------------------


def wait_healthy(api: str, procs: list[services.Service], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            p.check()
        try:
            if httpx.get(f"{api}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise click.ClickException(f"the API did not answer at {api} within {timeout_s:.0f} s")


def settle(engine: Any, procs: list[services.Service], quiet_s: float = 4.0, timeout_s: float = 90) -> None:
    """Wait until the read models stop changing (the pipeline has caught up)."""
    from sinks.models import CaseEvent

    last, since = -1, time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            p.check()
        with engine.connect() as conn:
            n = int(conn.execute(select(func.count()).select_from(CaseEvent)).scalar() or 0)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)


@click.command("demo")
@click.option("--reports", default=60, show_default=True, type=click.IntRange(min=1),
              help="Uploads and complaints to simulate.")
@click.option("--rate", default=4.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Uploads per second (real time).")
@click.option("--speed", default=1800.0, show_default=True, type=click.FloatRange(min=1),
              help="Simulated seconds per real second.")
@click.option("--days", default=4.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Simulated days the departments work after the uploads.")
@click.option("--database", default=None, metavar="URL|postgres",
              help="Read-model database [default: a fresh SQLite file for this run].")
@click.option("--seed", default=7, show_default=True, type=int)
def demo(reports: int, rate: float, speed: float, days: float, database: str | None, seed: int) -> None:
    """Run the whole pipeline on the local stack with a simulated county, and show the results."""
    from accounts.sample import SampleSessions
    from accounts.store import AccountStore
    from bootstrap import bootstrap
    from demo.simulator import run as run_simulator
    from infra import stack
    from sinks.models import create_schema

    base = load_settings()
    say("== gridflow demo: 青山县 (sample county) ==")
    say("[1/5] starting the local stack (Kafka, MinIO, PostgreSQL) ...")
    try:
        stack.up(base, echo=lambda m: say(f"      {m}"))
    except Exception as exc:  # a server that does not come up: its log tail is in the message
        raise click.ClickException(str(exc)) from exc
    run_id = time.strftime("demo%Y%m%d%H%M%S")
    run_dir = base.state_dir / "demo" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if database == "postgres":
        database = _fresh_postgres(base, run_id)
    db_url = database or f"sqlite:///{run_dir / 'gridflow.db'}"
    spec = scaled_spec(SIM_START, speed)
    settings = base.with_(topic_prefix=run_id, database_url=db_url, clock=spec,
                          faust_data_dir=run_dir / "faust")
    world = bootstrap(settings)
    clock = world.clock
    topics.ensure_topics(settings.kafka_bootstrap, settings.topic_prefix,
                         replication=settings.kafka_replication)
    engine = world.engine()
    create_schema(engine)
    ref = world.ref
    accounts = AccountStore(engine, ref)
    sessions = SampleSessions(accounts, "demo")  # the sample county's people, signed in
    cast = Cast.load(ref, sessions)
    say(f"[2/5] run {run_id}: topics '{run_id}.*', database {db_url}, "
        f"clock x{speed:g} from {SIM_START:%Y-%m-%d %H:%M} UTC; logs in {run_dir}")
    procs = [
        services.start("worker", ["worker"], settings, run_dir),
        services.start("sink", ["sink"], settings, run_dir),
        services.start("api", ["api"], settings, run_dir),
        services.start("notify", ["notify"], settings, run_dir),
    ]
    try:
        wait_healthy(settings.api_url, procs)
        say(f"[3/5] grid workers and residents uploading {reports} reports at {rate:g}/s ...")
        summary = asyncio.run(run_simulator(settings.api_url, rate, reports, None, seed, 8,
                                            echo=lambda m: say(f"      {m}"), clock=clock,
                                            tokens=cast.worker_tokens))
        say("      " + summary.render().replace("\n", "\n      "))
        settle(engine, procs, quiet_s=3.0)
        end = clock() + timedelta(days=days)
        say(f"[4/5] departments at work until {end:%Y-%m-%d %H:%M} UTC (simulated) ...")
        director = Director(settings.api_url, cast, engine, clock, seed)
        last = 0.0
        while clock() < end:
            for p in procs:
                p.check()
            director.step()
            if time.monotonic() - last >= 5:
                last = time.monotonic()
                acts = ", ".join(f"{k} {v}" for k, v in sorted(director.actions.items()))
                with engine.connect() as conn:
                    n = event_counts(conn)
                say(f"      [{clock():%m-%d %H:%M}] 预警 {n.get('DeadlineWarned', 0)}, 超时 "
                    f"{n.get('DeadlineBreached', 0)}, 升级 {n.get('TaskEscalated', 0)}, 吹哨 "
                    f"{n.get('CaseWhistled', 0)} | "
                    f"{acts or 'waiting'}")
            time.sleep(0.5)
        settle(engine, procs)
        say("[5/5] results from the read models")
        say(summarize(engine, clock()))
    finally:
        for p in procs:
            p.stop()
    say("")
    say(f"Data of this run: topics '{run_id}.*', database {db_url}")
    say(f"See it on the supervisors' board: GRIDFLOW_DATABASE_URL='{db_url}' "
        f"GRIDFLOW_CLOCK='scaled:{clock().isoformat()}@0x0' gridflow dashboard")
    say(sign_in_help(accounts, db_url))
    say("The stack is still running: `gridflow status`; stop it with `gridflow down`.")


# Whom the demo invites to sign in afterwards: one of each kind of board user.
SIGN_IN_SAMPLE = ("sv0001", "sv0102", "ds0003", "au0001", "ad0001")


def sign_in_help(accounts: Any, db_url: str) -> str:
    """How to sign in to the board as the sample county's people: a one-time code each for a
    few of them (the demo's own sessions of those accounts end), set a password with it."""
    from accounts.roles import ROLE_NAMES_ZH
    from accounts.store import Refused

    lines = ["", "== 登录 / sign in ==",
             "示例县人员的账号已创建(账号名 = 编号小写)。在看板登录页选择「首次登录」, 输入账号名、"
             "下面的一次性验证码并设置密码 / accounts of the sample county's people exist (login = "
             "id in lower case); on the board's sign-in page choose 首次登录 and set a password "
             "with the one-time code:"]
    for login in SIGN_IN_SAMPLE:
        try:
            code = accounts.reset_password(login, "demo")
            view = accounts.get(login)
        except Refused:
            continue
        roles = "、".join(ROLE_NAMES_ZH.get(g.role, g.role) for g in view.grants)
        lines.append(f"  {login:<8} {view.name} ({roles}): {code}")
    lines.append(f"其他人 / anyone else: GRIDFLOW_DATABASE_URL='{db_url}' gridflow users "
                 "reset-password <login>")
    return "\n".join(lines)


def _fresh_postgres(settings: Settings, name: str) -> str:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=settings.postgres_port, user=settings.postgres_user,
                         dbname=settings.postgres_db, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return (f"postgresql+psycopg://{settings.postgres_user}@127.0.0.1:{settings.postgres_port}/"
            f"{name}")


# --- `gridflow simulate`: drives an already running API ------------------------------------


@click.command("simulate")
@click.option(
    "--api",
    "api_url",
    default=None,
    metavar="URL",
    help="Base URL of the running API [default: from GRIDFLOW_API_HOST/PORT].",
)
@click.option(
    "--rate",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Requests started per second.",
)
@click.option(
    "--count", default=None, type=click.IntRange(min=1), help="Stop after this many requests."
)
@click.option(
    "--duration", default=None, type=click.FloatRange(min=0.1), help="Stop after this many seconds."
)
@click.option(
    "--seed",
    default=1,
    show_default=True,
    type=int,
    help="Same seed, same workers, places, photos and mishaps.",
)
@click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="At most this many requests in flight.",
)
def simulate(
    api_url: str | None,
    rate: float,
    count: int | None,
    duration: float | None,
    seed: int,
    concurrency: int,
) -> None:
    """Simulate the sample county's grid workers and residents against a running API.

    Photo reports with real JPEGs (EXIF GPS), retries of the same report, near-duplicates by a
    second worker, a few fake images, and residents' Open311 complaints; prints progress and
    a summary (accepted, duplicates by retry, refusals with reasons, p50/p99 latency).
    """
    from bootstrap import bootstrap
    from demo.simulator import sample_tokens
    from demo.simulator import simulate as run

    if count is None and duration is None:
        count = 100
    world = bootstrap()
    settings = world.settings
    url = api_url or settings.api_url
    click.echo(
        f"gridflow simulate: {url}, {rate:g}/s, "
        f"{f'{count} requests' if count else f'{duration:g} s'}, seed {seed}"
    )
    # The workers sign in to the API's database (GRIDFLOW_DATABASE_URL) as trusted local tools.
    tokens = sample_tokens(settings.database_url, world.ref)
    # The API's clock (GRIDFLOW_CLOCK): capture times must not lie in a simulated clock's future.
    summary = run(url, rate, count, duration, seed, concurrency, world.clock, tokens)
    click.echo(summary.render())
    if summary.counts()["failed"]:
        sys.exit(1)
