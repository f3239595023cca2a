"""The supervisors' dashboard (督办看板): a small read-only web app over the read models.

`gridflow dashboard` serves it; `/api/board` gives the same figures as JSON for scripts. Above
the figures, what supervisors must have fixed: the working calendar ending within 60 days of
the board's clock (`notices`, gridflow.calendars).
Photos are served from the archive bucket's EXIF-free thumbnails, never the originals.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import click
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from accounts import facts, web
from accounts.access import allow, in_scope, not_found, public
from accounts.access_log import AccessLog
from accounts.credentials import csrf_token
from accounts.roles import (
    AUDITOR,
    COUNTY_LEADER,
    COUNTY_SUPERVISOR,
    TOWNSHIP_SUPERVISOR,
    Principal,
)
from accounts.store import AccountStore
from dashboard import pages, signin
from dashboard.board import board_data
from dashboard.html import render_board, render_case
from gridflow.calendars import calendar_notices
from gridflow.clock import Clock
from gridflow.core.refdata import ReferenceData
from gridflow.settings import Settings


def board_townships(caller: Principal) -> list[str] | None:
    """Whose figures the caller's board counts: the county's (None) or their townships'."""
    if caller.has(COUNTY_SUPERVISOR, COUNTY_LEADER, AUDITOR):
        return None
    return sorted(caller.scopes(TOWNSHIP_SUPERVISOR))


def no_case() -> Any:
    return not_found("case_not_found", "案件不存在", "no such case", field="case_id")


def no_photo() -> Any:
    return not_found("photo_not_found", "照片不存在", "no such photo", field="sha256")


def create_dashboard(settings: Settings, engine: Any, ref: ReferenceData, clock: Clock,
                     object_store: Any = None, accounts: AccountStore | None = None,
                     access_log: AccessLog | None = None) -> FastAPI:
    """The board's app. `accounts`: who may sign in (default: the accounts in `engine`);
    `access_log`: where reads of personal data are recorded (default: the settings' Kafka)."""
    from producers.errors import ApiError
    from producers.privacy import contacts_for
    from sinks.models import create_schema
    from sinks.queries import case_detail

    create_schema(engine)
    app = FastAPI(title="gridflow 督办看板", docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.settings = settings
    if access_log is None:
        from producers.publisher import KafkaPublisher

        access_log = AccessLog(KafkaPublisher(settings.kafka_bootstrap),
                               settings.kafka_bootstrap, settings.topic_prefix)
    app.state.accounts = accounts or AccountStore(engine, ref, policy=web.session_policy(settings))
    web.install_security(app, settings)
    app.include_router(signin.router)

    async def on_api_error(request: Request, exc: Exception) -> Response:
        """JSON for /api/ and photos; a page people can read for the rest: not signed in goes
        to the sign-in page and back."""
        assert isinstance(exc, ApiError)
        path = request.url.path
        if path.startswith(("/api/", "/thumbs/")):
            return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
        if exc.status == 401 and request.method == "GET":
            back = path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/sign-in?next={quote(back)}", status_code=303)
        return HTMLResponse(pages.error_page(exc.status, exc.message_zh, exc.code, exc.message_en),
                            status_code=exc.status, headers=exc.headers)

    app.add_exception_handler(ApiError, on_api_error)

    def nav_of(request: Request, caller: Principal) -> str:
        token = getattr(request.state, "session_token", None)  # a browser's cookie session
        return pages.nav(caller, csrf_token(token)) if token else ""

    @app.get("/static/board.css", summary="样式表 / the pages' style sheet")
    def stylesheet(_: Annotated[Principal | None, public("样式表: 公开")]) -> Response:
        return signin.stylesheet_response()

    @app.get("/api/docs", response_class=HTMLResponse, summary="接口一览 / the routes")
    def docs(_: Annotated[Principal | None, public("接口一览: 公开")]) -> str:
        return web.docs_page(app.openapi(), web.access_summary(app), "/static/board.css")

    def figures(caller: Principal) -> dict[str, Any]:
        # The calendar directory is read on every call: a year added there shows at once.
        now = clock()
        with Session(engine) as session:
            return {**board_data(session, ref, now, board_townships(caller)),
                    "notices": calendar_notices(settings, now, staff=True)}

    @app.get("/", response_class=HTMLResponse, summary="督办看板 / supervisors' board")
    def board(request: Request, caller: Annotated[Principal, allow("board.read")]) -> str:
        return render_board(figures(caller), nav_of(request, caller))

    @app.get("/api/board", summary="看板数据 / board figures as JSON")
    def board_json(caller: Annotated[Principal, allow("board.read")]) -> dict[str, Any]:
        return figures(caller)

    @app.get("/cases/{case_id}", response_class=HTMLResponse, summary="案件全过程 / case history")
    def case_page(case_id: str, request: Request,
                  caller: Annotated[Principal, allow("case.read")]) -> str:
        if not in_scope(caller, facts.case_facts(engine, case_id)):
            raise no_case()
        with Session(engine) as session:
            detail = case_detail(session, case_id)
        if detail is None:
            raise no_case()
        detail["grid_name"] = ref.area_name(detail.get("grid_code") or "")
        for task in detail["tasks"]:
            dept = ref.departments.get(task["department"])
            task["department_name"] = dept.name if dept else task["department"]
        client = web.client_address(request)
        contacts = contacts_for(engine, access_log, caller, case_id, "GET /cases/{case_id}",
                                client)
        return render_case(detail, lambda p: f"/thumbs/{quote(p['sha256'])}",
                           nav_of(request, caller), pages.contacts_section(contacts))

    @app.get("/thumbs/{sha256}", summary="照片缩略图 / photo thumbnail (EXIF-free)")
    def thumbnail(sha256: str, caller: Annotated[Principal, allow("photo.read")]) -> Response:
        from objectstore import read_object
        from processors.archive import thumbnail_key

        if object_store is None or len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise no_photo()
        if not any(in_scope(caller, facts.case_facts(engine, case_id))
                   for case_id in facts.photo_cases(engine, sha256)):
            raise no_photo()
        data = read_object(object_store, settings.bucket_archive, thumbnail_key(sha256),
                           facts.thumbnail_version(engine, sha256))
        if data is None:
            raise no_photo()
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400"})

    return app


@click.command("dashboard")
@click.option("--port", default=None, type=int, help="Port [default: API port + 1].")
def dashboard(port: int | None) -> None:
    """Serve the supervisors' dashboard (督办看板) in Chinese until stopped."""
    import uvicorn

    from bootstrap import bootstrap

    world = bootstrap()
    settings = world.settings
    app = create_dashboard(settings, world.engine(), world.ref, world.clock, world.object_store)
    port = port or settings.api_port + 1
    click.echo(f"gridflow dashboard: http://{settings.api_host}:{port}/")
    uvicorn.run(app, host=settings.api_host, port=port, log_level="warning",
                loop="asyncio")  # as the API's own server (producers.app.API_LOOP)
