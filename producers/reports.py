"""Grid workers' photo reports: `POST /api/v1/reports` (multipart: report JSON + 1–9 photos).

Guarantee: 202 only after the ReportSubmitted event is acknowledged by Kafka (acks=all) and
every photo it references is in the incoming bucket; any failure leaves no photo behind and
no event, and a retry of the same report id answers 200 with the first answer, publishing
nothing new (the claim/publish protocol of producers.submission). Validation is
gridflow.core.intake's, the one the processor applies. Also the multipart helpers the other
uploads share (with_multipart, read_json_part, receive_photos).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from accounts.access import allow
from accounts.roles import GRID_WORKER, Grant, Principal, actor_of
from gridflow.core import intake
from gridflow.events import PhotoRef
from producers.context import Context, ctx
from producers.errors import ApiError
from producers.multipart import MultipartError, MultipartReader, Part
from producers.submission import Submission, invalid, replay, request_hash
from producers.uploads import PhotoUpload

log = logging.getLogger(__name__)

router = APIRouter(tags=["reports 上报"])

REPORT_PART_MAX = 64 * 1024
SOURCE_WORKER = "grid_worker"
# What a client may put in the report part; the rest (reporter, photos, ...) the API sets.
CLIENT_FIELDS = (
    "report_id",
    "category_code",
    "description",
    "lat",
    "lon",
    "captured_at",
    "address",
    "severity",
)
_PLACEHOLDER_PHOTO = asdict(PhotoRef("-", "-", 1, "0" * 64, "image/jpeg"))
# What the phone app knows besides (mobile/): the position's accuracy and source, and each
# original photo's EXIF capture time and GPS (the upload is scaled down, without EXIF). Kept
# with the report as `device`, never used to file it; malformed values are left out.
LOCATION_SOURCES = ("gps", "photo", "manual")


# --- pure parts --------------------------------------------------------------------


def bad_request(code: str, zh: str, en: str, field: str | None = None) -> ApiError:
    return ApiError(400, code, zh, en, field=field)


def parse_report_part(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(
            "bad_json",
            "report 部分不是有效的 JSON",
            f"the report part is not valid JSON: {exc}",
            "report",
        ) from exc
    if not isinstance(obj, dict):
        raise bad_request(
            "bad_json",
            "report 部分须为 JSON 对象",
            f"the report part must be a JSON object, got {type(obj).__name__}",
            "report",
        )
    return obj


def client_fields(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: obj[k] for k in CLIENT_FIELDS if k in obj}


def _finite(value: Any, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and lo <= value <= hi else None


def device_facts(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The phone's own facts about the report (see LOCATION_SOURCES), cleaned; None if none."""
    out: dict[str, Any] = {}
    accuracy = _finite(obj.get("location_accuracy_m"), 0, 100_000)
    if accuracy is not None:
        out["location_accuracy_m"] = round(accuracy, 1)
    if obj.get("location_source") in LOCATION_SOURCES:
        out["location_source"] = obj["location_source"]
    exif = obj.get("photo_exif")
    if isinstance(exif, list):
        photos = []
        for item in exif[:9]:
            item = item if isinstance(item, dict) else {}
            taken = item.get("taken_at")
            photos.append({
                "taken_at": taken if isinstance(taken, str) and len(taken) <= 40 else None,
                "lat": _finite(item.get("lat"), -90, 90),
                "lon": _finite(item.get("lon"), -180, 180),
            })
        out["photo_exif"] = photos
    return out or None


def worker_report_data(obj: dict[str, Any], worker: Principal) -> dict[str, Any]:
    """The ReportSubmitted data before validation: the client's fields, our reporter (the
    signed-in grid worker, as worker:<account id>@<their grid>)."""
    grid = sorted(worker.scopes(GRID_WORKER))[0]
    data = client_fields(obj)
    device = device_facts(obj)
    if device:
        data["device"] = device
    data.update(
        source=SOURCE_WORKER,
        channel="app",
        reporter=actor_of(worker, Grant(GRID_WORKER, grid)),
        worker_grid_code=grid,
        photos=[],
    )
    return data


def precheck(data: dict[str, Any], now: datetime) -> intake.Report:
    """Every rule but the photos, before any photo is read (they are checked once stored)."""
    try:
        return intake.validate_report({**data, "photos": [_PLACEHOLDER_PHOTO]}, now)
    except intake.ReportInvalid as exc:
        raise invalid(exc) from exc


def accepted_body(report_id: str, case_id: str) -> dict[str, Any]:
    return {
        "report_id": report_id,
        "case_id": case_id,
        "status": "accepted",
        "status_url": f"/api/v1/reports/{report_id}",
    }


# --- the route --------------------------------------------------------------------

def multipart_doc(json_part: str, json_description: str, photos_description: str) -> dict[str, Any]:
    """OpenAPI of a multipart body: one JSON part first, then 1–9 photo parts."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [json_part, "photos"],
                        "properties": {
                            json_part: {"type": "string", "description": json_description},
                            "photos": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "description": photos_description,
                            },
                        },
                    }
                }
            },
        }
    }


UPLOAD_DOC = multipart_doc(
    "report",
    "JSON: {report_id, category_code, description, lat, lon, captured_at, address?, "
    "severity?}. Must be the first part. 须为第一个部分。",
    "1–9 JPEG/PNG photos 照片",
)


@router.post(
    "/api/v1/reports",
    status_code=202,
    openapi_extra=UPLOAD_DOC,
    summary="网格员上报 / a grid worker uploads a report with photos",
    responses={
        200: {"description": "a retry: the first answer again"},
        202: {"description": "accepted: the event is on the log"},
        400: {"description": "malformed body"},
        401: {"description": "not signed in"},
        403: {"description": "not a grid worker"},
        409: {"description": "report_id reused"},
        413: {"description": "photo too large"},
        415: {"description": "not an image"},
        422: {"description": "invalid field or photo"},
        503: {"description": "log or store unavailable: retry (Retry-After)"},
    },
)
async def submit_report(
    request: Request, worker: Annotated[Principal, allow("report.submit")]
) -> JSONResponse:
    c = ctx(request)
    return await with_multipart(request, lambda reader: _submit(c, worker, reader))


async def with_multipart(request: Request, handle: Any) -> JSONResponse:
    """Run `handle(reader)` over the streamed body; on a refusal drain what the client is still
    sending (bounded), so it reads our answer instead of a reset connection."""
    c = ctx(request)
    try:
        reader = MultipartReader(request.headers.get("content-type"), request.stream())
    except MultipartError as exc:
        raise bad_request("not_multipart", "请求须为 multipart/form-data", str(exc)) from exc
    limits = c.photo_limits
    budget = limits.max_count * (limits.max_bytes + 1) + REPORT_PART_MAX * 2
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > budget:
        raise ApiError(
            413,
            "request_too_large",
            "上传内容超过上限(最多9张照片, 每张不超过限额)",
            f"the body declares {declared} bytes, more than {budget} could be valid",
        )
    try:
        return await handle(reader)
    except MultipartError as exc:
        raise bad_request("bad_multipart", "上传内容格式错误或不完整", str(exc)) from exc
    except ApiError:
        try:
            await reader.drain(budget)
        except (ClientDisconnect, MultipartError):
            pass
        raise


async def read_json_part(reader: MultipartReader, name: str) -> dict[str, Any]:
    part = await reader.next_part()
    if part is None or part.name != name:
        raise bad_request(
            "missing_part",
            f"缺少 {name} 部分(须为第一个部分)",
            f"the first part must be the '{name}' JSON part",
            name,
        )
    raw = await reader.read_all(REPORT_PART_MAX)
    if raw is None:
        raise ApiError(
            413,
            "part_too_large",
            f"{name} 部分过大",
            f"the {name} part exceeds {REPORT_PART_MAX} bytes",
            field=name,
        )
    return parse_report_part(raw)


async def receive_photos(reader: MultipartReader, upload: PhotoUpload, store: bool) -> None:
    while (part := await reader.next_part()) is not None:
        expect_photos(part)
        if store:
            await upload.receive(reader)
        else:
            await upload.hash_only(reader)
    upload.check_count()


def expect_photos(part: Part) -> None:
    if part.name != "photos":
        raise bad_request(
            "unexpected_part",
            f"无法识别的部分「{part.name}」",
            f"unexpected part {part.name!r}; only 'photos' may follow",
            part.name,
        )


async def _submit(c: Context, worker: Principal, reader: MultipartReader) -> JSONResponse:
    obj = await read_json_part(reader, "report")
    now = c.clock()
    data = worker_report_data(obj, worker)
    report = precheck(data, now)
    req_hash = request_hash(data["reporter"], client_fields(obj))
    upload = PhotoUpload(
        c.store,
        c.settings.bucket_incoming,
        f"reports/{report.report_id}",
        "before",
        c.photo_limits,
        c.inspect,
    )
    ticket = intake.ticket_for(c.ref, report.report_id, report.lat, report.lon, now)
    job = Submission(
        c, report.report_id, ticket, req_hash, accepted_body(report.report_id, ticket), now,
        data, upload,
    )
    # The photos arrive on the event loop (hashed as they come); the blocking steps wait in
    # `steps` until the next part's headers show whether another photo follows.
    steps: list[Callable[[], Any]] = [job.take_claim]
    try:
        part = await reader.next_part()
        while part is not None:
            expect_photos(part)
            if job.claimed and not job.won:  # a retry being compared: its photos' hashes only
                await upload.hash_only(reader)
            else:
                steps.append(partial(job.store, await upload.read(reader)))
            part = await reader.next_part()
            if part is not None and steps:  # another photo follows: store this one first
                await run_in_threadpool(job.run, steps)
                steps = []
        upload.check_count()
        if job.claimed and not job.won:
            body = None
        else:
            steps.append(job.publish)
            body = await run_in_threadpool(job.run, steps)
    except BaseException:
        if job.open:
            await run_in_threadpool(job.abandon)
        raise
    if body is None:
        return await replay(c, report.report_id, upload.photos_hash())
    return JSONResponse(body, status_code=202)
