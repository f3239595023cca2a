"""The departments' workbench: the inbox, the case page and the task forms (签收, 进展, 办结,
退单, 延期申请).

Every route declares its action (accounts.access.allow) and checks the scope of what it reads
(a task or case outside it answers 404, as one that does not exist). A form publishes a
command (workbench.commands) and sends the browser to the case page, which shows the case
processor's decision when it comes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from accounts import facts
from accounts.access import allow, in_scope, not_found
from accounts.roles import DEPT_STAFF, Principal
from gridflow import events as ev
from gridflow.core import case as core
from gridflow.core.refdata import ReferenceData
from gridflow.events import iso, parse_ts
from producers.commands import case_missing, task_actor, task_missing, township_centre
from producers.context import Context, ctx
from producers.status import sees_inbox
from sinks.models import Case, Task
from workbench import commands as cmd
from workbench import inbox as ib
from workbench.casefile import Names, load_case_file
from workbench.forms import task_post
from workbench.state import state_of
from workbench.web import (
    countdown,
    new_form_key,
    query,
    render,
    safe_next,
    see_other,
)

router = APIRouter(tags=["workbench 部门工作台"], include_in_schema=False)

SEVERITY_ZH = {1: "一般", 2: "较大", 3: "重大"}
SOURCE_ZH = {"grid_worker": "网格员巡查上报", "resident": "群众诉求(Open311)"}


def no_department(code: str) -> Any:
    return not_found("unknown_department", f"部门编码「{code}」不存在", f"unknown department {code!r}",
                     field="code")


# --- the inbox -----------------------------------------------------------------------------


def parse_filters(request: Request, mine_default: str = "") -> ib.Filters:
    q = request.query_params
    tab = q.get("tab") or "open"
    if tab not in ib.TABS:
        tab = "open"
    try:
        page = max(1, int(q.get("page") or 1))
    except ValueError:
        page = 1
    state = q.get("state") or ""
    if state not in core.TASK_STATE_NAMES_ZH:
        state = ""
    return ib.Filters(tab=tab, category=(q.get("category") or "")[:16],
                      grid=(q.get("grid") or "")[:20], township=(q.get("township") or "")[:12],
                      state=state, mine=(q.get("mine") or mine_default)[:64], page=page)


def category_groups(ref: ReferenceData) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for cat in sorted(ref.categories.values(), key=lambda c: c.code):
        if not cat.enabled:
            continue
        g = groups.setdefault(cat.class_code, {"code": cat.class_code, "name": cat.class_name,
                                               "cats": []})
        g["cats"].append({"code": cat.code, "name": cat.name})
    return list(groups.values())


def grid_groups(ref: ReferenceData) -> list[dict[str, Any]]:
    out = []
    for t in sorted(ref.townships.values(), key=lambda t: t.code):
        grids = sorted((g for g in ref.grids.values() if g.township_code == t.code),
                       key=lambda g: g.code)
        out.append({"code": t.code, "name": t.name,
                    "grids": [{"code": g.code, "name": g.name} for g in grids]})
    return out


def soon_until(request: Request, now: datetime) -> datetime:
    calendar = state_of(request).calendar
    if calendar is None:
        return now + timedelta(hours=8)
    try:
        return calendar.add_working_time(now, calendar.day_length)
    except ValueError:
        return now + timedelta(hours=24)


def decorate_rows(request: Request, c: Context, rows: list[dict[str, Any]], now: datetime,
                  names: Any = None) -> None:
    calendar = state_of(request).calendar
    for r in rows:
        r["countdown"] = countdown(calendar, now, r.get("due_at"))
        r["stage_zh"] = {"sign": "签收期限", "resolve": "办结期限", "verify": "核查期限"}.get(
            core.STAGE_OF_STATE.get(r["state"], ""), "")
        grid = c.ref.grids.get(r.get("grid_code") or "")
        r["grid_name"] = grid.name if grid else (r.get("grid_code") or "")
        r["township_name"] = c.ref.area_name(r.get("township_code") or "") or (
            c.ref.area_name(grid.township_code) if grid else "")
        r["form_key"] = new_form_key()
        r["dispatched_iso"] = iso(r["dispatched_at"]) if r.get("dispatched_at") else ""
        if names is not None and r.get("assignee"):
            r["assignee_name"] = r.get("assignee_name") or names(r["assignee"])


@router.get("/w/d/{code}/inbox", summary="部门待办 / a department's inbox")
async def inbox_page(
    code: str, request: Request, caller: Annotated[Principal, allow("inbox.read")]
) -> Response:
    c = ctx(request)
    if code not in c.ref.departments or not sees_inbox(c.ref, caller, code):
        raise no_department(code)
    f = parse_filters(request)
    now = c.clock()
    until = soon_until(request, now)

    def load() -> ib.InboxPage:
        with Session(c.engine) as session:
            return ib.inbox_page(session, code, f, now, until)

    page = await run_in_threadpool(load)
    extra = await state_of(request).inbox_extras(request, caller, code, page)
    decorate_rows(request, c, page.rows, now, extra.get("names"))
    base = f"/w/d/{quote(code)}/inbox"

    def link(**changes: Any) -> str:
        return query(base, **page.filters.params(**changes))

    ids = request.query_params.getlist("cmd")[:10]
    found = await cmd.wait_outcomes(c, ids) if ids else {}
    here = link()
    return render(
        request, "inbox.html", caller=caller, title=f"{c.ref.departments[code].name} 待办",
        section="部门工作台", dept_code=code, dept_name=c.ref.departments[code].name,
        inbox=page, tabs=ib.TABS, tab_order=ib.TAB_ORDER, link=link,
        page_link=lambda n: link(page=n), base_url=base, here=here,
        clear_url=query(base, tab=None if page.filters.tab == "open" else page.filters.tab,
                        mine=page.filters.mine),
        filtered=any((f.category, f.grid, f.township, f.state)),
        categories=category_groups(c.ref), townships=grid_groups(c.ref), grids=grid_groups(c.ref),
        states=[(s, core.TASK_STATE_NAMES_ZH[s]) for s in
                (core.DISPATCHED, core.SIGNED, core.IN_PROGRESS, core.RESOLVED, core.CLOSED)],
        can_act=code in caller.scopes(DEPT_STAFF),
        as_of_iso=iso(now), updates_url=f"{base}/updates", refresh_url=here,
        outcomes=cmd.outcome_views(ids, found, {}, here), form_key=new_form_key(),
        assign_url=f"/w/d/{quote(code)}/assign", **{k: v for k, v in extra.items() if k != "names"},
    )


@router.get("/w/d/{code}/inbox/updates", summary="新任务数 / tasks new since a moment (polling)")
async def inbox_updates(
    code: str, request: Request, caller: Annotated[Principal, allow("inbox.read")],
    since: str = "",
) -> JSONResponse:
    c = ctx(request)
    if code not in c.ref.departments or not sees_inbox(c.ref, caller, code):
        raise no_department(code)
    now = c.clock()
    try:
        since_at = parse_ts(since, "since") if since else now
    except ValueError:
        since_at = now
    f = parse_filters(request)
    until = soon_until(request, now)

    def load() -> tuple[int, dict[str, int]]:
        with Session(c.engine) as session:
            return (ib.new_since(session, code, since_at),
                    ib.tab_counts(session, code, f, now, until))

    new, counts = await run_in_threadpool(load)
    return JSONResponse({"department": code, "new": new, "counts": counts, "as_of": iso(now)},
                        headers={"Cache-Control": "no-store"})


# --- the case page -----------------------------------------------------------------------------


def photo_groups(photos: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    order = ("before", "progress", "after", "verification")
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in photos:
        groups.setdefault(str(p.get("role") or "before"), []).append(p)
    return [(r, groups[r]) for r in sorted(groups, key=lambda r: (order.index(r) if r in order
                                                                    else 9, r))]


@router.get("/w/cases/{case_id}", summary="案件 / a case, as the caller may see it")
async def case_page(
    case_id: str, request: Request, caller: Annotated[Principal, allow("case.read")]
) -> Response:
    c = ctx(request)
    found = await run_in_threadpool(facts.case_facts, c.engine, case_id)
    if not in_scope(caller, found):
        raise case_missing(case_id)
    assert found is not None
    ids = request.query_params.getlist("cmd")[:20]
    outcomes = await cmd.wait_outcomes(c, ids) if ids else {}
    now = c.clock()
    st = state_of(request)
    names = Names(c.ref, st.person_name)

    def load() -> Any:
        with Session(c.engine) as session:
            return load_case_file(session, c.ref, caller, found, st.calendar, now, names)

    f = await run_in_threadpool(load)
    if f is None:
        raise case_missing(case_id)
    await st.decorate_case(request, caller, f)
    here = str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
    back = None
    depts = [t.row["department"] for t in f.tasks if t.mine]
    if depts:
        back = {"href": f"/w/d/{quote(depts[0])}/inbox", "label": "部门待办"}
    elif f.supervisor:
        back = {"href": "/s/", "label": "督办台"}
    return render(
        request, "case.html", caller=caller, title=f"案件 {case_id}", f=f,
        section="部门工作台" if depts else "督办台",
        severity_zh=SEVERITY_ZH.get(f.case.get("severity") or 1, ""),
        source_zh=SOURCE_ZH.get(str(f.case.get("source") or ""), f.case.get("source") or "—"),
        photo_groups=photo_groups(f.photos), casemap=st.case_map(f.case),
        outcomes=cmd.outcome_views(ids, outcomes, {}, here), form_key=new_form_key(),
        back=back, supervisor_links=st.supervisor_links(caller, f, found),
    )


# --- the task forms ----------------------------------------------------------------------------


def task_row(c: Context, task_id: str, now: datetime) -> dict[str, Any] | None:
    with Session(c.engine) as session:
        row = session.execute(
            select(Task.__table__, Case.category_name, Case.description, Case.township_code)
            .join(Case, Case.case_id == Task.case_id, isouter=True)
            .where(Task.task_id == task_id)
        ).mappings().first()
    if row is None:
        return None
    out = dict(row)
    stage = core.STAGE_OF_STATE.get(out["state"])
    out["due_at"] = out.get(f"{stage}_due") if stage else None
    return out


def form_spec(c: Context, action: str, task: dict[str, Any], extension_text: str) -> dict[str, Any]:
    task_id = task["task_id"]
    base = f"/w/tasks/{task_id}/{action}"
    photo_hint = (f"JPEG 或 PNG, 每张不超过{c.photo_limits.max_bytes // (1024 * 1024)}MB; "
                  "照片会去除位置信息后生成缩略图, 原图按规定归档保存。")
    if action == "progress":
        return {"title": "填报处置进展", "action": base, "multipart": True, "submit": "提交进展",
                "explain": ["提交后, 进展记入案件办理过程, 任务状态变为「处置中」; 办结期限不变。",
                            "上报的网格员和督办人员可以看到进展。照片可选, 最多9张。"],
                "fields": [
                    {"name": "note", "kind": "textarea", "label": "处置进展", "templates": True,
                     "hint": "写明已做了什么、下一步做什么。"},
                    {"name": "photos", "kind": "file", "label": "现场照片(可选, 最多9张)",
                     "hint": photo_hint}]}
    if action == "resolve":
        return {"title": "办结任务", "action": base, "multipart": True, "submit": "确认办结",
                "explain": ["提交后任务变为「已办结待核查」: 上报的网格员(或督办人员)到现场核查, "
                            "核查通过即结案; 不通过则退回返工, 重新计算办结期限。",
                            "须上传1至9张整改后照片。"],
                "fields": [
                    {"name": "note", "kind": "textarea", "label": "办结说明", "templates": True,
                     "hint": "写明问题如何处理、结果如何。"},
                    {"name": "photos", "kind": "file", "label": "整改后照片(1至9张)",
                     "hint": photo_hint}]}
    if action == "send-back":
        options = department_options(c, task)
        return {"title": "退单", "action": base, "multipart": False, "submit": "确认退单",
                "warning": True,
                "explain": ["退单仅限签收前: 不属于本部门职责的任务, 退回并改派给正确的责任部门。",
                            "提交后本部门的任务结束, 案件改派给所选部门(重新计算时限); "
                            "退单理由记录在案, 计入本部门退单率。"],
                "fields": [
                    {"name": "reason", "kind": "textarea", "label": "退单理由", "max": 1000,
                     "hint": "说明为何不属于本部门职责。"},
                    {"name": "reroute_to", "kind": "select", "label": "改派给", "options": options,
                     "hint": "默认为案件所在乡镇(街道)综治中心, 由其重新分派。"}]}
    if action == "extension":
        return {"title": "申请延期", "action": base, "multipart": False, "submit": "提交延期申请",
                "explain": [extension_text,
                            "提交后由乡镇(街道)或县级督办人员审批; 批准后办结期限顺延, "
                            "驳回时理由会显示在本页。"],
                "fields": [
                    {"name": "days", "kind": "number", "label": "延期工作日数", "min": "0.5",
                     "max": "30", "hint": "按工作日计, 可填半天(0.5)。"},
                    {"name": "reason", "kind": "textarea", "label": "延期理由", "max": 1000,
                     "hint": "说明为何不能按期办结、需要协调什么。"}]}
    raise KeyError(action)


def department_options(c: Context, task: dict[str, Any]) -> list[tuple[str, str]]:
    centre = township_centre(c.ref, task.get("township_code") or "")
    options = []
    if centre and centre != task["department"]:
        options.append((centre, f"{c.ref.departments[centre].name}(默认)"))
    for d in sorted(c.ref.departments.values(), key=lambda d: (d.level != "county", d.code)):
        if d.code not in (task["department"], centre):
            options.append((d.code, d.name))
    return options


ACTIONS = {
    "progress": ("task.progress", ev.NOTE_PROGRESS),
    "resolve": ("task.resolve", ev.RESOLVE_TASK),
    "send-back": ("task.send_back", ev.SEND_BACK_TASK),
    "extension": ("task.extension", ev.REQUEST_EXTENSION),
}


async def show_form(request: Request, caller: Principal, action: str, task_id: str,
                    errors: list[cmd.FormError] | None = None, values: dict[str, Any] | None = None,
                    form_key: str | None = None) -> Response:
    c = ctx(request)
    await task_actor(c, caller, ACTIONS[action][0], task_id)
    now = c.clock()
    task = await run_in_threadpool(task_row, c, task_id, now)
    if task is None:
        raise task_missing(task_id)
    st = state_of(request)
    spec = form_spec(c, action, task, st.extension_text)
    values = dict(values or {})
    if action == "send-back" and "reroute_to" not in values and spec["fields"][1]["options"]:
        values["reroute_to"] = spec["fields"][1]["options"][0][0]
    templates = await st.reply_templates(request, task["department"], action) if action in (
        "progress", "resolve") else []
    return render(
        request, "task_form.html", status=422 if errors else 200, caller=caller,
        title=spec["title"], section="部门工作台", form=spec, task=task,
        dept_name=c.ref.departments[task["department"]].name if task["department"] in
        c.ref.departments else task["department"],
        left=countdown(st.calendar, now, task.get("due_at")), errors=errors or [],
        values=values, form_key=form_key or new_form_key(), templates=templates,
    )


def _action_routes(action: str) -> None:
    access, type_ = ACTIONS[action]

    async def form_page(task_id: str, request: Request, caller: Principal) -> Response:
        return await show_form(request, caller, action, task_id)

    async def form_post(task_id: str, request: Request, caller: Principal) -> Response:
        return await post_action(request, caller, action, task_id)

    for fn, verb in ((form_page, "get"), (form_post, "post")):
        fn.__annotations__["caller"] = Annotated[Principal, allow(access)]
        fn.__name__ = f"{verb}_{action.replace('-', '_')}"
        getattr(router, verb)(f"/w/tasks/{{task_id}}/{action}",
                              summary=f"{type_} ({'form' if verb == 'get' else 'submit'})")(fn)


async def post_action(request: Request, caller: Principal, action: str, task_id: str) -> Response:
    access, type_ = ACTIONS[action]
    c, actor, case_id, form, key = await task_post(request, caller, access, task_id, 20, 50)
    values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    st = state_of(request)
    try:
        department = await run_in_threadpool(task_department, c, task_id) or ""
        data = await validate(request, action, task_id, form, st, department)
        command_id = cmd.command_id_for(actor, type_, task_id, key)
        upload = None
        if action in ("progress", "resolve"):
            upload = await cmd.store_photos(c, form.getlist("photos"), task_id, command_id,
                                            "after" if action == "resolve" else "progress",
                                            required=action == "resolve")
            data["photos"] = upload.ref_dicts()
        try:
            await cmd.submit(c, actor, type_, case_id, data, key, command_id)
        except cmd.FormInvalid:
            if upload is not None:
                await upload.cleanup()
            raise
    except cmd.FormInvalid as exc:
        return await show_form(request, caller, action, task_id, exc.errors, values, key)
    return see_other(f"/w/cases/{quote(case_id)}?cmd={command_id}#task-{task_id}")


async def validate(request: Request, action: str, task_id: str, form: Any,
                   st: Any, department: str) -> dict[str, Any]:
    """The command's data from the form, or FormInvalid with every problem (Chinese)."""
    c = ctx(request)
    errors: list[cmd.FormError] = []

    def text(name: str, limit: int) -> str:
        return str(form.get(name) or "").strip()[:limit]

    data: dict[str, Any] = {"task_id": task_id}
    if action in ("progress", "resolve"):
        note = text("note", 2000)
        if not note:
            picked = await st.template_text(request, department,
                                            str(form.get("template_note") or ""))
            note = picked or ""
        if not note:
            what = "处置进展" if action == "progress" else "办结说明"
            errors.append(cmd.FormError("note", f"请填写{what}"))
        data["note"] = note
    elif action == "send-back":
        reason = text("reason", 1000)
        target = text("reroute_to", 64)
        if not reason:
            errors.append(cmd.FormError("reason", "请填写退单理由"))
        if target not in c.ref.departments:
            errors.append(cmd.FormError("reroute_to", "请选择改派的责任部门"))
        data.update(reason=reason, reroute_to=target)
    elif action == "extension":
        reason = text("reason", 1000)
        raw = text("days", 16)
        try:
            days = float(raw)
        except ValueError:
            days = None
        if days is None or not 0 < days <= 30:
            errors.append(cmd.FormError("days", "请填写延期工作日数(大于0, 不超过30)"))
        if not reason:
            errors.append(cmd.FormError("reason", "请填写延期理由"))
        data.update(days=int(days) if days is not None and days == int(days) else days,
                    reason=reason)
    if errors:
        raise cmd.FormInvalid(errors)
    return data


for _action in ACTIONS:
    _action_routes(_action)


@router.post("/w/tasks/{task_id}/sign", summary="签收 / sign for a task (form)")
async def sign(
    task_id: str, request: Request, caller: Annotated[Principal, allow("task.sign")]
) -> Response:
    c, actor, case_id, form, key = await task_post(request, caller, "task.sign", task_id)
    back = str(form.get("back") or "")
    try:
        command_id = await cmd.submit(c, actor, ev.SIGN_TASK, case_id,
                                      {"task_id": task_id, "note": ""}, key)
    except cmd.FormInvalid as exc:
        return render(request, "error.html", status=503, caller=caller, title="未能提交",
                      heading="签收未能提交", message=exc.errors[0].message)
    if back.startswith("/w/d/"):
        target = safe_next(back, f"/w/cases/{quote(case_id)}")
        return see_other(target + ("&" if "?" in target else "?") + f"cmd={command_id}")
    return see_other(f"/w/cases/{quote(case_id)}?cmd={command_id}#task-{task_id}")


def task_department(c: Context, task_id: str) -> str | None:
    with Session(c.engine) as session:
        return session.execute(select(Task.department).where(Task.task_id == task_id)).scalar()
