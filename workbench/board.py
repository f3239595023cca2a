"""What the supervisors' board shows beyond the read-only board: the indicators for any date
range, trends per day or week, the map of open cases, and the filtered case list; the exports
(CSV, XLSX) are built from the very same functions, so they hold the page's numbers.

Read-only, inside a scope (None: the whole county; else the townships'). Every query is bounded
by an index: tasks by dispatch time or by state, cases by filing or closing time or by status.
Days are Beijing days; `now` is passed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.orm import Session

from gridflow.core import case as core
from gridflow.core.metrics import COUNT_FIELDS, RATE_FIELDS, Indicators, format_rate, from_counts
from gridflow.core.refdata import ReferenceData
from sinks.models import Case, Task

LOCAL = timedelta(hours=8)
OPEN = tuple(sorted(core.OPEN_TASK_STATES))
WORKING = (core.DISPATCHED, core.SIGNED, core.IN_PROGRESS)
MAP_POINTS = 1500  # dots drawn at most (the most urgent first); the grids still count them all
CASES_PAGE = 50
EXPORT_MAX = 50_000


# --- the range ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """Beijing days [first, last], both included."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), UTC) - LOCAL

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), UTC) - LOCAL

    def as_of(self, now: datetime) -> datetime:
        """The moment the indicators are taken: the range's end, or now if that is earlier."""
        return min(self.end, now)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def local_day(moment: datetime) -> date:
    return (moment.astimezone(UTC) + LOCAL).date()


def presets(now: datetime) -> list[tuple[str, Range]]:
    today = local_day(now)
    month = today.replace(day=1)
    last_month_end = month - timedelta(days=1)
    return [("今日", Range(today, today)),
            ("近7日", Range(today - timedelta(days=6), today)),
            ("本月", Range(month, today)),
            ("上月", Range(last_month_end.replace(day=1), last_month_end)),
            ("近90日", Range(today - timedelta(days=89), today)),
            ("本年", Range(today.replace(month=1, day=1), today))]


def parse_range(first: str | None, last: str | None, now: datetime
                ) -> tuple[Range, list[tuple[str, str]]]:
    """The range asked for (default: this month to date) and what was wrong with it."""
    default = presets(now)[2][1]
    errors: list[tuple[str, str]] = []

    def day(value: str | None, name: str, fallback: date) -> date:
        if not value:
            return fallback
        try:
            return date.fromisoformat(value)
        except ValueError:
            errors.append((name, "日期格式应为 年-月-日, 例如 2026-11-01"))
            return fallback

    a = day(first, "from", default.first)
    b = day(last, "to", default.last)
    if a > b:
        errors.append(("to", "结束日期不能早于开始日期"))
        a, b = default.first, default.last
    if (b - a).days > 366 * 3:
        errors.append(("from", "日期范围不能超过3年"))
        a = b - timedelta(days=366 * 3)
    return Range(a, b), errors


# --- scope ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The townships a board counts (None: the county), narrowed by an optional filter."""

    townships: tuple[str, ...] | None

    def cases(self) -> ColumnElement[bool]:
        if self.townships is None:
            return true()
        return Case.township_code.in_(self.townships) if self.townships else false()

    def tasks(self) -> ColumnElement[bool]:
        """On tasks without a join: their grid lies in one of the townships."""
        if self.townships is None:
            return true()
        return or_(false(), *(Task.grid_code.like(f"{t}%") for t in self.townships if t))


def scope_for(board_townships: list[str] | None, township: str | None) -> Scope:
    if township:
        if board_townships is None or township in board_townships:
            return Scope((township,))
    return Scope(None if board_townships is None else tuple(board_townships))


def plain(session: Session) -> None:
    """No JIT for this transaction's queries on PostgreSQL: they read an index range each, and
    compiling them (what PostgreSQL does above jit_above_cost, which per-row lookups by key
    reach on paper) took 1.7 s for a query that then ran in 0.1 s."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))


# --- the figures ------------------------------------------------------------------------------------


def kpis(session: Session, scope: Scope, r: Range, now: datetime) -> dict[str, Any]:
    plain(session)
    due = _current_due()
    in_tasks = scope.tasks()

    def count(q: Any) -> int:
        return int(session.execute(q).scalar() or 0)

    open_tasks = and_(Task.state.in_(OPEN), in_tasks)
    return {
        "filed": count(select(func.count()).select_from(Case).where(
            Case.filed_at >= r.start, Case.filed_at < r.end, scope.cases())),
        "closed": count(select(func.count()).select_from(Case).where(
            Case.closed_at >= r.start, Case.closed_at < r.end, Case.status == "closed",
            scope.cases())),
        "open_cases": count(select(func.count()).select_from(Case).where(
            Case.status == "open", scope.cases())),
        "open_tasks": count(select(func.count()).select_from(Task).where(open_tasks)),
        "overdue_tasks": count(select(func.count()).select_from(Task).where(
            open_tasks, Task.state.in_(WORKING), due < now)),
        "escalated_tasks": count(select(func.count()).select_from(Task).where(
            open_tasks, Task.escalation_level > 0)),
    }


def indicator_rows(session: Session, scope: Scope, r: Range) -> list[dict[str, Any]]:
    """The tasks dispatched in the range, as gridflow.core.metrics reads them."""
    query = (
        select(Task.task_id, Task.department, Task.state, Task.dispatched_at,
               Task.resolve_due.label("resolve_due_at"), Task.resolved_at, Task.closed_at,
               Task.extensions, Task.sent_back, Task.reopened, Case.rating, Case.rated_at)
        .join(Case, Case.case_id == Task.case_id, isouter=True)
        .where(Task.dispatched_at >= r.start, Task.dispatched_at < r.end, scope.tasks())
    )
    return [dict(row) for row in session.execute(query).mappings()]


@dataclass(frozen=True)
class IndicatorLine:
    name: str
    code: str | None
    values: Indicators


def indicator_counts(session: Session, scope: Scope, r: Range, as_of: datetime
                     ) -> dict[str, dict[str, int]]:
    """department → the counts of gridflow.core.metrics (COUNT_FIELDS) over the tasks dispatched
    in the range, as of `as_of`: the module's row-by-row definitions as one SQL aggregate (held
    to them by tests/unit/test_workbench_indicators.py), so a month costs one index range."""
    plain(session)
    final = (core.CLOSED, core.SENT_BACK, core.CANCELLED)
    ended = and_(Task.state.in_(final), or_(Task.closed_at.is_(None), Task.closed_at <= as_of))
    dropped = and_(ended, Task.state.in_((core.SENT_BACK, core.CANCELLED)))
    kept = ~dropped
    closed = and_(ended, Task.state == core.CLOSED)
    resolved = and_(Task.resolved_at.is_not(None), Task.resolved_at <= as_of)
    done_at = func.coalesce(Task.resolved_at, Task.closed_at)
    on_time = or_(Task.resolve_due.is_(None),
                  and_(done_at.is_not(None), done_at <= Task.resolve_due))
    overdue = and_(~ended, Task.resolve_due.is_not(None), Task.resolve_due < as_of,
                   ~and_(Task.state.in_((core.RESOLVED, core.CLOSED)), resolved))
    sent_back = or_(and_(Task.state == core.SENT_BACK, ended),
                    and_(Task.state != core.SENT_BACK, Task.sent_back.is_(True)))
    # The case's rating by key, per task (a join would hash the whole cases table).
    rating = (select(Case.rating).where(Case.case_id == Task.case_id)
              .correlate(Task).scalar_subquery())
    rated_at = (select(Case.rated_at).where(Case.case_id == Task.case_id)
                .correlate(Task).scalar_subquery())
    rated = and_(rating.is_not(None), or_(rated_at.is_(None), rated_at <= as_of))

    counted = Task.dispatched_at <= as_of  # a department with none still has its line

    def n(condition: ColumnElement[bool]) -> Any:
        return func.sum(case((and_(counted, condition), 1), else_=0))

    columns = {
        "dispatched": n(true()), "accepted": n(kept), "sent_back": n(sent_back),
        "cancelled": n(and_(dropped, Task.state == core.CANCELLED)), "open": n(~ended),
        "overdue": n(overdue), "resolved": n(and_(kept, resolved)), "closed": n(and_(kept, closed)),
        "due_to_close": n(and_(kept, or_(closed, and_(Task.resolve_due.is_not(None),
                                                       Task.resolve_due <= as_of)))),
        "closed_on_time": n(and_(kept, closed, on_time)),
        "reworked": n(and_(kept, resolved, Task.reopened > 0)),
        "extended": n(and_(kept, Task.extensions > 0)), "rated": n(and_(kept, rated)),
        "rating_sum": func.sum(case((and_(counted, kept, rated), rating), else_=0)),
    }
    query = (
        select(Task.department, *(c.label(k) for k, c in columns.items()))
        .where(Task.dispatched_at >= r.start, Task.dispatched_at < r.end, scope.tasks())
        .group_by(Task.department)
    )
    return {row.department: {k: int(getattr(row, k) or 0) for k in columns}
            for row in session.execute(query)}


def indicators(session: Session, ref: ReferenceData, scope: Scope, r: Range,
               now: datetime) -> list[IndicatorLine]:
    """数字城管 indicators per department of the tasks dispatched in the range, as of its end
    (or now), then the total line."""
    counts = indicator_counts(session, scope, r, r.as_of(now))
    total = {k: sum(c[k] for c in counts.values()) for k in COUNT_FIELDS}
    found = [*(from_counts(d, counts[d]) for d in sorted(counts)), from_counts(None, total)]
    lines = []
    for i in found:
        if i.department is None:
            lines.append(IndicatorLine("合计", None, i))
        else:
            dept = ref.departments.get(i.department)
            lines.append(IndicatorLine(dept.name if dept else i.department, i.department, i))
    return lines


# The columns of the indicator table, in order: (field, heading). The page and the exports.
INDICATOR_COLUMNS = (
    ("dispatched", "派遣数"), ("accepted", "应办数"), ("open", "在办数"), ("overdue", "超期数"),
    ("closed", "结案数"), ("close_rate", "结案率"), ("due_to_close", "应结案数"),
    ("closed_on_time", "按期结案数"), ("on_time_close_rate", "按期结案率"),
    ("rework_rate", "返工率"), ("extension_rate", "延期率"), ("send_back_rate", "退单率"),
    ("mean_satisfaction", "满意度"),
)


def indicator_cell(line: IndicatorLine, field: str) -> str:
    value = getattr(line.values, field)
    if field in RATE_FIELDS:
        return format_rate(value)
    if field == "mean_satisfaction":
        return "—" if value is None else f"{value:.2f}"
    return str(value)


# --- trends -------------------------------------------------------------------------------------------


def _bucket(column: Any, dialect: str, period: str) -> Any:
    """The Beijing day (or the Monday of its week) of a timestamp column, as text YYYY-MM-DD."""
    if dialect == "postgresql":
        local = func.timezone(literal_column("'Asia/Shanghai'"), column)
        unit: Any = literal_column("'week'" if period == "week" else "'day'")
        return func.to_char(func.date_trunc(unit, local), literal_column("'YYYY-MM-DD'"))
    if period == "week":
        return func.date(column, literal_column("'+8 hours'"), literal_column("'weekday 0'"),
                         literal_column("'-6 days'"))
    return func.date(column, literal_column("'+8 hours'"))


def bucket_starts(r: Range, period: str) -> list[date]:
    if period == "week":
        first = r.first - timedelta(days=r.first.weekday())
        return [first + timedelta(weeks=i) for i in range((r.last - first).days // 7 + 1)]
    return [r.first + timedelta(days=i) for i in range(r.days)]


@dataclass(frozen=True)
class TrendPoint:
    start: date
    filed: int
    closed: int
    closed_tasks: int
    closed_on_time: int

    @property
    def on_time_rate(self) -> float | None:
        return self.closed_on_time / self.closed_tasks if self.closed_tasks else None


def trends(session: Session, scope: Scope, r: Range, period: str) -> list[TrendPoint]:
    """Per day (or week): cases filed, cases closed, and of the tasks closed, how many were
    resolved by their deadline (当期按期率 = closed on time ÷ closed)."""
    plain(session)
    dialect = session.get_bind().dialect.name
    filed_b = _bucket(Case.filed_at, dialect, period)
    closed_b = _bucket(Case.closed_at, dialect, period)
    task_b = _bucket(Task.closed_at, dialect, period)
    filed: dict[str, int] = dict(session.execute(  # type: ignore[arg-type]
        select(filed_b, func.count()).where(Case.filed_at >= r.start, Case.filed_at < r.end,
                                            scope.cases()).group_by(filed_b)).all())
    closed: dict[str, int] = dict(session.execute(  # type: ignore[arg-type]
        select(closed_b, func.count()).where(Case.closed_at >= r.start, Case.closed_at < r.end,
                                             Case.status == "closed", scope.cases())
        .group_by(closed_b)).all())
    on_time = case((and_(Task.resolved_at.is_not(None), Task.resolve_due.is_not(None),
                         Task.resolved_at <= Task.resolve_due), 1), else_=0)
    tasks = {b: (n, k or 0) for b, n, k in session.execute(
        select(task_b, func.count(), func.sum(on_time))
        .where(Task.state == core.CLOSED, Task.closed_at >= r.start, Task.closed_at < r.end,
               scope.tasks())
        .group_by(task_b)).all()}
    out = []
    for start in bucket_starts(r, period):
        key = start.isoformat()
        n, k = tasks.get(key, (0, 0))
        out.append(TrendPoint(start, int(filed.get(key, 0)), int(closed.get(key, 0)), int(n),
                              int(k)))
    return out


def weeks_of(days: list[TrendPoint]) -> list[TrendPoint]:
    """Daily points summed into their weeks (each starting on its Monday): what
    `trends(..., "week")` gives for the same range, without asking the database again."""
    weeks: dict[date, list[int]] = {}
    for p in days:
        sums = weeks.setdefault(p.start - timedelta(days=p.start.weekday()), [0, 0, 0, 0])
        for i, v in enumerate((p.filed, p.closed, p.closed_tasks, p.closed_on_time)):
            sums[i] += v
    return [TrendPoint(start, *sums) for start, sums in sorted(weeks.items())]


# --- the map --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapCase:
    case_id: str
    lat: float
    lon: float
    grid_code: str
    category_name: str
    stage: str  # dispatched | in_progress | resolved: its least advanced open task
    overdue: bool


def open_cases_for_map(session: Session, scope: Scope, now: datetime, limit: int = MAP_POINTS,
                       stage: str | None = None, overdue_only: bool = False
                       ) -> tuple[list[MapCase], dict[str, tuple[int, int]], int]:
    """Open cases with a place (the most urgent first, at most `limit`), open and overdue counts
    per grid (of all of them), and how many there are. A case is open while one of its tasks
    is, so both come from the open tasks alone (index tasks(state, ...)); only the cases drawn
    are read, by key."""
    plain(session)
    due = _current_due()
    rank = case((Task.state == core.DISPATCHED, 0), (Task.state == core.RESOLVED, 2), else_=1)
    late = case((and_(Task.state.in_(WORKING), due < now), 1), else_=0)
    per_case = (
        select(Task.case_id.label("case_id"), func.min(Task.grid_code).label("grid_code"),
               func.min(rank).label("rank"), func.max(late).label("late"),
               func.min(due).label("due"))
        .where(Task.state.in_(OPEN), scope.tasks())
        .group_by(Task.case_id)
        .subquery()
    )
    wanted: list[ColumnElement[bool]] = []
    if stage in ("dispatched", "in_progress", "resolved"):
        wanted.append(per_case.c.rank == {"dispatched": 0, "in_progress": 1, "resolved": 2}[stage])
    if overdue_only:
        wanted.append(per_case.c.late == 1)
    by_grid = {
        grid or "": (int(n), int(k or 0))
        for grid, n, k in session.execute(
            select(per_case.c.grid_code, func.count(), func.sum(per_case.c.late))
            .where(*wanted).group_by(per_case.c.grid_code)).all()
    }
    def of_case(column: Any) -> Any:  # read by key for the drawn rows only (after the limit)
        return select(column).where(Case.case_id == per_case.c.case_id).scalar_subquery()

    urgent = session.execute(
        select(per_case.c.case_id, per_case.c.grid_code, per_case.c.rank, per_case.c.late,
               of_case(Case.lat), of_case(Case.lon), of_case(Case.category_name))
        .where(*wanted)
        .order_by(per_case.c.late.desc(), per_case.c.due, per_case.c.case_id).limit(limit)
    ).all()
    stages = {0: "dispatched", 1: "in_progress", 2: "resolved"}
    cases = [MapCase(cid, lat, lon, grid or "", name or "", stages.get(rank, "in_progress"),
                     bool(late))
             for cid, grid, rank, late, lat, lon, name in urgent
             if lat is not None and lon is not None]
    return cases, by_grid, sum(n for n, _ in by_grid.values())


# --- the case list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseFilters:
    first: date
    last: date
    township: str = ""
    grid: str = ""
    category: str = ""
    department: str = ""
    status: str = ""  # open | closed | not_filed
    overdue: bool = False
    page: int = 1

    def params(self, **changes: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"from": self.first.isoformat(), "to": self.last.isoformat(),
             "township": self.township, "grid": self.grid, "category": self.category,
             "department": self.department, "status": self.status,
             "overdue": "1" if self.overdue else "", "page": self.page}
        d.update(changes)
        if d.get("page") == 1:
            d["page"] = None
        return d


def case_list(session: Session, scope: Scope, f: CaseFilters, now: datetime,
              limit: int = CASES_PAGE, everything: bool = False
              ) -> tuple[list[dict[str, Any]], int]:
    """Cases filed in the range matching the filters, newest first: one page (or all, capped,
    for an export), with their departments and whether a task is overdue."""
    plain(session)
    r = Range(f.first, f.last)
    conditions: list[ColumnElement[bool]] = [Case.filed_at >= r.start, Case.filed_at < r.end,
                                             scope.cases()]
    if f.grid:
        conditions.append(Case.grid_code == f.grid)
    if f.category:
        conditions.append(Case.category_code.like(f"{f.category}%"))
    if f.status in ("open", "closed", "not_filed"):
        conditions.append(Case.status == f.status)
    due = _current_due()
    if f.department:
        conditions.append(Case.case_id.in_(select(Task.case_id).where(
            Task.department == f.department)))
    if f.overdue:
        conditions.append(Case.case_id.in_(select(Task.case_id).where(
            Task.state.in_(WORKING), due < now)))
    total = int(session.execute(select(func.count()).select_from(Case).where(*conditions))
                .scalar() or 0)
    query = (select(Case.case_id, Case.status, Case.category_code, Case.category_name,
                    Case.severity, Case.grid_code, Case.township_code, Case.source,
                    Case.description, Case.filed_at, Case.closed_at, Case.rating)
             .where(*conditions).order_by(Case.filed_at.desc(), Case.case_id))
    if everything:
        query = query.limit(EXPORT_MAX)
    else:
        query = query.limit(limit).offset((max(1, f.page) - 1) * limit)
    rows = [dict(x) for x in session.execute(query).mappings()]
    ids = [x["case_id"] for x in rows]
    tasks: dict[str, list[tuple[str, str, bool]]] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for cid, dept, state, late in session.execute(
            select(Task.case_id, Task.department, Task.state,
                   case((and_(Task.state.in_(WORKING), due < now), True), else_=False))
            .where(Task.case_id.in_(chunk)).order_by(Task.case_id, Task.task_id)
        ).all():
            tasks.setdefault(cid, []).append((dept, state, bool(late)))
    for x in rows:
        mine = tasks.get(x["case_id"], [])
        x["departments"] = [d for d, s, _ in mine if s not in (core.SENT_BACK,)]
        x["overdue"] = any(late for _, _, late in mine)
    return rows, total


def _current_due() -> Any:
    from workbench.inbox import current_due

    return current_due()


def indicator_dicts(lines: list[IndicatorLine]) -> list[dict[str, Any]]:
    return [{"name": x.name, "code": x.code, **asdict(x.values)} for x in lines]
