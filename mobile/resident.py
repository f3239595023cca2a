"""The residents' QR-code page (码上说): `/r/<grid>` opens a report form for the place the code
names; no sign-in. The resident adds a photo, a description and a phone number for the
call-back (回访) and gets a ticket to follow at `/r/t/<ticket>`.

Works without JavaScript (a plain multipart form, answered by a redirect to the ticket page);
resident.js only adds: photos scaled down on the phone, an inline error summary.
Guarantee: as the workers' upload (producers.submission): the ticket is shown only after the
report is on the log; the report id is made when the form is shown, so the same form sent
twice is one report; a refusal re-shows the form with what was typed and the reason in
Chinese.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from accounts.access import public
from accounts.roles import Principal
from gridflow.core import intake
from gridflow.core.refdata import ReferenceData
from mobile.places import Place, find_place
from mobile.web import render, wants_json
from producers.context import Context, ctx
from producers.errors import ApiError
from producers.multipart import MultipartError, MultipartReader
from producers.open311 import resident_id
from producers.status import open311_request
from producers.submission import (
    Submission,
    conflict,
    in_progress,
    request_hash,
    settled,
)
from producers.uploads import PhotoLimits, PhotoUpload, Received

router = APIRouter(tags=["residents 码上说"])

MAX_PHOTOS = 3
FIELD_MAX = 4096
FIELDS = ("report_id", "service_code", "description", "phone", "name")
DESCRIPTION_MAX = 500
PHONE_RE = re.compile(r"^(1[3-9]\d{9}|0\d{2,3}\d{7,8})$")
TICKET_RE = re.compile(r"^[A-Za-z0-9_-]{4,64}$")


class FormRefused(ApiError):
    """A field the resident has to fix: 422 naming it (shown above the form and beside it)."""

    def __init__(self, field: str, zh: str, en: str) -> None:
        super().__init__(422, "invalid_input", zh, en, field=field)


def new_report_id() -> str:
    return f"qr-{uuid.uuid4().hex}"


def services(ref: ReferenceData) -> list[dict[str, str]]:
    """The services a resident picks from (the Open311 list), grouped as the county has them."""
    return [{"code": s.service_code, "name": s.service_name, "group": s.group,
             "description": s.description} for s in ref.services.values()]


def check_fields(ref: ReferenceData, form: dict[str, str]) -> dict[str, str]:
    """The typed fields, cleaned; FormRefused for the first one that cannot be used."""
    report_id = form.get("report_id", "").strip() or new_report_id()
    if not intake.REPORT_ID_RE.match(report_id):
        raise FormRefused("report_id", "页面已失效, 请刷新后重新填写",
                          "malformed report_id: reload the page")
    code = form.get("service_code", "").strip()
    if code not in ref.services:
        raise FormRefused("service_code", "请选择问题类型", "choose what kind of problem it is")
    description = " ".join(form.get("description", "").split())
    if not description:
        raise FormRefused("description", "请简单描述问题", "describe the problem")
    if len(description) > DESCRIPTION_MAX:
        raise FormRefused("description", f"问题描述不能超过{DESCRIPTION_MAX}字",
                          f"at most {DESCRIPTION_MAX} characters")
    phone = re.sub(r"[\s-]", "", form.get("phone", ""))
    if not phone:
        raise FormRefused("phone", "请留下联系电话, 以便回访", "a phone number for the call-back")
    if not PHONE_RE.match(phone):
        raise FormRefused("phone", "联系电话格式不正确(手机号11位, 或区号加座机号)",
                          "not a Chinese mobile (11 digits) or landline number")
    name = " ".join(form.get("name", "").split())[:20]
    return {"report_id": report_id, "service_code": code, "description": description,
            "phone": phone, "name": name}


def report_data(ref: ReferenceData, place: Place, fields: dict[str, str],
                now: datetime) -> dict[str, Any]:
    """The ReportSubmitted data (before its photos): the place from the code, the resident's
    words, their phone for the call-back in data.contact (never in the reporter id)."""
    service = ref.services[fields["service_code"]]
    return {
        "report_id": fields["report_id"],
        "source": "resident",
        "channel": "qr",
        "reporter": f"resident:{resident_id({'phone': fields['phone']})}",
        "category_code": service.category_code,
        "description": fields["description"],
        "lat": place.lat,
        "lon": place.lon,
        "captured_at": now.isoformat(),
        "address": place.where[:200],
        "photos": [],
    }


def extra_data(place: Place, fields: dict[str, str]) -> dict[str, Any]:
    """What rides along in the event beyond the intake schema."""
    return {"service_code": fields["service_code"],
            "place": {"grid_code": place.grid_code, "label": place.label,
                      "door_plate": place.plate},
            "contact": {"name": fields["name"], "phone": fields["phone"], "email": ""}}


def ticket_body(ticket: str, report_id: str) -> dict[str, Any]:
    return {"ticket": ticket, "report_id": report_id, "status": "accepted",
            "ticket_url": f"/r/t/{ticket}",
            "message_zh": f"已受理, 受理编号 {ticket}, 可凭编号查询办理进度"}


async def read_form(c: Context, request: Request, upload: PhotoUpload,
                    ) -> tuple[dict[str, str], list[Received]]:
    """The text fields and the photos (read whole, at most MAX_PHOTOS, none stored yet)."""
    try:
        reader = MultipartReader(request.headers.get("content-type"), request.stream())
    except MultipartError as exc:
        raise ApiError(400, "not_multipart", "请求须为 multipart/form-data", str(exc)) from exc
    form: dict[str, str] = {}
    photos: list[Received] = []
    try:
        while (part := await reader.next_part()) is not None:
            if part.name == "photos":
                if not part.filename and part.content_type in ("", "application/octet-stream"):
                    await reader.drain(FIELD_MAX)  # an empty file input
                    continue
                received = await upload.read(reader)
                photos.append(received)
            elif part.name in FIELDS:
                raw = await reader.read_all(FIELD_MAX)
                if raw is None:
                    raise FormRefused(part.name, "填写内容过长", f"{part.name} is too long")
                form[part.name] = raw.decode("utf-8", "replace")
            else:
                await reader.drain(FIELD_MAX)
    except MultipartError as exc:
        raise ApiError(400, "bad_multipart", "上传内容不完整, 请重新提交", str(exc)) from exc
    except ApiError as exc:
        if exc.code == "photo_empty":  # a file input left empty by an older browser
            raise FormRefused("photos", "照片内容为空, 请重新选择", "an empty photo") from exc
        raise
    return form, photos


async def submit(c: Context, place: Place, request: Request,
                 typed: dict[str, str]) -> dict[str, Any]:
    """File the form; `typed` receives what was typed (to show it again on a refusal)."""
    limits = PhotoLimits(c.photo_limits.max_bytes, c.photo_limits.max_pixels, MAX_PHOTOS, 0)
    upload = PhotoUpload(c.store, c.settings.bucket_incoming, "", "before", limits, c.inspect)
    form, photos = await read_form(c, request, upload)
    typed.update(form)
    fields = check_fields(c.ref, form)
    upload.prefix = f"reports/{fields['report_id']}"
    now = c.clock()
    data = report_data(c.ref, place, fields, now)
    try:
        intake.validate_report({**data, "photos": []}, now)
    except intake.ReportInvalid as exc:
        raise ApiError(422, "invalid_report", exc.reason_zh, exc.reason_en, field=exc.field) from exc
    content = {k: fields[k] for k in ("service_code", "description", "phone", "name")}
    content["place"] = place.path()
    req_hash = request_hash(data["reporter"], content)
    ticket = intake.ticket_for(c.ref, fields["report_id"], data.get("lat"), data.get("lon"), now)
    first = ticket_body(ticket, fields["report_id"])
    job = Submission(c, fields["report_id"], ticket, req_hash, first, now, data, upload,
                     extra=extra_data(place, fields))
    steps: list[Any] = [job.take_claim]
    steps += [(lambda r=r: job.store(r)) for r in photos]
    steps.append(job.publish)
    body = await run_in_threadpool(job.run, steps)
    if body is None:  # the same form sent again: the first answer
        receipt = await settled(c, fields["report_id"])
        if receipt is None or receipt.state != "done":
            raise in_progress()
        if not receipt.same_photos(upload.photos_hash()):
            raise conflict()
        body = dict(receipt.response)
    return body


# --- routes ---------------------------------------------------------------------------------


def not_found_page(code: str) -> Response:
    return render("resident_missing.html", status=404, code=code)


@router.get("/r/t/{ticket}", summary="码上说: 凭受理编号查看办理进度 / a resident's ticket")
async def ticket_page(
    ticket: str, request: Request,
    _: Annotated[Principal | None, public("码上说: 凭受理编号查看办理进度, 无需登录")],
) -> Response:
    c = ctx(request)
    found = None
    if TICKET_RE.match(ticket):
        found = await run_in_threadpool(open311_request, c, ticket)
    if found is None:
        return render("resident_ticket.html", status=404, ticket=ticket, found=None)
    return render("resident_ticket.html", ticket=ticket, found=found,
                  new=request.query_params.get("new") == "1")


@router.get("/r/{code}", summary="码上说: 扫码上报页 / the QR-code report form")
async def form_page(
    code: str, request: Request,
    _: Annotated[Principal | None, public("码上说: 群众扫码上报, 无需登录")],
) -> Response:
    c = ctx(request)
    q = request.query_params
    place = find_place(c.ref, code, q.get("at"), q.get("n"))
    if place is None:
        return not_found_page(code)
    return render("resident_form.html", place=place, services=services(c.ref),
                  report_id=new_report_id(), typed={}, error=None, max_photos=MAX_PHOTOS,
                  action=place.path())


@router.post("/r/{code}", summary="码上说: 提交上报 / a resident sends the form",
             status_code=303)
async def form_submit(
    code: str, request: Request,
    _: Annotated[Principal | None, public("码上说: 群众扫码上报, 无需登录")],
) -> Response:
    c = ctx(request)
    q = request.query_params
    place = find_place(c.ref, code, q.get("at"), q.get("n"))
    if place is None:
        if wants_json(request):
            raise ApiError(404, "unknown_place", "二维码无效或已停用", f"no grid {code!r}")
        return not_found_page(code)
    typed: dict[str, str] = {}
    try:
        body = await submit(c, place, request, typed)
    except ApiError as exc:
        if wants_json(request):
            raise
        return render("resident_form.html", status=exc.status, place=place,
                      services=services(c.ref), report_id=typed.get("report_id") or
                      new_report_id(), typed=typed, error=exc, max_photos=MAX_PHOTOS,
                      action=place.path())
    if wants_json(request):
        return JSONResponse(body, status_code=201)
    return RedirectResponse(f"{body['ticket_url']}?new=1", status_code=303)
