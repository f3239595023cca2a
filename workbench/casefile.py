"""One case as a page shows it to one caller: what, where, photos, every step with who and when,
each stage's deadline and the working time left, and what the caller may do to each task.

Read-only. A department's staff see the case's shared facts and their own department's tasks
only (another department's task, its steps and photos are not theirs: a whistle-up gives each
department its own task); supervisors and auditors see every task side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from accounts.roles import (
    AUDITOR,
    DEPT_STAFF,
    SUPERVISING,
    CaseFacts,
    Principal,
    sees_case,
    sees_originals,
)
from gridflow import events as ev
from gridflow.core import case as core
from gridflow.core.calendar import WorkingCalendar
from gridflow.core.refdata import ReferenceData
from sinks.models import CaseEvent, CommandOutcome
from sinks.queries import case_detail
from workbench.web import Countdown, countdown, local_time

# Case-level events every caller who sees the case sees (the rest belong to a task).
CASE_LEVEL = frozenset({ev.CASE_FILED, ev.REPORT_MERGED, ev.CASE_CLOSED, ev.CASE_RATED,
                        ev.CASE_NOT_FILED, ev.CASE_WHISTLED})
STAGE_ZH = {"sign": "签收", "resolve": "办结", "verify": "核查"}


@dataclass
class Names:
    """Who an actor string is, in Chinese (departments, grid workers, signed-in people)."""

    ref: ReferenceData
    people: Callable[[str], str | None]
    _seen: dict[str, str] = field(default_factory=dict)

    def department(self, code: str | None) -> str:
        if not code:
            return ""
        dept = self.ref.departments.get(code)
        return dept.name if dept else code

    def actor(self, actor: str) -> str:
        if actor in self._seen:
            return self._seen[actor]
        kind, _, ident = actor.partition(":")
        if kind == "system" or actor == "system":
            name = "系统(时限监控)" if ident == "deadlines" else "系统"
        elif kind == "dept":
            name = self.department(ident)
        elif kind == "worker":
            worker_id = ident.partition("@")[0]
            worker = self.ref.workers.get(worker_id.upper())
            name = f"网格员 {worker.name}" if worker else f"网格员 {worker_id}"
        elif kind == "resident":
            name = "群众(诉求人)"
        elif kind == "supervisor":
            name = f"督办 {self.people(ident) or ident}"
        else:
            name = self.people(ident) or actor
        self._seen[actor] = name
        return name


@dataclass(frozen=True)
class Stage:
    key: str  # sign | resolve | verify
    label: str
    due: datetime | None
    done_at: datetime | None
    on_time: bool | None
    current: bool
    left: Countdown | None  # for the current stage


@dataclass
class TaskView:
    row: dict[str, Any]
    department_name: str
    stages: list[Stage]
    mine: bool  # the caller's department's task
    actions: list[str]  # what the caller may do now: sign, progress, resolve, ...
    pending_extension: dict[str, Any] | None
    assignee_name: str | None = None

    @property
    def task_id(self) -> str:
        return str(self.row["task_id"])

    @property
    def state(self) -> str:
        return str(self.row["state"])


@dataclass
class Step:
    at: datetime
    what: str
    who: str
    detail: str
    task_id: str | None
    refused: bool = False


@dataclass
class CaseFile:
    case: dict[str, Any]
    tasks: list[TaskView]
    steps: list[Step]
    photos: list[dict[str, Any]]
    originals: bool
    supervisor: bool
    grid_name: str
    township_name: str
    village_name: str


def task_stages(task: dict[str, Any], calendar: WorkingCalendar | None, now: datetime) -> list[Stage]:
    state = task["state"]
    current = core.STAGE_OF_STATE.get(state)
    stages = []
    for key, due_col, done_col, on_time_col in (
        ("sign", "sign_due", "signed_at", "on_time_sign"),
        ("resolve", "resolve_due", "resolved_at", "on_time_resolve"),
        ("verify", "verify_due", "closed_at", None),
    ):
        due = task.get(due_col)
        done = task.get(done_col) if state != core.CANCELLED or key != "verify" else None
        if key == "verify" and state != core.CLOSED:
            done = None
        on_time = task.get(on_time_col) if on_time_col else (
            None if done is None or due is None else done <= due)
        is_current = current == key
        stages.append(Stage(key, STAGE_ZH[key], due, done, on_time, is_current,
                            countdown(calendar, now, due) if is_current else None))
    return stages


def actions_for(caller: Principal, task: dict[str, Any], facts: CaseFacts) -> list[str]:
    """What the caller may do to this task now (the case processor decides in the end)."""
    state = task["state"]
    out: list[str] = []
    if task["department"] in caller.scopes(DEPT_STAFF):
        if state == core.DISPATCHED:
            out += ["sign", "send-back"]
        if state in (core.SIGNED, core.IN_PROGRESS):
            out += ["progress", "resolve"]
            if not task.get("pending_extension"):
                out.append("extension")
    if sees_case(caller, facts, ("township_supervisor", "county_supervisor")):
        if state in (core.SIGNED, core.IN_PROGRESS) and task.get("pending_extension"):
            out.append("decide-extension")
        if state in core.OPEN_TASK_STATES:
            out.append("cancel")
    return out


def step_detail(names: Names, type_: str, d: dict[str, Any]) -> str:
    def due(key: str) -> str:
        return local_time(d.get(key)) if d.get(key) else "—"

    if type_ == ev.TASK_DISPATCHED:
        why = {"routing": "按类别与网格派遣", "sent_back": "退单后改派",
               "whistle": "吹哨报到"}.get(str(d.get("reason")), "")
        return (f"派至{names.department(d.get('department'))}({why}); 签收期限 {due('sign_due')}, "
                f"办结期限 {due('resolve_due')}")
    if type_ == ev.TASK_SIGNED:
        return "按时签收" if d.get("on_time") else "超时签收"
    if type_ in (ev.TASK_PROGRESS_NOTED, ev.TASK_RESOLVED, ev.TASK_VERIFIED):
        photos = len(d.get("photos") or [])
        extra = f"(照片{photos}张)" if photos else ""
        return f"{d.get('note') or ''}{extra}"
    if type_ == ev.TASK_SENT_BACK:
        return f"理由: {d.get('reason') or ''}; 改派至{names.department(d.get('reroute_to'))}"
    if type_ in (ev.TASK_REOPENED, ev.TASK_CANCELLED, ev.EXTENSION_REFUSED):
        return f"理由: {d.get('reason') or '—'}"
    if type_ == ev.EXTENSION_REQUESTED:
        return f"申请延期{d.get('days')}个工作日, 理由: {d.get('reason') or ''}"
    if type_ == ev.EXTENSION_GRANTED:
        return f"延期{d.get('days')}个工作日, 办结期限由 {due('previous_due')} 改为 {due('resolve_due')}"
    if type_ in (ev.DEADLINE_WARNED, ev.DEADLINE_BREACHED):
        return f"{STAGE_ZH.get(str(d.get('stage')), '')}期限 {due('due_at')}"
    if type_ == ev.TASK_ESCALATED:
        return f"升级至{d.get('level_name') or d.get('level_code') or ''}"
    if type_ == ev.CASE_WHISTLED:
        depts = "、".join(names.department(x) for x in d.get("departments") or [])
        return f"召集{depts}" + (f"; {d['reason']}" if d.get("reason") else "")
    if type_ == ev.CASE_RATED:
        return f"满意度 {d.get('score')} 分" + (f"; {d['comment']}" if d.get("comment") else "")
    if type_ == ev.CASE_FILED:
        return f"{d.get('category_name') or d.get('category_code') or ''}"
    if type_ == ev.COMMAND_REFUSED:
        return (f"{ev.label_zh(str(d.get('command_type')))}未执行: "
                f"{d.get('reason_zh') or ''}")
    if type_ == ev.TASK_ASSIGNED:
        return f"分派给 {d.get('assignee_name') or d.get('assignee') or ''}"
    return ""


def load_case_file(session: Session, ref: ReferenceData, caller: Principal, facts: CaseFacts,
                   calendar: WorkingCalendar | None, now: datetime, names: Names) -> CaseFile | None:
    detail = case_detail(session, facts.case_id)
    if detail is None:
        return None
    supervisor = caller.has(*SUPERVISING, AUDITOR) and sees_case(
        caller, facts, (*SUPERVISING, AUDITOR))
    mine = caller.scopes(DEPT_STAFF)
    visible = [t for t in detail["tasks"] if supervisor or t["department"] in mine]
    visible_ids = {t["task_id"] for t in visible}
    tasks = [
        TaskView(t, names.department(t["department"]), task_stages(t, calendar, now),
                 t["department"] in mine, actions_for(caller, t, facts), t.get("pending_extension"))
        for t in visible
    ]
    ledger = session.execute(
        select(CaseEvent.type, CaseEvent.at, CaseEvent.actor, CaseEvent.data)
        .where(CaseEvent.case_id == facts.case_id).order_by(CaseEvent.seq, CaseEvent.event_id)
    ).all()
    steps = []
    for type_, at, actor, data in ledger:
        d = data or {}
        task_id = d.get("task_id") if isinstance(d.get("task_id"), str) else None
        if type_ == ev.PHOTO_ARCHIVED:
            continue
        if task_id and task_id not in visible_ids:
            continue
        if not task_id and type_ not in CASE_LEVEL:
            continue
        if type_ == ev.CASE_WHISTLED and not supervisor:
            d = {**d, "departments": [x for x in d.get("departments") or [] if x in mine]}
        who = names.actor(actor)
        if d.get("by_name"):  # a department's step naming the person who took it
            who = f"{who} · {d['by_name']}"
        steps.append(Step(at, ev.label_zh(type_), who, step_detail(names, type_, d),
                          task_id, type_ == ev.COMMAND_REFUSED))
    photos = [p for p in detail["photos"]
              if not p.get("task_id") or p["task_id"] in visible_ids]
    grid = ref.grids.get(detail.get("grid_code") or "")
    return CaseFile(
        case=detail, tasks=tasks, steps=steps, photos=photos,
        originals=sees_originals(caller, facts), supervisor=supervisor,
        grid_name=grid.name if grid else "",
        township_name=ref.area_name(detail.get("township_code") or ""),
        village_name=ref.area_name(detail.get("village_code") or ""),
    )


def outcomes(session: Session, command_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not command_ids:
        return {}
    rows = session.execute(select(CommandOutcome.__table__)
                           .where(CommandOutcome.command_id.in_(command_ids))).mappings()
    return {r["command_id"]: dict(r) for r in rows}
