"""The one access dependency: every HTTP route, API and pages, declares who may call it.

`allow("task.sign")` is a FastAPI dependency that finds the caller (a bearer session token or
API key, or the browser's session cookie), answers 401 without one and 403 (reason in Chinese
and English) for a role the action is not for, and hands the route the caller. `public("...")`
declares a route anyone may call. Each dependency carries its `Rule`, so a test can list every
route with what it declared (tests/integration/test_access_table.py).

Scope is checked by the route against what it reads (`in_scope`): an id outside the caller's
scope answers exactly as an id that does not exist, 404.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from accounts import credentials as cred
from accounts.roles import ACTIONS, CaseFacts, Principal, may, refusal, sees_case
from accounts.store import AccountStore
from producers.errors import ApiError

SESSION_COOKIE = "gridflow_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Rule:
    """What a route declared: the action it performs (accounts.roles.ACTIONS), or public."""

    action: str | None
    note: str = ""

    @property
    def public(self) -> bool:
        return self.action is None


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "未登录或登录已失效, 请重新登录",
                    "not signed in, or the session has ended: sign in again",
                    headers={"WWW-Authenticate": "Bearer"})


def wrong_role(action: str) -> ApiError:
    zh, en = refusal(action)
    return ApiError(403, "wrong_role", zh, en)


def not_found(code: str = "not_found", zh: str = "未找到", en: str = "not found",
              field: str | None = None) -> ApiError:
    return ApiError(404, code, zh, en, field=field)


def accounts_of(request: Request) -> AccountStore:
    return request.app.state.accounts  # type: ignore[no-any-return]


def credential(request: Request) -> tuple[str | None, bool]:
    """The token the request carries and whether it came from the session cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        return (token.strip() if scheme.lower() == "bearer" else "") or "", False
    cookie = request.cookies.get(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)


async def identify(request: Request) -> Principal | None:
    """The caller, None when the request carries no credential; 401 for a bad one; 403 for a
    state-changing request authenticated by the session cookie without its CSRF token (in the
    X-CSRF-Token header, or the `csrf` field of a form)."""
    token, from_cookie = credential(request)
    if token is None:
        return None
    store = accounts_of(request)
    principal = await run_in_threadpool(store.authenticate, token) if token else None
    if principal is None:
        raise unauthorized()
    if from_cookie and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        content_type = request.headers.get("content-type", "")
        if not sent and content_type.startswith("application/x-www-form-urlencoded"):
            sent = str((await request.form()).get("csrf", ""))
        if not sent or not _same(sent, cred.csrf_token(token)):
            raise csrf_refused()
    request.state.principal = principal
    request.state.session_token = token if from_cookie else None
    return principal


def csrf_refused() -> ApiError:
    return ApiError(403, "csrf", "页面已过期或来源不明, 请刷新页面后重试",
                    "missing or wrong CSRF token: reload the page and try again")


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def allow(action: str) -> Any:
    """Depends(...) for a route performing `action`: the caller (401 / 403 otherwise)."""
    if action not in ACTIONS:
        raise KeyError(f"unknown action {action!r}")

    async def dependency(request: Request) -> Principal:
        principal = await identify(request)
        if principal is None:
            raise unauthorized()
        if not may(principal, action):
            raise wrong_role(action)
        return principal

    return _declared(dependency, Rule(action))


def public(note: str) -> Any:
    """Depends(...) for a route anyone may call; a bearer credential it carries is still
    checked (the caller, or None; a stale session cookie counts as none)."""

    async def dependency(request: Request) -> Principal | None:
        token, from_cookie = credential(request)
        if not token:
            return None
        principal = await run_in_threadpool(accounts_of(request).authenticate, token)
        if principal is None and not from_cookie:  # a stale cookie: simply not signed in
            raise unauthorized()
        return principal

    return _declared(dependency, Rule(None, note))


def _declared(dependency: Callable[..., Any], rule: Rule) -> Any:
    dependency.__access_rule__ = rule  # type: ignore[attr-defined]
    dependency.__name__ = f"access_{(rule.action or 'public').replace('.', '_')}"
    return Depends(dependency)


def rule_of(route: Any) -> list[Rule]:
    """The access rules a FastAPI route declared (exactly one for every route of ours)."""
    dependant = getattr(route, "dependant", None)
    found: list[Rule] = []

    def walk(d: Any) -> None:
        for sub in d.dependencies:
            rule = getattr(sub.call, "__access_rule__", None)
            if rule is not None:
                found.append(rule)
            walk(sub)

    if dependant is not None:
        walk(dependant)
    return found


def in_scope(principal: Principal, facts: CaseFacts | None, roles: Any = None) -> bool:
    """Whether the caller may see this case (None: there is no such case)."""
    if facts is None:
        return False
    return sees_case(principal, facts, roles) if roles is not None else sees_case(principal, facts)


def acting(principal: Principal, action: str, facts: CaseFacts | None, missing: ApiError) -> Any:
    """The caller's grant to do `action` on this case: `missing` (a 404) when the caller cannot
    see the case at all, 403 when they can but none of their roles may act on it."""
    from accounts.roles import acting_grant

    if facts is None or not sees_case(principal, facts):
        raise missing
    grant = acting_grant(principal, action, facts)
    if grant is None:
        zh, en = refusal(action)
        raise ApiError(403, "out_of_scope", f"该案件不在您可办理的范围内; {zh}",
                       f"this case is outside what you may act on; {en}")
    return grant


def served_routes(app: Any) -> list[tuple[str, str, Any]]:
    """(method, path, route) of every route an app serves, routers included (HEAD rides along
    with GET): what tests/integration/test_access_table.py holds a row for."""
    try:  # FastAPI includes routers lazily: walk them
        from fastapi.routing import iter_route_contexts

        contexts = [(c.methods, c.path, c.original_route) for c in iter_route_contexts(app.routes)]
    except ImportError:  # older FastAPI: included routes are copied into app.routes
        contexts = [(getattr(r, "methods", None), getattr(r, "path", None), r)
                    for r in app.routes]
    out = []
    for methods, path, route in contexts:
        for method in sorted(methods or ()):
            if method != "HEAD" and path is not None:
                out.append((method, path, route))
    return out
