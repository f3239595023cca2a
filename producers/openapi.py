"""The OpenAPI document says what every operation answers: its refusals, their body and media
type, beside its success.

FastAPI documents a route's success and its request validation; what else a route answers
comes from the access dependency (401 without a valid credential — a public route too, when
it is sent a bearer token that is not or no longer valid —, 403 for a role the action is not
for), the database behind every credential check (503 while it is down), and the route
itself. `OPERATIONS` lists, for each operation, the statuses beyond those with their media
types, and the request body of the form routes that read it themselves; `document` merges
them into FastAPI's document, every refusal with the one error body of the API
(`ApiError`, producers.errors) or GeoReport v2's error array under /open311/.

The table is checked twice: `tests/integration/test_api_fuzz.py` fails for an operation
without an entry, and fuzzing from this very document (chaos/fuzz.py, schemathesis) fails
for any answer the document does not allow. Found that way: the form routes' HTML pages,
the redirects, the refusals FastAPI itself raises (400 for a body it cannot parse).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

JSON, HTML, TEXT = "application/json", "text/html", "text/plain"
IMAGES = ("image/jpeg", "image/png")

ERROR = {
    "type": "object",
    "description": "一个拒绝 / a refusal: a stable code, the field it concerns, why in Chinese "
                   "and English (validation errors list every problem under `errors`)",
    "required": ["code", "message_zh", "message_en"],
    "properties": {
        "code": {"type": "string"},
        "field": {"type": ["string", "null"]},
        "message_zh": {"type": "string"},
        "message_en": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["code", "message_zh", "message_en"],
            "properties": {"field": {"type": ["string", "null"]}, "code": {"type": "string"},
                           "message_zh": {"type": "string"},
                           "message_en": {"type": "string"}}}},
    },
}
OPEN311_ERROR = {
    "type": "array",
    "description": "GeoReport v2 errors",
    "items": {"type": "object", "required": ["code", "description"],
              "properties": {"code": {"type": "integer"}, "description": {"type": "string"}}},
}
REASONS = {
    400: "请求无法解析 / the body could not be parsed (not JSON, not a form, a broken multipart)",
    401: "未登录或凭证无效 / no valid credential (a bearer token that is unknown or ended)",
    403: "无权执行 / the caller's role may not do this (or the form's CSRF token is missing)",
    404: "不存在或不在权限范围内 / no such thing inside the caller's scope",
    409: "与已提交的内容冲突 / conflicts with what was sent before under the same id",
    413: "请求体过大 / the body or a part of it is too large",
    415: "不支持的格式 / not a photo format the API takes",
    422: "内容无效 / invalid content, the field named",
    429: "登录失败次数过多, 已暂时锁定 / too many failed sign-ins: locked for a while",
    503: "依赖的服务暂不可用 / the database, the event log or the object store is unavailable: "
         "retry after Retry-After",
}
FORM = "application/x-www-form-urlencoded"


def _form(*fields: str) -> dict[str, Any]:
    return {"required": False, "content": {FORM: {"schema": {
        "type": "object", "properties": {f: {"type": "string"} for f in fields}}}}}


RESIDENT_FORM = {"required": False, "content": {"multipart/form-data": {"schema": {
    "type": "object",
    "properties": {
        **{f: {"type": "string"} for f in (
            "report_id", "service_code", "description", "phone", "name", "address")},
        "photos": {"type": "array", "items": {"type": "string", "format": "binary"}},
    }}}}}


@dataclass(frozen=True)
class Answers:
    """What an operation answers beyond FastAPI's own documentation of it."""

    errors: tuple[int, ...] = ()  # refusals with the API's error body (JSON)
    pages: tuple[int, ...] = ()  # statuses answered with an HTML page (a browser's form)
    success: dict[int, tuple[str, ...]] = field(default_factory=dict)  # success media types
    request_body: dict[str, Any] | None = None  # for routes that read the body themselves


SIGNED_IN = (401, 403, 503)  # allow(): no credential, a role not for it, the database down
PUBLIC = (401, 503)  # public(): a bearer token not (or no longer) valid, the database down
TASK_COMMAND = Answers((*SIGNED_IN, 400, 404))
MULTIPART_UPLOAD = (400, 404, 409, 413, 415)

OPERATIONS: dict[str, Answers] = {
    "GET /api/v1/health": Answers(PUBLIC),
    "GET /docs": Answers(PUBLIC),
    "GET /metrics": Answers(SIGNED_IN, success={200: (TEXT,)}),
    # reports and their status
    "POST /api/v1/reports": Answers((*SIGNED_IN, *MULTIPART_UPLOAD)),
    "GET /api/v1/reports/{report_id}": Answers((*SIGNED_IN, 404)),
    "GET /api/v1/commands/{command_id}": Answers(SIGNED_IN),
    "GET /api/v1/departments/{code}/inbox": Answers((*SIGNED_IN, 404)),
    # task and case commands
    "POST /api/v1/tasks/{task_id}/sign": TASK_COMMAND,
    "POST /api/v1/tasks/{task_id}/progress": TASK_COMMAND,
    "POST /api/v1/tasks/{task_id}/extension": TASK_COMMAND,
    "POST /api/v1/tasks/{task_id}/extension/decision": TASK_COMMAND,
    "POST /api/v1/tasks/{task_id}/verify": TASK_COMMAND,
    "POST /api/v1/tasks/{task_id}/reject": TASK_COMMAND,
    "POST /api/v1/tasks/{task_id}/cancel": TASK_COMMAND,
    "POST /api/v1/tasks/{task_id}/send-back": TASK_COMMAND,
    "POST /api/v1/tasks/{task_id}/resolve": Answers((*SIGNED_IN, *MULTIPART_UPLOAD)),
    "POST /api/v1/cases/{case_id}/rating": TASK_COMMAND,
    "POST /api/v1/cases/{case_id}/whistle": TASK_COMMAND,
    # Open311 GeoReport v2 (errors as GeoReport's array)
    "GET /open311/v2/services.json": Answers(PUBLIC),
    "POST /open311/v2/requests.json": Answers((*PUBLIC, 400, 403, 404, 409)),
    "GET /open311/v2/requests.json": Answers((*PUBLIC, 400, 403, 404)),
    "GET /open311/v2/requests/{service_request_id}.json": Answers((*PUBLIC, 400, 404)),
    # accounts
    "POST /api/v1/auth/sign-in": Answers((*PUBLIC, 400, 403, 429)),
    "POST /api/v1/auth/password": Answers((*PUBLIC, 400, 403, 404, 429)),
    "POST /api/v1/auth/sign-out": Answers(SIGNED_IN),
    "GET /api/v1/auth/me": Answers(SIGNED_IN),
    "GET /api/v1/admin/accounts": Answers(SIGNED_IN),
    # personal data
    "GET /api/v1/cases/{case_id}/contacts": Answers((*SIGNED_IN, 404)),
    "GET /api/v1/audit/access-log": Answers(SIGNED_IN),
    # residents' QR pages (HTML; JSON for a client that asks for it)
    "GET /r/t/{ticket}": Answers(PUBLIC, pages=(404,), success={200: (HTML,)}),
    "GET /r/{code}": Answers(PUBLIC, pages=(404,), success={200: (HTML,)}),
    "POST /r/{code}": Answers((*PUBLIC, 400, 404, 409, 413, 415, 422),
                              pages=(400, 404, 409, 413, 415, 422, 503),
                              success={201: (JSON,), 303: ()}, request_body=RESIDENT_FORM),
    # the grid workers' phone app
    "GET /m/": Answers(PUBLIC, success={200: (HTML,)}),
    "GET /m/sign-in": Answers(PUBLIC, success={200: (HTML,)}),
    "POST /m/sign-in": Answers((*PUBLIC, 403, 422, 429), pages=(401, 403, 422, 429),
                               success={200: (JSON,), 303: ()},
                               request_body=_form("csrf", "login", "password")),
    "GET /m/password": Answers(PUBLIC, success={200: (HTML,)}),
    "POST /m/password": Answers((*PUBLIC, 403, 404, 422, 429), pages=(401, 403, 404, 422, 429),
                                success={303: ()},
                                request_body=_form("csrf", "login", "code", "new_password",
                                                   "confirm")),
    "POST /m/sign-out": Answers(SIGNED_IN, success={303: ()}),
    "GET /m/api/me": Answers(SIGNED_IN),
    "GET /m/api/catalogue": Answers(SIGNED_IN),
    "GET /m/api/reports": Answers(SIGNED_IN),
    "GET /m/api/tasks": Answers(SIGNED_IN),
    "GET /m/api/photos/{photo_id}": Answers((*SIGNED_IN, 404), success={200: IMAGES}),
    "POST /m/api/tasks/{task_id}/verification": Answers((*SIGNED_IN, *MULTIPART_UPLOAD)),
}


def _content(media: tuple[str, ...], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {m: ({"schema": schema} if schema is not None and m == JSON else {}) for m in media}


def document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document of the app with every operation's refusals (cached on the app)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                      summary=app.summary, description=app.description, routes=app.routes,
                      tags=app.openapi_tags, servers=app.servers)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    components["ApiError"] = ERROR
    components["Open311Errors"] = OPEN311_ERROR
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            answers = OPERATIONS.get(f"{method.upper()} {path}")
            if answers is not None:
                _amend(path, op, answers)
    app.openapi_schema = doc
    return doc


def _amend(path: str, op: dict[str, Any], answers: Answers) -> None:
    error_ref = {"$ref": "#/components/schemas/" + (
        "Open311Errors" if path.startswith("/open311/") else "ApiError")}
    responses = op.setdefault("responses", {})
    for status, media in answers.success.items():
        entry = responses.setdefault(str(status), {"description": "OK"})
        schema = (entry.pop("content", None) or {}).get(JSON, {}).get("schema")
        if media:
            entry["content"] = _content(media, schema)
    if answers.success and 200 not in answers.success:
        responses.pop("200", None)  # FastAPI's default success where the route answers another
    statuses = set(answers.errors) | set(answers.pages)
    framework = set()  # what FastAPI answers before the route runs
    if "422" in responses or "parameters" in op or "requestBody" in op:
        framework.add(422)  # a parameter or body of the wrong shape
    if "requestBody" in op:
        framework.add(400)  # a body it cannot parse
    for status in sorted(statuses | framework):
        media = ((JSON,) if status in answers.errors or status in framework else ()) + (
            (HTML,) if status in answers.pages else ())
        entry = responses.setdefault(str(status), {})
        entry["description"] = entry.get("description") or REASONS.get(status, "refused")
        if status in (400, 422) and entry.get("description", "").startswith("Validation"):
            entry["description"] = REASONS[status]
        entry["content"] = {m: ({"schema": copy.deepcopy(error_ref)} if m == JSON else {})
                            for m in media}
        if status in (429, 503):
            entry["headers"] = {"Retry-After": {"description": "seconds to wait",
                                                "schema": {"type": "string"}}}
    if answers.request_body is not None and "requestBody" not in op:
        op["requestBody"] = copy.deepcopy(answers.request_body)


def install(app: FastAPI) -> None:
    """Serve `document(app)` as the app's OpenAPI document (/openapi.json, /docs)."""
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
