"""The board's sign-in, first-password and sign-out forms over cookie sessions.

Guarantees: the session token goes only into an HttpOnly, SameSite=Lax cookie (Secure behind
TLS); every form is CSRF-protected (sign-in and first password by a double-submit cookie,
sign-out by the session's own token); a refusal re-renders the form with the reason and writes
nothing but a failure count; after signing in the browser goes back only to a path of this site.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from accounts import web
from accounts.access import accounts_of, allow, public
from accounts.roles import Principal
from accounts.store import Refused, SignedIn
from dashboard import pages
from gridflow.settings import Settings

router = APIRouter(tags=["sign-in 登录"])
FORM_MAX = 8 * 1024  # bytes of a sign-in form: far more than its fields can hold

Caller = Annotated[Principal | None, public("登录页面: 公开")]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _form(request: Request) -> dict[str, str]:
    """The posted form's text fields ({} for anything else or an oversized body)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > FORM_MAX:
        return {}
    try:
        form = await request.form(max_files=0, max_fields=20)
    except Exception:  # noqa: BLE001 - not a form: treated as an empty one
        return {}
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _html(page: str, status: int = 200, csrf_cookie: tuple[Request, str] | None = None) -> Response:
    response = HTMLResponse(page, status_code=status)
    if csrf_cookie:
        request, value = csrf_cookie
        web.set_login_csrf(response, request, _settings(request), value)
    return response


def _csrf_ok(request: Request, form: dict[str, str]) -> bool:
    import hmac

    cookie = request.cookies.get(web.LOGIN_CSRF_COOKIE, "")
    sent = form.get("csrf", "")
    return bool(cookie) and bool(sent) and hmac.compare_digest(cookie.encode(), sent.encode())


CSRF_ERROR = ("页面已过期, 请重新提交", "csrf", None)


def _signed_in(request: Request, signed: SignedIn, next_path: str) -> Response:
    response = RedirectResponse(web.safe_next(next_path), status_code=303)
    web.set_session_cookie(response, request, _settings(request), signed.token,
                           signed.expires_at, accounts_of(request).clock())
    response.delete_cookie(web.LOGIN_CSRF_COOKIE, path="/")
    return response


def _client(request: Request) -> str:
    return web.client_address(request)


@router.get("/sign-in", response_class=HTMLResponse, summary="登录页 / sign-in page")
def sign_in_form(request: Request, _: Caller, next: str = "/") -> Response:
    csrf = web.login_csrf(request)
    return _html(pages.sign_in_page(csrf, web.safe_next(next)), csrf_cookie=(request, csrf))


@router.post("/sign-in", response_class=HTMLResponse, summary="登录 / sign in (form)")
async def sign_in(request: Request, _: Caller) -> Response:
    form = await _form(request)
    login, next_path = form.get("login", "")[:64], web.safe_next(form.get("next"))
    csrf = web.login_csrf(request)
    if not _csrf_ok(request, form):
        return _html(pages.sign_in_page(csrf, next_path, login, CSRF_ERROR), 403,
                     (request, csrf))
    try:
        signed = await run_in_threadpool(accounts_of(request).sign_in, form.get("login", ""),
                                         form.get("password", ""), _client(request),
                                         request.headers.get("user-agent", ""))
    except Refused as exc:
        page = pages.sign_in_page(csrf, next_path, login, (exc.zh, exc.code, exc.field))
        response = _html(page, exc.status, (request, csrf))
        if exc.retry_after_s:
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    return _signed_in(request, signed, next_path)


@router.get("/password", response_class=HTMLResponse,
            summary="首次登录 / 重置后设置密码 / set a password with the one-time code")
def password_form(request: Request, _: Caller, next: str = "/", login: str = "") -> Response:
    csrf = web.login_csrf(request)
    return _html(pages.password_page(csrf, web.safe_next(next), login[:64]),
                 csrf_cookie=(request, csrf))


@router.post("/password", response_class=HTMLResponse, summary="设置密码 / set the password")
async def set_password(request: Request, _: Caller) -> Response:
    form = await _form(request)
    login, next_path = form.get("login", "")[:64], web.safe_next(form.get("next"))
    csrf = web.login_csrf(request)

    def again(error: tuple[str, str, str | None], status: int) -> Response:
        return _html(pages.password_page(csrf, next_path, login, error), status, (request, csrf))

    if not _csrf_ok(request, form):
        return again(CSRF_ERROR, 403)
    if form.get("new_password", "") != form.get("confirm", ""):
        return again(("两次输入的新密码不一致", "password_mismatch", "confirm"), 422)
    try:
        signed = await run_in_threadpool(
            accounts_of(request).set_password, form.get("login", ""), form.get("code", ""),
            form.get("new_password", ""), _client(request), request.headers.get("user-agent", ""))
    except Refused as exc:
        return again((exc.zh, exc.code, exc.field), exc.status)
    return _signed_in(request, signed, next_path)


@router.post("/sign-out", summary="退出登录(本账号的全部登录) / sign out everywhere")
async def sign_out(request: Request, caller: Annotated[Principal, allow("self.read")]) -> Response:
    token = getattr(request.state, "session_token", None) or _bearer(request)
    await run_in_threadpool(accounts_of(request).sign_out, token or "")
    response = RedirectResponse("/sign-in", status_code=303)
    web.clear_session_cookie(response, request, _settings(request))
    return response


def _bearer(request: Request) -> str | None:
    from accounts.access import credential

    token, _ = credential(request)
    return token


def stylesheet_response() -> Any:
    return Response(pages.stylesheet(), media_type="text/css",
                    headers={"Cache-Control": "public, max-age=3600"})
