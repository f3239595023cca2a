"""HTTP errors of the ingest API: one shape for every refusal, Chinese first, English alongside.

Every 4xx/5xx the API answers carries {code, field, message_zh, message_en}; `code` is the
stable machine-readable reason, the messages are for people. Open311 routes render the same
error as the GeoReport v2 array of {code, description} (see producers.open311).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


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
        401, "unauthorized", "未登录或令牌无效, 请重新登录",
        "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"},
    )


def forbidden(zh: str, en: str, code: str = "forbidden") -> ApiError:
    return ApiError(403, code, zh, en)


def unavailable(zh: str, en: str, retry_after_s: int = 5, code: str = "unavailable") -> ApiError:
    return ApiError(503, code, zh, en, headers={"Retry-After": str(retry_after_s)})


def _loc_to_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


def validation_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's shape validation (JSON bodies, query, path) in our bilingual error shape."""
    details = []
    for err in exc.errors():
        field = _loc_to_field(err.get("loc", ()))
        details.append({
            "field": field,
            "code": str(err.get("type", "invalid")),
            "message_zh": f"字段「{field or '请求体'}」无效",
            "message_en": str(err.get("msg", "invalid value")),
        })
    first = details[0] if details else {"field": None, "message_en": "invalid request"}
    return ApiError(
        422, "invalid_request", f"请求内容无效: 字段「{first['field'] or '请求体'}」",
        f"invalid request: {first['field'] or 'body'}: {first['message_en']}",
        field=first["field"] or None, details=details,
    )


def install_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        if request.url.path.startswith("/open311/"):
            from producers.open311 import open311_error_response

            err = validation_error(exc)
            return open311_error_response(400, f"{err.message_zh} / {err.message_en}")
        api_err = validation_error(exc)
        return JSONResponse(api_err.body(), status_code=api_err.status)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
