"""CSV and XLSX of what the board shows: the indicator table and the filtered case list.

Pure over the rows the pages use (workbench.board), so a file holds the page's numbers: counts
as integers, rates as the page's percentages (CSV: the same text; XLSX: the fraction with a
percent format), times in Beijing time. CSV is UTF-8 with a byte-order mark (Excel reads it).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font

from gridflow.core.case import TASK_STATE_NAMES_ZH
from gridflow.core.metrics import RATE_FIELDS
from gridflow.core.refdata import ReferenceData
from sinks.queries import CASE_STATUS_ZH
from workbench.board import INDICATOR_COLUMNS, IndicatorLine, Range, indicator_cell
from workbench.web import local_time

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SOURCE_ZH = {"grid_worker": "网格员上报", "resident": "群众诉求"}
SEVERITY_ZH = {1: "一般", 2: "较大", 3: "重大"}


def indicator_table(lines: list[IndicatorLine]) -> tuple[list[str], list[list[Any]], list[list[str]]]:
    """(headings, values, page texts) of the indicator table."""
    headings = ["部门", *(h for _, h in INDICATOR_COLUMNS)]
    values = [[x.name, *(getattr(x.values, f) for f, _ in INDICATOR_COLUMNS)] for x in lines]
    texts = [[x.name, *(indicator_cell(x, f) for f, _ in INDICATOR_COLUMNS)] for x in lines]
    return headings, values, texts


CASE_HEADINGS = ["案件编号", "状态", "类别编码", "类别", "等级", "乡镇(街道)", "网格", "网格编码",
                 "来源", "问题描述", "立案时间", "结案时间", "责任部门", "是否超期", "满意度"]


def case_table(ref: ReferenceData, rows: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for r in rows:
        grid = ref.grids.get(r.get("grid_code") or "")
        out.append([
            r["case_id"], CASE_STATUS_ZH.get(r["status"], r["status"]), r.get("category_code") or "",
            r.get("category_name") or "", SEVERITY_ZH.get(r.get("severity") or 1, ""),
            ref.area_name(r.get("township_code") or ""), grid.name if grid else "",
            r.get("grid_code") or "", SOURCE_ZH.get(r.get("source") or "", r.get("source") or ""),
            r.get("description") or "", local_time(r.get("filed_at")),
            local_time(r.get("closed_at")) if r.get("closed_at") else "",
            "、".join(_dept(ref, d) for d in r.get("departments", [])),
            "是" if r.get("overdue") else "否", r.get("rating") or "",
        ])
    return out


def _dept(ref: ReferenceData, code: str) -> str:
    dept = ref.departments.get(code)
    return dept.name if dept else code


def to_csv(headings: list[str], rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(headings)
    writer.writerows(rows)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(sheets: list[tuple[str, list[str], list[list[Any]], set[int]]],
            notes: list[tuple[str, str]]) -> bytes:
    """Sheets of (title, headings, rows, columns holding rates), then a sheet of notes."""
    wb = Workbook()
    first = True
    for title, headings, rows, rate_columns in sheets:
        ws = wb.active if first else wb.create_sheet()
        assert ws is not None
        first = False
        ws.title = title
        ws.append(headings)
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for row in rows:
            ws.append(row)
        for col in rate_columns:
            for (cell,) in ws.iter_rows(min_row=2, min_col=col + 1, max_col=col + 1):
                cell.number_format = "0.0%"
        ws.freeze_panes = "B2"
        for i, heading in enumerate(headings, start=1):
            ws.column_dimensions[ws.cell(1, i).column_letter].width = max(8, len(heading) * 2 + 2)
    info = wb.create_sheet("说明")
    for key, value in notes:
        info.append([key, value])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def indicators_xlsx(lines: list[IndicatorLine], notes: list[tuple[str, str]]) -> bytes:
    headings, values, _ = indicator_table(lines)
    rate_cols = {i + 1 for i, (f, _) in enumerate(INDICATOR_COLUMNS) if f in RATE_FIELDS}
    return to_xlsx([("考核指标", headings, values, rate_cols)], notes)


def indicators_csv(lines: list[IndicatorLine]) -> bytes:
    headings, _, texts = indicator_table(lines)
    return to_csv(headings, texts)


def range_notes(county: str, scope_name: str, r: Range, as_of: datetime) -> list[tuple[str, str]]:
    return [("单位", county), ("范围", scope_name),
            ("日期", f"{r.first.isoformat()} 至 {r.last.isoformat()}(北京时间, 含首尾)"),
            ("统计口径", "期间内派遣的任务, 按期末(或当前)状态计算; 定义见 gridflow.core.metrics"),
            ("数据截至", local_time(as_of))]


def state_zh(state: str) -> str:
    return TASK_STATE_NAMES_ZH.get(state, state)
