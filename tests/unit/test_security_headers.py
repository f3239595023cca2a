"""accounts.web.SecurityHeaders: every response gets the security headers, a header the
response sets itself is kept, Strict-Transport-Security only over TLS, no-store only on pages,
and request and response bodies pass through unchanged (a pure ASGI middleware)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from accounts.web import install_security
from gridflow.settings import Settings


def app_with(settings: Settings) -> FastAPI:
    app = FastAPI()
    install_security(app, settings)

    @app.get("/page")
    def page() -> HTMLResponse:
        return HTMLResponse("<p>好</p>")

    @app.get("/own")
    def own() -> JSONResponse:  # headers of its own, which the middleware keeps
        return JSONResponse({"ok": True}, headers={
            "Content-Security-Policy": "default-src 'none'", "Referrer-Policy": "no-referrer"})

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    @app.get("/stream")
    def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"part {i};".encode()
        return StreamingResponse(parts(), media_type="text/plain")

    return app


@pytest.fixture
def client() -> TestClient:
    return TestClient(app_with(Settings()))


def test_every_response_has_the_headers_and_a_page_is_not_stored(client: TestClient) -> None:
    for path in ("/page", "/stream", "/missing"):
        r = client.get(path)
        assert r.headers["content-security-policy"].startswith("default-src 'self'"), path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["x-frame-options"] == "SAMEORIGIN"
        assert "strict-transport-security" not in r.headers  # plain HTTP
        assert (r.headers.get("cache-control") == "no-store") == (path == "/page"), path
    assert client.get("/page").text == "<p>好</p>"


def test_a_header_the_response_sets_is_kept_not_doubled(client: TestClient) -> None:
    r = client.get("/own")
    assert r.headers.get_list("content-security-policy") == ["default-src 'none'"]
    assert r.headers.get_list("referrer-policy") == ["no-referrer"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.json() == {"ok": True}


def test_tls_adds_strict_transport_security(client: TestClient) -> None:
    r = client.get("/page", headers={"X-Forwarded-Proto": "https"})
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    forced = TestClient(app_with(Settings().with_(cookie_secure="1"))).get("/page")
    assert forced.headers["strict-transport-security"] == "max-age=31536000"
    never = TestClient(app_with(Settings().with_(cookie_secure="0")))
    assert "strict-transport-security" not in never.get(
        "/page", headers={"X-Forwarded-Proto": "https"}).headers


def test_framing_hosts_replace_x_frame_options() -> None:
    framed = TestClient(app_with(Settings().with_(frame_ancestors="https://work.weixin.qq.com")))
    r = framed.get("/page")
    assert "frame-ancestors 'self' https://work.weixin.qq.com" in r.headers[
        "content-security-policy"]
    assert "x-frame-options" not in r.headers


def test_bodies_pass_through_unchanged(client: TestClient) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, several receive() messages
    r = client.post("/echo", content=body)
    assert r.status_code == 200 and r.content == body
    assert r.headers["x-content-type-options"] == "nosniff"
    s = client.get("/stream")
    assert s.text == "part 0;part 1;part 2;"
    assert s.headers["content-security-policy"].startswith("default-src 'self'")
