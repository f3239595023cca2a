"""HTTP errors of the ingest API: one shape for every refusal, Chinese first, English alongside.

Every 4xx/5xx the API answers carries {code, field, message_zh, message_en}; `code` is the
stable machine-readable reason, the messages are for people. Every path under /open311/
(unknown ones included: 404, 405, validation, crashes) renders its error as the GeoReport v2
array of {code, description} instead (see producers.open311).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal with its HTTP status, stable code and bilingual message."""

    def __init__(
        self,
        status: int,
        code: str,
        message_zh: str,
        message_en: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message_en}")
        self.status = status
        self.code = code
        self.message_zh = message_zh
        self.message_en = message_en
        self.field = field
        self.headers = headers or {}
        self.details = details or []

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.code,
            "field": self.field,
            "message_zh": self.message_zh,
            "message_en": self.message_en,
        }
        if self.details:
            body["errors"] = self.details
        return body


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "未登录或令牌无效, 请重新登录",
        "missing or invalid bearer token",
        headers={"WWW-Authenticate": "Bearer"},
    )


def forbidden(zh: str, en: str, code: str = "forbidden") -> ApiError:
    return ApiError(403, code, zh, en)


def unavailable(zh: str, en: str, retry_after_s: int = 5, code: str = "unavailable") -> ApiError:
    return ApiError(503, code, zh, en, headers={"Retry-After": str(retry_after_s)})


def _loc_to_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


# pydantic error types → what is wrong, in Chinese ("{f}" is the field).
_ZH = {
    "missing": "缺少必填项「{f}」",
    "extra_forbidden": "不允许的字段「{f}」",
    "string_too_short": "「{f}」不能为空",
    "string_too_long": "「{f}」过长",
    "string_type": "「{f}」必须是文本",
    "int_type": "「{f}」必须是整数",
    "float_type": "「{f}」必须是数字",
    "float_parsing": "「{f}」必须是数字",
    "int_parsing": "「{f}」必须是整数",
    "bool_type": "「{f}」必须是 true 或 false",
    "bool_parsing": "「{f}」必须是 true 或 false",
    "list_type": "「{f}」必须是列表",
    "too_short": "「{f}」至少需要一项",
    "too_long": "「{f}」项数过多",
    "greater_than": "「{f}」超出允许范围",
    "greater_than_equal": "「{f}」超出允许范围",
    "less_than": "「{f}」超出允许范围",
    "less_than_equal": "「{f}」超出允许范围",
    "json_invalid": "请求体不是有效的 JSON",
    "model_attributes_type": "请求体必须是 JSON 对象",
    "dict_type": "请求体必须是 JSON 对象",
}


def validation_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's shape validation (JSON bodies, query, path) in our bilingual error shape."""
    details: list[dict[str, Any]] = []  # as ApiError takes them
    for err in exc.errors():
        field = _loc_to_field(err.get("loc", ()))
        kind = str(err.get("type", "invalid"))
        zh = _ZH.get(kind, "「{f}」无效").format(f=field or "请求体")
        details.append(
            {
                "field": field or None,
                "code": kind,
                "message_zh": zh,
                "message_en": f"{field or 'body'}: {err.get('msg', 'invalid value')}",
            }
        )
    first: dict[str, Any] = (
        details[0]
        if details
        else {"field": None, "message_zh": "请求内容无效", "message_en": "invalid request"}
    )
    return ApiError(
        422,
        "invalid_request",
        first["message_zh"],
        first["message_en"],
        field=first["field"],
        details=details,
    )


# What the router's own refusals (unknown path, method not allowed, ...) mean, in Chinese.
HTTP_ZH = {
    400: "请求无效",
    404: "未找到该接口或资源",
    405: "该接口不支持此请求方法",
    406: "不支持所要求的响应格式",
    413: "请求体过大",
    415: "不支持该请求体格式",
}


HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
              406: "not_acceptable", 413: "request_too_large", 415: "unsupported_media_type"}


def is_open311(request: Request) -> bool:
    """Open311 paths answer every error as GeoReport v2's [{code, description}]."""
    return request.url.path.startswith("/open311/")


def http_error_text(status: int, detail: Any, method: str, path: str) -> tuple[str, str]:
    """(Chinese, English) for a refusal raised by the router or an HTTPException."""
    zh = HTTP_ZH.get(status, "请求未能处理")
    path = path[:200]
    if status == 404:
        return f"{zh}: {path}", f"not found: {path}"
    if status == 405:
        return f"{zh}: {method} {path}", f"method {method} not allowed for {path}"
    return zh, str(detail)


def install_handlers(app: FastAPI) -> None:
    def open311_response(
        request: Request, status: int, zh: str, en: str, headers: dict[str, str] | None = None
    ) -> Response:
        from producers.open311 import open311_error_for

        return open311_error_for(request.url.path, status, f"{zh} / {en}", headers)

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        request.state.gridflow_refusal = exc.code  # the reason producers.metrics counts
        if is_open311(request):
            return open311_response(
                request, exc.status, exc.message_zh, exc.message_en, exc.headers
            )
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code < 400:
            return await http_exception_handler(request, exc)
        zh, en = http_error_text(exc.status_code, exc.detail, request.method, request.url.path)
        if is_open311(request):
            return open311_response(request, exc.status_code, zh, en, dict(exc.headers or {}))
        # The router's and FastAPI's own refusals (unknown path, method not allowed, a body it
        # cannot parse) in the API's one error shape, not {"detail": ...} (found by fuzzing).
        err = ApiError(exc.status_code, HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}"),
                       zh, en, headers=dict(exc.headers or {}))
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if is_open311(request):
            err = validation_error(exc)
            return open311_response(request, 400, err.message_zh, err.message_en)
        api_err = validation_error(exc)
        return JSONResponse(api_err.body(), status_code=api_err.status)

    async def on_database_down(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable: %s", exc)
        request.state.gridflow_refusal = "database_unavailable"
        err = unavailable(
            "数据库暂不可用, 请稍后重试",
            "the database is unavailable, retry later",
            code="database_unavailable",
        )
        if is_open311(request):
            return open311_response(
                request, err.status, err.message_zh, err.message_en, err.headers
            )
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    async def on_crash(request: Request, exc: Exception) -> Response:
        # Starlette logs the exception and re-raises it after this answer is sent.
        if is_open311(request):
            return open311_response(request, 500, "服务器内部错误, 请稍后重试", "internal error")
        return PlainTextResponse("Internal Server Error", status_code=500)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(OperationalError, on_database_down)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_crash)
