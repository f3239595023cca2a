"""The supervisors' board pages (督办看板), scoped to the caller's jurisdiction: indicators for
any date range, daily and weekly trends, the map of open cases over the county's own grid
polygons, the filtered case list, and their CSV / XLSX exports (the same functions as the page).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from accounts.access import allow, not_found
from accounts.roles import Principal
from gridflow.calendars import calendar_notices
from producers.context import Context, ctx
from workbench import board as bd
from workbench import export, mapsvg
from workbench.charts import trend_chart
from workbench.commands import FormError
from workbench.dept import category_groups, grid_groups
from workbench.web import board_townships, query, render

router = APIRouter(tags=["board 督办看板"], include_in_schema=False)

DAILY_MAX_DAYS = 92  # a per-day chart beyond this is unreadable: weeks only


def scope_of(request: Request, caller: Principal) -> tuple[bd.Scope, list[dict[str, str]], str]:
    """The scope asked for (inside the caller's), the townships they may pick, its name."""
    c = ctx(request)
    mine = board_townships(caller)
    township = request.query_params.get("township") or ""
    scope = bd.scope_for(mine, township)
    choices = [{"code": t.code, "name": t.name} for t in sorted(c.ref.townships.values(),
                                                                 key=lambda t: t.code)
               if mine is None or t.code in mine]
    if scope.townships is None:
        name = f"{c.ref.county.name}(全县)"
    else:
        name = "、".join(c.ref.area_name(t) for t in scope.townships) or "—"
    return scope, choices, name


def range_of(request: Request, now: datetime) -> tuple[bd.Range, list[FormError]]:
    r, problems = bd.parse_range(request.query_params.get("from"),
                                 request.query_params.get("to"), now)
    return r, [FormError(field, message) for field, message in problems]


@router.get("/s/board", summary="督办看板 / the board: indicators, trends, exports")
async def board_page(
    request: Request, caller: Annotated[Principal, allow("board.read")]
) -> Response:
    c = ctx(request)
    now = c.clock()
    scope, choices, scope_name = scope_of(request, caller)
    r, errors = range_of(request, now)

    def load() -> dict[str, Any]:
        with Session(c.engine) as session:
            return {
                "kpi": bd.kpis(session, scope, r, now),
                "lines": bd.indicators(session, c.ref, scope, r, now),
                "daily": bd.trends(session, scope, r, "day") if r.days <= DAILY_MAX_DAYS else [],
            }

    data = await run_in_threadpool(load)
    if data["daily"]:
        data["weekly"] = bd.weeks_of(data["daily"])
    else:
        data["weekly"] = await run_in_threadpool(weekly, c, scope, r)
    total = next(x for x in data["lines"] if x.code is None)
    params = {"from": r.first.isoformat(), "to": r.last.isoformat(),
              "township": request.query_params.get("township") or None}
    _, _, texts = export.indicator_table(data["lines"])
    return render(
        request, "board.html", caller=caller, title="督办看板", section="督办看板",
        r=r, errors=errors, kpi=data["kpi"], total=total,
        kpi_rate=bd.indicator_cell(total, "on_time_close_rate"),
        kpi_score=bd.indicator_cell(total, "mean_satisfaction"), lines=data["lines"], texts=texts,
        headings=[h for _, h in bd.INDICATOR_COLUMNS], scope_name=scope_name, choices=choices,
        township=request.query_params.get("township") or "",
        presets=[(label, query("/s/board", **{**params, "from": p.first.isoformat(),
                                              "to": p.last.isoformat()}))
                 for label, p in bd.presets(now)],
        daily=trend_chart(data["daily"], "day") if data["daily"] else None,
        weekly=trend_chart(data["weekly"], "week"), daily_points=data["daily"],
        weekly_points=data["weekly"], as_of=r.as_of(now),
        export_csv=query("/s/board/indicators.csv", **params),
        export_xlsx=query("/s/board/indicators.xlsx", **params),
        cases_link=query("/s/cases", **params), map_link=query("/s/map", township=params["township"]),
        notices=calendar_notices(c.settings, now, staff=True),
    )


def weekly(c: Context, scope: bd.Scope, r: bd.Range) -> list[bd.TrendPoint]:
    with Session(c.engine) as session:
        return bd.trends(session, scope, r, "week")


@router.get("/s/board/indicators.{fmt}", summary="考核指标导出 / the indicators as CSV or XLSX")
async def indicators_export(
    fmt: str, request: Request, caller: Annotated[Principal, allow("board.read")]
) -> Response:
    c, now, scope, scope_name = export_of(request, caller, fmt)
    r, _ = range_of(request, now)

    def load() -> list[bd.IndicatorLine]:
        with Session(c.engine) as session:
            return bd.indicators(session, c.ref, scope, r, now)

    lines = await run_in_threadpool(load)
    name = f"indicators_{r.first.isoformat()}_{r.last.isoformat()}"
    if fmt == "csv":
        return download(export.indicators_csv(lines), "text/csv; charset=utf-8", f"{name}.csv")
    notes = export.range_notes(c.ref.county.name, scope_name, r, r.as_of(now))
    return download(export.indicators_xlsx(lines, notes), export.XLSX_TYPE, f"{name}.xlsx")


def export_of(request: Request, caller: Principal,
              fmt: str) -> tuple[Context, datetime, bd.Scope, str]:
    """An export's context, its moment and the caller's scope (and its name); 404 for a format
    other than csv or xlsx."""
    c = ctx(request)
    if fmt not in ("csv", "xlsx"):
        raise not_found("format_not_found", "仅支持 csv 或 xlsx", "csv or xlsx only")
    scope, _, scope_name = scope_of(request, caller)
    return c, c.clock(), scope, scope_name


def download(data: bytes, media: str, filename: str) -> Response:
    return Response(data, media_type=media, headers={
        "Content-Disposition": f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}",
        "Cache-Control": "no-store"})


# --- the map ----------------------------------------------------------------------------------


def map_model(c: Context, scope: bd.Scope, cases: list[bd.MapCase],
              by_grid: dict[str, tuple[int, int]]) -> dict[str, Any]:
    grids = [g for g in c.ref.grids.values()
             if scope.townships is None or g.township_code in scope.townships]
    if not grids:
        return {}
    p = mapsvg.projection(mapsvg.union(g.bbox for g in grids), 960, 720)
    top = max((n for n, _ in by_grid.values()), default=0)

    def busy(n: int) -> int:
        if n == 0 or top == 0:
            return 0
        return min(3, 1 + int(3 * n / (top + 1)))

    shapes = []
    for g in sorted(grids, key=lambda g: g.code):
        n, late = by_grid.get(g.code, (0, 0))
        x, y = p.xy(*mapsvg.centroid(g))
        shapes.append({"code": g.code, "name": g.name, "d": mapsvg.grid_path(p, g),
                       "busy": busy(n), "open": n, "late": late, "x": x, "y": y,
                       "label": g.name.replace("网格", "")})
    # The dots as markup made here: a template loop over 1,500 of them costs more than the
    # queries behind them. Every value is escaped; case ids are [A-Za-z0-9_.-] by the API.
    dots = []
    for m in cases:
        x, y = p.raw_xy(m.lon, m.lat)
        if not (0 <= x <= p.width and 0 <= y <= p.height):
            continue
        kind = "overdue" if m.overdue else m.stage
        title = (f"{m.case_id} {m.category_name} · {STAGE_ZH.get(m.stage, '')}"
                 f"{' · 已超期' if m.overdue else ''}")
        cid = escape(m.case_id)
        dots.append(f'<a href="/w/cases/{cid}"><circle cx="{x:.1f}" cy="{y:.1f}" '
                    f'r="{6 if m.overdue else 5}" class="dot dot-{kind}"><title>{escape(title)}'
                    "</title></circle></a>")
    return {"width": p.width, "height": p.height, "grids": shapes,
            "dots": Markup("\n".join(dots)), "count": len(dots)}


STAGE_ZH = {"dispatched": "待签收", "in_progress": "处置中", "resolved": "已办结待核查"}


@router.get("/s/map", summary="在办案件地图 / open cases on the county's grid map")
async def map_page(
    request: Request, caller: Annotated[Principal, allow("board.read")]
) -> Response:
    c = ctx(request)
    now = c.clock()
    scope, choices, scope_name = scope_of(request, caller)
    stage = request.query_params.get("stage") or ""
    overdue = request.query_params.get("overdue") == "1"

    def load() -> tuple[list[bd.MapCase], dict[str, tuple[int, int]], int]:
        with Session(c.engine) as session:
            return bd.open_cases_for_map(session, scope, now, stage=stage or None,
                                         overdue_only=overdue)

    cases, by_grid, total = await run_in_threadpool(load)
    model = map_model(c, scope, cases, by_grid)
    today = bd.local_day(now)
    grid_rows = sorted((g for g in model.get("grids", []) if g["open"]),
                       key=lambda g: (-g["late"], -g["open"], g["code"]))
    for g in grid_rows:
        g["link"] = query("/s/cases", grid=g["code"], status="open",
                          **{"from": (today - timedelta(days=365)).isoformat(),
                             "to": today.isoformat()})
    return render(
        request, "map.html", caller=caller, title="在办案件地图", section="督办看板", m=model,
        total=total, shown=model.get("count", 0), scope_name=scope_name, choices=choices,
        township=request.query_params.get("township") or "", stage=stage, overdue=overdue,
        grid_rows=grid_rows, stage_zh=STAGE_ZH, as_of=now, limit=bd.MAP_POINTS,
    )


# --- the case list -------------------------------------------------------------------------------


def case_filters(request: Request, now: datetime) -> tuple[bd.CaseFilters, list[FormError]]:
    q = request.query_params
    r, errors = range_of(request, now)
    if not q.get("from"):  # a list without a range: the last 30 days
        today = bd.local_day(now)
        r = bd.Range(today - timedelta(days=29), today) if not q.get("to") else r
    try:
        page = max(1, int(q.get("page") or 1))
    except ValueError:
        page = 1
    return bd.CaseFilters(
        first=r.first, last=r.last, township=(q.get("township") or "")[:12],
        grid=(q.get("grid") or "")[:20], category=(q.get("category") or "")[:16],
        department=(q.get("department") or "")[:64], status=(q.get("status") or "")[:12],
        overdue=q.get("overdue") == "1", page=page), errors


@router.get("/s/cases", summary="案件查询 / the case list, filtered")
async def cases_page(
    request: Request, caller: Annotated[Principal, allow("board.read")]
) -> Response:
    c = ctx(request)
    now = c.clock()
    scope, choices, scope_name = scope_of(request, caller)
    f, errors = case_filters(request, now)

    def load() -> tuple[list[dict[str, Any]], int]:
        with Session(c.engine) as session:
            return bd.case_list(session, scope, f, now)

    rows, total = await run_in_threadpool(load)
    table = export.case_table(c.ref, rows)
    pages = max(1, -(-total // bd.CASES_PAGE))
    return render(
        request, "cases.html", caller=caller, title="案件查询", section="督办看板", f=f,
        rows=list(zip(rows, table, strict=True)), total=total, pages=pages, errors=errors,
        headings=export.CASE_HEADINGS, scope_name=scope_name, choices=choices,
        categories=category_groups(c.ref), grids=grid_groups(c.ref),
        departments=sorted(c.ref.departments.values(), key=lambda d: (d.level != "county", d.code)),
        page_link=lambda n: query("/s/cases", **f.params(page=n)),
        export_csv=query("/s/cases/export.csv", **f.params(page=1)),
        export_xlsx=query("/s/cases/export.xlsx", **f.params(page=1)),
    )


@router.get("/s/cases/export.{fmt}", summary="案件清单导出 / the filtered case list as CSV or XLSX")
async def cases_export(
    fmt: str, request: Request, caller: Annotated[Principal, allow("board.read")]
) -> Response:
    c, now, scope, scope_name = export_of(request, caller, fmt)
    f, _ = case_filters(request, now)

    def load() -> list[dict[str, Any]]:
        with Session(c.engine) as session:
            return bd.case_list(session, scope, f, now, everything=True)[0]

    rows = await run_in_threadpool(load)
    table = export.case_table(c.ref, rows)
    name = f"cases_{f.first.isoformat()}_{f.last.isoformat()}"
    if fmt == "csv":
        return download(export.to_csv(export.CASE_HEADINGS, table), "text/csv; charset=utf-8",
                        f"{name}.csv")
    notes = export.range_notes(c.ref.county.name, scope_name, bd.Range(f.first, f.last), now)
    return download(export.to_xlsx([("案件清单", export.CASE_HEADINGS, table, set())], notes),
                    export.XLSX_TYPE, f"{name}.xlsx")

