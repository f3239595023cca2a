"""Read side of the API: report status, command outcomes, department inboxes, Open311 status.

Everything here reads the read models through sinks.queries (disposable tables rebuilt from
the log) plus the API's own ingest receipts, so a report accepted but not yet filed by the
pipeline shows as "accepted / 处理中" rather than unknown. Read-only: nothing is published.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from gridflow.core.case import TASK_STATE_NAMES_ZH
from gridflow.core.refdata import ReferenceData
from gridflow.events import SchemaError, iso, parse_ts
from producers import receipts
from producers.auth import DEPT, SUPERVISOR
from producers.context import Context, ctx
from producers.errors import ApiError, forbidden

router = APIRouter(tags=["status 办理进度"])

Auth = Annotated[str | None, Header(alias="Authorization", description="Bearer <token>")]

REPORT_STATUS_ZH = {
    "accepted": "已受理, 处理中",
    "filed": "已立案, 办理中",
    "merged": "已并入同一问题的案件办理",
    "closed": "已办结",
    "not_filed": "不予立案",
}
OPEN311_OPEN = frozenset({"new", "open"})
PHOTO_LINK_S = 3600


def _queries():  # type: ignore[no-untyped-def]
    from sinks import queries

    return queries


def _ts(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    return str(value)


def department_name(ref: ReferenceData, code: str) -> str:
    dept = ref.departments.get(code)
    return dept.name if dept else code


# --- report status (pure over query results) --------------------------------------------


def report_view(ref: ReferenceData, found: dict[str, Any], links: Any) -> dict[str, Any]:
    """The status answer from sinks.queries' report view; `links(bucket, key)` presigns."""
    case = found.get("case") or {}
    case_status = case.get("status") or "new"
    if case_status == "not_filed":
        status = "not_filed"
    elif case_status == "closed":
        status = "closed"
    elif found.get("merged"):
        status = "merged"
    elif case_status == "open":
        status = "filed"
    else:
        status = "accepted"
    tasks = [
        {
            "task_id": t["task_id"], "department": t["department"],
            "department_name": department_name(ref, t["department"]),
            "state": t["state"], "state_zh": TASK_STATE_NAMES_ZH.get(t["state"], t["state"]),
            "sign_due": _ts(t.get("sign_due")), "resolve_due": _ts(t.get("resolve_due")),
            "verify_due": _ts(t.get("verify_due")), "signed_at": _ts(t.get("signed_at")),
            "resolved_at": _ts(t.get("resolved_at")), "closed_at": _ts(t.get("closed_at")),
            "deadline_state": t.get("deadline_state"),
            "escalation_level": t.get("escalation_level", 0),
        }
        for t in found.get("tasks", [])
    ]
    departments = sorted({t["department"] for t in tasks} | set(case.get("departments") or []))
    not_filed = None
    if status == "not_filed":
        not_filed = {"code": case.get("not_filed_code"),
                     "reason_zh": case.get("not_filed_reason_zh"),
                     "reason_en": case.get("not_filed_reason_en")}
    return {
        "report_id": found["report_id"],
        "case_id": found.get("case_id") or case.get("case_id"),
        "status": status,
        "status_zh": REPORT_STATUS_ZH[status],
        "case_status": case_status,
        "category_code": case.get("category_code"),
        "category_name": case.get("category_name"),
        "grid_code": case.get("grid_code"),
        "cross_grid": case.get("cross_grid"),
        "departments": [{"code": d, "name": department_name(ref, d)} for d in departments],
        "tasks": tasks,
        "photos": [photo_view(p, links) for p in found.get("photos", [])],
        "not_filed": not_filed,
        "filed_at": _ts(case.get("filed_at")),
        "closed_at": _ts(case.get("closed_at")),
        "rating": case.get("rating"),
    }


def photo_view(p: dict[str, Any], links: Any) -> dict[str, Any]:
    archived = p.get("archive_status") == "archived" and p.get("archive_key")
    bucket = p.get("archive_bucket") if archived else p.get("incoming_bucket")
    key = p.get("archive_key") if archived else p.get("incoming_key")
    thumb = p.get("thumbnail_key")
    return {
        "role": p.get("role"), "task_id": p.get("task_id"), "sha256": p.get("sha256"),
        "archive_status": p.get("archive_status") or "pending",
        "url": links(bucket, key) if bucket and key else None,
        "thumbnail_url": links(p.get("archive_bucket"), thumb)
        if thumb and p.get("archive_bucket") else None,
    }


def accepted_view(receipt: receipts.Receipt) -> dict[str, Any]:
    """A report the API accepted that the pipeline has not filed (yet)."""
    ticket = receipt.response.get("case_id") if isinstance(receipt.response, dict) else None
    return {
        "report_id": receipt.report_id, "case_id": ticket, "status": "accepted",
        "status_zh": REPORT_STATUS_ZH["accepted"], "case_status": None, "departments": [],
        "tasks": [], "photos": [], "not_filed": None,
    }


def _links(c: Context):  # type: ignore[no-untyped-def]
    def link(bucket: str, key: str) -> str | None:
        try:
            return c.store.url(bucket, key, PHOTO_LINK_S)
        except Exception:  # noqa: BLE001 - a link is a convenience, never a failure
            return None

    return link


def report_status(c: Context, report_id: str) -> dict[str, Any] | None:
    found = _queries().report_status(c.engine, report_id)
    if found is not None:
        return report_view(c.ref, found, _links(c))
    receipt = receipts.get(c.engine, report_id)
    return accepted_view(receipt) if receipt is not None else None


@router.get("/api/v1/reports/{report_id}", summary="上报办理情况 / status of a report")
async def get_report(report_id: str, request: Request, authorization: Auth = None) -> JSONResponse:
    c = ctx(request)
    c.auth.identify(authorization)
    found = await run_in_threadpool(report_status, c, report_id)
    if found is None:
        raise ApiError(404, "report_not_found", "未找到该上报(编号有误或尚未提交成功)",
                       f"no report {report_id!r}", field="report_id")
    return JSONResponse(found)


# --- command outcomes ---------------------------------------------------------------------


def command_view(outcome: dict[str, Any] | None, command_id: str) -> dict[str, Any]:
    if outcome is None:
        return {"command_id": command_id, "status": "pending", "status_zh": "处理中"}
    accepted = bool(outcome.get("accepted"))
    return {
        "command_id": command_id,
        "status": "accepted" if accepted else "refused",
        "status_zh": "已执行" if accepted else "未执行",
        "case_id": outcome.get("case_id"), "task_id": outcome.get("task_id"),
        "command_type": outcome.get("command_type"), "event_type": outcome.get("event_type"),
        "code": outcome.get("code"), "reason_zh": outcome.get("reason_zh"),
        "reason_en": outcome.get("reason_en"), "at": _ts(outcome.get("at")),
    }


@router.get("/api/v1/commands/{command_id}", summary="指令结果 / outcome of a command")
async def get_command(command_id: str, request: Request, authorization: Auth = None,
                      wait: float = Query(0, ge=0, le=10, description="等待结果的秒数 / "
                                          "seconds to wait for an outcome")) -> JSONResponse:
    c = ctx(request)
    c.auth.identify(authorization)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        outcome = await run_in_threadpool(_queries().command_outcome, c.engine, command_id)
        if outcome is not None or loop.time() >= deadline:
            return JSONResponse(command_view(outcome, command_id))
        await asyncio.sleep(0.2)


# --- department inbox ----------------------------------------------------------------------


@router.get("/api/v1/departments/{code}/inbox", summary="部门待办 / a department's tasks")
async def inbox(
    code: str, request: Request, authorization: Auth = None,
    state: str | None = Query(None, description="task state, e.g. dispatched,signed"),
    overdue: bool | None = Query(None, description="only overdue (true) / not overdue (false)"),
    category: str | None = Query(None, description="category code or prefix, e.g. E01"),
    grid: str | None = Query(None, description="grid, village or township code prefix"),
) -> JSONResponse:
    c = ctx(request)
    principal = c.auth.require(authorization, DEPT, SUPERVISOR)
    if code not in c.ref.departments:
        raise ApiError(404, "unknown_department", f"部门编码「{code}」不存在",
                       f"unknown department {code!r}", field="code")
    if principal.kind == DEPT and principal.department != code:
        raise forbidden("只能查看本部门的待办", "staff see their own department's inbox only")
    states = [s.strip() for s in state.split(",") if s.strip()] if state else None
    rows = await run_in_threadpool(
        _queries().department_inbox, c.engine, code, states, overdue, category, grid, c.clock())
    return JSONResponse({"department": code, "department_name": department_name(c.ref, code),
                         "tasks": [_json_row(r) for r in rows]})


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: _ts(v) if isinstance(v, datetime) else v for k, v in row.items()}
    if "state" in out:
        out["state_zh"] = TASK_STATE_NAMES_ZH.get(out["state"], out["state"])
    return out


# --- for producers.commands ----------------------------------------------------------------


def case_township(engine: Engine, case_id: str) -> str | None:
    found = _queries().case_summary(engine, case_id)
    return (found or {}).get("township_code") or None


# --- Open311 GeoReport v2 -------------------------------------------------------------------


@dataclass(frozen=True)
class Open311Filters:
    ids: tuple[str, ...] | None
    category_codes: tuple[str, ...] | None
    start: datetime | None
    end: datetime | None
    statuses: tuple[str, ...] | None  # our case statuses

    @classmethod
    def parse(cls, ref: ReferenceData, ids: str | None, service_code: str | None,
              start_date: str | None, end_date: str | None, status: str | None) -> Open311Filters:
        from producers.open311 import Open311Error

        def split(v: str | None) -> tuple[str, ...] | None:
            items = tuple(x.strip() for x in (v or "").split(",") if x.strip())
            return items or None

        codes = split(service_code)
        cats = None
        if codes:
            unknown = [x for x in codes if x not in ref.services]
            if unknown:
                raise Open311Error(404, f"未知的诉求类别 {unknown[0]}",
                                   f"service_code {unknown[0]!r} not found")
            cats = tuple(ref.services[x].category_code for x in codes)
        statuses = None
        if split(status):
            wanted = split(status) or ()
            bad = [s for s in wanted if s not in ("open", "closed")]
            if bad:
                raise Open311Error(400, "status 只能是 open 或 closed",
                                   f"status must be open or closed, got {bad[0]!r}")
            mapped: list[str] = []
            for s in wanted:
                mapped += ["new", "open"] if s == "open" else ["closed", "not_filed"]
            statuses = tuple(mapped)
        try:
            start = parse_ts(start_date, "start_date") if start_date else None
            end = parse_ts(end_date, "end_date") if end_date else None
        except SchemaError as exc:
            raise Open311Error(400, "日期须为带时区的 ISO 8601 时间", str(exc)) from exc
        if not split(ids) and start is None and end is None:
            # The spec's default window: the last 90 days.
            start = datetime.now(UTC) - timedelta(days=90)
        return cls(split(ids), cats, start, end, statuses)


def service_for(ref: ReferenceData, category_code: str | None) -> tuple[str | None, str | None]:
    """(service_code, service_name) of a category: its Open311 service, else the category."""
    for s in ref.services.values():
        if s.category_code == category_code:
            return s.service_code, s.service_name
    cat = ref.categories.get(category_code or "")
    return category_code, cat.name if cat else None


def open311_view(ref: ReferenceData, ticket: str, case: dict[str, Any],
                 tasks: list[dict[str, Any]], report: dict[str, Any] | None) -> dict[str, Any]:
    """One GeoReport v2 service request from a case (and the resident's report, if known)."""
    report = report or {}
    case_status = case.get("status") or "new"
    code, name = service_for(ref, case.get("category_code") or report.get("category_code"))
    open_tasks = [t for t in tasks if t.get("state") not in ("closed", "sent_back", "cancelled")]
    agencies = sorted({t["department"] for t in (open_tasks or tasks)}
                      | set(case.get("departments") or []))
    if case_status == "not_filed":
        notes = f"不予立案: {case.get('not_filed_reason_zh') or ''}".strip()
    elif tasks:
        notes = "; ".join(f"{department_name(ref, t['department'])}: "
                          f"{TASK_STATE_NAMES_ZH.get(t['state'], t['state'])}" for t in tasks)
    else:
        notes = "已受理, 正在分派 / received, being routed"
    dues = [t.get("resolve_due") for t in open_tasks if t.get("resolve_due")]
    return {
        "service_request_id": ticket,
        "status": "open" if case_status in OPEN311_OPEN else "closed",
        "status_notes": notes,
        "service_name": name,
        "service_code": code,
        "description": report.get("description") or case.get("description"),
        "agency_responsible": "、".join(department_name(ref, d) for d in agencies) or None,
        "service_notice": None,
        "requested_datetime": _ts(report.get("submitted_at") or case.get("filed_at")),
        "updated_datetime": _ts(case.get("updated_at") or case.get("filed_at")),
        "expected_datetime": _ts(max(dues)) if dues else None,
        "address": report.get("address") or case.get("address"),
        "address_id": None,
        "zipcode": None,
        "lat": report.get("lat", case.get("lat")),
        "long": report.get("lon", case.get("lon")),
        "media_url": report.get("media_url") or None,
    }


def open311_request(c: Context, ticket: str) -> dict[str, Any] | None:
    """A ticket: a resident's (or worker's) report id behind it, else a case id."""
    q = _queries()
    receipt = receipts.by_ticket(c.engine, ticket)
    if receipt is not None:
        found = q.report_status(c.engine, receipt.report_id)
        if found is None:
            return open311_view(c.ref, ticket, {"status": "new",
                                                "filed_at": receipt.created_at}, [], None)
        return open311_view(c.ref, ticket, found.get("case") or {}, found.get("tasks", []),
                            found.get("report"))
    found = q.case_detail(c.engine, ticket)
    if found is None:
        return None
    return open311_view(c.ref, ticket, found["case"], found.get("tasks", []), found.get("report"))


def open311_requests(c: Context, f: Open311Filters) -> list[dict[str, Any]]:
    rows = _queries().cases(c.engine, case_ids=f.ids, category_codes=f.category_codes,
                            start=f.start, end=f.end, statuses=f.statuses, limit=1000)
    return [open311_view(c.ref, r["case"]["case_id"], r["case"], r.get("tasks", []),
                         r.get("report")) for r in rows]
