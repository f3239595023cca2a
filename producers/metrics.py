"""The API's Prometheus metrics: reports accepted, repeated and refused per reason, at /metrics.

`install(app)` adds the route (the `ops.metrics` action: a `monitor` API key; see below) and a
small ASGI middleware that counts the outcome of every report submission: the grid workers'
upload (`POST /api/v1/reports`, channel `app`), Open311 (`POST /open311/v2/requests.json`,
`open311`) and the residents' QR form (`POST /r/<grid>`, `qr`). A 2xx/3xx is accepted (a 200
on the upload is a retry answered with the first answer: repeated); anything else is refused,
with the reason code the refusal carried (`producers.errors` puts it on the request) or
`http_<status>`.

Why an API key and not "loopback only": the API usually sits behind a reverse proxy on the
same host, so every request from the internet arrives from 127.0.0.1 — a loopback rule would
serve the numbers to anyone. Prometheus sends the key as a bearer token
(`authorization: {credentials_file: ...}`); `gridflow users keys add prometheus --role monitor`
makes one. The key reads nothing else.

With several API processes (`gridflow api --workers N`) each counts its own requests;
`serve` points prometheus_client's multiprocess mode at a directory of its own
(PROMETHEUS_MULTIPROC_DIR, set before the workers start), and /metrics adds them up.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from accounts.access import allow
from accounts.roles import Principal
from gridflow.telemetry import REPORTS_ACCEPTED, REPORTS_REFUSED, REPORTS_REPEATED

REFUSAL_KEY = "gridflow_refusal"  # request.state: the code of the ApiError answered
_QR = re.compile(r"^/r/(?!t/)[^/]+/?$")


def channel_of(method: str, path: str) -> str | None:
    """The report channel of a request, or None when it submits no report."""
    if method != "POST":
        return None
    if path == "/api/v1/reports":
        return "app"
    if path.startswith("/open311/v2/requests."):
        return "open311"
    if _QR.match(path):
        return "qr"
    return None


def count(channel: str, status: int, reason: str | None) -> None:
    if status < 400:
        if channel == "app" and status == 200:
            REPORTS_REPEATED.labels(channel).inc()
        else:
            REPORTS_ACCEPTED.labels(channel).inc()
        return
    REPORTS_REFUSED.labels(channel, reason or f"http_{status}").inc()


class ReportOutcomes:
    """Pure ASGI middleware (the upload's body stays streamed): counts report submissions."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        channel = (channel_of(scope.get("method", ""), scope.get("path", ""))
                   if scope["type"] == "http" else None)
        if channel is None:
            await self.app(scope, receive, send)
            return
        status = 500
        state = scope.setdefault("state", {})  # where producers.errors leaves the reason

        async def watch(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            count(channel, status, state.get(REFUSAL_KEY))


def registry() -> Any:
    """This process's metrics, or every API process's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return REGISTRY


def install(app: FastAPI) -> None:
    app.add_middleware(ReportOutcomes)

    @app.get("/metrics", tags=["ops"], include_in_schema=True,
             summary="Prometheus 指标 / Prometheus metrics (a monitor API key)")
    def metrics(_: Annotated[Principal, allow("ops.metrics")]) -> Response:
        return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)
