"""Signing in and out over HTTP (the phone app, the workbench, scripts), and the
administrators' view of accounts: `/api/v1/auth/*`, `/api/v1/admin/accounts`.

Guarantee: a token is answered once, to the request that signed in; every refusal carries
{code, field, message_zh, message_en}; a refused request writes nothing but its failure count.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from accounts import credentials as cred
from accounts.access import accounts_of, allow, credential, public
from accounts.roles import ROLE_NAMES_ZH, Principal
from accounts.store import AccountView, Refused, SignedIn
from producers.errors import ApiError

router = APIRouter(tags=["accounts 账号"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignInBody(_Body):
    login: str = Field(min_length=1, max_length=64, description="账号名或手机号 / account name or phone")
    password: str = Field(min_length=1, max_length=cred.PASSWORD_MAX * 2)


class SetPasswordBody(_Body):
    login: str = Field(min_length=1, max_length=64)
    code: str = Field(min_length=1, max_length=64, description="一次性验证码 / one-time code")
    new_password: str = Field(min_length=1, max_length=cred.PASSWORD_MAX * 2)


def api_error(exc: Refused) -> ApiError:
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
    return ApiError(exc.status, exc.code, exc.zh, exc.en, field=exc.field, headers=headers)


def client_address(request: Request) -> str:
    from accounts.web import client_address as address

    return address(request)


def principal_view(p: Principal, ref: Any = None) -> dict[str, Any]:
    def scope_name(scope: str) -> str | None:
        if not scope or ref is None:
            return None
        if scope in ref.departments:
            return str(ref.departments[scope].name)
        return ref.area_name(scope) or None

    return {
        "account_id": p.account_id,
        "name": p.name,
        "via": p.via,
        "roles": [{"role": g.role, "role_zh": ROLE_NAMES_ZH.get(g.role, g.role), "scope": g.scope,
                   "scope_name": scope_name(g.scope)} for g in p.grants],
    }


def signed_in_body(signed: SignedIn, ref: Any) -> dict[str, Any]:
    return {"token": signed.token, "token_type": "Bearer",
            "expires_at": signed.expires_at.isoformat(),
            "account": principal_view(signed.principal, ref)}


@router.post("/api/v1/auth/sign-in", summary="登录 / sign in with account name or phone")
async def sign_in(
    body: SignInBody, request: Request, _: Annotated[Principal | None, public("登录: 公开")]
) -> JSONResponse:
    store = accounts_of(request)
    try:
        signed = await run_in_threadpool(store.sign_in, body.login, body.password,
                                         client_address(request),
                                         request.headers.get("user-agent", ""))
    except Refused as exc:
        raise api_error(exc) from exc
    return JSONResponse(signed_in_body(signed, store.ref),
                        headers={"Cache-Control": "no-store"})


@router.post("/api/v1/auth/password",
             summary="首次登录或重置后设置密码 / set a password with the one-time code")
async def set_password(
    body: SetPasswordBody, request: Request,
    _: Annotated[Principal | None, public("用一次性验证码设置密码: 公开")],
) -> JSONResponse:
    store = accounts_of(request)
    try:
        signed = await run_in_threadpool(store.set_password, body.login, body.code,
                                         body.new_password, client_address(request),
                                         request.headers.get("user-agent", ""))
    except Refused as exc:
        raise api_error(exc) from exc
    return JSONResponse(signed_in_body(signed, store.ref),
                        headers={"Cache-Control": "no-store"})


@router.post("/api/v1/auth/sign-out", summary="退出登录(本账号的全部登录) / sign out everywhere")
async def sign_out(
    request: Request, caller: Annotated[Principal, allow("self.read")]
) -> JSONResponse:
    token, _ = credential(request)
    ended = await run_in_threadpool(accounts_of(request).sign_out, token or "")
    return JSONResponse({"signed_out": True, "sessions_ended": ended})


@router.get("/api/v1/auth/me", summary="当前登录账号 / who am I")
def me(request: Request, caller: Annotated[Principal, allow("self.read")]) -> dict[str, Any]:
    return principal_view(caller, accounts_of(request).ref)


def account_json(a: AccountView) -> dict[str, Any]:
    return {
        "account_id": a.account_id, "login": a.login, "name": a.name, "status": a.status,
        "roles": [{"role": g.role, "scope": g.scope} for g in a.grants],
        "has_password": a.has_password, "setup_pending": a.setup_pending,
        "locked_until": a.locked_until.isoformat() if a.locked_until else None,
        "failures": a.failures, "sessions": a.sessions,
        "last_sign_in_at": a.last_sign_in_at.isoformat() if a.last_sign_in_at else None,
    }


@router.get("/api/v1/admin/accounts", summary="账号列表(含锁定) / accounts with their locks")
def list_accounts(
    request: Request, caller: Annotated[Principal, allow("accounts.admin")]
) -> dict[str, Any]:
    return {"accounts": [account_json(a) for a in accounts_of(request).list()]}
