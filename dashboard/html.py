"""Renders the supervisors' board and case pages as plain HTML in Chinese (no JavaScript needed).

Every value from the database is escaped; times are shown in Beijing time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import quote

from gridflow.core.metrics import format_rate
from gridflow.events import label_zh

LOCAL = timedelta(hours=8)

STYLE = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:0;background:#f4f6f9;color:#222}
header{background:#b71c1c;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;font-size:13px;opacity:.9}
main{padding:16px 24px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:16px}
.card{background:#fff;border-radius:6px;padding:12px 16px;min-width:130px;box-shadow:0 1px 3px #0002}
.card b{display:block;font-size:26px;margin-top:4px} .card.warn b{color:#c62828}
section{background:#fff;border-radius:6px;padding:12px 16px;margin-bottom:16px;box-shadow:0 1px 3px #0002}
h2{font-size:16px;margin:0 0 8px;border-left:4px solid #b71c1c;padding-left:8px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e5e5e5;padding:5px 8px;text-align:left}
th{background:#fafafa} td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#c62828;font-weight:bold} a{color:#1565c0;text-decoration:none}
.photos img{height:120px;margin:4px;border:1px solid #ccc}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
figure.ph{display:inline-block}
.code{color:#777;font-size:12px;font-family:monospace;margin-left:6px}
.notice{background:#fff3e0;border:1px solid #ef6c00;color:#8a3b00;border-radius:6px;padding:10px 14px;margin:0 0 16px}
"""


def local_time(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (value + LOCAL).strftime("%Y-%m-%d %H:%M")


def _rate(value: float | None) -> str:
    return format_rate(value)


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _page(title: str, subtitle: str, body: str, refresh: int | None = None,
          nav: str = "") -> str:
    """A page: the style sheet is /static/board.css (STYLE), never inline (the CSP allows no
    inline style or script); `nav` is the signed-in person's bar (dashboard.pages)."""
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">{meta}'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)}</title><link rel="stylesheet" href="/static/board.css">'
            f"</head><body><header>{nav}<h1>{escape(title)}</h1><p>{escape(subtitle)}</p>"
            f"</header><main>{body}</main></body></html>")


def render_board(data: dict[str, Any], nav: str = "") -> str:
    k = data["kpi"]
    cards = [
        ("今日立案", k["reports_today"], False), ("办理中案件", k["open_cases"], False),
        ("已结案", k["closed_cases"], False), ("在办任务", k["open_tasks"], False),
        ("超期任务", k["overdue_tasks"], k["overdue_tasks"] > 0),
        ("升级督办中", k["escalated_tasks"], k["escalated_tasks"] > 0),
        ("按期结案率", _rate(k["on_time_close_rate"]), False),
        ("群众满意度", _score(k["mean_satisfaction"]), False),
        ("照片已归档", k["photos_archived"], False), ("不予立案", k["not_filed"], False),
        ("死信", k["dead_letters"], k["dead_letters"] > 0),
    ]
    card_html = "".join(
        f'<div class="card{" warn" if warn else ""}">{escape(label)}<b>{escape(str(v))}</b></div>'
        for label, v, warn in cards
    )
    dept_rows = "".join(
        f"<tr><td>{escape(d['name'])}</td><td class=n>{d['dispatched']}</td>"
        f"<td class=n>{d['open']}</td><td class=n>{_flag(d['overdue'])}</td>"
        f"<td class=n>{d['closed']}</td><td class=n>{_rate(d['close_rate'])}</td>"
        f"<td class=n>{_rate(d['on_time_close_rate'])}</td><td class=n>{_rate(d['rework_rate'])}</td>"
        f"<td class=n>{_rate(d['extension_rate'])}</td><td class=n>{_rate(d['send_back_rate'])}</td>"
        f"<td class=n>{_score(d['mean_satisfaction'])}</td></tr>"
        for d in data["departments"]
    )
    grid_rows = "".join(
        f"<tr><td>{escape(g['township'])}</td><td>{grid_label(g['name'], g['code'])}</td>"
        f"<td class=n>{g['open']}</td><td class=n>{_flag(g['overdue'])}</td></tr>"
        for g in data["grids"]
    ) or '<tr><td colspan=4>暂无在办任务</td></tr>'
    esc_rows = "".join(
        f"<tr><td>{local_time(e['at'])}</td><td>{_case_link(e['case_id'])}</td>"
        f"<td>{escape(str(e['data'].get('task_id', '')))}</td>"
        f"<td>{escape(str(e['data'].get('level_name', '')))}</td>"
        f"<td>{escape('、'.join(e['data'].get('notify', []) or []))}</td></tr>"
        for e in data["escalations"]
    ) or '<tr><td colspan=5>暂无升级督办</td></tr>'
    overdue_rows = "".join(
        f"<tr><td>{_case_link(t['case_id'])}</td><td>{escape(t['category_name'] or '')}</td>"
        f"<td>{grid_label(t.get('grid_name'), t.get('grid_code'))}</td>"
        f"<td>{escape(t['department_name'])}</td><td>{escape(t['state_zh'])}</td>"
        f"<td>{local_time(t['sign_due'] if t['state'] == 'dispatched' else t['resolve_due'])}</td>"
        f"<td class=n>{t['escalation_level']}</td></tr>"
        for t in data["overdue"]
    ) or '<tr><td colspan=7>暂无超期任务</td></tr>'
    notices = "".join(f'<p class="notice" role="alert">⚠ {escape(n)}</p>'
                      for n in data.get("notices", []))
    body = (
        f'{notices}<div class="cards">{card_html}</div>'
        "<section><h2>各部门考核指标 (数字城管)</h2><table><tr><th>部门</th><th>派遣数</th>"
        "<th>在办</th><th>办结超期</th><th>结案数</th><th>结案率</th><th>按期结案率</th><th>返工率</th>"
        f"<th>延期率</th><th>退单率</th><th>满意度</th></tr>{dept_rows}</table></section>"
        '<div class="grid2">'
        "<section><h2>超期任务</h2><table><tr><th>案件</th><th>类别</th><th>网格</th><th>责任部门</th>"
        f"<th>状态</th><th>期限</th><th>升级级别</th></tr>{overdue_rows}</table></section>"
        "<section><h2>最近升级督办</h2><table><tr><th>时间</th><th>案件</th><th>任务</th>"
        f"<th>升级至</th><th>通知</th></tr>{esc_rows}</table></section></div>"
        "<section><h2>各网格在办与超期</h2><table><tr><th>乡镇(街道)</th><th>网格</th>"
        f"<th>在办任务</th><th>超期任务</th></tr>{grid_rows}</table></section>"
    )
    return _page(f"{data['county']} 网格化管理督办看板",
                 f"数据截至 {local_time(data['now'])} (北京时间) · 每30秒自动刷新", body,
                 refresh=30, nav=nav)


def render_case(detail: dict[str, Any], photo_url: Any, nav: str = "", extra: str = "") -> str:
    """The case page; `extra`: sections after the overview (dashboard.pages.contacts_section)."""
    tasks = "".join(
        f"<tr><td>{escape(t['task_id'])}</td><td>{escape(t.get('department_name') or t['department'])}</td>"
        f"<td>{escape(t.get('state_zh', t['state']))}</td><td>{local_time(t.get('sign_due'))}</td>"
        f"<td>{local_time(t.get('resolve_due'))}</td><td class=n>{t.get('escalation_level', 0)}</td>"
        f"<td class=n>{t.get('reopened', 0)}</td></tr>"
        for t in detail["tasks"]
    )
    events = "".join(
        f"<tr><td class=n>{e['seq']}</td><td>{local_time(e['at'])}</td>"
        f"<td>{escape(label_zh(e['type']))}</td><td>{escape(e['actor'])}</td>"
        f"<td><code>{escape(e['hash'][:12])}</code></td></tr>"
        for e in detail["events"]
    )
    photos = "".join(
        f'<figure class="ph"><img src="{escape(photo_url(p))}" alt="">'
        f"<figcaption>{escape(_role_zh(p.get('role')))} · {escape((p.get('sha256') or '')[:10])}"
        f"</figcaption></figure>"
        for p in detail["photos"] if p.get("thumbnail_key")
    ) or "暂无已归档照片"
    nf = detail.get("not_filed")
    reason = f"<p class=bad>不予立案: {escape(nf.get('reason_zh') or '')}</p>" if nf else ""
    body = (
        f"<section><h2>案件概况</h2>{reason}<table>"
        f"<tr><th>状态</th><td>{escape(detail.get('status_zh', ''))} · {escape(detail.get('stage_zh', ''))}</td></tr>"
        f"<tr><th>类别</th><td>{escape(detail.get('category_name') or '')} ({escape(detail.get('category_code') or '')})</td></tr>"
        f"<tr><th>描述</th><td>{escape(detail.get('description') or '')}</td></tr>"
        f"<tr><th>网格</th><td>{grid_label(detail.get('grid_name'), detail.get('grid_code'))}</td></tr>"
        f"<tr><th>立案时间</th><td>{local_time(detail.get('filed_at'))}</td></tr>"
        f"<tr><th>满意度</th><td>{escape(str(detail.get('rating') or '—'))}</td></tr></table></section>"
        f"{extra}"
        "<section><h2>任务</h2><table><tr><th>任务</th><th>责任部门</th><th>状态</th>"
        f"<th>签收期限</th><th>办结期限</th><th>升级级别</th><th>返工次数</th></tr>{tasks}</table></section>"
        f'<section class="photos"><h2>照片</h2>{photos}</section>'
        "<section><h2>全过程记录 (哈希链)</h2><table><tr><th>序号</th><th>时间</th><th>事项</th>"
        f"<th>操作人</th><th>哈希</th></tr>{events}</table></section>"
        '<p><a href="/">返回看板</a></p>'
    )
    return _page(f"案件 {detail['case_id']}", "案件全过程 · 北京时间", body, nav=nav)


def grid_label(name: str | None, code: str | None) -> str:
    """A grid as people read it: its name, the 15-digit code beside it (the code alone when the
    reference data does not know it)."""
    if not code:
        return "—"
    if not name or name == code:
        return f'<span class="code">{escape(code)}</span>'
    return f'{escape(name)}<span class="code">{escape(code)}</span>'


def _role_zh(role: Any) -> str:
    return {"before": "上报", "after": "办结", "progress": "进展", "verification": "核查"}.get(
        str(role), str(role))


def _flag(n: int) -> str:
    return f'<span class="bad">{n}</span>' if n else "0"


def _case_link(case_id: str) -> str:
    return f'<a href="/cases/{quote(case_id)}">{escape(case_id)}</a>'
