"""What each case event means, in one Chinese line, and who did it: for auditors.

Pure: an event and optional name lookups in, text out; never raises on odd data (an unknown
event type or a missing field still gives a line), so a history always prints in full.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.moments import beijing
from gridflow.contract import payloads as ct
from gridflow.contract.payloads import given, report_of
from gridflow.core.sla import STAGE_NAMES_ZH
from gridflow.events import Message, SchemaError, label_zh, parse_ts

DISPATCH_REASON_ZH = {"routing": "按规则派遣", "sent_back": "退单改派", "whistle": "吹哨报到"}


def actor_zh(actor: str, names: Mapping[str, str] | None = None) -> str:
    """'dept:county.chengguan' -> '部门 城管局 (dept:county.chengguan)'."""
    kind, _, ident = actor.partition(":")
    names = names or {}
    if kind == "worker":
        who, _, grid = ident.partition("@")
        return f"网格员 {who}" + (f" (网格 {grid})" if grid else "")
    if kind == "resident":
        return f"居民 {ident}"
    if kind == "dept":
        return f"部门 {names.get(ident, ident)}"
    if kind == "supervisor":
        return f"督办人员 {ident}"
    if kind == "system":
        return {"deadlines": "系统 (时限监控)", "": "系统"}.get(ident, f"系统 ({ident})")
    return actor or "—"


def _when(value: Any) -> str:
    try:
        return beijing(parse_ts(value), seconds=False)
    except (SchemaError, TypeError):
        return str(value or "—")


def _dept(code: str, names: Mapping[str, str]) -> str:
    return names.get(code, code) or "—"


def _on_time(flag: bool | None) -> str:
    return {True: "按时", False: "超时"}.get(flag, "") if isinstance(flag, bool) else ""


def summarize(m: Message, names: Mapping[str, str] | None = None) -> str:
    """One line of Chinese saying what the event records."""
    names = names or {}
    if not m.known:
        return f"{m.type} (未知事件类型 / unknown event type)"
    try:
        e = m.body
    except SchemaError as exc:  # the audit reads the log as written: say so, do not fail
        return f"{label_zh(m.type)} (内容不符合格式 / payload does not match its type: {exc})"
    task = str(getattr(e, "task_id", ""))
    stage_code = str(getattr(e, "stage", ""))
    stage = STAGE_NAMES_ZH.get(stage_code, stage_code)
    match e:
        case ct.CaseFiled():
            report = report_of(e.report)
            depts = "、".join(names.get(x, x) for x in e.departments) or "—"
            return (f"立案: {e.category_name or e.category_code} ({e.category_code}), "
                    f"网格 {e.grid_code}, 上报 {report.report_id or ''}, "
                    f"照片 {len(report.photos)} 张, 责任部门 {depts}")
        case ct.CaseNotFiled():
            return f"不予立案: {e.reason_zh or e.code}"
        case ct.ReportMerged():
            report = report_of(e.report)
            distance = "—" if e.distance_m is None else e.distance_m
            return (f"合并重复上报 {report.report_id or ''} "
                    f"(相距 {distance} 米, 照片 {len(report.photos)} 张)")
        case ct.TaskDispatched():
            why = DISPATCH_REASON_ZH.get(e.reason, e.reason)
            return (f"派遣任务 {task} 至 {_dept(e.department, names)} ({why}), "
                    f"签收时限 {_when(e.sign_due)}, 办结时限 {_when(e.resolve_due)}")
        case ct.PhotoArchived():
            status = {"archived": "已归档", "missing": "原图缺失", "corrupt": "原图损坏"}.get(
                e.status, e.status)
            problem = given(e.problem)
            return (f"照片{status}: sha256 {e.sha256[:16]}… → {e.archive_key or '—'}"
                    + (f" ({problem})" if problem else ""))
        case ct.TaskSigned():
            return (f"{_dept(e.department, names)} 签收任务 {task} "
                    f"({_on_time(e.on_time) or '—'})")
        case ct.TaskProgressNoted():
            return f"任务 {task} 处置进展: {e.note}"
        case ct.TaskResolved():
            return (f"{_dept(e.department, names)} 办结任务 {task} "
                    f"({_on_time(e.on_time) or '—'}): {e.note}; 照片 {len(e.photos)} 张; "
                    f"核查时限 {_when(e.verify_due)}")
        case ct.TaskSentBack():
            return (f"{_dept(e.department, names)} 退回任务 {task}: {e.reason}; "
                    f"建议改派 {_dept(e.reroute_to, names)}")
        case ct.TaskVerified():
            note = given(e.note)
            return f"任务 {task} 现场核查通过" + (f": {note}" if note else "")
        case ct.TaskReopened():
            return (f"任务 {task} 返工 (第 {e.reopened or '?'} 次): {e.reason}; "
                    f"新办结时限 {_when(e.resolve_due)}")
        case ct.TaskCancelled():
            return f"撤销任务 {task}: {e.reason}"
        case ct.TaskClosed():
            return f"任务 {task} 关闭"
        case ct.CaseRated():
            score = "?" if e.score is None else e.score
            return f"回访评价 {score} 分" + (f": {e.comment}" if e.comment else "")
        case ct.CaseClosed():
            return "全部任务办结, 结案"
        case ct.ExtensionRequested():
            days = "?" if e.days is None else e.days
            return f"任务 {task} 申请延期 {days} 个工作日: {e.reason}"
        case ct.ExtensionGranted():
            days = "?" if e.days is None else e.days
            return (f"批准任务 {task} 延期 {days} 个工作日, 办结时限 "
                    f"{_when(e.previous_due)} → {_when(e.resolve_due)}")
        case ct.ExtensionRefused():
            return f"不予延期 (任务 {task})" + (f": {e.reason}" if e.reason else "")
        case ct.CaseWhistled():
            depts = "、".join(names.get(x, x) for x in e.departments)
            return f"吹哨报到: {depts}" + (f" ({e.reason})" if e.reason else "")
        case ct.DeadlineWarned():
            used = f", 已用 {e.fraction:.0%} 时限" if e.fraction is not None else ""
            return f"超时预警: 任务 {task} {stage}时限 {_when(e.due_at)}{used}"
        case ct.DeadlineBreached():
            return f"已超时: 任务 {task} {stage}时限 {_when(e.due_at)} 已过"
        case ct.TaskEscalated():
            notify = "、".join(e.notify)
            level = e.level_name or ("?" if e.level is None else e.level)
            return (f"升级督办: 任务 {task} 升至 {level}"
                    + (f", 通知 {notify}" if notify else ""))
        case ct.TaskAssigned():
            return (f"{_dept(e.department, names)} 任务 {task} 交由 "
                    f"{e.assignee_name or e.assignee} 承办")
        case ct.CommandRefused():
            return (f"指令被拒绝 ({label_zh(e.command_type)}"
                    + (f", 任务 {task}" if task else "") + f"): {e.reason_zh}")
    return f"{label_zh(m.type)}"
