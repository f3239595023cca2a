"""Auditor-facing text (Chinese + English) for replay, verify, case history and what-if.

Pure: result objects in, lines out; the CLI prints them. Numbers are the results' own, never
recomputed here, so what is printed is what was checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from audit import completeness, dbcompare
from audit.history import STATUS_ZH, TAMPERED_INTACT, CaseHistory
from audit.moments import beijing
from audit.replay import ReplayResult
from audit.verify import VerifyReport
from audit.whatif import Comparison, Tally
from gridflow.core.metrics import INDICATOR_LABELS, Indicators, format_rate
from gridflow.core.sla import STAGE_NAMES_ZH
from gridflow.events import iso

OK_MARK, BAD_MARK = "✓", "✗"


def replay_lines(r: ReplayResult) -> list[str]:
    lines = [
        f"回放完成 / replay done: {r.records:,} records ({r.stats.applied:,} events applied, "
        f"{r.stats.after_until:,} after the moment skipped, {r.stats.dead_lettered:,} dead "
        f"letters) in {r.seconds:.1f} s — {r.rate:,.0f} events/s",
    ]
    if r.archive_records:
        lines.append(f"  其中来自分段归档 / from the segment archive: {r.archive_records:,} records, "
                     "the rest from Kafka")
    lines.append(f"  目标库 / into: {r.url}")
    if r.until is not None:
        lines.append(f"  截至 / as of: {iso(r.until)} (北京时间 {beijing(r.until)}); a live sink "
                     "will refuse to continue this snapshot")
    lines.append("  行数 / rows: " + ", ".join(f"{k} {v:,}" for k, v in r.counts.items()))
    return lines


def verify_lines(r: VerifyReport) -> list[str]:
    lines = [
        "gridflow 审计校验 / audit verify",
        f"  线上库 / live: {r.live_url}",
        f"  重放库 / replayed into: {r.scratch_url}",
        "  比对截点 / compared at: " + (", ".join(
            f"{t.rsplit('.', 1)[-1]}[{p}]<{o}" for (t, p), o in sorted(r.cut.items())) or "—"),
    ]
    if r.until is not None:
        lines.append(f"  线上库为快照 / the live database is a snapshot as of {iso(r.until)}")
    lines += [f"  注 / note: {n}" for n in r.notes]
    lines.append(f"  重放 / replay: {r.stats.records:,} records in {r.seconds:.1f} s "
                 f"({r.rate:,.0f} events/s)")
    lines.append("")
    lines.append("读模型比对 / read models, table by table:")
    for t in r.tables.tables:
        mark = OK_MARK if not t.differences else BAD_MARK
        lines.append(f"  {mark} {t.table:<17} live {t.live_rows:>7,}  replay {t.replay_rows:>7,}"
                     + (f"  differences {t.differences:,}" if t.differences else ""))
    skipped = ", ".join(f"{k} ({v})" for k, v in dbcompare.SKIP_TABLES.items())
    lines.append(f"  (not compared: {skipped}; case_events.topic/partition/offset)")
    for d in r.tables.diffs:
        lines.append(f"    {BAD_MARK} {d.render()}")
    if r.tables.total_differences > len(r.tables.diffs):
        lines.append(f"    … {r.tables.total_differences - len(r.tables.diffs):,} more")
    lines.append("")
    c = r.chain
    mark = OK_MARK if c.clean else BAD_MARK
    lines.append(f"哈希链 / hash chains: {mark} {c.cases:,} cases, {c.events:,} events in the log, "
                 f"{c.ledger_rows:,} ledger rows" + (f", {c.duplicates:,} exact redeliveries"
                                                     if c.duplicates else ""))
    if c.undecodable:
        lines.append(f"  注 / note: {len(c.undecodable)} record(s) in the case-events topic are no "
                     f"event (dead letters, compared in dead_letters): {', '.join(c.undecodable[:3])}")
    for f in c.findings[:100]:
        lines.append(f"    {BAD_MARK} {f.render()}")
    if len(c.findings) > 100:
        lines.append(f"    … {len(c.findings) - 100:,} more")
    for p in r.log_problems:
        lines.append(f"    {BAD_MARK} {p}")
    lines.append("")
    lines += completeness_lines(r.completeness)
    if r.completeness.checked:
        lines.append("")
    if r.clean:
        lines.append("结论 / result: 一致 — the live read models and ledger match a replay of the "
                     "log, every chain intact, nothing the pipeline passed was lost (exit 0)")
    else:
        n = (r.tables.total_differences + len(c.findings) + len(r.log_problems)
             + r.completeness.differences)
        lines.append(f"结论 / result: 发现 {n} 处差异 — {n} difference(s) found (exit 1)")
    return lines


def completeness_lines(c: completeness.CompletenessReport) -> list[str]:
    """Each hop's tally, every lost record (capped), and the reports end to end."""
    if not c.checked:
        return []
    mark = OK_MARK if c.clean else BAD_MARK
    lines = [f"完整性 / completeness: {mark} (each record its consumer group committed past must "
             f"have been handed on; groups: pipeline {c.processor_group}, photo archive "
             f"{c.photo_group})"]
    lines += [f"  注 / note: {n}" for n in c.notes]
    for h in c.hops:
        hop_mark = OK_MARK if not h.lost else BAD_MARK
        parts = [f"{h.handed_on:,} handed on"]
        if h.breakdown:
            parts[0] += " (" + ", ".join(f"{k} {v:,}" for k, v in sorted(h.breakdown.items())) + ")"
        if h.dead_lettered:
            parts.append(f"{h.dead_lettered:,} dead-lettered")
        if h.by_design:
            parts.append(f"{sum(h.by_design.values()):,} decided without a trace by design")
        if h.in_flight:
            parts.append(f"{h.in_flight:,} in flight")
        if h.unverifiable:
            parts.append(f"{h.unverifiable:,} unverifiable")
        parts.append(f"{h.lost:,} lost")
        lines.append(f"  {hop_mark} {completeness.HOP_LABELS.get(h.hop, h.hop)}: "
                     f"{h.records:,} — " + ", ".join(parts))
        for reason, count in sorted(h.by_design.items()):
            lines.append(f"      注 / note: {count:,} "
                         f"{completeness.BY_DESIGN_TEXT.get(reason, reason)}")
        if h.in_flight:
            lines.append(f"      注 / note: {h.in_flight:,} at or beyond the committed offset of "
                         f"{h.group}: in flight, not a difference / 尚在处理中")
        for lost in c.lost:
            if lost.hop == h.hop:
                lines.append(f"    {BAD_MARK} {lost.render(hop=False)}")
    if c.total_lost > len(c.lost):
        lines.append(f"    … {c.total_lost - len(c.lost):,} more")
    e = c.end_to_end
    counted = [f"{e.outcomes.get(t, 0):,} {t}" for t in sorted(completeness.OUTCOME_EVENTS)]
    counted += [f"{e.refused:,} refused", f"{e.dead_lettered:,} dead-lettered",
                f"{e.in_flight:,} in flight", f"{e.lost:,} lost"]
    if e.unverifiable:
        counted.append(f"{e.unverifiable:,} unverifiable")
    if e.total_missing:
        counted.append(f"{e.total_missing:,} without any outcome")
    e_mark = OK_MARK if not e.lost and not e.total_missing else BAD_MARK
    lines.append(f"  {e_mark} 端到端 / end to end: {e.reports:,} report(s) — " + ", ".join(counted))
    for m in e.missing:
        lines.append(f"    {BAD_MARK} {m}")
    if e.total_missing > len(e.missing):
        lines.append(f"    … {e.total_missing - len(e.missing):,} more")
    return lines


def history_lines(h: CaseHistory, checked_photos: bool) -> list[str]:
    lines = [f"案件 {h.case_id} 完整历史 / full history of case {h.case_id}",
             f"  来源 / source: {h.source}; {len(h.entries)} 个事件 events"]
    for e in h.entries:
        lines.append(f"  #{e.seq:<3} {_bj(e.at)}  {e.who}")
        lines.append(f"       {e.what}")
        lines.append(f"       {e.type}  event {e.event_id[:16]}…  hash {e.hash[:16]}…  [{e.where}]")
    lines.append("")
    if h.findings:
        lines.append(f"哈希链 / chain: {BAD_MARK} {len(h.findings)} problem(s)")
        lines += [f"    {BAD_MARK} {f.render()}" for f in h.findings]
    else:
        lines.append(f"哈希链 / chain: {OK_MARK} seq 1..{len(h.entries)} contiguous, every "
                     "prev_hash matches / 链完整")
    lines.append("")
    lines.append(f"照片 / photos: {len(h.photos)}")
    for p in h.photos:
        status = (f"{OK_MARK if p.ok else BAD_MARK} {STATUS_ZH.get(p.status, p.status)} / "
                  f"{p.status}") if checked_photos else "(not checked)"
        where = f"s3://{p.archive_bucket}/{p.archive_key}" if p.archive_key else f"({p.source})"
        if p.archive_version_id:
            where += f" version {p.archive_version_id}"
        lines.append(f"  {status}  {p.role:<12} sha256 {p.sha256}  {p.size or '?'} B  "
                     f"(event #{p.seq})")
        lines.append(f"       {where}" + (f" — {p.detail}" if p.detail else ""))
    lines.append("")
    tampered = [p for p in h.photos if p.status in TAMPERED_INTACT]
    if h.clean:
        verdict = "完整 — history intact, photos present and matching (exit 0)"
    elif not h.findings and tampered and all(p.intact for p in h.photos):
        verdict = (f"归档被改动 {len(tampered)} 张, 记录的锁定版本全部完好 — the archive was "
                   "tampered with, every recorded version intact (exit 1)")
    else:
        verdict = "发现问题 — problems found (exit 1)"
    lines.append("结论 / result: " + verdict)
    return lines


def _bj(at: str) -> str:
    from gridflow.events import parse_ts

    return beijing(parse_ts(at)) + " 北京时间"


# --- what-if ---------------------------------------------------------------------------------

ROWS = ("on_time_close_rate", "close_rate", "closed", "closed_on_time", "due_to_close", "overdue",
        "open", "extension_rate")


def whatif_lines(c: Comparison, policy_name: str, calendar_name: str,
                 names: Mapping[str, str] | None = None,
                 max_lag: timedelta | None = None) -> list[str]:
    names = names or {}
    rep = c.reproduction
    lines = [
        "假设分析 / what-if: deadline and escalation decisions re-run over the recorded log",
        f"  时限政策 / policy: {policy_name}; 工作日历 / calendar: {calendar_name}",
        f"  日志 / log: {rep.events:,} events of {c.cases:,} cases, indicators as of "
        f"{beijing(c.as_of)} (北京时间)",
        f"  复现校验 / the recorded policy re-run: {rep.identical:,}/{rep.events:,} events "
        f"identical hash for hash, {rep.deadline_reproduced}/{rep.deadline_recorded} recorded "
        f"deadline decisions reproduced {OK_MARK if rep.exact else BAD_MARK}",
    ]
    lines += [f"    {BAD_MARK} {m}" for m in rep.mismatches]
    lines += [f"    {BAD_MARK} {m}" for m in c.baseline.unmatched_markers[:10]]
    until = ", ".join(f"p{p} {beijing(t, seconds=False)}" for p, t in sorted(c.run.clock_until.items()))
    lines.append(f"  时钟 / clock: decisions fire where the record proves the live deadline "
                 f"clock stood (last: {until or '—'})"
                 + (f", and at each event's time less {max_lag}" if max_lag is not None else ""))
    lines.append("")
    lines.append(f"  {'指标 indicator':<26}{'记录 recorded':>14}{'假设 what-if':>14}{'变化 change':>14}")
    rec, wi = c.recorded.overall, c.whatif.overall
    for key in ROWS:
        a, b = getattr(rec, key, None), getattr(wi, key, None)
        lines.append(f"  {INDICATOR_LABELS.get(key, key) + ' ' + key:<26}{_fmt(a, key):>14}"
                     f"{_fmt(b, key):>14}{_delta(a, b, key):>14}")
    for label, attr in (("预警 warnings", "warnings"), ("超时 breaches", "breaches")):
        a_c, b_c = getattr(c.recorded, attr), getattr(c.whatif, attr)
        for stage in sorted(set(a_c) | set(b_c)):
            name = f"{label} {STAGE_NAMES_ZH.get(stage, stage)}"
            lines.append(f"  {name:<26}{a_c[stage]:>14}{b_c[stage]:>14}"
                         f"{b_c[stage] - a_c[stage]:>+14}")
    lines.append("  升级督办 escalations by level:")
    levels = sorted(set(c.recorded.escalations) | set(c.whatif.escalations))
    for level in levels:
        a_n, b_n = c.recorded.escalations[level], c.whatif.escalations[level]
        lines.append(f"    {level[0]} {level[1]:<20}{a_n:>14}{b_n:>14}{b_n - a_n:>+14}")
    if not levels:
        lines.append("    —")
    lines.append("")
    lines.append("  各部门按期结案率 / on-time close rate per department:")
    whatif_by = {i.department: i for i in c.whatif.indicators}
    for ind in c.recorded.indicators[:-1]:
        other = whatif_by.get(ind.department)
        name = names.get(str(ind.department), str(ind.department))
        lines.append(f"    {name:<28}{format_rate(ind.on_time_close_rate):>10} → "
                     f"{format_rate(other.on_time_close_rate if other else None):>8}")
    lines.append("")
    lines.append("  (nothing live was touched: the re-run happens in memory)")
    return lines


def whatif_json(c: Comparison) -> dict[str, Any]:
    def tally(t: Tally) -> dict[str, Any]:
        return {
            "warnings": dict(t.warnings), "breaches": dict(t.breaches),
            "escalations": [{"level": k[0], "name": k[1], "count": v}
                            for k, v in sorted(t.escalations.items())],
            "indicators": [_ind(i) for i in t.indicators],
        }

    rep = c.reproduction
    return {
        "as_of": iso(c.as_of), "cases": c.cases,
        "reproduction": {"events": rep.events, "identical": rep.identical, "exact": rep.exact,
                         "deadline_recorded": rep.deadline_recorded,
                         "deadline_reproduced": rep.deadline_reproduced,
                         "mismatches": rep.mismatches},
        "recorded": tally(c.recorded), "whatif": tally(c.whatif),
    }


def _ind(i: Indicators) -> Mapping[str, Any]:
    return {k: v for k, v in vars(i).items()}


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "—"
    if key.endswith("_rate"):
        return format_rate(value)
    return str(value)


def _delta(a: Any, b: Any, key: str) -> str:
    if a is None or b is None:
        return "—"
    if key.endswith("_rate"):
        return f"{(b - a) * 100:+.1f} pt"
    return f"{b - a:+d}"
