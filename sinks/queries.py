"""Read helpers for the API and the dashboard: plain dicts (aware UTC datetimes) from the read models.

Guarantee: read-only; whatever depends on the time takes `now` (nothing here reads a clock).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, or_, select
from sqlalchemy.orm import Session

from gridflow.core import case as core
from sinks.models import (
    Case,
    CaseEvent,
    CommandOutcome,
    Photo,
    Report,
    Task,
    TaskHistory,
    table_of,
)

CASE_STATUS_ZH = {"new": "待受理", "open": "办理中", "closed": "已结案", "not_filed": "不予立案"}
STAGE_ZH = {
    "not_filed": "不予立案",
    "new": "待受理",
    "dispatched": "已派遣待签收",
    "in_progress": "处置中",
    "awaiting_verification": "已办结待核查",
    "closed": "已结案",
}
DEADLINE_STATE_ZH = {
    "on_time": "正常",
    "warned": "即将超时",
    "overdue": "已超时",
    "escalated": "已升级督办",
}
STAGE_DUE = {"sign": "sign_due", "resolve": "resolve_due", "verify": "verify_due"}

_cases, _tasks, _reports = table_of(Case), table_of(Task), table_of(Report)
_photos, _events, _history = table_of(Photo), table_of(CaseEvent), table_of(TaskHistory)
_outcomes = table_of(CommandOutcome)


def report_status(session: Session, report_id: str) -> dict[str, Any] | None:
    """What a reporter sees for their report: case, status, tasks, photos, or why not filed."""
    report = _one(session, select(_reports).where(_reports.c.report_id == report_id))
    if report is None:
        return None
    case_row = _one(session, select(_cases).where(_cases.c.case_id == report["case_id"])) or {}
    tasks = _task_list(session, report["case_id"])
    stage = _stage(case_row.get("status", "new"), tasks)
    return {
        "report_id": report_id,
        "case_id": report["case_id"],
        "merged": report["merged"],
        "distance_m": report["distance_m"],
        "submitted_at": report["submitted_at"],
        "status": case_row.get("status", "new"),
        "status_zh": CASE_STATUS_ZH.get(case_row.get("status", "new"), ""),
        "stage": stage,
        "stage_zh": STAGE_ZH[stage],
        "category_code": case_row.get("category_code"),
        "category_name": case_row.get("category_name"),
        "grid_code": case_row.get("grid_code"),
        "filed_at": case_row.get("filed_at"),
        "closed_at": case_row.get("closed_at"),
        "rating": case_row.get("rating"),
        "not_filed": _not_filed(case_row),
        "tasks": [_task_brief(t) for t in tasks],
        "photos": _photo_list(session, _photos.c.case_id == report["case_id"]),
    }


def case_detail(session: Session, case_id: str) -> dict[str, Any] | None:
    """Everything about one case: its row, reports, tasks with their timelines, photos, ledger."""
    row = _one(session, select(_cases).where(_cases.c.case_id == case_id))
    if row is None:
        return None
    tasks = _task_list(session, case_id)
    history = _rows(
        session,
        select(_history)
        .where(_history.c.case_id == case_id)
        .order_by(_history.c.seq, _history.c.task_id),
    )
    for task in tasks:
        task["state_zh"] = core.TASK_STATE_NAMES_ZH.get(task["state"], task["state"])
        task["history"] = [h for h in history if h["task_id"] == task["task_id"]]
    stage = _stage(row["status"], tasks)
    events = select(
        _events.c.seq,
        _events.c.type,
        _events.c.at,
        _events.c.actor,
        _events.c.event_id,
        _events.c.causation_id,
        _events.c.hash,
    )
    return {
        **row,
        "status_zh": CASE_STATUS_ZH.get(row["status"], ""),
        "stage": stage,
        "stage_zh": STAGE_ZH[stage],
        "not_filed": _not_filed(row),
        "reports": _rows(
            session,
            select(_reports)
            .where(_reports.c.case_id == case_id)
            .order_by(_reports.c.recorded_at, _reports.c.report_id),
        ),
        "tasks": tasks,
        "photos": _photo_list(session, _photos.c.case_id == case_id),
        "events": _rows(
            session,
            events.where(_events.c.case_id == case_id).order_by(_events.c.seq, _events.c.event_id),
        ),
        "refusals": _rows(
            session,
            select(_outcomes)
            .where(_outcomes.c.case_id == case_id, _outcomes.c.accepted.is_(False))
            .order_by(_outcomes.c.at),
        ),
    }


def department_inbox(
    session: Session,
    department: str,
    state: str | Iterable[str] | None = None,
    overdue: bool | None = None,
    category: str | None = None,
    grid: str | None = None,
    *,
    now: datetime,
) -> list[dict[str, Any]]:
    """A department's tasks, most urgent first.

    state: one state or several (default: every open state). overdue: True for tasks past
    the deadline of their current stage (or flagged overdue / escalated), False for the rest.
    category: a category code or its prefix (E01 = the whole class). grid: a grid code.
    """
    due = _current_due()
    is_overdue = or_(
        and_(due.is_not(None), due < now),
        _tasks.c.deadline_state.in_(("overdue", "escalated")),
    )
    states = [state] if isinstance(state, str) else sorted(state or core.OPEN_TASK_STATES)
    conditions: list[ColumnElement[bool]] = [
        _tasks.c.department == department,
        _tasks.c.state.in_(states),
    ]
    if overdue is not None:
        conditions.append(is_overdue if overdue else ~is_overdue)
    if category:
        conditions.append(_tasks.c.category_code.like(f"{category}%"))
    if grid:
        conditions.append(_tasks.c.grid_code == grid)
    query = (
        select(
            _tasks,
            due.label("due_at"),
            _cases.c.category_name,
            _cases.c.description,
            _cases.c.address,
            _cases.c.lat,
            _cases.c.lon,
            _cases.c.township_code,
            _cases.c.village_code,
            _cases.c.reporter,
        )
        .join(_cases, _cases.c.case_id == _tasks.c.case_id, isouter=True)
        .where(and_(*conditions))
        .order_by(due.is_(None), due, _tasks.c.task_id)
    )
    out = []
    for row in _rows(session, query):
        row["stage"] = core.STAGE_OF_STATE.get(row["state"])
        row["overdue"] = bool(
            (row["due_at"] is not None and row["due_at"] < now)
            or row["deadline_state"] in ("overdue", "escalated")
        )
        row["remaining_s"] = (row["due_at"] - now).total_seconds() if row["due_at"] else None
        row["state_zh"] = core.TASK_STATE_NAMES_ZH.get(row["state"], row["state"])
        row["deadline_state_zh"] = DEADLINE_STATE_ZH.get(row["deadline_state"], "")
        out.append(row)
    return out


def task_rows_for_metrics(session: Session) -> list[dict[str, Any]]:
    """One row per task with what the dashboard's rates need (按期办结率, satisfaction, ...)."""
    query = (
        select(
            _tasks.c.task_id,
            _tasks.c.case_id,
            _tasks.c.department,
            _tasks.c.state,
            _tasks.c.category_code,
            _tasks.c.grid_code,
            _cases.c.village_code,
            _cases.c.township_code,
            _tasks.c.dispatch_reason,
            _tasks.c.dispatched_at,
            _tasks.c.sign_due.label("sign_due_at"),
            _tasks.c.signed_at,
            _tasks.c.resolve_due.label("resolve_due_at"),
            _tasks.c.resolved_at,
            _tasks.c.closed_at,
            _tasks.c.on_time_sign,
            _tasks.c.on_time_resolve,
            _tasks.c.extensions,
            _tasks.c.sent_back,
            _tasks.c.reopened,
            _tasks.c.whistled,
            _tasks.c.escalation_level,
            _tasks.c.deadline_state,
            _cases.c.status.label("case_status"),
            _cases.c.rating,
        )
        .join(_cases, _cases.c.case_id == _tasks.c.case_id, isouter=True)
        .order_by(_tasks.c.dispatched_at, _tasks.c.task_id)
    )
    return _rows(session, query)


def command_outcome(session: Session, command_id: str) -> dict[str, Any] | None:
    """Accepted or refused (with the reason in Chinese and English); None while unknown."""
    return _one(session, select(_outcomes).where(_outcomes.c.command_id == command_id))


# --- helpers -------------------------------------------------------------------------------


def _rows(session: Session, query: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in session.execute(query).mappings()]


def _one(session: Session, query: Any) -> dict[str, Any] | None:
    row = session.execute(query).mappings().first()
    return dict(row) if row is not None else None


def _current_due() -> ColumnElement[Any]:
    """The deadline of the clock a task's state runs (NULL for final states)."""
    whens = [
        (_tasks.c.state == state, getattr(_tasks.c, STAGE_DUE[stage]))
        for state, stage in sorted(core.STAGE_OF_STATE.items())
    ]
    return case(*whens, else_=None)


def _task_list(session: Session, case_id: str) -> list[dict[str, Any]]:
    return _rows(
        session,
        select(_tasks)
        .where(_tasks.c.case_id == case_id)
        .order_by(_tasks.c.dispatched_at, _tasks.c.task_id),
    )


def _task_brief(t: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "task_id",
        "department",
        "state",
        "dispatched_at",
        "sign_due",
        "resolve_due",
        "verify_due",
        "signed_at",
        "resolved_at",
        "closed_at",
        "deadline_state",
        "escalation_level",
        "extensions",
        "reopened",
        "sent_back",
        "reroute_to",
    )
    return {
        **{k: t[k] for k in keys},
        "state_zh": core.TASK_STATE_NAMES_ZH.get(t["state"], t["state"]),
        "deadline_state_zh": DEADLINE_STATE_ZH.get(t["deadline_state"], ""),
    }


def _photo_list(session: Session, where: ColumnElement[bool]) -> list[dict[str, Any]]:
    query = (
        select(
            _photos.c.id,
            _photos.c.role,
            _photos.c.report_id,
            _photos.c.task_id,
            _photos.c.sha256,
            _photos.c.content_type,
            _photos.c.incoming_bucket,
            _photos.c.incoming_key,
            _photos.c.archive_status,
            _photos.c.archive_bucket,
            _photos.c.archive_key,
            _photos.c.thumbnail_key,
            _photos.c.archive_version_id,
            _photos.c.thumbnail_version_id,
            _photos.c.exif_taken_at,
            _photos.c.exif_lat,
            _photos.c.exif_lon,
            _photos.c.added_at,
            _photos.c.archived_at,
        )
        .where(where)
        .order_by(_photos.c.added_at, _photos.c.id)
    )
    return _rows(session, query)


def _not_filed(row: dict[str, Any]) -> dict[str, Any] | None:
    if row.get("status") != "not_filed":
        return None
    return {
        "code": row["not_filed_code"],
        "reason_zh": row["not_filed_reason_zh"],
        "reason_en": row["not_filed_reason_en"],
    }


def _stage(status: str, tasks: list[dict[str, Any]]) -> str:
    """Where a case stands, for its reporter: the least advanced open task decides."""
    if status != "open":
        return status if status in STAGE_ZH else "new"
    states = {t["state"] for t in tasks}
    if core.DISPATCHED in states:
        return "dispatched"
    if states & {core.SIGNED, core.IN_PROGRESS}:
        return "in_progress"
    if core.RESOLVED in states:
        return "awaiting_verification"
    return "dispatched"


# --- the API's reads (producers.status: a reporter's steps, Open311 requests) ----------------


def case_steps(session: Session, case_id: str, types: Iterable[str]) -> list[dict[str, Any]]:
    """The case's ledger events of `types` (seq, type, at, data), in case order."""
    t = table_of(CaseEvent).c
    query = (
        select(t.seq, t.type, t.at, t.data)
        .where(t.case_id == case_id, t.type.in_(sorted(types)))
        .order_by(t.seq, t.event_id)
    )
    return [dict(r) for r in session.execute(query).mappings()]


def case_township(session: Session, case_id: str) -> str | None:
    """The township a case lies in, None for an unknown case."""
    row = session.execute(select(Case.township_code).where(Case.case_id == case_id)).first()
    return row[0] if row else None


def _rows_by(session: Session, column: Any, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Rows of the column's table whose column is one of `keys`, by that value."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = session.execute(select(column.table).where(column.in_(wanted))).mappings()
    return {row[column.key]: dict(row) for row in rows}


def reports_by_id(session: Session, report_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The reports rows of `report_ids` (unknown ones left out), by report id."""
    return _rows_by(session, Report.report_id, report_ids)


def cases_by_id(session: Session, case_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The cases rows of `case_ids` (unknown ones left out), by case id."""
    return _rows_by(session, Case.case_id, case_ids)


def tasks_by_case(session: Session, case_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The tasks rows of each case, in dispatch order."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    if not case_ids:
        return by_case
    query = (
        select(Task.__table__)
        .where(Task.case_id.in_(case_ids))
        .order_by(Task.dispatched_at, Task.task_id)
    )
    for row in session.execute(query).mappings():
        by_case.setdefault(row["case_id"], []).append(dict(row))
    return by_case


def cases_matching(session: Session, *, scope: ColumnElement[bool] | None = None,
                   category_codes: Iterable[str] = (), statuses: Iterable[str] = (),
                   filed_from: datetime | None = None, filed_before: datetime | None = None,
                   limit: int) -> list[dict[str, Any]]:
    """Cases rows within `scope` (a condition on cases: the caller's) and the filters, newest
    filed first, at most `limit`."""
    query = select(Case.__table__)
    if scope is not None:
        query = query.where(scope)
    if category_codes:
        query = query.where(Case.category_code.in_(list(category_codes)))
    if statuses:
        query = query.where(Case.status.in_(list(statuses)))
    if filed_from:
        query = query.where(Case.filed_at >= filed_from)
    if filed_before:
        query = query.where(Case.filed_at < filed_before)
    query = query.order_by(Case.filed_at.desc(), Case.case_id).limit(limit)
    return [dict(r) for r in session.execute(query).mappings()]
