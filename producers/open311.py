"""Residents' complaints (接诉) over Open311 GeoReport v2: service list, request intake, status.

Guarantee: a POSTed request is answered only after its ReportSubmitted event is acknowledged
by Kafka; its service_request_id is our deterministic ticket number (intake.case_id_for).
Errors follow the spec: an array of {code, description} (description Chinese / English).
Every path under /open311/v2/, unknown ones included, answers its errors in that shape (404,
405, 400 for a malformed request, 503, 500), as XML for a path ending in .xml. JSON only
otherwise: the spec's optional .xml format is not served (those paths are 404). Form bodies
are read as UTF-8 unless their Content-Type names another charset; bytes that do not decode
are refused (400), never read as Latin-1.

api_key and jurisdiction_id are accepted and ignored (one jurisdiction, public intake); lat/long
are required (no geocoder for address-only requests); media_url is kept as a link, residents
upload no photos. The resident's name, phone and email ride in data.contact for the call-back
(回访); the reporter id is never the raw phone or email.

Idempotency: GeoReport v2 has no client token, so the report id is derived from who asks
(account_id, else device_id, else a hash of phone/email) and a hash of what is asked
(service, location, description, address, media_url) on the same local day; an
`Idempotency-Key` header, when sent, replaces the content hash. A retried POST thus gets the
same ticket and publishes nothing new; the same complaint filed again on another day is a
new report (the processor's near-duplicate merge then joins it to the open case).
"""

from __future__ import annotations

import codecs
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes
from xml.sax.saxutils import escape as xml_escape

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from accounts.access import public, unauthorized, wrong_role
from accounts.facts import cases_in_scope
from accounts.roles import OPEN311_PARTNER, Principal, may
from gridflow.core import intake
from gridflow.core.refdata import ReferenceData
from gridflow.events import derived_id, iso
from producers.context import Context, ctx
from producers.errors import ApiError
from producers.status import Open311Error, Open311Filters, open311_request, open311_requests
from producers.submission import claim, publish_report, replay, request_hash

router = APIRouter(tags=["open311 群众诉求 (GeoReport v2)"])

PREFIX = "/open311/v2"
RESIDENT_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FORM_FIELDS = (
    "service_code",
    "lat",
    "long",
    "address_string",
    "address_id",
    "email",
    "device_id",
    "account_id",
    "first_name",
    "last_name",
    "phone",
    "description",
    "media_url",
    "api_key",
    "jurisdiction_id",
)
MAX_FIELD = 2000


def open311_error_response(
    status: int, description: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        [{"code": status, "description": description}], status_code=status, headers=headers
    )


def open311_error_xml(
    status: int, description: str, headers: dict[str, str] | None = None
) -> Response:
    """The spec's XML error: <errors><error><code/><description/></error></errors>."""
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<errors><error><code>{status}</code>"
        f"<description>{xml_escape(description)}</description></error></errors>"
    )
    return Response(body, status_code=status, headers=headers, media_type="text/xml; charset=utf-8")


def open311_error_for(
    path: str, status: int, description: str, headers: dict[str, str] | None = None
) -> Response:
    """An error of any path under /open311/: XML where the path asks for .xml, else JSON."""
    render = open311_error_xml if path.endswith(".xml") else open311_error_response
    return render(status, description, headers)


def from_api_error(err: ApiError) -> JSONResponse:
    return open311_error_response(err.status, f"{err.message_zh} / {err.message_en}", err.headers)


# --- pure mapping --------------------------------------------------------------------------


def service_list(ref: ReferenceData) -> list[dict[str, Any]]:
    """GET services.json: one entry per service in the reference data's open311.json."""
    return [
        {
            "service_code": s.service_code,
            "service_name": s.service_name,
            "description": s.description,
            "metadata": False,
            "type": "realtime",
            "keywords": ",".join(s.keywords),
            "group": s.group,
        }
        for s in ref.services.values()
    ]


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:24]


def resident_id(form: Mapping[str, str]) -> str:
    """account_id, else device_id (as given when it is a plain token, else hashed), else a hash
    of the phone / email; 'anonymous' when the resident gave none of them."""
    for name in ("account_id", "device_id"):
        value = form.get(name, "").strip()
        if value:
            return value if RESIDENT_ID_RE.match(value) else f"h{_hash(name + ':' + value)}"
    contact = (
        form.get("phone", "").strip().replace(" ", "") or form.get("email", "").strip().lower()
    )
    return f"c{_hash(contact)}" if contact else "anonymous"


def _coordinate(form: Mapping[str, str], name: str, lo: float, hi: float) -> float:
    raw = form.get(name, "").strip()
    try:
        value = float(raw)
    except ValueError:
        raise Open311Error(400, f"{name} 须为数字", f"{name} must be a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise Open311Error(400, f"{name} 超出范围", f"{name} must be between {lo} and {hi}")
    return value


@dataclass(frozen=True)
class ResidentRequest:
    report_id: str
    reporter: str
    data: dict[str, Any]  # the ReportSubmitted data, not yet validated
    request_hash: str
    account_id: str | None


def resident_request(
    form: Mapping[str, str], ref: ReferenceData, now: datetime, idempotency_key: str | None = None
) -> ResidentRequest:
    """Map a GeoReport v2 POST to our report. Raises Open311Error (spec error, 400/404)."""
    for name, value in form.items():
        if len(value) > MAX_FIELD:
            raise Open311Error(400, f"{name} 过长", f"{name} exceeds {MAX_FIELD} characters")
    code = form.get("service_code", "").strip()
    if not code:
        raise Open311Error(400, "缺少 service_code", "service_code is required")
    service = ref.services.get(code)
    if service is None:
        raise Open311Error(404, f"未知的诉求类别 {code}", f"service_code {code!r} not found")
    if not form.get("lat", "").strip() or not form.get("long", "").strip():
        raise Open311Error(
            400,
            "请提供位置坐标 lat/long (暂不支持仅凭地址受理)",
            "lat and long are required (address-only requests are not supported: no geocoder)",
        )
    lat = _coordinate(form, "lat", -90, 90)
    lon = _coordinate(form, "long", -180, 180)
    reporter = f"resident:{resident_id(form)}"
    address = form.get("address_string", "").strip()
    content = {
        "service_code": code,
        "lat": round(lat, 6),
        "long": round(lon, 6),
        "description": form.get("description", "").strip(),
        "address_string": address,
        "media_url": form.get("media_url", "").strip(),
    }
    day = f"{now.astimezone(intake.CHINA_TZ):%Y%m%d}"
    key = (
        idempotency_key.strip()
        if idempotency_key
        else f"{day}:{_hash(str(sorted(content.items())))}"
    )
    report_id = f"o311-{derived_id('open311', reporter, key)}"
    name = " ".join(
        p for p in (form.get("last_name", "").strip(), form.get("first_name", "").strip()) if p
    )
    data: dict[str, Any] = {
        "report_id": report_id,
        "source": "resident",
        "channel": "open311",
        "reporter": reporter,
        "category_code": service.category_code,
        "description": content["description"],
        "lat": lat,
        "lon": lon,
        "captured_at": iso(now),
        "address": address[:200],
        "photos": [],
        "media_url": content["media_url"],
        "service_code": code,
        "contact": {
            "name": name,
            "phone": form.get("phone", "").strip(),
            "email": form.get("email", "").strip(),
        },
    }
    return ResidentRequest(
        report_id,
        reporter,
        data,
        request_hash(reporter, content),
        form.get("account_id", "").strip() or None,
    )


def service_notice(ticket: str) -> str:
    return f"已受理, 受理编号 {ticket}, 可凭编号查询办理进度 / received; ticket {ticket}"


def post_response(ticket: str, account_id: str | None) -> list[dict[str, Any]]:
    return [
        {
            "service_request_id": ticket,
            "service_notice": service_notice(ticket),
            "account_id": account_id,
        }
    ]


# --- routes ------------------------------------------------------------------------------


@router.get(f"{PREFIX}/services.json", summary="诉求类别 / GeoReport v2 service list")
def services(
    request: Request, _: Annotated[Principal | None, public("诉求类别: 公开")]
) -> JSONResponse:
    return JSONResponse(service_list(ctx(request).ref))


POST_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["service_code", "lat", "long"],
                    "properties": {name: {"type": "string"} for name in FORM_FIELDS},
                }
            }
        },
    }
}


@router.post(
    f"{PREFIX}/requests.json",
    openapi_extra=POST_DOC,
    status_code=201,
    summary="提交诉求 / GeoReport v2 POST service request",
    responses={
        200: {"description": "a retry: the first answer again"},
        201: {"description": "[{service_request_id, service_notice, account_id}]"},
        400: {"description": "[{code, description}]"},
        404: {"description": "unknown service_code"},
        503: {"description": "log unavailable: retry (Retry-After)"},
    },
)
async def post_request(
    request: Request,
    caller: Annotated[Principal | None, public("群众诉求入口, 无需登录; 对接系统可带 API 密钥")],
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSONResponse:
    c = ctx(request)
    try:
        form = await _form(request)
        req = resident_request(form, c.ref, c.clock(), idempotency_key)
        if caller is not None and caller.has(OPEN311_PARTNER):
            req.data["partner"] = caller.name  # which partner system passed it on
        return await _accept(c, req)
    except Open311Error as exc:
        return open311_error_response(exc.status, exc.description())
    except ApiError as exc:
        return from_api_error(exc)


MAX_FORM_FIELDS = 40
MAX_FORM_BYTES = 64 * 1024  # 15 fields of at most MAX_FIELD characters, percent-encoded


def form_charset(content_type: str) -> str:
    """The codec a form body is decoded with: its Content-Type's charset, else UTF-8
    (starlette would read raw bytes as Latin-1). Raises Open311Error for an unknown charset."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"') or "utf-8"
            try:
                return codecs.lookup(charset).name
            except LookupError:
                raise Open311Error(
                    400,
                    f"不支持的字符集 {charset[:40]}, 请使用 UTF-8",
                    f"unknown charset {charset[:40]!r}: send UTF-8",
                ) from None
    return "utf-8"


def decode_urlencoded(body: bytes, charset: str = "utf-8") -> dict[str, str]:
    """An application/x-www-form-urlencoded body: names and values percent-decoded to bytes,
    then decoded with `charset`, so raw and %-escaped bytes read alike. Bytes that are not
    valid in the charset are refused (400), never guessed. The last of a repeated name wins."""
    form: dict[str, str] = {}
    pairs = [p for p in body.split(b"&") if p]
    if len(pairs) > MAX_FORM_FIELDS:
        raise Open311Error(
            400, f"表单字段过多(至多 {MAX_FORM_FIELDS} 项)", f"more than {MAX_FORM_FIELDS} fields"
        )
    for pair in pairs:
        raw_name, _, raw_value = pair.partition(b"=")
        try:
            name, value = (
                unquote_to_bytes(part.replace(b"+", b" ")).decode(charset)
                for part in (raw_name, raw_value)
            )
        except UnicodeDecodeError as exc:
            field = unquote_to_bytes(raw_name).decode(charset, "replace")[:40]
            raise Open311Error(
                400,
                f"表单字段 {field} 不是有效的 {charset.upper()} 编码文本, "
                "请以 UTF-8 编码提交(或在 Content-Type 中注明 charset)",
                f"field {field!r} is not valid {charset}: byte 0x{exc.object[exc.start]:02x} "
                f"at {exc.start}; send UTF-8 or name the charset in Content-Type",
            ) from None
        form[name] = value
    return form


async def _body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Open311Error(413, "请求体过大", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        charset = form_charset(content_type)
        return decode_urlencoded(await _body(request, MAX_FORM_BYTES), charset)
    try:
        async with request.form(max_files=0, max_fields=MAX_FORM_FIELDS) as form:
            return {k: v for k, v in form.items() if isinstance(v, str)}
    except Exception as exc:  # noqa: BLE001 - starlette raises several kinds for a bad form
        raise Open311Error(
            400,
            "请求体须为表单(application/x-www-form-urlencoded)",
            f"the body must be a form: {exc}",
        ) from exc


async def _accept(c: Context, req: ResidentRequest) -> JSONResponse:
    now = c.clock()
    try:
        intake.validate_report(req.data, now)
    except intake.ReportInvalid as exc:
        raise Open311Error(400, exc.reason_zh, f"{exc.field}: {exc.reason_en}") from exc
    ticket = intake.ticket_for(c.ref, req.report_id, req.data.get("lat"), req.data.get("lon"), now)
    first = post_response(ticket, req.account_id)
    won = await claim(c, req.report_id, ticket, req.request_hash, first, now)
    if not won.won:
        assert won.receipt is not None
        if won.receipt.request_hash != req.request_hash:
            raise Open311Error(
                409,
                "该受理编号已用于不同的诉求",
                "this Idempotency-Key was already used for a different request",
            )
        return await replay(c, req.report_id, "")
    at, body = (won.receipt.created_at, won.receipt.response) if won.receipt else (now, first)
    data = {**req.data, "captured_at": iso(at)}
    await publish_report(c, data, at, None, taken_over=won.receipt is not None)
    return JSONResponse(body, status_code=201)


@router.get(
    f"{PREFIX}/requests/{{service_request_id}}.json",
    summary="诉求办理情况 / GeoReport v2 GET service request",
)
async def get_request(
    service_request_id: str,
    request: Request,
    _: Annotated[Principal | None, public("凭受理编号查询办理进度: 公开")],
) -> JSONResponse:
    c = ctx(request)
    found = await run_in_threadpool(open311_request, c, service_request_id)
    if found is None:
        return open311_error_response(
            404,
            f"未找到受理编号 {service_request_id} / service request {service_request_id} not found",
        )
    return JSONResponse([found])


@router.get(f"{PREFIX}/requests.json", summary="诉求列表 / GeoReport v2 GET service requests")
async def list_requests(
    request: Request,
    caller: Annotated[
        Principal | None,
        public("凭受理编号(service_request_id)查询: 公开; 浏览诉求列表须登录, 仅列管辖范围内的案件"),
    ],
    service_request_id: str | None = Query(
        None, description="comma-separated tickets; overrides every other filter (spec)"
    ),
    service_code: str | None = Query(None, description="comma-separated service codes"),
    start_date: str | None = Query(None, description="ISO 8601, inclusive"),
    end_date: str | None = Query(None, description="ISO 8601, exclusive"),
    status: str | None = Query(None, description="open | closed (comma-separated)"),
) -> JSONResponse:
    c = ctx(request)
    try:
        filters = Open311Filters.parse(
            c.ref, c.clock(), service_request_id, service_code, start_date, end_date, status
        )
    except Open311Error as exc:
        return open311_error_response(exc.status, exc.description())
    scope = None
    if not filters.ids:  # browsing, not looking tickets up: the caller's cases only
        if caller is None:
            raise unauthorized()
        if not may(caller, "case.read"):
            raise wrong_role("case.read")
        scope = cases_in_scope(caller)
    rows = await run_in_threadpool(open311_requests, c, filters, scope)
    return JSONResponse(rows)
