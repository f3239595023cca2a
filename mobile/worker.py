"""The grid worker's phone app (掌上巡检), `/m/`: the app shell and its service worker, sign-in
over a cookie session, and the APIs the app reads: the catalogue, my reports with their
case's steps, my verification tasks, photos, and on-site verification with photos.

Reports themselves go to the ingest API (`POST /api/v1/reports`, idempotent by the report id
made on the phone), so a report queued offline and sent three times is filed once.
Guarantees: the shell and its assets hold nothing personal (cacheable offline); every API
here is for signed-in grid workers (accounts.access.allow) and reads only their own reports
and their own grids' tasks; a photo outside their scope answers 404 like a missing one.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta
from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from accounts import credentials as cred
from accounts import facts, web
from accounts.access import accounts_of, allow, credential, in_scope, not_found, public
from accounts.roles import GRID_WORKER, Principal, acting_grant, actor_of
from accounts.store import Refused
from gridflow import events as ev
from gridflow.core.refdata import ReferenceData
from mobile.web import assets, bundle_version, maybe_gzip, render, wants_json
from producers import status as report_status
from producers.commands import (
    IdemKey,
    case_of_task,
    command_id_for,
    publish_with_photos,
    task_missing,
)
from producers.context import Context, ctx
from producers.errors import ApiError
from producers.reports import read_json_part, with_multipart
from producers.uploads import PhotoLimits, PhotoUpload
from sinks.models import Case, Photo, Report, Task, TaskHistory

router = APIRouter(tags=["grid workers' app 掌上巡检"])

# What the service worker keeps for offline use: the shell and every asset it loads.
SHELL_ASSETS = ("app.css", "app.bundle.js", "icon.svg")
MY_REPORTS_LIMIT = 30
DUE_SOON = timedelta(hours=24)
FORM_MAX = 8 * 1024

Public = Annotated[Principal | None, public("掌上巡检: 应用外壳、登录页, 公开(不含个人数据)")]


def shell_version() -> str:
    return bundle_version(SHELL_ASSETS + ("sw.js", "idb.js", "queue.js"))


# --- pages ------------------------------------------------------------------------------------


@router.get("/m/", summary="掌上巡检: 应用外壳 / the app shell")
def app_shell(_: Public) -> Response:
    return render("app.html", version=shell_version())


@router.get("/m/sw.js", summary="掌上巡检: 离线缓存的 service worker", include_in_schema=False)
def service_worker(_: Public) -> Response:
    """The service worker with this build's asset URLs in it (a new build: a new worker)."""
    urls = ["/m/", *(assets()[n].url for n in SHELL_ASSETS), "/m/manifest.webmanifest"]
    head = (f"var GF_VERSION = {json.dumps(shell_version())};\n"
            f"var GF_SHELL = {json.dumps(urls)};\n"
            f"var GF_QUEUE = {json.dumps(assets()['queue.js'].url)};\n"
            f"var GF_IDB = {json.dumps(assets()['idb.js'].url)};\n")
    body = head + assets()["sw.js"].body.decode("utf-8")
    return Response(body, media_type="text/javascript; charset=utf-8",
                    headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/m/",
                             "X-Content-Type-Options": "nosniff"})


@router.get("/m/manifest.webmanifest", summary="掌上巡检: web app manifest",
            include_in_schema=False)
def manifest(_: Public) -> Response:
    doc = {"name": "掌上巡检 · 网格员", "short_name": "掌上巡检", "lang": "zh-CN",
           "start_url": "/m/", "scope": "/m/", "display": "standalone",
           "background_color": "#f3f4f6", "theme_color": "#b71c1c",
           "icons": [{"src": assets()["icon.svg"].url, "sizes": "any",
                      "type": "image/svg+xml"}]}
    return Response(json.dumps(doc, ensure_ascii=False), media_type="application/manifest+json",
                    headers={"Cache-Control": "no-cache"})


@router.get("/m/sign-in", summary="掌上巡检: 登录页 / sign-in page")
def sign_in_page(request: Request, _: Public) -> Response:
    csrf = web.login_csrf(request)
    response = render("sign_in.html", csrf=csrf, login="", error=None)
    web.set_login_csrf(response, request, request.app.state.ctx.settings, csrf)
    return response


async def _form(request: Request) -> dict[str, str]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > FORM_MAX:
        return {}
    try:
        form = await request.form(max_files=0, max_fields=20)
    except Exception:  # noqa: BLE001 - not a form: an empty one
        return {}
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _csrf_ok(request: Request, form: dict[str, str]) -> bool:
    import hmac

    cookie = request.cookies.get(web.LOGIN_CSRF_COOKIE, "")
    sent = form.get("csrf", "")
    return bool(cookie) and bool(sent) and hmac.compare_digest(cookie.encode(), sent.encode())


@router.post("/m/sign-in", summary="掌上巡检: 登录 / sign in (form)")
async def sign_in(request: Request, _: Public) -> Response:
    c = ctx(request)
    form = await _form(request)
    login = form.get("login", "")[:64]
    csrf = web.login_csrf(request)

    def again(zh: str, status: int, field: str | None = None, en: str = "") -> Response:
        if wants_json(request):
            response: Response = JSONResponse({"code": "sign_in_refused", "field": field,
                                               "message_zh": zh, "message_en": en or zh},
                                              status_code=status)
        else:
            response = render("sign_in.html", status=status, csrf=csrf, login=login,
                              error={"message_zh": zh, "field": field})
        web.set_login_csrf(response, request, c.settings, csrf)
        return response

    if not _csrf_ok(request, form):
        return again("页面已过期, 请重新提交", 403, en="the form expired: send it again")
    try:
        signed = await run_in_threadpool(
            accounts_of(request).sign_in, form.get("login", ""), form.get("password", ""),
            request.client.host if request.client else "unknown",
            request.headers.get("user-agent", ""))
    except Refused as exc:
        response = again(exc.zh, exc.status, exc.field, exc.en)
        if exc.retry_after_s:
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    if not signed.principal.has(GRID_WORKER):
        await run_in_threadpool(accounts_of(request).sign_out, signed.token)
        return again("掌上巡检仅供网格员使用; 其他岗位请使用对应的工作台", 403,
                     en="the grid workers' app is for grid workers only")
    response = (JSONResponse({"signed_in": True}) if wants_json(request)
                else RedirectResponse("/m/", status_code=303))
    web.set_session_cookie(response, request, c.settings, signed.token, signed.expires_at,
                           accounts_of(request).clock())
    response.delete_cookie(web.LOGIN_CSRF_COOKIE, path="/")
    return response


@router.get("/m/password", summary="掌上巡检: 首次登录设置密码 / set a password with the code")
def password_page(request: Request, _: Public) -> Response:
    csrf = web.login_csrf(request)
    login = request.query_params.get("login", "")[:64]
    response = render("password.html", csrf=csrf, login=login, error=None)
    web.set_login_csrf(response, request, request.app.state.ctx.settings, csrf)
    return response


@router.post("/m/password", summary="掌上巡检: 设置密码并登录 / set the password, signed in")
async def set_password(request: Request, _: Public) -> Response:
    c = ctx(request)
    form = await _form(request)
    login = form.get("login", "")[:64]
    csrf = web.login_csrf(request)

    def again(zh: str, status: int, field: str | None = None) -> Response:
        response = render("password.html", status=status, csrf=csrf, login=login,
                          error={"message_zh": zh, "field": field})
        web.set_login_csrf(response, request, c.settings, csrf)
        return response

    if not _csrf_ok(request, form):
        return again("页面已过期, 请重新提交", 403)
    if form.get("new_password", "") != form.get("confirm", ""):
        return again("两次输入的新密码不一致", 422, "confirm")
    try:
        signed = await run_in_threadpool(
            accounts_of(request).set_password, login, form.get("code", ""),
            form.get("new_password", ""), request.client.host if request.client else "unknown",
            request.headers.get("user-agent", ""))
    except Refused as exc:
        return again(exc.zh, exc.status, exc.field)
    response = RedirectResponse("/m/", status_code=303)
    web.set_session_cookie(response, request, c.settings, signed.token, signed.expires_at,
                           accounts_of(request).clock())
    response.delete_cookie(web.LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/m/sign-out", summary="掌上巡检: 退出登录 / sign out")
async def sign_out(request: Request, caller: Annotated[Principal, allow("self.read")]) -> Response:
    token = getattr(request.state, "session_token", None) or credential(request)[0]
    if token:
        await run_in_threadpool(accounts_of(request).sign_out, token)
    response = RedirectResponse("/m/sign-in", status_code=303)
    web.clear_session_cookie(response, request, ctx(request).settings)
    return response


# --- what the app reads -----------------------------------------------------------------------


def my_grids(caller: Principal) -> list[str]:
    return sorted(caller.scopes(GRID_WORKER))


@router.get("/m/api/me", summary="掌上巡检: 当前网格员 / who is signed in")
def me(request: Request, caller: Annotated[Principal, allow("report.submit")]) -> JSONResponse:
    c = ctx(request)
    token = getattr(request.state, "session_token", None)
    grids = my_grids(caller)
    return JSONResponse({
        "account_id": caller.account_id, "name": caller.name,
        "grids": [{"code": g, "name": c.ref.area_name(g)} for g in grids],
        "csrf": cred.csrf_token(token) if token else None,
        "catalogue": catalogue_version(c.ref),
    }, headers={"Cache-Control": "no-store"})


def catalogue(ref: ReferenceData) -> dict[str, Any]:
    """Categories (searchable by name, class and the Open311 keywords that lead to them),
    severity levels and the grids' outlines (the phone finds the grid of a point offline)."""
    keywords: dict[str, set[str]] = {}
    for s in ref.services.values():
        keywords.setdefault(s.category_code, set()).update([s.service_name, *s.keywords])
    cats = [{"code": cat.code, "name": cat.name, "class": cat.class_name,
             "keywords": sorted(keywords.get(cat.code, set()) - {cat.name}),
             "severities": list(cat.severities), "default_severity": cat.default_severity}
            for cat in ref.categories.values() if cat.enabled]
    grids = [{"code": g.code, "name": g.name,
              "township": ref.area_name(g.township_code), "village": ref.area_name(g.village_code),
              "bbox": [g.bbox.min_lon, g.bbox.min_lat, g.bbox.max_lon, g.bbox.max_lat],
              "polygons": [[[list(p) for p in ring] for ring in poly] for poly in g.polygons]}
             for g in ref.grids.values()]
    return {"version": ref.digest[:12], "county": ref.county.name, "categories": cats,
            "severities": {str(k): v.name for k, v in ref.severity_levels.items()},
            "grids": grids}


def catalogue_version(ref: ReferenceData) -> str:
    return ref.digest[:12]


@cache
def catalogue_bytes(ref: ReferenceData) -> tuple[bytes, bytes]:
    """The catalogue as JSON and gzipped (made once per reference data)."""
    body = json.dumps(catalogue(ref), ensure_ascii=False, separators=(",", ":")).encode()
    return body, gzip.compress(body, 9, mtime=0)


@router.get("/m/api/catalogue", summary="掌上巡检: 问题类别与网格 / categories and grids")
def get_catalogue(request: Request,
                  _: Annotated[Principal, allow("report.submit")]) -> Response:
    body, gz = catalogue_bytes(ctx(request).ref)
    return maybe_gzip(request, body, gz, "application/json", {"Cache-Control": "no-cache"})


# --- my reports -------------------------------------------------------------------------------

MAIN_STEPS = (  # what a grid worker follows, in order: (event type, step, state once reached)
    (ev.CASE_FILED, "立案", "已立案"),
    (ev.TASK_DISPATCHED, "派遣", "已派遣"),
    (ev.TASK_SIGNED, "签收", "已签收"),
    (ev.TASK_RESOLVED, "办结", "已办结"),
    (ev.TASK_VERIFIED, "核查", "已核查"),
    (ev.CASE_CLOSED, "结案", "已结案"),
)


def follow(view: dict[str, Any]) -> dict[str, Any]:
    """A report's steps as the app shows them: 立案 / 派遣 / 签收 / 办结 / 核查 / 结案, each with
    when it happened; 不予立案 with the reason; 已并案 with the case it joined."""
    timeline = view.get("timeline") or []
    first: dict[str, str] = {}
    for step in timeline:
        first.setdefault(str(step.get("type")), str(step.get("at") or ""))
    steps = [{"step": name, "at": first.get(kind), "done": kind in first}
             for kind, name, _ in MAIN_STEPS]
    reached = [state for kind, _, state in MAIN_STEPS if kind in first]
    state = reached[-1] if reached else "已受理"
    if ev.TASK_REOPENED in first and ev.CASE_CLOSED not in first:
        last_reopen = max(str(s.get("at")) for s in timeline if s.get("type") == ev.TASK_REOPENED)
        last_resolve = max((str(s.get("at")) for s in timeline
                            if s.get("type") == ev.TASK_RESOLVED), default="")
        if last_reopen >= last_resolve:
            state = "返工中"
    out: dict[str, Any] = {"state": state, "steps": steps}
    if view.get("status") == "not_filed":
        out.update(state="不予立案", steps=[], reason=(view.get("not_filed") or {}).get("reason_zh"))
    elif view.get("merged"):
        out.update(state=f"已并案 · {state}", merged_into=view.get("case_id"))
    return out


def my_reports(c: Context, caller: Principal) -> list[dict[str, Any]]:
    prefix = f"worker:{caller.account_id}@"
    with Session(c.engine) as session:
        ids = [r for (r,) in session.execute(
            select(Report.report_id).where(Report.reporter.startswith(prefix, autoescape=True))
            .order_by(Report.submitted_at.desc()).limit(MY_REPORTS_LIMIT))]
        out = []
        for report_id in ids:
            found = report_status_query(session, report_id)
            if found is None:
                continue
            view = report_status.report_view(c.ref, found, lambda *_: None, False)
            description = session.execute(select(Report.description)
                                          .where(Report.report_id == report_id)).scalar()
            out.append({"report_id": report_id, "case_id": view["case_id"],
                        "category_name": view.get("category_name"),
                        "grid_name": view.get("grid_name"), "description": description,
                        "submitted_at": view.get("submitted_at"), **follow(view)})
    return out


def report_status_query(session: Session, report_id: str) -> dict[str, Any] | None:
    from sinks import queries

    found = queries.report_status(session, report_id)
    if found is not None:
        found["timeline"] = report_status.case_steps(session, found["case_id"])
    return found


@router.get("/m/api/reports", summary="掌上巡检: 我的上报 / my reports and their steps")
async def get_my_reports(
    request: Request, caller: Annotated[Principal, allow("report.submit")]
) -> JSONResponse:
    rows = await run_in_threadpool(my_reports, ctx(request), caller)
    return JSONResponse({"reports": report_status.jsonable(rows)},
                        headers={"Cache-Control": "no-store"})


# --- my tasks: on-site verification -----------------------------------------------------------


def due_state(due: datetime | None, now: datetime) -> str:
    if due is None:
        return ""
    if due <= now:
        return "late"
    return "near" if due - now <= DUE_SOON else "ok"


def my_tasks(c: Context, caller: Principal) -> list[dict[str, Any]]:
    """The resolved tasks of cases in the caller's grids, awaiting verification on site."""
    grids = my_grids(caller)
    now = c.clock()
    out = []
    with Session(c.engine) as session:
        rows = session.execute(
            select(Task, Case).join(Case, Case.case_id == Task.case_id)
            .where(Task.state == "resolved", Case.grid_code.in_(grids))
            .order_by(Task.verify_due.asc().nulls_last(), Task.task_id)).all()
        for task, case in rows:
            photos = session.execute(
                select(Photo.id).where(Photo.task_id == task.task_id, Photo.role == "after")
                .order_by(Photo.added_at, Photo.id)).scalars().all()
            before = session.execute(
                select(Photo.id).where(Photo.case_id == case.case_id, Photo.role == "before")
                .order_by(Photo.added_at, Photo.id).limit(3)).scalars().all()
            note = session.execute(
                select(TaskHistory.summary).where(TaskHistory.task_id == task.task_id,
                                                  TaskHistory.type == ev.TASK_RESOLVED)
                .order_by(TaskHistory.seq.desc()).limit(1)).scalar()
            out.append({
                "task_id": task.task_id, "case_id": case.case_id,
                "category_name": case.category_name, "description": case.description,
                "address": case.address, "grid_name": c.ref.area_name(case.grid_code or ""),
                "department": task.department,
                "department_name": report_status.department_name(c.ref, task.department),
                "resolved_at": task.resolved_at, "verify_due": task.verify_due,
                "due": due_state(task.verify_due, now),
                "resolution_note": (note or {}).get("note") if isinstance(note, dict) else None,
                "after_photos": [f"/m/api/photos/{p}" for p in photos],
                "before_photos": [f"/m/api/photos/{p}" for p in before],
            })
    return out


@router.get("/m/api/tasks", summary="掌上巡检: 我的待办(核查) / cases to verify on site")
async def get_my_tasks(
    request: Request, caller: Annotated[Principal, allow("task.verify")]
) -> JSONResponse:
    rows = await run_in_threadpool(my_tasks, ctx(request), caller)
    return JSONResponse({"tasks": report_status.jsonable(rows)},
                        headers={"Cache-Control": "no-store"})


def photo_bytes(c: Context, caller: Principal, photo_id: str) -> tuple[bytes, str] | None:
    """The photo's thumbnail once archived, else the uploaded copy; None outside the scope."""
    with Session(c.engine) as session:
        photo = session.get(Photo, photo_id)
        if photo is None:
            return None
        bucket_key = ((photo.archive_bucket, photo.thumbnail_key, photo.thumbnail_version_id)
                      if photo.archive_status == "archived" and photo.thumbnail_key
                      else (photo.incoming_bucket, photo.incoming_key, None))
        case_id, content_type = photo.case_id, photo.content_type or "image/jpeg"
    if not in_scope(caller, facts.case_facts(c.engine, case_id)):
        return None
    bucket, key, version = bucket_key  # the recorded version: a later DELETE hides nothing
    client = getattr(c.store, "client", None)
    if client is None or not bucket or not key:
        return None
    try:
        response = client.get_object(bucket, key, version_id=version or None)
        try:
            return response.read(), ("image/jpeg" if key == photo.thumbnail_key else content_type)
        finally:
            response.close()
            response.release_conn()
    except Exception:  # noqa: BLE001 - gone (archived and removed meanwhile): as missing
        return None


@router.get("/m/api/photos/{photo_id}", summary="掌上巡检: 照片 / a photo of a case in scope")
async def get_photo(
    photo_id: str, request: Request, caller: Annotated[Principal, allow("photo.read")]
) -> Response:
    found = await run_in_threadpool(photo_bytes, ctx(request), caller, photo_id)
    if found is None:
        raise not_found("photo_not_found", "未找到该照片", f"no photo {photo_id!r}")
    data, content_type = found
    return Response(data, media_type=content_type,
                    headers={"Cache-Control": "private, max-age=86400"})


VERIFY_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["verification"],
    "properties": {"verification": {"type": "string",
                                    "description": 'JSON: {"passed": true|false, "note": "...", '
                                                   '"reason": "..." (不通过时必填)}'},
                   "photos": {"type": "array", "items": {"type": "string", "format": "binary"},
                              "description": "0–9 张核查照片 / verification photos"}}}}}}}


@router.post("/m/api/tasks/{task_id}/verification", status_code=202, openapi_extra=VERIFY_DOC,
             summary="掌上巡检: 现场核查(通过或不通过, 可附照片) / verify on site with photos")
async def verify_on_site(
    task_id: str, request: Request, caller: Annotated[Principal, allow("task.verify")],
    idempotency_key: IdemKey = None,
) -> JSONResponse:
    c = ctx(request)
    case_id = case_of_task(task_id)
    found = await run_in_threadpool(facts.task_facts, c.engine, task_id)
    if found is None or not in_scope(caller, found):
        raise task_missing(task_id)
    grant = acting_grant(caller, "task.verify", found)
    if grant is None or grant.role != GRID_WORKER:  # a supervisor verifies from the console
        raise ApiError(403, "grid_workers_only", "现场核查(掌上巡检)仅供本网格的网格员使用",
                       "on-site verification in the app is for the case's grid workers")
    actor = actor_of(caller, grant)

    async def handle(reader: Any) -> JSONResponse:
        part = await read_json_part(reader, "verification")
        passed = part.get("passed")
        if not isinstance(passed, bool):
            raise ApiError(422, "invalid_verification", "请选择核查结果(通过或不通过)",
                           "passed must be true or false", field="passed")
        text = " ".join(str(part.get("reason" if not passed else "note") or "").split())[:1000]
        if not passed and not text:
            raise ApiError(422, "reason_required", "核查不通过, 请说明原因",
                           "a failed verification needs a reason", field="reason")
        kind = ev.VERIFY_TASK if passed else ev.REJECT_TASK
        command_id = command_id_for(actor, kind, task_id, idempotency_key)
        limits = PhotoLimits(c.photo_limits.max_bytes, c.photo_limits.max_pixels, 9, 0)
        upload = PhotoUpload(c.store, c.settings.bucket_incoming,
                             f"tasks/{task_id}/{command_id[:12]}", "verification", limits,
                             c.inspect)
        return await publish_with_photos(
            c, reader, upload, actor, kind, case_id,
            lambda photos: {"task_id": task_id, "photos": photos,
                            **({"note": text} if passed else {"reason": text})},
            idempotency_key, command_id)

    return await with_multipart(request, handle)

