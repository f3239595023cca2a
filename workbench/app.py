"""Mounts the workbench (/w/) and the supervisors' console (/s/) into the ingest API's app:
`install(app)` after producers.app.create_app has wired the API's context and accounts.

Guarantee: the pages reuse the API's parts (context, accounts, publisher, object store) and add
no other client; a refusal on a page is an HTML page for browsers (401: to the sign-in page)
and the API's JSON error shape for every other client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from producers.errors import ApiError
from workbench import boardpages, common, console, dept, team
from workbench.csrf import FormCsrf
from workbench.state import WorkbenchState
from workbench.web import page_response, render_text, see_other, wants_html

PREFIXES = ("/w/", "/s/")


def is_page(request: Request) -> bool:
    return request.url.path.startswith(PREFIXES)


def install(app: FastAPI) -> FastAPI:
    app.state.workbench = WorkbenchState.build(app.state.ctx)
    app.add_middleware(FormCsrf, prefixes=PREFIXES)
    app.include_router(common.router)
    app.include_router(dept.router)
    app.include_router(console.router)
    app.include_router(boardpages.router)
    app.include_router(team.router)
    _html_errors(app)
    return app


ERROR_HEADINGS = {401: "请先登录", 403: "无权访问", 404: "未找到", 409: "操作冲突",
                  422: "请求有误", 503: "服务暂不可用"}


def _error_page(status: int, message: str) -> Response:
    html = render_text("error_plain.html", status=status,
                       heading=ERROR_HEADINGS.get(status, "出错了"), message=message)
    return page_response(html, status)


async def _handed_on(handler: Any, request: Request, exc: Exception) -> Response:
    """The answer of the handler installed before ours (sync or async); none: raised on."""
    if handler is None:
        raise exc
    result: Any = handler(request, exc)
    return await result if hasattr(result, "__await__") else result


def _html_errors(app: FastAPI) -> None:
    """Browsers asking for a page get an HTML refusal; API clients keep the JSON shape."""
    json_handler = app.exception_handlers.get(ApiError)

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if is_page(request) and wants_html(request):
            if exc.status == 401:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return see_other(f"/w/sign-in?next={quote(target)}")
            return _error_page(exc.status, exc.message_zh)
        return await _handed_on(json_handler, request, exc)

    app.add_exception_handler(ApiError, on_api_error)

    http_handler = app.exception_handlers.get(StarletteHTTPException)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if is_page(request) and wants_html(request) and exc.status_code in (404, 405):
            message = ("页面不存在, 请检查链接" if exc.status_code == 404
                       else "该页面不支持此操作, 请从页面上的按钮或链接进入")
            return _error_page(exc.status_code, message)
        return await _handed_on(http_handler, request, exc)

    app.add_exception_handler(StarletteHTTPException, on_http_error)
