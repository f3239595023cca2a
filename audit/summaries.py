"""What each case event means, in one Chinese line, and who did it: for auditors.

Pure: an event and optional name lookups in, text out; never raises on odd data (an unknown
event type or a missing field still gives a line), so a history always prints in full.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.moments import beijing
from gridflow import events as ev
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


def _dept(d: Mapping[str, Any], names: Mapping[str, str], key: str = "department") -> str:
    code = str(d.get(key, "") or "")
    return names.get(code, code) or "—"


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _on_time(flag: Any) -> str:
    return {True: "按时", False: "超时"}.get(flag, "") if isinstance(flag, bool) else ""


def summarize(m: Message, names: Mapping[str, str] | None = None) -> str:
    """One line of Chinese saying what the event records."""
    names = names or {}
    d = m.data if isinstance(m.data, dict) else {}
    task = str(d.get("task_id", "") or "")
    stage = STAGE_NAMES_ZH.get(str(d.get("stage", "")), str(d.get("stage", "")))
    t = m.type
    if t == ev.CASE_FILED:
        report = _obj(d.get("report"))
        depts = "、".join(names.get(str(x), str(x)) for x in d.get("departments") or []) or "—"
        return (f"立案: {d.get('category_name') or d.get('category_code', '')} "
                f"({d.get('category_code', '')}), 网格 {d.get('grid_code', '')}, "
                f"上报 {report.get('report_id', '')}, 照片 {len(report.get('photos') or [])} 张, "
                f"责任部门 {depts}")
    if t == ev.CASE_NOT_FILED:
        return f"不予立案: {d.get('reason_zh') or d.get('code', '')}"
    if t == ev.REPORT_MERGED:
        report = _obj(d.get("report"))
        return (f"合并重复上报 {report.get('report_id', '')} "
                f"(相距 {d.get('distance_m', '—')} 米, 照片 {len(report.get('photos') or [])} 张)")
    if t == ev.TASK_DISPATCHED:
        why = DISPATCH_REASON_ZH.get(str(d.get("reason", "")), str(d.get("reason", "")))
        return (f"派遣任务 {task} 至 {_dept(d, names)} ({why}), 签收时限 {_when(d.get('sign_due'))}, "
                f"办结时限 {_when(d.get('resolve_due'))}")
    if t == ev.PHOTO_ARCHIVED:
        status = {"archived": "已归档", "missing": "原图缺失", "corrupt": "原图损坏"}.get(
            str(d.get("status", "")), str(d.get("status", "")))
        return (f"照片{status}: sha256 {str(d.get('sha256', ''))[:16]}… → "
                f"{d.get('archive_key') or '—'}" + (f" ({d['problem']})" if d.get("problem") else ""))
    if t == ev.TASK_SIGNED:
        return f"{_dept(d, names)} 签收任务 {task} ({_on_time(d.get('on_time')) or '—'})"
    if t == ev.TASK_PROGRESS_NOTED:
        return f"任务 {task} 处置进展: {d.get('note', '')}"
    if t == ev.TASK_RESOLVED:
        return (f"{_dept(d, names)} 办结任务 {task} ({_on_time(d.get('on_time')) or '—'}): "
                f"{d.get('note', '')}; 照片 {len(d.get('photos') or [])} 张; "
                f"核查时限 {_when(d.get('verify_due'))}")
    if t == ev.TASK_SENT_BACK:
        return (f"{_dept(d, names)} 退回任务 {task}: {d.get('reason', '')}; "
                f"建议改派 {_dept(d, names, 'reroute_to')}")
    if t == ev.TASK_VERIFIED:
        return f"任务 {task} 现场核查通过" + (f": {d['note']}" if d.get("note") else "")
    if t == ev.TASK_REOPENED:
        return (f"任务 {task} 返工 (第 {d.get('reopened', '?')} 次): {d.get('reason', '')}; "
                f"新办结时限 {_when(d.get('resolve_due'))}")
    if t == ev.TASK_CANCELLED:
        return f"撤销任务 {task}: {d.get('reason', '')}"
    if t == ev.TASK_CLOSED:
        return f"任务 {task} 关闭"
    if t == ev.CASE_RATED:
        return f"回访评价 {d.get('score', '?')} 分" + (f": {d['comment']}" if d.get("comment") else "")
    if t == ev.CASE_CLOSED:
        return "全部任务办结, 结案"
    if t == ev.EXTENSION_REQUESTED:
        return f"任务 {task} 申请延期 {d.get('days', '?')} 个工作日: {d.get('reason', '')}"
    if t == ev.EXTENSION_GRANTED:
        return (f"批准任务 {task} 延期 {d.get('days', '?')} 个工作日, 办结时限 "
                f"{_when(d.get('previous_due'))} → {_when(d.get('resolve_due'))}")
    if t == ev.EXTENSION_REFUSED:
        return f"不予延期 (任务 {task})" + (f": {d['reason']}" if d.get("reason") else "")
    if t == ev.CASE_WHISTLED:
        depts = "、".join(names.get(str(x), str(x)) for x in d.get("departments") or [])
        return f"吹哨报到: {depts}" + (f" ({d['reason']})" if d.get("reason") else "")
    if t == ev.DEADLINE_WARNED:
        frac = d.get("fraction")
        used = f", 已用 {frac:.0%} 时限" if isinstance(frac, (int, float)) else ""
        return f"超时预警: 任务 {task} {stage}时限 {_when(d.get('due_at'))}{used}"
    if t == ev.DEADLINE_BREACHED:
        return f"已超时: 任务 {task} {stage}时限 {_when(d.get('due_at'))} 已过"
    if t == ev.TASK_ESCALATED:
        notify = "、".join(str(x) for x in d.get("notify") or [])
        return (f"升级督办: 任务 {task} 升至 {d.get('level_name') or d.get('level', '?')}"
                + (f", 通知 {notify}" if notify else ""))
    if t == ev.COMMAND_REFUSED:
        cmd = str(d.get("command_type", ""))
        return (f"指令被拒绝 ({label_zh(cmd)}"
                + (f", 任务 {task}" if task else "") + f"): {d.get('reason_zh', '')}")
    return f"{t} (未知事件类型 / unknown event type)"
