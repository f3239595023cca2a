"""Grid workers' photo reports: `POST /api/v1/reports` (multipart: report JSON + 1–9 photos).

Guarantee: 202 only after the ReportSubmitted event is acknowledged by Kafka (acks=all) and
every photo it references is in the incoming bucket; any failure leaves no photo behind and
no event, and a retry of the same report id answers 200 with the first answer, publishing
nothing new. Validation is gridflow.core.intake's, the one the processor applies.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from gridflow import events as ev
from gridflow import topics
from gridflow.core import intake
from gridflow.events import Message, PhotoRef, canonical_json, derived_id, iso
from producers import receipts
from producers.context import Context, ctx
from producers.errors import ApiError
from producers.multipart import MultipartError, MultipartReader, Part
from producers.publisher import PublishError
from producers.uploads import PhotoUpload, Received

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


def invalid(exc: intake.ReportInvalid) -> ApiError:
    """A report the intake rules refuse → 422 naming the field."""
    return ApiError(422, "invalid_report", exc.reason_zh, exc.reason_en, field=exc.field)


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


def finalize(data: dict[str, Any], photos: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The event data: validated, normalised (UTC times, stripped text), with the photo refs."""
    try:
        report = intake.validate_report({**data, "photos": photos}, now)
    except intake.ReportInvalid as exc:
        raise invalid(exc) from exc
    extra = {k: v for k, v in data.items()
             if k in ("source", "channel", "worker_grid_code", "device")}
    # The reporter as the case processor compares actors: worker:<id>@<grid>, unshortened.
    return {**report.to_dict(), **extra, "reporter": data["reporter"]}


def request_hash(reporter: str, payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"reporter": reporter, "payload": payload})).hexdigest()


def accepted_body(report_id: str, case_id: str) -> dict[str, Any]:
    return {
        "report_id": report_id,
        "case_id": case_id,
        "status": "accepted",
        "status_url": f"/api/v1/reports/{report_id}",
    }


def report_submitted(data: dict[str, Any], at: datetime) -> Message:
    return Message(
        id=derived_id("report", data["report_id"]),
        type=ev.REPORT_SUBMITTED,
        case_id="",
        at=iso(at),
        actor=data["reporter"],
        data=data,
    )


def conflict() -> ApiError:
    return ApiError(
        409,
        "report_id_conflict",
        "该上报编号已用于另一份内容不同的上报",
        "this report_id was already used for a different report",
        field="report_id",
    )


def in_progress() -> ApiError:
    return ApiError(
        409,
        "in_progress",
        "该上报正在处理中, 请稍后重试",
        "this report is being processed; retry shortly",
        headers={"Retry-After": "2"},
    )


class NotPublished(ApiError):
    """503: the log did not acknowledge. `maybe_written`: the record may be on it all the same,
    so what it references must stay."""

    def __init__(self, zh: str, en: str, maybe_written: bool) -> None:
        super().__init__(503, "log_unavailable", zh, en, headers={"Retry-After": "5"})
        self.maybe_written = maybe_written


def publish_failed(maybe_written: bool) -> NotPublished:
    return NotPublished(
        "系统繁忙, 上报未成功, 请稍后重试(内容不会丢失, 可直接重发)",
        "the event log is unavailable; the report was not accepted, retry later",
        maybe_written,
    )


# --- shared by workers' and residents' reports --------------------------------------


async def claim(
    c: Context, report_id: str, ticket: str, req_hash: str, response: Any, now: datetime
) -> receipts.Claim:
    try:
        return await run_in_threadpool(
            receipts.claim, c.engine, report_id, ticket, req_hash, response, now
        )
    except receipts.ClaimLost as exc:
        raise in_progress() from exc


async def settled(c: Context, report_id: str) -> receipts.Receipt | None:
    """The receipt once done, waiting up to `receipt_wait_s` for a concurrent request."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + c.receipt_wait_s
    while True:
        receipt = await run_in_threadpool(receipts.get, c.engine, report_id)
        if receipt is None or receipt.state == receipts.DONE or loop.time() >= deadline:
            return receipt
        await asyncio.sleep(0.1)


async def replay(c: Context, report_id: str, photos_hash: str) -> JSONResponse:
    """Answer a retry with the first answer, once the first request finished."""
    receipt = await settled(c, report_id)
    if receipt is None or receipt.state != receipts.DONE:
        raise in_progress()
    if not receipt.same_photos(photos_hash):
        raise conflict()
    return JSONResponse(receipt.response, status_code=200)


def abandon_sync(
    c: Context, report_id: str, upload: PhotoUpload | None, taken_over: bool, photos_hash: str = ""
) -> None:
    """Undo a request that will not be accepted. A fresh claim is freed and its photos removed;
    a claim taken over from a request whose event may be on the log keeps every object (they
    may be referenced) and stays open for the next retry. Blocking (a worker thread)."""
    if taken_over:
        receipts.expire(c.engine, report_id, photos_hash)
        return
    if upload:
        upload.cleanup_sync()
    receipts.release(c.engine, report_id)


async def abandon(
    c: Context, report_id: str, upload: PhotoUpload | None, taken_over: bool, photos_hash: str = ""
) -> None:
    await run_in_threadpool(abandon_sync, c, report_id, upload, taken_over, photos_hash)


def publish_report_sync(
    c: Context,
    data: dict[str, Any],
    at: datetime,
    upload: PhotoUpload | None,
    taken_over: bool = False,
) -> None:
    """Publish and record the receipt; on failure undo (see `abandon_sync`) and raise the 503.
    Blocking (a worker thread)."""
    report_id = data["report_id"]
    photos_hash = upload.photos_hash() if upload else ""
    try:
        c.publisher.publish(c.topic(topics.REPORTS), report_id, report_submitted(data, at))
    except PublishError as exc:
        log.warning("report %s not published: %s", report_id, exc)
        # An ack that timed out may still be on the log: then its photos stay and the retry
        # takes the claim over and republishes the very same event (same id, same time).
        abandon_sync(c, report_id, upload, taken_over or exc.maybe_written, photos_hash)
        raise publish_failed(exc.maybe_written) from exc
    try:
        receipts.complete(c.engine, report_id, photos_hash)
    except Exception:  # noqa: BLE001 - the report is on the log: accepted all the same
        log.exception(
            "receipt of %s not completed; a retry will republish the same event", report_id
        )


async def publish_report(
    c: Context,
    data: dict[str, Any],
    at: datetime,
    upload: PhotoUpload | None,
    taken_over: bool = False,
) -> None:
    """`publish_report_sync` in one thread hop (publish, then complete the receipt)."""
    await run_in_threadpool(publish_report_sync, c, data, at, upload, taken_over)


class Submission:
    """The blocking steps of one grid worker's upload: claim the receipt, inspect and store
    each photo, publish the event, complete the receipt. The route runs them in as few thread
    hops as the body allows (`run`): for a one-photo report, all of them in one hop once the
    body is read; with more photos, one hop per photo (so at most one photo is held in
    memory) and the publish with the last. Whatever fails undoes what this request did."""

    def __init__(
        self,
        c: Context,
        report_id: str,
        ticket: str,
        req_hash: str,
        first: dict[str, Any],
        now: datetime,
        data: dict[str, Any],
        upload: PhotoUpload,
    ) -> None:
        self.c, self.report_id, self.ticket, self.req_hash = c, report_id, ticket, req_hash
        self.first, self.now, self.data, self.upload = first, now, data, upload
        self.claim: receipts.Claim | None = None
        self.open = False  # holds the claim: must complete, expire or release it

    @property
    def claimed(self) -> bool:
        return self.claim is not None

    @property
    def won(self) -> bool:
        return self.claim is not None and self.claim.won

    @property
    def taken_over(self) -> bool:
        return self.claim is not None and self.claim.receipt is not None

    def take_claim(self) -> None:
        try:
            self.claim = receipts.claim(
                self.c.engine, self.report_id, self.ticket, self.req_hash, self.first, self.now,
                reporter=str(self.data.get("reporter", "")),
            )
        except receipts.ClaimLost as exc:
            raise in_progress() from exc
        if self.claim.won:
            self.open = True
        elif self.claim.receipt is not None and self.claim.receipt.request_hash != self.req_hash:
            raise conflict()

    def store(self, photo: Received) -> None:
        """Inspect and store a photo, if this request holds the claim (a retry being compared
        with the first request only needs the photos' hashes)."""
        if self.won:
            self.upload.put_photo(photo)

    def publish(self) -> dict[str, Any] | None:
        """Publish and complete; the 202 body, or None when another request holds or held the
        claim (the caller replays its answer)."""
        if not self.won:
            return None
        assert self.claim is not None
        taken = self.claim.receipt
        at, body = (taken.created_at, taken.response) if taken else (self.now, self.first)
        if taken and not taken.same_photos(self.upload.photos_hash()):
            raise conflict()
        event_data = finalize(self.data, self.upload.ref_dicts(), at)
        self.open = False  # from here on publish_report_sync undoes what a failure needs
        publish_report_sync(self.c, event_data, at, self.upload, taken_over=self.taken_over)
        return dict(body)

    def abandon(self) -> None:
        if self.open:
            self.open = False
            abandon_sync(self.c, self.report_id, self.upload, taken_over=self.taken_over)

    def run(self, steps: list[Callable[[], Any]]) -> Any:
        """Run `steps` in order (one thread hop); the last one's result. Undoes on failure."""
        try:
            result = None
            for step in steps:
                result = step()
            return result
        except BaseException:
            self.abandon()
            raise


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
    ticket = intake.case_id_for(report.report_id, now)
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
