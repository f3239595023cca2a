"""Signing in over the API (the phone app's and scripts' door) and machine API keys, in-process:
JSON sign-in by account name or phone, first password with the one-time code, sign-out ending
every session, the lock after five failures (429 + Retry-After), an API key revoked while in
use, and bad input of every kind: a clear 4xx naming the field, nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from accounts.roles import DEPT_STAFF, Grant
from accounts.tables import accounts, api_keys, auth_sessions, sign_in_locks
from tests.unit.test_api_http import REF, Api, chinese

PASSWORD = "城管局-值班-2031"


@pytest.fixture
def api() -> Iterator[Api]:
    a = Api()
    with a.client:
        yield a


def store(api: Api) -> Any:
    return api.client.app.state.accounts  # type: ignore[attr-defined]


def rows(api: Api, table: Any) -> int:
    with store(api).engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def first_password(api: Api, login: str = "ds0003") -> dict[str, Any]:
    code = store(api).reset_password(login, "admin")
    r = api.client.post("/api/v1/auth/password",
                        json={"login": login, "code": code, "new_password": PASSWORD})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_sign_in_by_name_or_phone_and_out_everywhere(api: Api) -> None:
    first = first_password(api)
    assert first["token"].startswith("gfs_") and first["account"]["roles"][0]["role"] == DEPT_STAFF
    assert first["account"]["roles"][0]["scope_name"] == REF.departments["county.chengguan"].name
    second = api.client.post("/api/v1/auth/sign-in", json={"login": "DS0003",
                                                           "password": PASSWORD})
    assert second.status_code == 200 and second.headers["cache-control"] == "no-store"
    bearer = {"Authorization": f"Bearer {second.json()['token']}"}
    assert api.client.get("/api/v1/auth/me", headers=bearer).json()["account_id"] == "DS0003"
    out = api.client.post("/api/v1/auth/sign-out", headers=bearer)
    assert out.status_code == 200 and out.json()["sessions_ended"] == 2
    for token in (first["token"], second.json()["token"]):
        gone = api.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert gone.status_code == 401 and chinese(gone.json()["message_zh"])
    store(api).engine.dispose()


def test_a_worker_signs_in_with_the_phone_number(api: Api) -> None:
    code = store(api).reset_password("gw0001", "admin")
    api.client.post("/api/v1/auth/password",
                    json={"login": "gw0001", "code": code, "new_password": PASSWORD})
    r = api.client.post("/api/v1/auth/sign-in", json={"login": "139 0719 0001",
                                                      "password": PASSWORD})
    assert r.status_code == 200 and r.json()["account"]["account_id"] == "GW0001"


def test_five_failures_lock_with_retry_after(api: Api) -> None:
    first_password(api)
    for _ in range(5):
        r = api.client.post("/api/v1/auth/sign-in", json={"login": "ds0003",
                                                          "password": "wrong-password"})
        assert r.status_code == 401 and r.json()["code"] == "bad_credentials"
    locked = api.client.post("/api/v1/auth/sign-in", json={"login": "ds0003",
                                                           "password": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert chinese(locked.json()["message_zh"])
    admin = store(api).open_session("ad0001").token
    listed = api.client.get("/api/v1/admin/accounts",
                            headers={"Authorization": f"Bearer {admin}"}).json()["accounts"]
    assert next(a for a in listed if a["login"] == "ds0003")["locked_until"]  # visible to admins


def test_an_api_key_revoked_while_in_use_is_refused_on_its_next_request(api: Api) -> None:
    _, key = store(api).add_key("chengguan-inbox", Grant(DEPT_STAFF, "county.chengguan"),
                                "admin")
    headers = {"Authorization": f"Bearer {key}"}
    url = "/api/v1/departments/county.chengguan/inbox"
    assert api.client.get(url, headers=headers).status_code == 200
    assert api.client.get("/api/v1/departments/county.gongan/inbox",
                          headers=headers).status_code == 404  # another department's: unknown
    assert api.client.get("/api/v1/auth/me", headers=headers).status_code == 403  # not a person
    store(api).revoke_key("chengguan-inbox", "admin")
    refused = api.client.get(url, headers=headers)
    assert refused.status_code == 401 and chinese(refused.json()["message_zh"])


OVERLONG = "密" * 300
BAD_SIGN_INS: list[Any] = [
    {},
    {"login": "", "password": ""},
    {"login": "ds0003"},
    {"login": "x" * 65, "password": PASSWORD},
    {"login": "ds0003", "password": OVERLONG},
    {"login": "ԁs0003", "password": PASSWORD},  # Cyrillic ԁ
    {"login": "ds0003' OR '1'='1' --", "password": PASSWORD},
    {"login": "<img src=x onerror=alert(1)>", "password": PASSWORD},
    {"login": "ds0003", "password": PASSWORD, "role": "admin"},
    {"login": ["ds0003"], "password": PASSWORD},
    "not json at all",
]


@pytest.mark.parametrize("body", BAD_SIGN_INS)
def test_bad_sign_in_bodies_are_a_clear_4xx_and_write_nothing(api: Api, body: Any) -> None:
    before = [rows(api, t) for t in (accounts, auth_sessions, sign_in_locks, api_keys)]
    kw = {"content": body, "headers": {"Content-Type": "application/json"}} \
        if isinstance(body, str) else {"json": body}
    r = api.client.post("/api/v1/auth/sign-in", **kw)
    assert r.status_code == 422, r.text
    assert r.json()["field"] and chinese(r.json()["message_zh"]) and r.json()["message_en"]
    assert [rows(api, t) for t in (accounts, auth_sessions, sign_in_locks, api_keys)] == before


@pytest.mark.parametrize("new_password", ["", "short", OVERLONG, "ds0003-password",
                                          "aaaaaaaaaaaaaaaa", "密码\u202e密码密码密码密码"])
def test_bad_new_passwords_are_refused_and_the_code_still_works(api: Api,
                                                                new_password: str) -> None:
    code = store(api).reset_password("ds0003", "admin")
    sessions = rows(api, auth_sessions)
    r = api.client.post("/api/v1/auth/password",
                        json={"login": "ds0003", "code": code, "new_password": new_password})
    assert r.status_code == 422 and chinese(r.json()["message_zh"])
    assert rows(api, auth_sessions) == sessions and rows(api, sign_in_locks) == 0
    ok = api.client.post("/api/v1/auth/password",
                         json={"login": "ds0003", "code": code, "new_password": PASSWORD})
    assert ok.status_code == 200
