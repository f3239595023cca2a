"""What browsers get from every gridflow app: security headers, the session cookie, the
sign-in form's CSRF cookie, and a script-free page documenting the API.

Guarantees: every response carries X-Content-Type-Options, a Referrer-Policy and a CSP with no
inline script and no source but the app itself; pages may be framed only by the hosts
configured (GRIDFLOW_FRAME_ANCESTORS, e.g. 企业微信 / 钉钉); the session cookie is HttpOnly,
SameSite=Lax, and Secure behind TLS.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from html import escape
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from accounts.access import SESSION_COOKIE
from accounts.store import SessionPolicy
from gridflow.settings import Settings

LOGIN_CSRF_COOKIE = "gridflow_login_csrf"


def session_policy(settings: Settings) -> SessionPolicy:
    return SessionPolicy(idle=timedelta(minutes=settings.session_idle_minutes),
                         absolute=timedelta(hours=settings.session_max_hours))


def content_security_policy(settings: Settings) -> str:
    ancestors = " ".join(["'self'", *settings.frame_ancestors.split()])
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; "
            f"frame-ancestors {ancestors}")


class SecurityHeaders:
    """Adds the security headers to every response of the app (a header the response sets
    itself is kept). Pure ASGI: the request body and the response pass through untouched, with
    no task group and no stream per request (Starlette's BaseHTTPMiddleware cost an upload
    about a millisecond of CPU; docs/PERFORMANCE.md)."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        always = [(b"content-security-policy", content_security_policy(settings).encode()),
                  (b"x-content-type-options", b"nosniff"),
                  (b"referrer-policy", b"same-origin")]
        if not settings.frame_ancestors.split():  # browsers without CSP: same origin only
            always.append((b"x-frame-options", b"SAMEORIGIN"))
        self.always = tuple(always)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = is_secure(Request(scope), self.settings)

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                extra = list(self.always)
                if secure:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/html"):
                    extra.append((b"cache-control", b"no-store"))
                headers += [(n, v) for n, v in extra if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def install_security(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(SecurityHeaders, settings=settings)


def is_secure(request: Request, settings: Settings) -> bool:
    """Whether the browser reached us over TLS (the cookie's Secure flag follows it)."""
    if settings.cookie_secure in ("1", "true", "yes"):
        return True
    if settings.cookie_secure in ("0", "false", "no"):
        return False
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def client_address(request: Request) -> str:
    """The client's address: the peer's, or — when the peer is one of the configured trusted
    proxies (GRIDFLOW_TRUSTED_PROXIES) — the last address X-Forwarded-For names before it."""
    peer = request.client.host if request.client else "unknown"
    settings: Settings | None = getattr(request.app.state, "settings", None)
    trusted = set(settings.trusted_proxies.split()) if settings else set()
    if peer not in trusted:
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    while hops and hops[-1] in trusted:
        hops.pop()
    return hops[-1][:64] if hops else peer


def set_session_cookie(response: Response, request: Request, settings: Settings, token: str,
                       expires_at: datetime, now: datetime) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=max(1, int((expires_at - now)
                                                                   .total_seconds())),
                        path="/", httponly=True, samesite="lax",
                        secure=is_secure(request, settings))


def clear_session_cookie(response: Response, request: Request, settings: Settings) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=is_secure(request, settings))


def login_csrf(request: Request) -> str:
    """The sign-in form's CSRF value: the browser's cookie, or a new one (set it with
    `set_login_csrf`). Signing in needs no session yet, so the form and the cookie must match
    (double submit): another site cannot read the cookie to forge the form."""
    value = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    return value if 20 <= len(value) <= 64 and value.isascii() else secrets.token_urlsafe(24)


def set_login_csrf(response: Response, request: Request, settings: Settings, value: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, value, max_age=3600, path="/", httponly=True,
                        samesite="lax", secure=is_secure(request, settings))


def safe_next(value: str | None, default: str = "/") -> str:
    """Where to go after signing in: a path of this site only (never //host or a scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(ch) < 32 for ch in value):
        return default
    return value


# --- the API's documentation, without scripts or a CDN ---------------------------------------

def docs_page(spec: dict[str, Any], rules: dict[tuple[str, str], str],
              stylesheet: str | None = None) -> str:
    """The OpenAPI document as one HTML page: every path, method, summary and who may call it
    (`rules`: (METHOD, path) → description). The JSON is at the spec's own URL."""
    rows = []
    for path, ops in sorted(spec.get("paths", {}).items()):
        for method, op in sorted(ops.items()):
            who = rules.get((method.upper(), path), "")
            rows.append(f"<tr><td><code>{escape(method.upper())}</code></td>"
                        f"<td><code>{escape(path)}</code></td>"
                        f"<td>{escape(str(op.get('summary', '')))}</td><td>{escape(who)}</td></tr>")
    info = spec.get("info", {})
    return ('<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
            f"<title>{escape(str(info.get('title', 'API')))}</title>"
            + (f'<link rel="stylesheet" href="{escape(stylesheet)}">' if stylesheet else "")
            + "</head><body>"
            f"<header><h1>{escape(str(info.get('title', 'API')))}</h1>"
            "<p>接口一览与调用权限 / routes and who may call them · 机器可读的 OpenAPI 文档: "
            '<a href="openapi.json">openapi.json</a></p></header><main><section>'
            "<table><tr><th>方法</th><th>路径</th><th>说明</th><th>谁可调用 / who may call</th></tr>"
            f"{''.join(rows)}</table></section></main></body></html>")


def access_summary(app: FastAPI) -> dict[tuple[str, str], str]:
    """(METHOD, path) → who may call it, in Chinese and role codes, from the routes' rules."""
    from accounts.access import rule_of, served_routes
    from accounts.roles import ACTIONS, ROLE_NAMES_ZH

    out: dict[tuple[str, str], str] = {}
    for method, path, route in served_routes(app):
        rules = rule_of(route)
        if not rules:
            continue
        rule = rules[0]
        if rule.public:
            out[(method, path)] = f"公开 public · {rule.note}"
        else:
            assert rule.action is not None
            roles = ACTIONS[rule.action].roles
            out[(method, path)] = ("、".join(ROLE_NAMES_ZH[r] for r in roles)
                                   + f" ({rule.action})")
    return out
