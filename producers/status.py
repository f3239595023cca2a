"""Read side of the API: report status, command outcomes, department inboxes, Open311 status.

Everything here reads the read models through sinks.queries (disposable tables rebuilt from
the log) plus the API's own ingest receipts, so a report accepted but not yet filed by the
pipeline shows as "accepted / 已受理, 处理中" rather than unknown. Read-only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from accounts import facts
from accounts.access import allow, in_scope
from accounts.roles import (
    AUDITOR,
    COUNTY_LEADER,
    COUNTY_SUPERVISOR,
    DEPT_STAFF,
    TOWNSHIP_SUPERVISOR,
    Principal,
    sees_originals,
)
from gridflow import events as ev
from gridflow.core.case import FINAL_TASK_STATES, STAGE_OF_STATE, TASK_STATE_NAMES_ZH
from gridflow.core.refdata import ReferenceData
from gridflow.events import SchemaError, iso, parse_ts
from producers import receipts
from producers.context import Context, ctx
from producers.errors import ApiError
from sinks import queries

router = APIRouter(tags=["status 办理进度"])

# (bucket, key, version id or None) -> a time-limited link to that version
Links = Callable[[str, str, str | None], str | None]

REPORT_STATUS_ZH = {
    "accepted": "已受理, 处理中",
    "filed": "已立案, 办理中",
    "merged": "已并入同一问题的案件办理",
    "closed": "已办结",
    "not_filed": "不予立案",
}
# The steps of a case its reporter sees (the rest of the log is for staff), each shown by its
# event's label (gridflow.contract).
STEPS = frozenset({
    ev.CASE_FILED, ev.REPORT_MERGED, ev.TASK_DISPATCHED, ev.TASK_SIGNED, ev.TASK_PROGRESS_NOTED,
    ev.TASK_RESOLVED, ev.TASK_SENT_BACK, ev.TASK_VERIFIED, ev.TASK_REOPENED, ev.TASK_CANCELLED,
    ev.EXTENSION_GRANTED, ev.CASE_WHISTLED, ev.DEADLINE_BREACHED, ev.TASK_ESCALATED,
    ev.CASE_CLOSED, ev.CASE_RATED, ev.CASE_NOT_FILED,
})
OPEN311_LIST_LIMIT = 1000
PHOTO_LINK_S = 3600


def jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601 UTC strings, recursively; the rest as is."""
    if isinstance(value, datetime):
        return iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def department_name(ref: ReferenceData, code: str) -> str:
    dept = ref.departments.get(code)
    return dept.name if dept else code


def current_due(task: dict[str, Any]) -> Any:
    """The deadline of the clock the task's state runs (None once final)."""
    stage = STAGE_OF_STATE.get(task.get("state", ""))
    return task.get(f"{stage}_due") if stage else None


# --- report status (pure over sinks.queries.report_status) -----------------------------------


def report_view(
    ref: ReferenceData, found: dict[str, Any], links: Links, originals: bool = True
) -> dict[str, Any]:
    """What a grid worker sees about a report: status, case, tasks, departments, deadlines,
    photo links, why it was not filed."""
    case_status = found.get("status") or "new"
    if case_status in ("not_filed", "closed"):
        status = case_status
    elif found.get("merged"):
        status = "merged"
    elif case_status == "open":
        status = "filed"
    else:
        status = "accepted"
    tasks = [
        {**t, "department_name": department_name(ref, t["department"]), "due_at": current_due(t)}
        for t in found.get("tasks", [])
    ]
    open_dues = [t["due_at"] for t in tasks if t["due_at"] is not None]
    departments = sorted({t["department"] for t in tasks})
    return jsonable(
        {
            "report_id": found["report_id"],
            "case_id": found["case_id"],
            "status": status,
            "status_zh": REPORT_STATUS_ZH[status],
            "case_status": case_status,
            "stage": found.get("stage"),
            "stage_zh": found.get("stage_zh"),
            "merged": bool(found.get("merged")),
            "distance_m": found.get("distance_m"),
            "category_code": found.get("category_code"),
            "category_name": found.get("category_name"),
            "grid_code": found.get("grid_code"),
            "grid_name": ref.area_name(found.get("grid_code") or "") or None,
            "submitted_at": found.get("submitted_at"),
            "filed_at": found.get("filed_at"),
            "closed_at": found.get("closed_at"),
            "rating": found.get("rating"),
            "not_filed": found.get("not_filed"),
            "departments": [{"code": d, "name": department_name(ref, d)} for d in departments],
            "next_due_at": min(open_dues) if open_dues else None,
            "tasks": tasks,
            "photos": [photo_view(p, links, originals) for p in found.get("photos", [])],
            "timeline": [step_view(ref, step) for step in found.get("timeline", [])],
        }
    )


def step_view(ref: ReferenceData, step: dict[str, Any]) -> dict[str, Any]:
    """One step of the case for its reporter: when, what (Chinese and the event type), which
    task and department."""
    data = step.get("data") or {}
    dept = data.get("department")
    return {
        "seq": step.get("seq"),
        "at": step.get("at"),
        "type": step.get("type"),
        "step_zh": ev.label_zh(step.get("type", "")),
        "task_id": data.get("task_id"),
        "department": dept,
        "department_name": department_name(ref, dept) if dept else None,
    }


def photo_view(p: dict[str, Any], links: Links, originals: bool = True) -> dict[str, Any]:
    """A photo with a time-limited link: the archived copy once archived, else the upload;
    without `originals`, only the EXIF-free thumbnail."""
    archived = p.get("archive_status") == "archived" and p.get("archive_key")
    bucket = p.get("archive_bucket") if archived else p.get("incoming_bucket")
    key = p.get("archive_key") if archived else p.get("incoming_key")
    version = p.get("archive_version_id") if archived else None
    thumb_bucket, thumb = p.get("archive_bucket"), p.get("thumbnail_key")
    return {
        "role": p.get("role"),
        "task_id": p.get("task_id"),
        "sha256": p.get("sha256"),
        "archive_status": p.get("archive_status") or "pending",
        "url": links(bucket, key, version) if originals and bucket and key else None,
        "thumbnail_url": (links(thumb_bucket, thumb, p.get("thumbnail_version_id"))
                          if thumb_bucket and thumb else None),
    }


def accepted_view(receipt: receipts.Receipt) -> dict[str, Any]:
    """A report the API accepted that the pipeline has not filed (yet)."""
    ticket = receipt.response.get("case_id") if isinstance(receipt.response, dict) else None
    return jsonable(
        {
            "report_id": receipt.report_id,
            "case_id": ticket,
            "status": "accepted",
            "status_zh": REPORT_STATUS_ZH["accepted"],
            "case_status": None,
            "merged": False,
            "submitted_at": receipt.created_at,
            "not_filed": None,
            "departments": [],
            "next_due_at": None,
            "tasks": [],
            "photos": [],
        }
    )


def _links(c: Context) -> Links:
    def link(bucket: str, key: str, version_id: str | None = None) -> str | None:
        try:
            return c.store.url(bucket, key, PHOTO_LINK_S, version_id)
        except Exception:  # noqa: BLE001 - a link is a convenience, never a failure
            return None

    return link


def case_steps(session: Session, case_id: str) -> list[dict[str, Any]]:
    """The case's reporter-facing events from the ledger, in case order."""
    return queries.case_steps(session, case_id, STEPS)


def report_status(c: Context, report_id: str, caller: Principal) -> dict[str, Any] | None:
    """The report as the caller may see it; None when there is none or it is outside their
    scope (a report not filed yet: its reporter's and auditors' only)."""
    case_id = facts.report_case(c.engine, report_id)
    if case_id is None:
        receipt = receipts.get(c.engine, report_id)
        if receipt is None:
            return None
        mine = bool(receipt.reporter) and receipt.reporter.startswith(
            f"worker:{caller.account_id}@")
        return accepted_view(receipt) if mine or caller.has(AUDITOR) else None
    case = facts.case_facts(c.engine, case_id)
    if not in_scope(caller, case):
        return None
    assert case is not None
    with Session(c.engine) as session:
        found = queries.report_status(session, report_id)
        if found is not None:
            found["timeline"] = case_steps(session, found["case_id"])
    if found is None:
        return None
    return report_view(c.ref, found, _links(c), sees_originals(caller, case))


@router.get("/api/v1/reports/{report_id}", summary="上报办理情况 / status of a report")
async def get_report(
    report_id: str, request: Request, caller: Annotated[Principal, allow("report.read")]
) -> JSONResponse:
    c = ctx(request)
    found = await run_in_threadpool(report_status, c, report_id, caller)
    if found is None:
        raise ApiError(
            404,
            "report_not_found",
            "未找到该上报(编号有误或尚未提交成功)",
            f"no report {report_id!r}",
            field="report_id",
        )
    return JSONResponse(found)


# --- command outcomes ---------------------------------------------------------------------


def command_view(outcome: dict[str, Any] | None, command_id: str) -> dict[str, Any]:
    if outcome is None:
        return {"command_id": command_id, "status": "pending", "status_zh": "处理中"}
    accepted = bool(outcome.get("accepted"))
    return jsonable(
        {
            "command_id": command_id,
            "status": "accepted" if accepted else "refused",
            "status_zh": "已执行" if accepted else "未执行",
            "case_id": outcome.get("case_id"),
            "task_id": outcome.get("task_id"),
            "command_type": outcome.get("command_type"),
            "event_type": outcome.get("event_type"),
            "code": outcome.get("code"),
            "reason_zh": outcome.get("reason_zh"),
            "reason_en": outcome.get("reason_en"),
            "at": outcome.get("at"),
        }
    )


def command_outcome(c: Context, command_id: str, caller: Principal) -> dict[str, Any] | None:
    """The outcome, once there is one and its case is inside the caller's scope (a command
    on a case outside it reads as pending forever, as an unknown id does)."""
    with Session(c.engine) as session:
        outcome = queries.command_outcome(session, command_id)
    if outcome is None or not in_scope(caller, facts.case_facts(c.engine, outcome["case_id"])):
        return None
    return outcome


@router.get("/api/v1/commands/{command_id}", summary="指令结果 / outcome of a command")
async def get_command(
    command_id: str,
    request: Request,
    caller: Annotated[Principal, allow("command.read")],
    wait: float = Query(
        0, ge=0, le=10, description="等待结果的秒数 / seconds to wait for an outcome"
    ),
) -> JSONResponse:
    c = ctx(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        outcome = await run_in_threadpool(command_outcome, c, command_id, caller)
        if outcome is not None or loop.time() >= deadline:
            return JSONResponse(command_view(outcome, command_id))
        await asyncio.sleep(0.2)


# --- department inbox ----------------------------------------------------------------------


def inbox_rows(
    c: Context,
    code: str,
    states: list[str] | None,
    overdue: bool | None,
    category: str | None,
    grid: str | None,
) -> list[dict[str, Any]]:
    with Session(c.engine) as session:
        rows = queries.department_inbox(
            session, code, states, overdue, category, grid, now=c.clock()
        )
    return [
        jsonable({**r, "grid_name": c.ref.area_name(r.get("grid_code") or "") or None})
        for r in rows
    ]


@router.get("/api/v1/departments/{code}/inbox", summary="部门待办 / a department's tasks")
async def inbox(
    code: str,
    request: Request,
    caller: Annotated[Principal, allow("inbox.read")],
    state: str | None = Query(
        None,
        description="任务状态, 逗号分隔 / task states, e.g. "
        "dispatched,signed (default: every open state)",
    ),
    overdue: bool | None = Query(None, description="true: 仅超时 only overdue; false: 未超时"),
    category: str | None = Query(None, description="类别编码或前缀 / category code or prefix"),
    grid: str | None = Query(None, description="网格编码 / grid code"),
) -> JSONResponse:
    c = ctx(request)
    if code not in c.ref.departments or not sees_inbox(c.ref, caller, code):
        raise ApiError(
            404,
            "unknown_department",
            f"部门编码「{code}」不存在",
            f"unknown department {code!r}",
            field="code",
        )
    states = [s.strip() for s in state.split(",") if s.strip()] if state else None
    unknown = [s for s in states or () if s not in TASK_STATE_NAMES_ZH]
    if unknown:
        raise ApiError(
            422,
            "bad_state",
            f"未知的任务状态「{unknown[0]}」",
            f"unknown task state {unknown[0]!r}",
            field="state",
        )
    rows = await run_in_threadpool(inbox_rows, c, code, states, overdue, category, grid)
    return JSONResponse(
        {
            "department": code,
            "department_name": department_name(c.ref, code),
            "count": len(rows),
            "tasks": rows,
        }
    )


def sees_inbox(ref: ReferenceData, caller: Principal, code: str) -> bool:
    """A department's inbox is its staff's; a township supervisor's for the departments serving
    their township (its offices and villages); the county's and auditors' for every one."""
    if caller.has(COUNTY_SUPERVISOR, COUNTY_LEADER, AUDITOR):
        return True
    if code in caller.scopes(DEPT_STAFF):
        return True
    area = ref.departments[code].area_code
    return any(area.startswith(t) for t in caller.scopes(TOWNSHIP_SUPERVISOR) if t)


# --- for producers.commands ----------------------------------------------------------------


def case_township(c: Context, case_id: str) -> str | None:
    with Session(c.engine) as session:
        return queries.case_township(session, case_id)


# --- Open311 GeoReport v2 -------------------------------------------------------------------


class Open311Error(Exception):
    """A GeoReport v2 error: rendered as [{code, description}] with this HTTP status."""

    def __init__(self, status: int, zh: str, en: str) -> None:
        super().__init__(en)
        self.status, self.zh, self.en = status, zh, en

    def description(self) -> str:
        return f"{self.zh} / {self.en}"


@dataclass(frozen=True)
class Open311Filters:
    ids: tuple[str, ...] | None
    category_codes: tuple[str, ...] | None
    start: datetime | None
    end: datetime | None
    statuses: tuple[str, ...] | None  # our case statuses

    @classmethod
    def parse(
        cls,
        ref: ReferenceData,
        now: datetime,
        ids: str | None,
        service_code: str | None,
        start_date: str | None,
        end_date: str | None,
        status: str | None,
    ) -> Open311Filters:
        def split(v: str | None) -> tuple[str, ...] | None:
            return tuple(x.strip() for x in (v or "").split(",") if x.strip()) or None

        cats = None
        codes = split(service_code)
        if codes:
            unknown = [x for x in codes if x not in ref.services]
            if unknown:
                raise Open311Error(
                    404, f"未知的诉求类别 {unknown[0]}", f"service_code {unknown[0]!r} not found"
                )
            cats = tuple(ref.services[x].category_code for x in codes)
        statuses = None
        wanted = split(status)
        if wanted:
            bad = [s for s in wanted if s not in ("open", "closed")]
            if bad:
                raise Open311Error(
                    400,
                    "status 只能是 open 或 closed",
                    f"status must be open or closed, got {bad[0]!r}",
                )
            statuses = tuple(
                x
                for s in wanted
                for x in (("new", "open") if s == "open" else ("closed", "not_filed"))
            )
        try:
            start = parse_ts(start_date, "start_date") if start_date else None
            end = parse_ts(end_date, "end_date") if end_date else None
        except SchemaError as exc:
            raise Open311Error(400, "日期须为带时区的 ISO 8601 时间", str(exc)) from exc
        wanted_ids = split(ids)
        if not wanted_ids and start is None and end is None:
            start = now - timedelta(days=90)  # the spec's default window
        return cls(wanted_ids, cats, start, end, statuses)


def service_for(ref: ReferenceData, category_code: str | None) -> tuple[str | None, str | None]:
    """(service_code, service_name) of a category: its Open311 service, else the category."""
    for s in ref.services.values():
        if s.category_code == category_code:
            return s.service_code, s.service_name
    cat = ref.categories.get(category_code or "")
    return category_code, cat.name if cat else None


def open311_view(
    ref: ReferenceData,
    ticket: str,
    case: dict[str, Any],
    tasks: list[dict[str, Any]],
    report: dict[str, Any] | None,
) -> dict[str, Any]:
    """One GeoReport v2 service request from a case row, its tasks and the resident's report."""
    report = report or {}
    case_status = case.get("status") or "new"
    code, name = service_for(ref, case.get("category_code") or report.get("category_code"))
    live = [t for t in tasks if t.get("state") not in FINAL_TASK_STATES]
    agencies = sorted({t["department"] for t in (live or tasks)})
    if case_status == "not_filed":
        notes = f"不予立案: {case.get('not_filed_reason_zh') or ''}".strip()
    elif tasks:
        notes = "; ".join(
            f"{department_name(ref, t['department'])}: "
            f"{TASK_STATE_NAMES_ZH.get(t['state'], t['state'])}"
            for t in tasks
        )
    else:
        notes = "已受理, 正在分派 / received, being routed"
    dues = [t["resolve_due"] for t in live if t.get("resolve_due")]
    return jsonable(
        {
            "service_request_id": ticket,
            "status": "open" if case_status in ("new", "open") else "closed",
            "status_notes": notes,
            "service_name": name,
            "service_code": code,
            "description": report.get("description") or case.get("description"),
            "agency_responsible": "、".join(department_name(ref, d) for d in agencies) or None,
            "service_notice": None,
            "requested_datetime": report.get("submitted_at") or case.get("filed_at"),
            "updated_datetime": case.get("updated_at") or case.get("filed_at"),
            "expected_datetime": max(dues) if dues else None,
            "address": report.get("address") or case.get("address"),
            "address_id": None,
            "zipcode": None,
            "lat": report.get("lat", case.get("lat")),
            "long": report.get("lon", case.get("lon")),
            "media_url": report.get("media_url") or None,
        }
    )


def open311_request(c: Context, ticket: str) -> dict[str, Any] | None:
    """A ticket: the report behind it (via the ingest receipt), else a case id."""
    found = open311_requests_by_id(c, [ticket])
    return found[0] if found else None


def open311_requests_by_id(
    c: Context, tickets: list[str] | tuple[str, ...]
) -> list[dict[str, Any]]:
    """Tickets as GET requests/{id}.json shows each, in the order asked, unknown ones left out.

    A ticket names the resident's own request (its ingest receipt → its report), else a case
    id. A request merged into another case as a near-duplicate keeps its ticket and shows the
    status of the case it joined; one accepted but not filed yet shows as open."""
    tickets = tuple(dict.fromkeys(tickets))[:OPEN311_LIST_LIMIT]
    r = receipts.ingest_receipts.c
    with Session(c.engine) as session:
        accepted = {
            row.ticket: row
            for row in session.execute(
                select(r.ticket, r.report_id, r.created_at).where(r.ticket.in_(tickets))
            )
        }
        reports = queries.reports_by_id(session, [x.report_id for x in accepted.values()])
        case_of = {
            t: reports[accepted[t].report_id]["case_id"]
            if t in accepted and accepted[t].report_id in reports
            else t
            for t in tickets
        }
        cases = queries.cases_by_id(session, case_of.values())
        openers = [row["report_id"] for row in cases.values() if row.get("report_id")]
        reports.update(
            queries.reports_by_id(session, [x for x in openers if x not in reports])
        )
        tasks = queries.tasks_by_case(session, list(cases))
    out = []
    for t in tickets:
        case = cases.get(case_of[t])
        receipt = accepted.get(t)
        if case is None:
            if receipt is not None:  # accepted, not filed yet
                out.append(
                    open311_view(
                        c.ref, t, {"status": "new"}, [], {"submitted_at": receipt.created_at}
                    )
                )
            continue
        report_id = receipt.report_id if receipt is not None else case.get("report_id")
        report = reports.get(report_id) if report_id else None
        out.append(open311_view(c.ref, t, case, tasks.get(case["case_id"], []), report))
    return out


def open311_requests(c: Context, f: Open311Filters, scope: Any = None) -> list[dict[str, Any]]:
    """Cases matching the filters and `scope` (a condition on cases: the caller's), newest
    first (a plain read of the cases and tasks tables).

    service_request_id overrides every other argument (GeoReport v2): then each ticket is
    looked up as on its own (`open311_requests_by_id`, which anyone holding the ticket may
    do), merged requests included."""
    if f.ids:
        return open311_requests_by_id(c, f.ids)
    with Session(c.engine) as session:
        cases = queries.cases_matching(
            session, scope=scope, category_codes=f.category_codes or (),
            statuses=f.statuses or (), filed_from=f.start, filed_before=f.end,
            limit=OPEN311_LIST_LIMIT)
        by_case = queries.tasks_by_case(session, [r["case_id"] for r in cases])
    return [
        open311_view(c.ref, r["case_id"], r, by_case.get(r["case_id"], []), None) for r in cases
    ]
