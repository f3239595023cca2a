"""The supervisors' console (督办台): the queues a supervisor works every day (extension
requests, escalations at their level, cases sent back more than once, cases reopened after a
failed verification), the whistle (吹哨报到), cancelling a case, and extension decisions.

Each queue is read inside the caller's jurisdiction only (their supervising grants, never a
department grant they also hold); every decision is a command the case processor decides.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from accounts import facts
from accounts.access import allow, not_found
from accounts.roles import (
    AUDITOR,
    COUNTY_LEADER,
    COUNTY_SUPERVISOR,
    SUPERVISING,
    TOWNSHIP_SUPERVISOR,
    Principal,
)
from gridflow import events as ev
from gridflow.core import case as core
from producers.commands import case_actor, case_missing
from producers.context import Context, ctx
from sinks.models import Case, Task
from workbench import commands as cmd
from workbench.dept import decorate_rows
from workbench.forms import case_post, form_page, task_post
from workbench.web import new_form_key, query, render, see_other

router = APIRouter(tags=["console 督办台"], include_in_schema=False)

PAGE = 50
TOWNSHIP_LEVELS = ("grid", "village", "township")
COUNTY_LEVELS = ("county_department", "county_leadership")
OPEN = tuple(sorted(core.OPEN_TASK_STATES))


@dataclass(frozen=True)
class Queue:
    key: str
    title: str
    explain: str


QUEUES = {
    "extensions": Queue("extensions", "延期待审批",
                        "部门提出的延期申请: 批准后办结期限顺延; 驳回须说明理由, 理由会显示给部门。"),
    "escalated": Queue("escalated", "升级督办",
                       "超时未办、已升级到本级督办的任务(乡镇(街道)督办: 网格、村(社区)、乡镇级; "
                       "县级督办: 县直部门、县领导级)。"),
    "sent-back": Queue("sent-back", "多次退单",
                       "被退单两次及以上仍未办结的案件: 责任部门不明, 需要督办协调或吹哨报到。"),
    "reopened": Queue("reopened", "核查不通过返工",
                      "办结后现场核查不通过(或回访不满意)被退回返工、仍在办理的任务。"),
}


def supervising(caller: Principal) -> Principal:
    """The caller with only their supervising (and auditing) grants: the console's scope."""
    return replace(caller, grants=tuple(g for g in caller.grants
                                        if g.role in (*SUPERVISING, AUDITOR)))


def levels_for(caller: Principal, all_levels: bool) -> tuple[str, ...] | None:
    if all_levels or caller.has(AUDITOR):
        return None
    levels: tuple[str, ...] = ()
    if caller.has(TOWNSHIP_SUPERVISOR):
        levels += TOWNSHIP_LEVELS
    if caller.has(COUNTY_SUPERVISOR, COUNTY_LEADER):
        levels += COUNTY_LEVELS
    return levels


def queue_condition(key: str, levels: tuple[str, ...] | None) -> ColumnElement[bool]:
    if key == "extensions":
        return and_(Task.state.in_((core.SIGNED, core.IN_PROGRESS)),
                    Task.pending_extension.is_not(None))
    if key == "escalated":
        cond = and_(Task.state.in_(OPEN), Task.escalation_level > 0)
        return cond if levels is None else and_(cond, Task.escalation_level_code.in_(levels))
    if key == "sent-back":
        twice = (select(Task.case_id).where(Task.sent_back.is_(True)).group_by(Task.case_id)
                 .having(func.count() >= 2))
        return and_(Task.state.in_(OPEN), Task.case_id.in_(twice))
    if key == "reopened":
        return and_(Task.state.in_(OPEN), Task.reopened > 0)
    raise KeyError(key)


def queue_rows(session: Session, caller: Principal, key: str, levels: tuple[str, ...] | None,
               page: int, limit: int = PAGE) -> tuple[list[dict[str, Any]], int]:
    scope = facts.cases_in_scope(supervising(caller))
    where = and_(queue_condition(key, levels), scope)
    total = int(session.execute(select(func.count()).select_from(Task)
                                .join(Case, Case.case_id == Task.case_id).where(where)).scalar()
                or 0)
    due = core_due()
    order = {"extensions": [Task.updated_at], "escalated": [Task.escalation_level.desc(), due],
             "sent-back": [due], "reopened": [due]}[key]
    rows = [dict(r) for r in session.execute(
        select(Task.__table__, due.label("due_at"), Case.category_name, Case.description,
               Case.township_code, Case.status.label("case_status"))
        .join(Case, Case.case_id == Task.case_id).where(where)
        .order_by(*order, Task.task_id).limit(limit).offset((page - 1) * limit)
    ).mappings()]
    if key == "sent-back" and rows:
        counts = dict(session.execute(
            select(Task.case_id, func.count()).where(
                Task.case_id.in_([r["case_id"] for r in rows]), Task.sent_back.is_(True))
            .group_by(Task.case_id)).all())
        for r in rows:
            r["sent_back_count"] = counts.get(r["case_id"], 0)
    for r in rows:
        r["state_zh"] = core.TASK_STATE_NAMES_ZH.get(r["state"], r["state"])
    return rows, total


def core_due() -> Any:
    from workbench.inbox import current_due

    return current_due()


def decorate(request: Request, c: Context, rows: list[dict[str, Any]], now: datetime) -> None:
    decorate_rows(request, c, rows, now)
    for r in rows:
        dept = c.ref.departments.get(r["department"])
        r["department_name"] = dept.name if dept else r["department"]
        r["level_zh"] = {"grid": "网格", "village": "村(社区)", "township": "乡镇(街道)",
                         "county_department": "县直部门", "county_leadership": "县领导"}.get(
            r.get("escalation_level_code") or "", "")


@router.get("/s/", summary="督办台 / the supervisors' queues")
async def console(
    request: Request, caller: Annotated[Principal, allow("board.read")]
) -> Response:
    c = ctx(request)
    all_levels = request.query_params.get("levels") == "all"
    levels = levels_for(caller, all_levels)
    now = c.clock()

    def load() -> dict[str, tuple[list[dict[str, Any]], int]]:
        with Session(c.engine) as session:
            return {k: queue_rows(session, caller, k, levels, 1, limit=10) for k in QUEUES}

    found = await run_in_threadpool(load)
    for rows, _ in found.values():
        decorate(request, c, rows, now)
    return render(request, "console.html", caller=caller, title="督办台", section="督办台",
                  queues=QUEUES, found=found, all_levels=all_levels, form_key=new_form_key(),
                  outcomes=[])


@router.get("/s/q/{key}", summary="督办队列 / one queue, paged")
async def queue_page(
    key: str, request: Request, caller: Annotated[Principal, allow("board.read")]
) -> Response:
    c = ctx(request)
    if key not in QUEUES:
        raise not_found("queue_not_found", "没有这个督办队列", f"no queue {key!r}")
    try:
        page = max(1, int(request.query_params.get("page") or 1))
    except ValueError:
        page = 1
    all_levels = request.query_params.get("levels") == "all"
    levels = levels_for(caller, all_levels)
    now = c.clock()

    def load() -> tuple[list[dict[str, Any]], int]:
        with Session(c.engine) as session:
            return queue_rows(session, caller, key, levels, page)

    rows, total = await run_in_threadpool(load)
    decorate(request, c, rows, now)
    ids = request.query_params.getlist("cmd")[:20]
    outcomes = await cmd.wait_outcomes(c, ids) if ids else {}
    here = query(f"/s/q/{key}", page=page if page > 1 else None,
                 levels="all" if all_levels else None)
    pages = max(1, -(-total // PAGE))
    return render(request, "queue.html", caller=caller, title=QUEUES[key].title, section="督办台",
                  queue=QUEUES[key], rows=rows, total=total, page=page, pages=pages,
                  page_link=lambda n: query(f"/s/q/{key}", page=n,
                                            levels="all" if all_levels else None),
                  all_levels=all_levels, form_key=new_form_key(), here=here,
                  outcomes=cmd.outcome_views(ids, outcomes, {}, here))


# --- extension decisions -------------------------------------------------------------------------


@router.post("/w/tasks/{task_id}/extension-decision", summary="延期审批 / decide an extension (form)")
async def decide_extension(
    task_id: str, request: Request, caller: Annotated[Principal, allow("task.decide_extension")]
) -> Response:
    c, actor, case_id, form, key = await task_post(request, caller, "task.decide_extension",
                                                   task_id)
    approve = str(form.get("approve") or "") == "yes"
    reason = str(form.get("reason") or "").strip()[:1000]
    back = str(form.get("back") or "")
    target = f"/w/cases/{quote(case_id)}"
    if back.startswith("/s/q/"):
        target = back.split("?")[0]
    if not approve and not reason:
        error = cmd.FormError("reason", "驳回延期须填写理由")
        return render(request, "error.html", status=422, caller=caller, title="请填写理由",
                      heading="驳回延期须填写理由",
                      message=f"{error.message}; 请返回上一页, 在「审批意见」中写明理由后再点「驳回」。")
    try:
        command_id = await cmd.submit(c, actor, ev.DECIDE_EXTENSION, case_id,
                                      {"task_id": task_id, "approve": approve, "reason": reason},
                                      key)
    except cmd.FormInvalid as exc:
        return render(request, "error.html", status=503, caller=caller, title="未能提交",
                      heading="审批未能提交", message=exc.errors[0].message)
    return see_other(f"{target}?cmd={command_id}" + ("" if back else f"#task-{task_id}"))


# --- whistle ------------------------------------------------------------------------------------


def whistle_options(c: Context, case: dict[str, Any], busy: set[str]) -> list[dict[str, Any]]:
    """Departments to call, in groups: the county's, the case's township's, its village's."""
    township = case.get("township_code") or ""
    village = case.get("village_code") or ""
    groups = [("县直部门", lambda d: d.level == "county"),
              ("乡镇(街道)", lambda d: d.level == "township" and d.area_code == township),
              ("村(社区)", lambda d: d.level == "village" and d.area_code == village)]
    out = []
    for label, keep in groups:
        items = [{"code": d.code, "name": d.name, "busy": d.code in busy}
                 for d in sorted(c.ref.departments.values(), key=lambda d: d.code) if keep(d)]
        if items:
            out.append({"label": label, "depts": items})
    return out


def case_and_tasks(c: Context, case_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    with Session(c.engine) as session:
        case = session.execute(select(Case.__table__).where(Case.case_id == case_id)
                               ).mappings().first()
        tasks = [dict(r) for r in session.execute(
            select(Task.__table__).where(Task.case_id == case_id)
            .order_by(Task.dispatched_at, Task.task_id)).mappings()]
    return (dict(case) if case else None), tasks


async def show_whistle(request: Request, caller: Principal, case_id: str,
                       errors: list[cmd.FormError] | None = None,
                       values: dict[str, Any] | None = None, chosen: list[str] | None = None,
                       form_key: str | None = None) -> Response:
    c = ctx(request)
    await case_actor(c, caller, "case.whistle", case_id)
    case, tasks = await run_in_threadpool(case_and_tasks, c, case_id)
    if case is None:
        raise case_missing(case_id)
    busy = {t["department"] for t in tasks if t["state"] in core.OPEN_TASK_STATES}
    now = c.clock()
    for t in tasks:
        t["state_zh"] = core.TASK_STATE_NAMES_ZH.get(t["state"], t["state"])
    decorate(request, c, tasks, now)
    return render(request, "whistle.html", status=422 if errors else 200, caller=caller,
                  title="吹哨报到", section="督办台", case=case, tasks=tasks,
                  groups=whistle_options(c, case, busy), errors=errors or [],
                  values=values or {}, chosen=set(chosen or []),
                  form_key=form_key or new_form_key())


form_page(router, "/s/cases/{case_id}/whistle", "whistle_page", "吹哨报到 (form)", "case.whistle",
          show_whistle)


@router.post("/s/cases/{case_id}/whistle", summary="吹哨报到 (submit)")
async def whistle(
    case_id: str, request: Request, caller: Annotated[Principal, allow("case.whistle")]
) -> Response:
    c, actor, _, form, key = await case_post(request, caller, "case.whistle", case_id, 100)
    chosen = [str(d) for d in form.getlist("departments") if str(d) in c.ref.departments]
    reason = str(form.get("reason") or "").strip()[:1000]
    errors = []
    if len(chosen) < 1:
        errors.append(cmd.FormError("departments", "请至少选择一个报到部门"))
    if not reason:
        errors.append(cmd.FormError("reason", "请写明吹哨事由, 各部门据此报到"))
    if not errors:
        try:
            command_id = await cmd.submit(c, actor, ev.WHISTLE_CASE, case_id,
                                          {"departments": list(dict.fromkeys(chosen)),
                                           "reason": reason}, key)
        except cmd.FormInvalid as exc:
            errors = exc.errors
        else:
            return see_other(f"/w/cases/{quote(case_id)}?cmd={command_id}#h-tasks")
    return await show_whistle(request, caller, case_id, errors, {"reason": reason}, chosen, key)


# --- cancel -------------------------------------------------------------------------------------


async def show_cancel(request: Request, caller: Principal, case_id: str,
                      errors: list[cmd.FormError] | None = None, reason: str = "",
                      form_key: str | None = None) -> Response:
    c = ctx(request)
    await case_actor(c, caller, "task.cancel", case_id)
    case, tasks = await run_in_threadpool(case_and_tasks, c, case_id)
    if case is None:
        raise case_missing(case_id)
    open_tasks = [t for t in tasks if t["state"] in core.OPEN_TASK_STATES]
    for t in open_tasks:
        dept = c.ref.departments.get(t["department"])
        t["department_name"] = dept.name if dept else t["department"]
        t["state_zh"] = core.TASK_STATE_NAMES_ZH.get(t["state"], t["state"])
    return render(request, "cancel.html", status=422 if errors else 200, caller=caller,
                  title="撤销案件", section="督办台", case=case, tasks=open_tasks,
                  errors=errors or [], reason=reason, form_key=form_key or new_form_key())


form_page(router, "/s/cases/{case_id}/cancel", "cancel_page", "撤销案件 (form)", "task.cancel",
          show_cancel)


@router.post("/s/cases/{case_id}/cancel", summary="撤销案件: every open task (submit)")
async def cancel(
    case_id: str, request: Request, caller: Annotated[Principal, allow("task.cancel")]
) -> Response:
    c, actor, _, form, key = await case_post(request, caller, "task.cancel", case_id)
    reason = str(form.get("reason") or "").strip()[:1000]
    if not reason:
        return await show_cancel(request, caller, case_id,
                                 [cmd.FormError("reason", "请填写撤销理由")], reason, key)
    _, tasks = await run_in_threadpool(case_and_tasks, c, case_id)
    open_tasks = [t["task_id"] for t in tasks if t["state"] in core.OPEN_TASK_STATES]
    if not open_tasks:
        return await show_cancel(request, caller, case_id,
                                 [cmd.FormError("reason", "该案件已没有在办任务, 无需撤销")],
                                 reason, key)
    ids = []
    try:
        for task_id in open_tasks:
            ids.append(await cmd.submit(c, actor, ev.CANCEL_TASK, case_id,
                                        {"task_id": task_id, "reason": reason},
                                        cmd.sub_key(key, task_id)))
    except cmd.FormInvalid as exc:
        return await show_cancel(request, caller, case_id, exc.errors, reason, key)
    return see_other(f"/w/cases/{quote(case_id)}?" + "&".join(f"cmd={i}" for i in ids))

