"""The pages' common doors: signing in and out with the session cookie, the home page, the
local static assets, and photos (EXIF-free thumbnails; originals for the roles that may see them).

Sign-in answers with the accounts store's refusals in Chinese beside the field; a session token
lives only in an HttpOnly, SameSite=Lax cookie.
"""

from __future__ import annotations

import hmac
import mimetypes
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from accounts import facts, web
from accounts.access import (
    accounts_of,
    allow,
    credential,
    in_scope,
    not_found,
    public,
)
from accounts.roles import (
    GRID_WORKER,
    ORIGINAL_PHOTO_ROLES,
    ROLE_NAMES_ZH,
    Principal,
    sees_originals,
)
from accounts.store import Refused
from producers.context import ctx
from producers.errors import ApiError
from sinks.models import Photo
from workbench.commands import FormError
from workbench.web import (
    departments_of,
    page_headers,
    render,
    safe_next,
    see_other,
    supervises,
)

router = APIRouter(tags=["workbench 部门工作台"], include_in_schema=False)

STATIC = resources.files("workbench") / "static"
STATIC_NAMES = frozenset({"workbench.css", "workbench.js", "photo-pending.svg"})


def _sign_in_form(request: Request, status: int, errors: list[FormError], login: str,
                  target: str) -> Response:
    csrf = web.login_csrf(request)  # double submit: no session yet to bind a token to
    response = render(request, "sign_in.html", status=status, title="登录", section="登录",
                      errors=errors, login=login, next=target, login_csrf=csrf)
    web.set_login_csrf(response, request, ctx(request).settings, csrf)
    return response


@router.get("/w/sign-in", summary="登录页 / sign-in page")
def sign_in_page(
    request: Request, _: Annotated[Principal | None, public("登录页: 公开")], next: str = ""
) -> Response:
    return _sign_in_form(request, 200, [], "", safe_next(next))


@router.post("/w/sign-in", summary="登录 / sign in (form)")
async def sign_in(
    request: Request, _: Annotated[Principal | None, public("登录: 公开")]
) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    login = str(form.get("login") or "").strip()[:64]
    password = str(form.get("password") or "")
    target = safe_next(str(form.get("next") or ""))
    cookie = request.cookies.get(web.LOGIN_CSRF_COOKIE, "")
    sent = str(form.get("login_csrf") or "")
    if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
        return _sign_in_form(request, 403, [FormError("login", "页面已过期, 请重新登录")], login,
                             target)
    errors = []
    if not login:
        errors.append(FormError("login", "请输入账号名或手机号"))
    if not password:
        errors.append(FormError("password", "请输入密码"))
    if not errors:
        store = accounts_of(request)
        try:
            signed = await run_in_threadpool(store.sign_in, login, password,
                                             web.client_address(request),
                                             request.headers.get("user-agent", ""))
        except Refused as exc:
            field = exc.field if exc.field in ("login", "password") else "password"
            errors.append(FormError(field, exc.zh))
            response = _sign_in_form(request, exc.status, errors, login, target)
            if exc.retry_after_s:
                response.headers["Retry-After"] = str(exc.retry_after_s)
            return response
        response = see_other(target)
        web.set_session_cookie(response, request, ctx(request).settings, signed.token,
                               signed.expires_at, store.clock())
        response.delete_cookie(web.LOGIN_CSRF_COOKIE, path="/")
        return response
    return _sign_in_form(request, 422, errors, login, target)


@router.post("/w/sign-out", summary="退出登录 / sign out (form)")
async def sign_out(
    request: Request, caller: Annotated[Principal, allow("self.read")]
) -> Response:
    token, from_cookie = credential(request)
    if token:
        await run_in_threadpool(accounts_of(request).sign_out, token)
    response = see_other("/w/sign-in")
    if from_cookie:
        web.clear_session_cookie(response, request, ctx(request).settings)
    return response


@router.get("/w/", summary="工作台首页 / the caller's start page")
def home(request: Request, caller: Annotated[Principal, allow("self.read")]) -> Response:
    depts = departments_of(caller)
    if caller.roles() == {GRID_WORKER}:
        return see_other("/m/")  # grid workers work from their phones
    if len(depts) == 1 and not supervises(caller):
        return see_other(f"/w/d/{depts[0]}/inbox")
    if supervises(caller) and not depts:
        return see_other("/s/")
    return render(request, "home.html", caller=caller, title="首页")


@router.get("/w/static/{name}", summary="页面静态资源 / the pages' own assets")
def static(name: str, _: Annotated[Principal | None, public("静态资源(样式、脚本): 公开")]) -> Response:
    if name not in STATIC_NAMES:
        raise not_found("asset_not_found", "未找到该资源", "no such asset")
    data = (STATIC / name).read_bytes()
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name.endswith(".js"):
        media = "text/javascript"
    return Response(data, media_type=media, headers={
        "Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"})


# --- photos -------------------------------------------------------------------------------------


def no_photo() -> Any:
    return not_found("photo_not_found", "照片不存在", "no such photo", field="photo_id")


def _photo(c: Any, photo_id: str) -> dict[str, Any] | None:
    with Session(c.engine) as session:
        row = session.execute(select(Photo.__table__).where(Photo.id == photo_id)).mappings().first()
    return dict(row) if row is not None else None


def _read(c: Any, bucket: str | None, key: str | None,
          version_id: str | None = None) -> bytes | None:
    """The object's bytes (the recorded version when known: a later delete or overwrite at
    the key does not change what is shown); None if there is none."""
    from objectstore import read_object

    client = getattr(c.store, "client", None)
    if client is None or not bucket or not key:
        return None
    return read_object(client, bucket, key, version_id)


async def _photo_in_scope(request: Request, caller: Principal, photo_id: str) -> tuple[Any, Any]:
    c = ctx(request)
    if len(photo_id) > 40 or not photo_id.isalnum():
        raise no_photo()
    photo = await run_in_threadpool(_photo, c, photo_id)
    if photo is None:
        raise no_photo()
    found = await run_in_threadpool(facts.case_facts, c.engine, photo["case_id"])
    if not in_scope(caller, found):
        raise no_photo()
    return photo, found


@router.get("/w/photos/{photo_id}/thumb", summary="照片缩略图 / EXIF-free thumbnail")
async def thumbnail(
    photo_id: str, request: Request, caller: Annotated[Principal, allow("photo.read")]
) -> Response:
    c = ctx(request)
    photo, _ = await _photo_in_scope(request, caller, photo_id)
    data = await run_in_threadpool(_read, c, photo.get("archive_bucket") or
                                   c.settings.bucket_archive, photo.get("thumbnail_key"),
                                   photo.get("thumbnail_version_id"))
    if data is None:  # not archived yet: a placeholder saying so
        svg = (STATIC / "photo-pending.svg").read_bytes()
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=86400"})


@router.get("/w/photos/{photo_id}/original", summary="照片原图 / the original photo")
async def original(
    photo_id: str, request: Request, caller: Annotated[Principal, allow("photo.read")]
) -> Response:
    c = ctx(request)
    photo, found = await _photo_in_scope(request, caller, photo_id)
    if not sees_originals(caller, found):
        who = "、".join(ROLE_NAMES_ZH[r] for r in ORIGINAL_PHOTO_ROLES)
        raise ApiError(403, "original_not_allowed", f"原图仅限{who}查看, 请查看缩略图",
                       "originals are for grid workers, department staff and auditors")
    archived = photo.get("archive_status") == "archived" and photo.get("archive_key")
    bucket = photo.get("archive_bucket") if archived else photo.get("incoming_bucket")
    key = photo.get("archive_key") if archived else photo.get("incoming_key")
    version = photo.get("archive_version_id") if archived else None
    data = await run_in_threadpool(_read, c, bucket, key, version)
    if data is None:
        raise no_photo()
    headers = {**page_headers(), "Cache-Control": "private, max-age=3600"}
    return Response(data, media_type=photo.get("content_type") or "image/jpeg", headers=headers)
