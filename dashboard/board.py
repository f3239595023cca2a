"""What the supervisors' board shows, computed from the read models as of `now`.

Read-only; the indicators come from gridflow.core.metrics, the same function the demo uses,
so the board and the evaluation reports never disagree.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, false, func, or_, select, true
from sqlalchemy.orm import Session

from gridflow.core.case import OPEN_TASK_STATES, TASK_STATE_NAMES_ZH
from gridflow.core.metrics import department_indicators
from gridflow.core.refdata import ReferenceData
from sinks.models import Case, CaseEvent, DeadLetter, Photo, Task
from sinks.queries import task_rows_for_metrics

LOCAL = timedelta(hours=8)  # the board speaks Beijing time


def _overdue_condition(now: datetime) -> Any:
    """Open tasks past the deadline of the stage they are in."""
    by_stage = or_(
        and_(Task.state == "dispatched", Task.sign_due < now),
        and_(Task.state.in_(("signed", "in_progress")), Task.resolve_due < now),
        and_(Task.state == "resolved", Task.verify_due < now),
    )
    return and_(Task.state.in_(sorted(OPEN_TASK_STATES)), by_stage)


def board_data(session: Session, ref: ReferenceData, now: datetime,
               townships: list[str] | None = None) -> dict[str, Any]:
    """KPIs, indicators per department, open/overdue per grid, recent escalations; of the given
    townships only (a township supervisor's board), or of the whole county (None)."""
    day_start = (now + LOCAL).replace(hour=0, minute=0, second=0, microsecond=0) - LOCAL
    in_case, in_task, of_cases = _scope(townships)

    def scalar(q: Any) -> int:
        return int(session.execute(q).scalar() or 0)

    overdue = and_(_overdue_condition(now), in_task)
    kpi: dict[str, float | None] = {  # counts, and the overall rates (None: nothing to rate)
        "reports_today": scalar(select(func.count()).select_from(Case)
                                .where(Case.filed_at >= day_start, in_case)),
        "open_cases": scalar(select(func.count()).select_from(Case)
                             .where(Case.status == "open", in_case)),
        "closed_cases": scalar(select(func.count()).select_from(Case)
                               .where(Case.status == "closed", in_case)),
        "not_filed": scalar(select(func.count()).select_from(Case)
                            .where(Case.status == "not_filed", in_case)),
        "open_tasks": scalar(select(func.count()).select_from(Task)
                             .where(Task.state.in_(sorted(OPEN_TASK_STATES)), in_task)),
        "overdue_tasks": scalar(select(func.count()).select_from(Task).where(overdue)),
        "escalated_tasks": scalar(select(func.count()).select_from(Task)
                                  .where(Task.state.in_(sorted(OPEN_TASK_STATES)),
                                         Task.escalation_level > 0, in_task)),
        "photos_archived": scalar(select(func.count()).select_from(Photo)
                                  .where(Photo.archive_status == "archived",
                                         of_cases(Photo.case_id))),
        # dead letters belong to no township: the county's board only
        "dead_letters": scalar(select(func.count()).select_from(DeadLetter))
        if townships is None else 0,
    }
    rows = task_rows_for_metrics(session)
    if townships is not None:
        rows = [r for r in rows if (r.get("township_code") or "") in townships]
    indicators = department_indicators(rows, now)
    overall = next((i for i in indicators if i.department is None), None)
    kpi["on_time_close_rate"] = overall.on_time_close_rate if overall else None
    kpi["mean_satisfaction"] = overall.mean_satisfaction if overall else None

    open_by_grid: Counter[str] = Counter()
    overdue_by_grid: Counter[str] = Counter()
    for grid, n in session.execute(select(Task.grid_code, func.count())
                                   .where(Task.state.in_(sorted(OPEN_TASK_STATES)), in_task)
                                   .group_by(Task.grid_code)).all():
        open_by_grid[grid or ""] = n
    for grid, n in session.execute(select(Task.grid_code, func.count()).where(overdue)
                                   .group_by(Task.grid_code)).all():
        overdue_by_grid[grid or ""] = n
    grids = [
        {"code": code, "name": _grid_name(ref, code), "township": _township_name(ref, code),
         "open": open_by_grid[code], "overdue": overdue_by_grid[code]}
        for code in sorted(open_by_grid, key=lambda c: (-overdue_by_grid[c], -open_by_grid[c], c))
    ]
    escalations = [
        {"case_id": r.case_id, "at": r.at, "actor": r.actor, "data": r.data}
        for r in session.execute(
            select(CaseEvent.case_id, CaseEvent.at, CaseEvent.actor, CaseEvent.data)
            .where(CaseEvent.type == "TaskEscalated", of_cases(CaseEvent.case_id))
            .order_by(CaseEvent.at.desc()).limit(15)
        ).all()
    ]
    overdue_tasks = [
        {**dict(r._mapping), "department_name": _dept_name(ref, r.department),
         "grid_name": _grid_name(ref, r.grid_code or ""),
         "state_zh": TASK_STATE_NAMES_ZH.get(r.state, r.state)}
        for r in session.execute(
            select(Task.task_id, Task.case_id, Task.department, Task.state, Task.sign_due,
                   Task.resolve_due, Task.escalation_level, Task.grid_code, Case.category_name)
            .join(Case, Case.case_id == Task.case_id).where(overdue)
            .order_by(Task.escalation_level.desc(), Task.dispatched_at).limit(20)
        ).all()
    ]
    return {
        "now": now,
        "county": ref.county.name,
        "kpi": kpi,
        "departments": [
            {**_indicator_dict(i), "name": "全县合计" if i.department is None
             else _dept_name(ref, i.department)}
            for i in indicators
        ],
        "grids": grids,
        "escalations": escalations,
        "overdue": overdue_tasks,
    }


def _scope(townships: list[str] | None) -> tuple[Any, Any, Any]:
    """Conditions on cases, on tasks, and on a case id column, for the townships' share."""
    if townships is None:
        return true(), true(), lambda column: true()
    in_case = Case.township_code.in_(sorted(townships))
    in_task = or_(false(), *(Task.grid_code.like(f"{t}%") for t in sorted(townships) if t))
    return in_case, in_task, lambda column: column.in_(select(Case.case_id).where(in_case))


def _indicator_dict(i: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(i)


def _dept_name(ref: ReferenceData, code: str | None) -> str:
    if code is None:
        return ""
    dept = ref.departments.get(code)
    return dept.name if dept else code


def _grid_name(ref: ReferenceData, code: str) -> str:
    grid = ref.grids.get(code)
    return grid.name if grid else (code or "—")


def _township_name(ref: ReferenceData, code: str) -> str:
    grid = ref.grids.get(code)
    if grid is None:
        return ""
    township = ref.townships.get(grid.township_code)
    return township.name if township else grid.township_code
