"""The supervisors' board: Chinese page and JSON figures from real read models, photos from
the real archive bucket."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from accounts.sample import SampleSessions
from dashboard.app import create_dashboard
from demo import histories as sample
from gridflow.core.metrics import department_indicators
from gridflow.core.refdata import load_reference_data
from processors.archive import thumbnail_key
from sinks.models import create_schema, make_engine
from sinks.queries import task_rows_for_metrics
from sinks.sql import SqlSink

pytestmark = pytest.mark.integration

REF = load_reference_data()
NOW = sample.T0 + timedelta(days=10)


@pytest.fixture
def board(stack, stack_settings, buckets):
    engine = make_engine(stack_settings.database_url)
    create_schema(engine)
    cases = [sample.eventful_lifecycle("AJ-DASH-1"), sample.simple_lifecycle("AJ-DASH-2"),
             sample.not_filed("AJ-DASH-3")]
    SqlSink(engine).apply_batch(sample.interleaved(cases, f"{stack_settings.topic_prefix}.case-events"))
    app = create_dashboard(stack_settings, engine, REF, lambda: NOW, stack.s3())
    # the sample histories lie in made-up grids (G1, T1): only an auditor's scope holds them
    auditor = SampleSessions(app.state.accounts, "test").bearer("au0001")
    return TestClient(app, headers=auditor), engine


def test_board_speaks_chinese_and_shows_the_indicators_of_the_read_models(board):
    client, engine = board
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    for label in ("督办看板", "按期结案率", "超期任务", "各部门考核指标", "各网格在办与超期", "全县合计"):
        assert label in html
    figures = client.get("/api/board").json()
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        expected = department_indicators(task_rows_for_metrics(session), NOW)
    overall = next(i for i in expected if i.department is None)
    got = next(d for d in figures["departments"] if d["department"] is None)
    assert got["dispatched"] == overall.dispatched and got["closed"] == overall.closed
    assert figures["kpi"]["not_filed"] == 1
    assert figures["kpi"]["closed_cases"] >= 1


def test_case_page_shows_the_hash_chained_history_and_archived_thumbnails(board, stack, buckets):
    client, engine = board
    from sqlalchemy import update

    from sinks.models import Photo

    sha = "ab" * 32
    thumb = b"\xff\xd8\xff\xe0fake-but-served-as-is"
    stack.s3().put_object(buckets.archive, thumbnail_key(sha), io.BytesIO(thumb), len(thumb))
    with engine.begin() as conn:
        first = conn.execute(Photo.__table__.select().where(Photo.case_id == "AJ-DASH-1")).first()
        conn.execute(update(Photo).where(Photo.id == first.id)
                     .values(sha256=sha, thumbnail_key=thumbnail_key(sha), archive_status="archived"))
    page = client.get("/cases/AJ-DASH-1")
    assert page.status_code == 200
    for label in ("案件概况", "全过程记录", "立案", "签收", "办结"):
        assert label in page.text
    assert f"/thumbs/{sha}" in page.text
    served = client.get(f"/thumbs/{sha}")
    assert served.status_code == 200 and served.content == thumb
    assert client.get("/thumbs/" + "cd" * 32).status_code == 404
    assert client.get("/cases/NOPE").status_code == 404


def test_a_thumbnail_name_that_climbs_out_of_the_thumbnails_is_refused(board, stack, buckets):
    """The name check itself, not the router. `/thumbs/../../etc/passwd` as written is
    normalised by the HTTP client to `/etc/passwd` (an unknown route), and a name with a `/`
    never matches the route's one-segment parameter anyway. `%2E%2E` goes out as written and
    the server decodes it, so `..` (and `..\\..\\etc\\passwd`) reach the handler; without the check
    they would become object keys `thumbs/../..` climbing out of the thumbnails."""
    client, _ = board
    landing = b"not a thumbnail"  # where `thumbs/../...jpg` lands if a store resolved the `..`
    stack.s3().put_object(buckets.archive, "...jpg", io.BytesIO(landing), len(landing))
    unknown_route = client.get("/no/such/route")
    by_the_handler = client.get("/thumbs/" + "cd" * 32)  # well-formed, no such photo
    assert unknown_route.status_code == by_the_handler.status_code == 404
    assert unknown_route.json() != by_the_handler.json()  # the two 404s can be told apart
    for name in ("%2E%2E", "..%5C..%5Cetc%5Cpasswd"):
        refused = client.get(f"/thumbs/{name}")
        assert refused.request.url.raw_path.decode() == f"/thumbs/{name}"  # not normalised
        assert refused.status_code == 404, name
        assert refused.json() == by_the_handler.json(), name  # refused by the handler


def test_a_grid_is_shown_by_its_name_with_its_code_beside_it(board, stack_settings):
    client, engine = board
    grid = REF.grids["421099101201001"]
    script = sample.Script("AJ-DASH-GRID")
    script.file("AJ-DASH-GRID-R1", grid_code=grid.code, village_code=grid.village_code,
                township_code=grid.township_code)  # nobody signs: open, overdue at NOW
    topic = f"{stack_settings.topic_prefix}.case-events"
    SqlSink(engine).apply_batch(sample.records(script.events, topic, first_offset=10_000))
    shown = f'{grid.name}<span class="code">{grid.code}</span>'

    case_page = client.get("/cases/AJ-DASH-GRID").text
    assert shown in case_page
    board_page = client.get("/").text
    grids_table = board_page.split("各网格在办与超期")[1]
    overdue_table = board_page.split("<h2>超期任务</h2>")[1].split("</table>")[0]
    assert shown in grids_table and shown in overdue_table
