"""A department's inbox as the workbench shows it: tabs with counts, filters, one page of tasks
sorted by the nearest deadline, and what arrived since the page was drawn.

Read-only, over the read models (tasks joined to their cases). Every query is bounded by the
department (index tasks(department, state)) and returns one page; `now` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, false, func, or_, select
from sqlalchemy.orm import Session

from gridflow.core import case as core
from sinks.models import Case, Task

PAGE_SIZE = 50
WORKING = (core.DISPATCHED, core.SIGNED, core.IN_PROGRESS)  # the department's own clocks run
DONE = (core.RESOLVED, core.CLOSED)

# tab → (label, what it holds)
TABS: dict[str, tuple[str, str]] = {
    "open": ("全部在办", "待签收与办理中的全部任务"),
    "sign": ("待签收", "已派遣到本部门、尚未签收"),
    "doing": ("办理中", "已签收, 正在处置"),
    "soon": ("即将超期", "已收到超时预警, 或距当前期限不足1个工作日"),
    "overdue": ("已超期", "已过当前期限仍未完成"),
    "done": ("已办结", "已办结待核查或已结案"),
}
TAB_ORDER = tuple(TABS)


@dataclass(frozen=True)
class Filters:
    """The inbox's query parameters (all optional): a filtered inbox is a link to share."""

    tab: str = "open"
    category: str = ""  # category code or its class prefix (E01)
    grid: str = ""
    township: str = ""
    state: str = ""  # a task state
    mine: str = ""  # an account id: only the tasks assigned to them
    page: int = 1

    def params(self, **changes: Any) -> dict[str, Any]:
        d = {"tab": self.tab, "category": self.category, "grid": self.grid,
             "township": self.township, "state": self.state, "mine": self.mine, "page": self.page}
        d.update(changes)
        if d.get("page") == 1:
            d["page"] = None
        if d.get("tab") == "open":
            d["tab"] = None
        return d


@dataclass
class InboxPage:
    filters: Filters
    counts: dict[str, int]
    rows: list[dict[str, Any]]
    total: int  # rows of the current tab (with filters)
    pages: int
    as_of: datetime
    assignable: bool = False
    notes: list[str] = field(default_factory=list)


def current_due() -> ColumnElement[Any]:
    """The deadline of the clock a task's state runs (NULL for final states)."""
    return case(
        (Task.state == core.DISPATCHED, Task.sign_due),
        (Task.state.in_((core.SIGNED, core.IN_PROGRESS)), Task.resolve_due),
        (Task.state == core.RESOLVED, Task.verify_due),
        else_=None,
    )


def tab_condition(tab: str, now: datetime, soon_until: datetime) -> ColumnElement[bool]:
    due = current_due()
    overdue = or_(due < now, Task.deadline_state.in_(("overdue", "escalated")))
    if tab == "open":
        return Task.state.in_(WORKING)
    if tab == "sign":
        return Task.state == core.DISPATCHED
    if tab == "doing":
        return Task.state.in_((core.SIGNED, core.IN_PROGRESS))
    if tab == "soon":
        return and_(Task.state.in_(WORKING), ~overdue,
                    or_(Task.deadline_state == "warned", due <= soon_until))
    if tab == "overdue":
        return and_(Task.state.in_(WORKING), overdue)
    if tab == "done":
        return Task.state.in_(DONE)
    return false()


def filter_conditions(department: str, f: Filters) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = [Task.department == department]
    if f.category:
        out.append(Task.category_code.like(f"{_like(f.category)}%", escape="\\"))
    if f.grid:
        out.append(Task.grid_code == f.grid)
    if f.township:
        out.append(Task.grid_code.like(f"{_like(f.township)}%", escape="\\"))
    if f.state:
        out.append(Task.state == f.state)
    if f.mine:
        out.append(Task.assignee == f.mine)
    return out


def tab_counts(session: Session, department: str, f: Filters, now: datetime,
               soon_until: datetime) -> dict[str, int]:
    """Tasks in each tab, the filters applied: one aggregate over the department's working
    tasks (the clocks), one count of its finished ones (an index range, nothing computed)."""
    working = [t for t in TAB_ORDER if t != "done"]
    cols = [func.sum(case((tab_condition(t, now, soon_until), 1), else_=0)).label(t)
            for t in working]
    row = session.execute(select(*cols).where(*filter_conditions(department, f),
                                              Task.state.in_(WORKING))).one()
    counts = {t: int(getattr(row, t) or 0) for t in working}
    counts["done"] = int(session.execute(
        select(func.count()).select_from(Task).where(*filter_conditions(department, f),
                                                      Task.state.in_(DONE))).scalar() or 0)
    return {t: counts[t] for t in TAB_ORDER}


def inbox_page(session: Session, department: str, f: Filters, now: datetime,
               soon_until: datetime) -> InboxPage:
    counts = tab_counts(session, department, f, now, soon_until)
    total = counts.get(f.tab, 0)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, f.page), pages)
    due = current_due()
    order = ([Task.resolved_at.desc(), Task.task_id.desc()] if f.tab == "done"
             else [due.is_(None), due, Task.task_id])
    query = (
        select(Task.__table__, due.label("due_at"), Case.category_name, Case.description,
               Case.address, Case.township_code, Case.village_code, Case.status.label("case_status"),
               Case.filed_at, Case.whistled_at)
        .join(Case, Case.case_id == Task.case_id, isouter=True)
        .where(and_(*filter_conditions(department, f), tab_condition(f.tab, now, soon_until)))
        .order_by(*order)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    )
    rows = [dict(r) for r in session.execute(query).mappings()]
    for r in rows:
        r["state_zh"] = core.TASK_STATE_NAMES_ZH.get(r["state"], r["state"])
    return InboxPage(Filters(**{**f.__dict__, "page": page}), counts, rows, total, pages, now)


def new_since(session: Session, department: str, since: datetime) -> int:
    """Tasks dispatched to the department after `since` that still wait for signing."""
    return int(session.execute(
        select(func.count()).select_from(Task).where(
            Task.department == department, Task.state == core.DISPATCHED,
            Task.dispatched_at > since)
    ).scalar() or 0)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
