"""The workbench's pure parts: the form CSRF field handed on as a header, working-time
countdowns as people read them, and the SVG map projection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from gridflow.core.calendar import load_bundled_calendar
from gridflow.core.geo import BBox
from gridflow.core.refdata import load_reference_data
from workbench import mapsvg
from workbench.csrf import FormCsrf, token_in_multipart, token_in_urlencoded
from workbench.web import countdown, safe_next, working_span

# --- CSRF field -------------------------------------------------------------------------------


def multipart(boundary: str, *parts: tuple[str, bytes]) -> bytes:
    out = b""
    for name, value in parts:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                .encode() + value + b"\r\n")
    return out + f"--{boundary}--\r\n".encode()


def test_the_token_is_read_from_the_first_multipart_part_only() -> None:
    body = multipart("XyZ", ("csrf_token", b"abc123"), ("note", "进展".encode()))
    assert token_in_multipart(body, "XyZ") == ("abc123", True)
    later = multipart("XyZ", ("note", b"x"), ("csrf_token", b"abc123"))
    assert token_in_multipart(later, "XyZ") == (None, True)
    assert token_in_multipart(body[:20], "XyZ") == (None, False)  # wait for more of the body


def test_the_token_is_read_from_an_urlencoded_form() -> None:
    assert token_in_urlencoded(b"form_key=1&csrf_token=abc-123&note=x") == "abc-123"
    assert token_in_urlencoded(b"note=x") is None
    assert token_in_urlencoded(b"csrf_token=<script>") is None


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/w/echo")
    async def echo(request: Request) -> dict[str, object]:
        form = await request.form()
        return {"header": request.headers.get("x-csrf-token"),
                "fields": sorted(k for k in form.keys()),
                "size": len((await form["photo"].read()) if "photo" in form else b"")}

    app.add_middleware(FormCsrf, prefixes=("/w/",))
    return app


def test_the_middleware_hands_the_field_on_and_the_body_arrives_whole() -> None:
    client = TestClient(echo_app())
    client.cookies.set("gridflow_session", "s")
    big = b"\xff" * 300_000
    r = client.post("/w/echo", data={"csrf_token": "tok1", "note": "x"},
                    files={"photo": ("a.jpg", big, "image/jpeg")})
    assert r.json() == {"header": "tok1", "fields": ["csrf_token", "note", "photo"], "size": 300_000}
    r = client.post("/w/echo", data={"note": "x", "csrf_token": "tok2"})
    assert r.json()["header"] == "tok2"


def test_the_middleware_leaves_requests_without_a_session_cookie_or_with_a_header_alone() -> None:
    client = TestClient(echo_app())
    assert client.post("/w/echo", data={"csrf_token": "t"}).json()["header"] is None
    client.cookies.set("gridflow_session", "s")
    r = client.post("/w/echo", data={"csrf_token": "t"}, headers={"X-CSRF-Token": "h"})
    assert r.json()["header"] == "h"


# --- working time ---------------------------------------------------------------------------


@pytest.mark.parametrize("seconds,text", [
    (0, "不足1分钟"), (15 * 60, "15分钟"), (3 * 3600 + 20 * 60, "3小时20分"), (2 * 3600, "2小时"),
    (8 * 3600, "1个工作日"), (2 * 8 * 3600 + 3 * 3600, "2个工作日3小时"), (-90 * 60, "1小时30分"),
])
def test_working_spans_read_as_people_say_them(seconds: float, text: str) -> None:
    assert working_span(seconds, 8 * 3600) == text


def test_a_countdown_counts_working_time_and_says_when_it_is_past() -> None:
    cal = load_bundled_calendar()
    friday_5pm = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # 17:00 Beijing, a Friday
    monday_10am = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    left = countdown(cal, friday_5pm, monday_10am)
    assert left.text == f"剩余{working_span(left.seconds or 0, left.day_seconds)}"
    assert not left.overdue and (left.seconds or 0) < 3 * 3600  # the weekend does not count
    late = countdown(cal, monday_10am, friday_5pm)
    assert late.overdue and late.text.startswith("已超期") and late.level == "late"
    assert countdown(cal, friday_5pm, None).text == "—"


def test_a_deadline_passed_outside_working_hours_is_overdue() -> None:
    cal = load_bundled_calendar()
    saturday = datetime(2026, 11, 21, 4, 0, tzinfo=UTC)
    assert countdown(cal, saturday, saturday - timedelta(hours=1)).overdue


def test_only_local_paths_are_followed_after_signing_in() -> None:
    assert safe_next("/w/d/x/inbox?tab=sign") == "/w/d/x/inbox?tab=sign"
    for bad in ("https://evil.example/", "//evil.example/", "/\\evil", "", None):
        assert safe_next(bad) == "/w/"


# --- the map ------------------------------------------------------------------------------------


def test_the_projection_fits_the_county_and_keeps_north_up() -> None:
    ref = load_reference_data()
    box = mapsvg.union(g.bbox for g in ref.grids.values())
    p = mapsvg.projection(box, 800, 600)
    assert p.width <= 800 and p.height <= 600
    x0, y0 = p.xy(box.min_lon, box.max_lat)
    x1, y1 = p.xy(box.max_lon, box.min_lat)
    assert (x0, y0) == (p.pad, p.pad) and x1 > x0 and y1 > y0
    assert p.inside(box.min_lon, box.min_lat) and not p.inside(box.max_lon + 1, box.min_lat)
    path = mapsvg.grid_path(p, next(iter(ref.grids.values())))
    assert path.startswith("M") and path.endswith("Z")


def test_a_square_box_stays_square() -> None:
    p = mapsvg.projection(BBox(110.0, 0.0, 111.0, 1.0), 200)
    assert abs(p.width - p.height) < 1


# --- trend charts ---------------------------------------------------------------------------------


def test_axis_maxima_are_round_numbers() -> None:
    from workbench.charts import nice_max

    assert [nice_max(v) for v in (0, 4, 7, 12, 48, 51, 230, 999)] == [5, 5, 10, 20, 50, 100,
                                                                       500, 1000]


def test_a_trend_chart_has_two_bars_a_slot_and_a_rate_point_where_tasks_closed() -> None:
    from datetime import date

    from workbench.board import TrendPoint
    from workbench.charts import trend_chart

    points = [TrendPoint(date(2026, 11, d), filed=d, closed=d - 1, closed_tasks=2 if d % 2 else 0,
                         closed_on_time=1) for d in range(1, 11)]
    chart = trend_chart(points, "day")
    assert len(chart.bars) == 20 and len(chart.points) == 5
    tallest = max(chart.bars, key=lambda b: float(b["h"]))
    assert tallest["kind"] == "filed" and "2026-11-10 立案 10" == tallest["title"]
    assert all(float(b["y"]) + float(b["h"]) == chart.plot["bottom"] for b in chart.bars)
    assert chart.line.count(",") == 5 and chart.rate_ticks[-1]["label"] == "100%"
