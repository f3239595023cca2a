"""The supervisors' board on the real stack: indicators for a date range, daily and weekly
trends, the map of open cases over the county's grid polygons, the filtered case list, and the
CSV / XLSX exports holding exactly the page's numbers, each inside the caller's jurisdiction.

The history is made on the API's own clock, set back nine days: cases filed then, one closed
on time, one left open past its deadline.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook

from gridflow.settings import Settings
from tests.integration.workbench_env import (
    VILLAGE,
    WorkbenchEnv,
    photo,
    running_workbench,
    text_of,
)
from workbench.board import local_day

pytestmark = pytest.mark.integration

COUNTY, TOWNSHIP, OTHER_TOWNSHIP = "sv0001", "sv0102", "sv0103"
VILLAGE_NAME = "青石镇石门村村民委员会"


@pytest.fixture(name="wb")
def wb_fixture(stack: Any, stack_settings: Settings, pg_url: str) -> Iterator[WorkbenchEnv]:
    yield from running_workbench(stack, stack_settings, pg_url)


@pytest.fixture(name="history")
def history_fixture(wb: WorkbenchEnv) -> dict[str, str]:
    """Nine days ago: one case closed on time, one left open (overdue by now); today: one more."""
    wb.clock.offset = -timedelta(days=9)
    closed = wb.file_report()
    late = wb.file_report(lat=32.1604, lon=109.9603, description="沟渠边垃圾")
    staff = wb.staff(VILLAGE)
    wb.decide(staff.post(f"/w/tasks/{closed}-T01/sign", {"form_key": "s"}))
    wb.decide(staff.post(f"/w/tasks/{closed}-T01/resolve", {"form_key": "r", "note": "已清运"},
                         files=[("photos", ("a.jpg", photo(2), "image/jpeg"))]))
    r = httpx.post(f"{wb.url}/api/v1/tasks/{closed}-T01/verify", json={"note": "已核实"},
                   headers=wb.sessions.bearer("gw0001"), timeout=30)
    assert r.status_code == 202, r.text
    wb.decide_id(r.json()["command_id"])
    wb.clock.offset = timedelta(0)
    today = wb.file_report(lat=32.1608, lon=109.9598, description="新的垃圾堆")
    return {"closed": closed, "late": late, "today": today,
            "filed_day": local_day(wb.clock() - timedelta(days=9)).isoformat()}


def board_range(wb: WorkbenchEnv) -> dict[str, str]:
    today = local_day(wb.clock())
    return {"from": (today - timedelta(days=13)).isoformat(), "to": today.isoformat()}


def table_rows(html: str, table_id: str) -> dict[str, list[str]]:
    table = re.search(rf'<table class="data" id="{table_id}">(.*?)</table>', html, flags=re.S)
    assert table, table_id
    rows = {}
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(1), flags=re.S)[1:]:
        cells = [text_of(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, flags=re.S)]
        rows[cells[0]] = cells[1:]
    return rows


def test_the_indicators_of_a_range_and_their_exports_hold_the_same_numbers(
    wb: WorkbenchEnv, history: dict[str, str]
) -> None:
    county = wb.person(COUNTY)
    page = county.get("/s/board", params=board_range(wb))
    assert page.status_code == 200, page.text[:500]
    rows = table_rows(page.text, "indicators")
    village = rows[VILLAGE_NAME]
    assert village[:6] == ["3", "3", "2", "1", "1", "33.3%"]  # dispatched, accepted, open, ...
    assert village[6:9] == ["2", "1", "50.0%"]  # due to close: the closed one and the late one
    assert rows["合计"][0] == "3"
    text = text_of(page.text)
    assert "期间立案 3" in text and "期间结案 1" in text and "超期任务 1" in text

    with county.client() as c:
        xlsx = c.get("/s/board/indicators.xlsx", params=board_range(wb))
        as_csv = c.get("/s/board/indicators.csv", params=board_range(wb))
    assert xlsx.headers["content-type"].startswith("application/vnd.openxmlformats")
    sheet = load_workbook(io.BytesIO(xlsx.content))["考核指标"]
    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    headings = values[0]
    by_name = {row[0]: dict(zip(headings, row, strict=True)) for row in values[1:]}
    for name, cells in rows.items():
        x = by_name[name]
        assert [str(x["派遣数"]), str(x["结案数"])] == [cells[0], cells[4]]
        for heading, i in (("结案率", 5), ("按期结案率", 8)):
            shown = "—" if x[heading] is None else f"{x[heading] * 100:.1f}%"
            assert shown == cells[i], (name, heading)
    assert sheet["G2"].number_format == "0.0%"
    from_csv = {r[0]: r[1:] for r in list(csv.reader(io.StringIO(as_csv.text.lstrip("\ufeff"))))[1:]}
    assert from_csv == rows


def test_the_trends_count_filed_and_closed_per_day_and_week(
    wb: WorkbenchEnv, history: dict[str, str]
) -> None:
    page = wb.person(COUNTY).get("/s/board", params=board_range(wb)).text
    assert page.count("<svg viewBox=") >= 2 and "每日立案、结案与按期率" in page
    daily = re.search(r"<summary>每日数据表</summary>(.*?)</table>", page, flags=re.S)
    assert daily
    day_rows = {cells[0]: cells[1:] for cells in (
        [text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)]
        for tr in re.findall(r"<tr>(.*?)</tr>", daily.group(1), flags=re.S)) if cells}
    filed_day = history["filed_day"]
    assert day_rows[filed_day][0] == "2"  # two filed that day
    assert day_rows[filed_day][1] == "1" and day_rows[filed_day][4] == "100.0%"
    assert sum(int(v[0]) for v in day_rows.values()) == 3
    assert "<summary>每周数据表</summary>" in page


def test_the_map_draws_open_cases_over_the_grids_and_links_to_them(
    wb: WorkbenchEnv, history: dict[str, str]
) -> None:
    page = wb.person(TOWNSHIP).get("/s/map").text
    assert page.count('class="grid grid-busy-') == 9  # 青石镇's nine grids, its own GeoJSON
    assert f'<a href="/w/cases/{history["late"]}"><circle' in page
    assert f'<a href="/w/cases/{history["closed"]}">' not in page  # closed: not on the map
    late_dot = re.search(rf'/w/cases/{history["late"]}"><circle[^>]*class="dot dot-(\w+)"', page)
    assert late_dot and late_dot.group(1) == "overdue"
    assert "共 2 件在办案件" in text_of(page)
    only_late = wb.person(TOWNSHIP).get("/s/map", params={"overdue": "1"}).text
    assert history["late"] in only_late and history["today"] not in only_late
    other = wb.person(OTHER_TOWNSHIP).get("/s/map").text
    assert history["late"] not in other and "共 0 件在办案件" in text_of(other)


def test_the_case_list_filters_and_exports_what_it_shows(
    wb: WorkbenchEnv, history: dict[str, str]
) -> None:
    county = wb.person(COUNTY)
    params = {**board_range(wb), "overdue": "1"}
    page = text_of(county.get("/s/cases", params=params).text)
    assert history["late"] in page and history["today"] not in page and "共 1 件" in page
    closed = text_of(county.get("/s/cases", params={**board_range(wb), "status": "closed"}).text)
    assert history["closed"] in closed and history["late"] not in closed
    with county.client() as c:
        listed = c.get("/s/cases/export.csv", params={**board_range(wb), "grid": "421099101201001"})
        book = c.get("/s/cases/export.xlsx", params=params)
    ids = [r[0] for r in list(csv.reader(io.StringIO(listed.text.lstrip("\ufeff"))))[1:]]
    assert sorted(ids) == sorted(history[k] for k in ("closed", "late", "today"))
    sheet = load_workbook(io.BytesIO(book.content))["案件清单"]
    assert [row[0].value for row in sheet.iter_rows(min_row=2)] == [history["late"]]
    assert sheet.cell(2, 14).value == "是"  # 是否超期


def test_a_board_outside_the_jurisdiction_counts_nothing_of_it(
    wb: WorkbenchEnv, history: dict[str, str]
) -> None:
    other = wb.person(OTHER_TOWNSHIP)
    text = text_of(other.get("/s/board", params=board_range(wb)).text)
    assert "期间立案 0" in text
    asked = other.get("/s/board", params={**board_range(wb), "township": "421099101"})
    assert "期间立案 0" in text_of(asked.text)  # another township cannot be asked for
    assert wb.staff(VILLAGE).get("/s/board").status_code == 403
    bad = wb.person(COUNTY).get("/s/board", params={"from": "2026-13-01", "to": "x"})
    assert bad.status_code == 200 and "日期格式应为 年-月-日" in bad.text
