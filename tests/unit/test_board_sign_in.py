"""Signing in to the board in a browser: the Chinese sign-in and first-password forms, the
HttpOnly cookie session, CSRF on every form, the security headers, and sessions ending at once
(signed out, expired on the wall clock, disabled). In-process on SQLite; nothing here depends
on today's date."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from fastapi.testclient import TestClient

from accounts.access import SESSION_COOKIE
from accounts.credentials import csrf_token
from accounts.people import county_people, import_people
from accounts.store import AccountStore, SessionPolicy
from dashboard.app import create_dashboard
from gridflow.core.refdata import load_reference_data
from gridflow.settings import Settings
from sinks.models import make_engine

REF = load_reference_data()
PASSWORD = "督办-青山县-2031-pw"
T0 = datetime(2031, 5, 6, 2, 0, tzinfo=UTC)


class Wall:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def store(tmp_path: Path, wall: Wall) -> AccountStore:
    engine = make_engine(f"sqlite:///{tmp_path / 'board.db'}")
    store = AccountStore(engine, REF, wall, PasswordHasher.from_parameters(CHEAPEST),
                         SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=8)))
    import_people(store, county_people(REF), "test")
    code = store.reset_password("sv0001", "test")
    store.set_password("sv0001", code, PASSWORD, "10.0.0.9")
    return store


def board(store: AccountStore, tmp_path: Path, **settings: str) -> TestClient:
    s = Settings(state_dir=tmp_path, **settings)  # type: ignore[arg-type]
    app = create_dashboard(s, store.engine, REF, lambda: T0, None, accounts=store)
    return TestClient(app, base_url="http://board.test")


@pytest.fixture
def client(store: AccountStore, tmp_path: Path) -> Iterator[TestClient]:
    with board(store, tmp_path) as c:
        yield c


def form_csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def sign_in(client: TestClient, login: str = "sv0001", password: str = PASSWORD,
            next_path: str = "/") -> object:
    page = client.get("/sign-in", params={"next": next_path})
    return client.post("/sign-in", data={"csrf": form_csrf(page.text), "login": login,
                                         "password": password, "next": next_path},
                       follow_redirects=False)


# --- the pages -------------------------------------------------------------------------------


def test_the_board_sends_a_stranger_to_the_sign_in_page_and_back(client: TestClient) -> None:
    r = client.get("/cases/AJ1?x=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sign-in?next=/cases/AJ1%3Fx%3D1"
    page = client.get(r.headers["location"])
    assert page.status_code == 200
    for label in ("登录", "账号名或手机号", "密码", "一次性验证码"):
        assert label in page.text
    signed = sign_in(client, next_path="/cases/AJ1?x=1")
    assert signed.status_code == 303 and signed.headers["location"] == "/cases/AJ1?x=1"  # type: ignore[attr-defined]
    assert client.get("/api/board").status_code == 200
    assert "县网格中心督办员" in client.get("/").text  # who is signed in, with 退出登录


def test_the_session_cookie_is_httponly_samesite_lax_and_secure_behind_tls(
    store: AccountStore, tmp_path: Path
) -> None:
    with board(store, tmp_path) as c:
        cookie = sign_in(c).headers["set-cookie"]  # type: ignore[attr-defined]
        assert f"{SESSION_COOKIE}=gfs_" in cookie and "HttpOnly" in cookie
        assert "SameSite=lax" in cookie and "Secure" not in cookie
        c.headers["X-Forwarded-Proto"] = "https"  # behind a TLS-terminating proxy
        c.cookies.clear()
        assert "Secure" in sign_in(c).headers["set-cookie"]  # type: ignore[attr-defined]
    with board(store, tmp_path, cookie_secure="1") as c:
        assert "Secure" in sign_in(c).headers["set-cookie"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil",
                                    "javascript:alert(1)"])
def test_signing_in_never_sends_the_browser_to_another_site(client: TestClient,
                                                            target: str) -> None:
    assert sign_in(client, next_path=target).headers["location"] == "/"  # type: ignore[attr-defined]


# --- CSRF ---------------------------------------------------------------------------------------


def test_forms_without_their_csrf_token_are_refused_and_change_nothing(
    client: TestClient, store: AccountStore
) -> None:
    before = store.get("sv0001").sessions
    client.get("/sign-in")
    forged = client.post("/sign-in", data={"csrf": "forged-value-0000000000", "login": "sv0001",
                                          "password": PASSWORD}, follow_redirects=False)
    assert forged.status_code == 403 and "页面已过期" in forged.text
    assert SESSION_COOKIE not in client.cookies
    no_cookie = TestClient(client.app, base_url="http://board.test")
    page = client.get("/sign-in")
    r = no_cookie.post("/sign-in", data={"csrf": form_csrf(page.text), "login": "sv0001",
                                         "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403  # the form's value without the browser's cookie
    assert store.get("sv0001").sessions == before and store.get("sv0001").failures == 0

    sign_in(client)
    out = client.post("/sign-out", data={}, follow_redirects=False)
    assert out.status_code == 403 and "csrf" in out.text
    assert client.get("/", follow_redirects=False).status_code == 200  # still signed in
    token = client.cookies[SESSION_COOKIE]
    assert client.post("/sign-out", headers={"X-CSRF-Token": "wrong"},
                       follow_redirects=False).status_code == 403
    done = client.post("/sign-out", data={"csrf": csrf_token(token)}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/sign-in"
    assert store.authenticate(token) is None  # ended at once, not just forgotten by the browser


def test_the_sign_out_button_carries_the_sessions_csrf_token(client: TestClient) -> None:
    sign_in(client)
    page = client.get("/").text
    assert form_csrf(page) == csrf_token(client.cookies[SESSION_COOKIE])
    assert client.post("/sign-out", data={"csrf": form_csrf(page)},
                       follow_redirects=False).status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303


# --- sessions end at once -----------------------------------------------------------------------


def test_an_idle_or_expired_session_is_refused_at_once(client: TestClient, wall: Wall) -> None:
    sign_in(client)
    wall.now += timedelta(minutes=29)
    assert client.get("/api/board").status_code == 200
    wall.now += timedelta(minutes=31)  # idle for 31 minutes (wall clock)
    assert client.get("/api/board").status_code == 401
    assert client.get("/", follow_redirects=False).status_code == 303
    sign_in(client)
    for _ in range(17):  # busy, but 8 hours after signing in it ends anyway
        wall.now += timedelta(minutes=29)
        client.get("/api/board")
    assert client.get("/api/board").status_code == 401


def test_disabling_the_account_ends_its_browser_session(client: TestClient,
                                                        store: AccountStore) -> None:
    sign_in(client)
    assert client.get("/api/board").status_code == 200
    store.set_status("sv0001", False, "admin")
    assert client.get("/api/board").status_code == 401
    refused = sign_in(client)
    assert refused.status_code == 403 and "账号已停用" in refused.text  # type: ignore[attr-defined]


# --- sign-in refusals on the form -----------------------------------------------------------


def test_five_wrong_passwords_lock_and_the_form_says_so(client: TestClient) -> None:
    for _ in range(5):
        r = sign_in(client, password="not-the-password")
        assert r.status_code == 401 and "账号或密码错误" in r.text  # type: ignore[attr-defined]
    locked = sign_in(client)
    assert locked.status_code == 429 and "锁定" in locked.text  # type: ignore[attr-defined]
    assert int(locked.headers["retry-after"]) > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("login", ["<script>alert(1)</script>", "sv0001' OR '1'='1",
                                   "ѕv0001", "x" * 500, ""])
def test_bad_input_on_the_form_is_a_clear_4xx_and_is_never_echoed_raw(
    client: TestClient, store: AccountStore, login: str
) -> None:
    r = sign_in(client, login=login)
    assert r.status_code == 422 and "出现问题" in r.text  # type: ignore[attr-defined]
    assert "<script>alert" not in r.text  # type: ignore[attr-defined]
    assert store.get("sv0001").failures == 0


def test_first_sign_in_sets_the_password_with_the_one_time_code(
    client: TestClient, store: AccountStore
) -> None:
    code = store.reset_password("ds0003", "admin")
    page = client.get("/password")
    csrf = form_csrf(page.text)
    mismatch = client.post("/password", data={"csrf": csrf, "login": "ds0003", "code": code,
                                              "new_password": "城管局-2031-密码",
                                              "confirm": "城管局-2031-密码x"})
    assert mismatch.status_code == 422 and "不一致" in mismatch.text
    done = client.post("/password", data={"csrf": csrf, "login": "ds0003", "code": code,
                                          "new_password": "城管局-2031-密码",
                                          "confirm": "城管局-2031-密码"},
                       follow_redirects=False)
    assert done.status_code == 303 and SESSION_COOKIE in client.cookies
    # department staff have no board: a page that says so, in Chinese with the code under it
    refused = client.get("/")
    assert refused.status_code == 403 and "wrong_role" in refused.text and "无权" in refused.text


# --- headers and assets ----------------------------------------------------------------------


def test_every_page_has_the_security_headers_and_no_inline_script_or_style(
    client: TestClient, store: AccountStore, tmp_path: Path
) -> None:
    sign_in(client)
    for path in ("/", "/sign-in", "/password", "/api/docs", "/api/board", "/static/board.css"):
        r = client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'self'" in csp and r.headers["x-frame-options"] == "SAMEORIGIN"
        assert r.headers["x-content-type-options"] == "nosniff"
        if r.headers["content-type"].startswith("text/html"):
            assert r.headers["cache-control"] == "no-store"
            assert "<script" not in r.text and "<style" not in r.text
            assert not re.search(r"\sstyle=", r.text)
            assert not re.search(r'(src|href)="(https?:)?//', r.text), "every asset is local"
    with board(store, tmp_path,
               frame_ancestors="https://work.weixin.qq.com https://*.dingtalk.com") as framed:
        r = framed.get("/sign-in")
        assert ("frame-ancestors 'self' https://work.weixin.qq.com https://*.dingtalk.com"
                in r.headers["content-security-policy"])
        assert "x-frame-options" not in r.headers


def test_behind_a_trusted_proxy_failures_count_per_client_not_per_proxy(
    store: AccountStore, tmp_path: Path
) -> None:
    with board(store, tmp_path, trusted_proxies="testclient") as c:
        def attempt(client_ip: str, login: str, password: str) -> int:
            c.cookies.clear()
            c.headers["X-Forwarded-For"] = f"{client_ip}, testclient"
            return sign_in(c, login, password).status_code  # type: ignore[attr-defined]

        for i in range(5):  # five clients, one failure each (unknown accounts: no account lock)
            assert attempt(f"203.0.113.{i}", f"nobody{i}", "wrong-password") == 401
        assert attempt("203.0.113.50", "sv0001", PASSWORD) == 303  # the proxy is not locked
        for _ in range(5):
            attempt("198.51.100.7", "nobody-else", "wrong-password")
        assert attempt("198.51.100.7", "sv0001", PASSWORD) == 429  # that client is
        assert attempt("198.51.100.8", "sv0001", PASSWORD) == 303
