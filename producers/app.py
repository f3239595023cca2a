"""The ingest API: `create_app(settings, deps)` wires the routes to their adapters;
`build_deps(world)` takes the real ones from the composition root's bundle (bootstrap);
`serve(settings)` runs uvicorn.

Nothing else in producers/ builds a client or reads the environment: tests and the demo pass
their own Deps (a simulated clock, a publisher pointed at a dead port, ...).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine

from accounts import routes as account_routes
from accounts import web
from accounts.access import public
from accounts.roles import Principal
from accounts.store import AccountStore
from bootstrap import Bundle, bootstrap
from gridflow import heap
from gridflow.clock import Clock, wall_clock
from gridflow.core.refdata import ReferenceData
from gridflow.settings import Settings, settings_env
from mobile import routes as mobile_routes
from producers import commands, open311, privacy, receipts, reports, status
from producers.context import Context
from producers.errors import install_handlers
from producers.metrics import install as install_metrics
from producers.openapi import install as install_openapi
from producers.publisher import Publisher
from producers.store import MinioStore, ObjectStore
from producers.uploads import PhotoLimits, photo_inspector
from workbench.app import install as install_workbench

log = logging.getLogger(__name__)

DESCRIPTION = """
网格化管理上报接口: 网格员拍照上报、群众诉求(Open311 GeoReport v2)、部门签收办结等任务指令、
办理进度查询。Grid workers' photo reports, residents' Open311 GeoReport v2 requests, task
commands for department staff and supervisors, and status from the read models.

Every write is on the event log (Kafka, acks=all) before the API answers; photos go to the
object store first (claim-check). Errors carry `code`, `field`, `message_zh`, `message_en`.
"""


@dataclass
class Deps:
    """The adapters the API runs on. `clock` returns an aware UTC datetime."""

    ref: ReferenceData
    publisher: Publisher
    store: ObjectStore
    engine: Engine
    clock: Clock = field(default=wall_clock)
    # Sessions and API keys (on the wall clock, never `clock`); None: AccountStore(engine, ref)
    accounts: AccountStore | None = None


# Blocking work runs in anyio's worker threads (run_in_threadpool), at most this many at once
# (anyio's default limit). The MinIO and database connection pools are sized to it, so a
# thread never opens a connection only to throw it away afterwards (the SDK's pool keeps 10,
# SQLAlchemy's 5 + 10 overflow, closed again on return).
API_THREADS = 40
DB_POOL = 16  # connections kept; each thread holds one only for a statement at a time


def build_deps(world: Bundle) -> Deps:
    """The real adapters from the composition root's bundle: reference data, the Kafka
    publisher, a MinIO client pooled for the API's threads, the database pooled the same."""
    settings = world.settings
    pool: dict[str, int] = {}
    if settings.database_url.startswith("postgresql"):
        pool = {"pool_size": DB_POOL, "max_overflow": API_THREADS - DB_POOL}
    return Deps(
        ref=world.ref,
        publisher=world.publisher,
        store=MinioStore.from_settings(settings, connections=API_THREADS),
        engine=world.engine(None, **pool),
        clock=world.clock,
    )


def create_app(settings: Settings, deps: Deps, *, server: bool = False) -> FastAPI:
    """The FastAPI app. Creates the ingest_receipts table and the read-model schema if missing
    (both idempotent), so the read routes answer before the first sink has run. `server`: the
    app is this process's for its life (`serve`), so its start-up heap is frozen once started
    (gridflow.heap); not for an app made in a process that goes on making others (tests)."""
    from sinks.models import create_schema

    receipts.create_tables(deps.engine)
    create_schema(deps.engine)
    accounts = deps.accounts or AccountStore(deps.engine, deps.ref,
                                             policy=web.session_policy(settings))
    limits = PhotoLimits(
        settings.max_photo_bytes, settings.max_photo_pixels, settings.max_photos_per_report
    )
    context = Context(
        settings=settings,
        ref=deps.ref,
        accounts=accounts,
        publisher=deps.publisher,
        store=deps.store,
        engine=deps.engine,
        clock=deps.clock,
        inspect=photo_inspector(limits),
        photo_limits=limits,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if server:
            heap.settle()
        yield
        deps.publisher.close()

    app = FastAPI(
        title="gridflow 上报接口 / ingest API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads from a CDN with inline scripts: /docs is ours
        redoc_url=None,
    )
    app.state.ctx = context
    app.state.accounts = accounts  # accounts.access finds the callers here
    app.state.settings = settings
    web.install_security(app, settings)
    install_handlers(app)
    install_metrics(app)  # /metrics (a monitor API key) and the reports' outcomes
    app.include_router(reports.router)
    app.include_router(status.router)
    app.include_router(commands.router)
    app.include_router(open311.router)
    app.include_router(account_routes.router)
    app.include_router(privacy.router)
    app.include_router(mobile_routes.router)  # the phone pages: /m/ (grid workers), /r/ (QR)
    install_workbench(app)  # the departments' workbench /w/, the supervisors' console /s/
    install_openapi(app)  # /openapi.json says what each operation answers, refusals included

    @app.get("/api/v1/health", tags=["ops"], summary="存活检查 / liveness")
    def health(_: Annotated[Principal | None, public("存活检查: 公开")]) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/docs", response_class=HTMLResponse, tags=["ops"],
             summary="接口一览与调用权限 / the routes and who may call them")
    def docs(_: Annotated[Principal | None, public("接口文档: 公开")]) -> str:
        return web.docs_page(app.openapi(), web.access_summary(app))

    return app


def default_workers() -> int:
    """One API process per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_app() -> FastAPI:
    """The app of one of several API worker processes: settings from the environment, which
    `serve` set to the settings it was given before starting the workers."""
    world = bootstrap()
    return create_app(world.settings, build_deps(world), server=True)


def prepare_database(settings: Settings) -> None:
    """The receipts table and the read-model schema, created once before several workers start
    (each worker's `create_app` then finds them, instead of racing to create them)."""
    from sinks.models import create_schema

    engine = bootstrap(settings).engine()
    try:
        receipts.create_tables(engine)
        create_schema(engine)
    finally:
        engine.dispose()


# The API's event loop: asyncio's own, whether or not uvloop is installed (uvicorn would take
# uvloop where it is; the API's CPU per upload measured the same on either: docs/PERFORMANCE.md,
# step 10).
API_LOOP = "asyncio"


def serve(settings: Settings, log_level: str = "info", workers: int | None = None) -> None:
    """Run the API with uvicorn on settings.api_host:api_port until stopped.

    `workers` processes (default: one per CPU) share the listening socket; each has its own
    Kafka producer, MinIO client and database pool. Idempotency holds across them: a report
    id's receipt row in the database decides, whichever process a retry reaches.
    """
    import uvicorn

    from gridflow.telemetry import logging_config

    # JSON lines when asked for (GRIDFLOW_LOG_FORMAT=json), else uvicorn's own text lines
    logs = (logging_config(settings, log_level, "api") if settings.log_format == "json"
            else uvicorn.config.LOGGING_CONFIG)
    workers = workers or default_workers()
    if workers == 1:
        app = create_app(settings, build_deps(bootstrap(settings)), server=True)
        uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level=log_level,
                    log_config=logs, loop=API_LOOP)
        return
    prepare_database(settings)
    os.environ.update(settings_env(settings))  # what the spawned workers load
    # Each worker process counts its own requests into this directory; /metrics adds them up.
    import shutil
    import tempfile

    metrics_dir = tempfile.mkdtemp(prefix="gridflow-api-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("producers.app:worker_app", factory=True, workers=workers,
                    host=settings.api_host, port=settings.api_port, log_level=log_level,
                    log_config=logs, loop=API_LOOP)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
