"""Within a department: who works which task (二次派遣, one at a time or in bulk; each person's
我的任务), and the department's reply templates (常用回复).

An assignment is a fact about a case: an AssignTask command the case processor decides into a
TaskAssigned event. Who may assign and keep the templates is the department's head, named per
department in the reference data's workbench.json (`heads`, by person id); a department that
names none lets each of its staff do it. accounts.roles has no head role yet: these routes
declare the closest actions (task.sign, task.progress) and check the head here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from accounts.access import allow, not_found
from accounts.roles import DEPT_STAFF, Principal
from gridflow import events as ev
from gridflow.core import case as core
from gridflow.core.refdata import ReferenceData
from producers.commands import case_of_task, task_actor, task_missing
from producers.context import Context, ctx
from producers.errors import ApiError
from workbench import commands as cmd
from workbench import replies
from workbench.forms import form_page
from workbench.web import new_form_key, render, safe_next, see_other

router = APIRouter(tags=["workbench 部门工作台"], include_in_schema=False)

ASSIGNABLE = (core.DISPATCHED, core.SIGNED, core.IN_PROGRESS)
STAFF_TTL_S = 60.0


def department_heads(ref: ReferenceData) -> dict[str, frozenset[str]]:
    """department → account ids of its heads (workbench.json beside the reference data)."""
    path = Path(ref.source) / "workbench.json"
    if not path.exists():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    heads = doc.get("heads", {})
    return {str(d): frozenset(str(p) for p in people) for d, people in heads.items()}


@dataclass(frozen=True)
class Member:
    account_id: str
    name: str


class Team:
    """The departments' heads and staff (accounts with a dept_staff grant), cached briefly."""

    def __init__(self, c: Context) -> None:
        self.context = c
        self.heads = department_heads(c.ref)
        self._staff: dict[str, list[Member]] = {}
        self._read_at = 0.0

    def is_head(self, caller: Principal, department: str) -> bool:
        if department not in caller.scopes(DEPT_STAFF):
            return False
        named = self.heads.get(department)
        return not named or caller.account_id in named

    def staff(self, department: str) -> list[Member]:
        if time.monotonic() - self._read_at > STAFF_TTL_S:
            found: dict[str, list[Member]] = {}
            for a in self.context.accounts.list():
                if a.status != "active":
                    continue
                for g in a.grants:
                    if g.role == DEPT_STAFF:
                        found.setdefault(g.scope, []).append(Member(a.account_id, a.name))
            self._staff = {d: sorted(m, key=lambda x: x.account_id) for d, m in found.items()}
            self._read_at = time.monotonic()
        return self._staff.get(department, [])

    def member(self, department: str, account_id: str) -> Member | None:
        return next((m for m in self.staff(department) if m.account_id == account_id), None)


def team_of(request: Request) -> Team:
    return request.app.state.workbench.team  # type: ignore[no-any-return]


def not_head() -> ApiError:
    return ApiError(403, "not_department_head", "仅部门负责人可以分派任务、维护常用回复",
                    "only the department's head assigns tasks and keeps reply templates")


# --- assigning ---------------------------------------------------------------------------------


async def assign_one(c: Context, caller: Principal, task_id: str, member: Member,
                     key: str) -> str:
    actor = await task_actor(c, caller, "task.sign", task_id)
    return await cmd.submit(c, actor, ev.ASSIGN_TASK, case_of_task(task_id), {
        "task_id": task_id, "assignee": member.account_id, "assignee_name": member.name,
        "by": caller.account_id, "by_name": caller.name}, key)


def task_department(c: Context, task_id: str) -> str | None:
    from workbench.dept import task_department as find

    return find(c, task_id)


async def show_assign(request: Request, caller: Principal, task_id: str,
                      errors: list[cmd.FormError] | None = None) -> Response:
    c = ctx(request)
    await task_actor(c, caller, "task.sign", task_id)
    from workbench.dept import task_row

    task = await run_in_threadpool(task_row, c, task_id, c.clock())
    if task is None:
        raise task_missing(task_id)
    team = team_of(request)
    if not team.is_head(caller, task["department"]):
        raise not_head()
    staff = await run_in_threadpool(team.staff, task["department"])
    return render(request, "assign.html", status=422 if errors else 200, caller=caller,
                  title="分派承办人", section="部门工作台", task=task, staff=staff,
                  errors=errors or [], form_key=new_form_key(),
                  dept_name=c.ref.departments[task["department"]].name)


form_page(router, "/w/tasks/{task_id}/assign", "assign_page", "二次派遣 (form)", "task.sign",
          show_assign)


@router.post("/w/tasks/{task_id}/assign", summary="二次派遣 (submit)")
async def assign(
    task_id: str, request: Request, caller: Annotated[Principal, allow("task.sign")]
) -> Response:
    c = ctx(request)
    await task_actor(c, caller, "task.sign", task_id)
    department = await run_in_threadpool(task_department, c, task_id)
    team = team_of(request)
    if department is None:
        raise task_missing(task_id)
    if not team.is_head(caller, department):
        raise not_head()
    form = await request.form(max_files=0, max_fields=20)
    member = await run_in_threadpool(team.member, department, str(form.get("assignee") or ""))
    if member is None:
        return await show_assign(request, caller, task_id,
                                 [cmd.FormError("assignee", "请选择本部门的承办人")])
    try:
        command_id = await assign_one(c, caller, task_id, member, cmd.form_key_of(form))
    except cmd.FormInvalid as exc:
        return await show_assign(request, caller, task_id, exc.errors)
    return see_other(f"/w/cases/{quote(case_of_task(task_id))}?cmd={command_id}#task-{task_id}")


@router.post("/w/d/{code}/assign", summary="批量二次派遣 / assign the chosen tasks (form)")
async def assign_many(
    code: str, request: Request, caller: Annotated[Principal, allow("task.sign")]
) -> Response:
    c = ctx(request)
    team = team_of(request)
    if code not in c.ref.departments or code not in caller.scopes(DEPT_STAFF):
        raise not_found("unknown_department", f"部门编码「{code}」不存在",
                        f"unknown department {code!r}", field="code")
    if not team.is_head(caller, code):
        raise not_head()
    form = await request.form(max_files=0, max_fields=200)
    back = safe_next(str(form.get("back") or ""), f"/w/d/{quote(code)}/inbox")
    tasks = [str(t) for t in form.getlist("task_id")][:100]
    member = await run_in_threadpool(team.member, code, str(form.get("assignee") or ""))
    if not tasks or member is None:
        what = "请勾选要分派的任务" if not tasks else "请选择本部门的承办人"
        return render(request, "error.html", status=422, caller=caller, title="未能分派",
                      heading="未能分派", message=f"{what}; 请返回上一页重新选择。")
    key = cmd.form_key_of(form)
    ids = []
    for task_id in tasks:
        if await run_in_threadpool(task_department, c, task_id) != code:
            raise task_missing(task_id)
        try:
            ids.append(await assign_one(c, caller, task_id, member,
                                        cmd.sub_key(key, task_id)))
        except cmd.FormInvalid as exc:
            return render(request, "error.html", status=503, caller=caller, title="未能分派",
                          heading="未能分派", message=exc.errors[0].message)
    joiner = "&" if "?" in back else "?"
    return see_other(back + joiner + "&".join(f"cmd={i}" for i in ids))


# --- reply templates --------------------------------------------------------------------------


def check_staff(c: Context, caller: Principal, code: str) -> None:
    if code not in c.ref.departments or code not in caller.scopes(DEPT_STAFF):
        raise not_found("unknown_department", f"部门编码「{code}」不存在",
                        f"unknown department {code!r}", field="code")


async def show_templates(request: Request, caller: Principal, code: str,
                         errors: list[cmd.FormError] | None = None,
                         values: dict[str, str] | None = None) -> Response:
    c = ctx(request)
    check_staff(c, caller, code)
    found = await run_in_threadpool(replies.templates_of, c.engine, code)
    head = team_of(request).is_head(caller, code)
    editing = request.query_params.get("edit") or (values or {}).get("template_id", "")
    values = dict(values or {})
    if editing and not values:
        chosen = next((t for t in found if t.id == editing), None)
        if chosen is not None:
            values = {"template_id": chosen.id, "title": chosen.title, "body": chosen.text,
                      "kind": chosen.kind}
    return render(request, "templates.html", status=422 if errors else 200, caller=caller,
                  title="常用回复", section="部门工作台", dept_code=code,
                  dept_name=c.ref.departments[code].name, templates=found, head=head,
                  errors=errors or [], values=values, kinds=replies.KINDS,
                  form_key=new_form_key())


form_page(router, "/w/d/{code}/templates", "templates_page",
          "常用回复 / the department's reply templates", "task.progress",
          show_templates)


@router.post("/w/d/{code}/templates", summary="保存常用回复 / add or change a template (form)")
async def save_template(
    code: str, request: Request, caller: Annotated[Principal, allow("task.progress")]
) -> Response:
    c = ctx(request)
    check_staff(c, caller, code)
    if not team_of(request).is_head(caller, code):
        raise not_head()
    form = await request.form(max_files=0, max_fields=20)
    values = {k: str(form.get(k) or "").strip() for k in ("template_id", "title", "body", "kind")}
    found = replies.problems(values["title"], values["body"], values["kind"])
    if found:
        return await show_templates(request, caller, code,
                                    [cmd.FormError(f, m) for f, m in found], values)
    saved = await run_in_threadpool(replies.save, c.engine, code, values["title"],
                                    values["body"], values["kind"], caller.account_id,
                                    datetime.now(UTC), values["template_id"] or None)
    if saved is None:
        raise not_found("template_not_found", "未找到该常用回复", "no such template")
    return see_other(f"/w/d/{quote(code)}/templates#tpl-{saved}")


@router.post("/w/d/{code}/templates/{template_id}/delete", summary="删除常用回复 (form)")
async def delete_template(
    code: str, template_id: str, request: Request,
    caller: Annotated[Principal, allow("task.progress")],
) -> Response:
    c = ctx(request)
    check_staff(c, caller, code)
    if not team_of(request).is_head(caller, code):
        raise not_head()
    if not await run_in_threadpool(replies.remove, c.engine, code, template_id):
        raise not_found("template_not_found", "未找到该常用回复", "no such template")
    return see_other(f"/w/d/{quote(code)}/templates")


def templates_for_form(c: Context, department: str, kind: str) -> list[dict[str, Any]]:
    return [{"id": t.id, "title": t.title, "text": t.text}
            for t in replies.templates_of(c.engine, department, kind)]
