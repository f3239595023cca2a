"""Who may call what: one table of (caller: role and scope in or out, route) → expected status,
run against the real API and the real board on the real stack (Kafka, MinIO, PostgreSQL).

The callers are the sample county's people signed in through the account store, and machine
API keys. One case is filed in 石门村一组网格 (青石镇): "in" callers' scope holds it, "out"
callers' does not, so its ids must answer them 404 exactly as an id that does not exist.
Every route of both apps must have a row: a new route without one fails
`test_every_route_has_a_row_and_declares_who_may_call_it`.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from accounts.access import rule_of, served_routes
from accounts.roles import DEPT_STAFF, OPEN311_PARTNER, Grant
from accounts.sample import SampleSessions
from accounts.store import AccountStore
from dashboard.app import create_dashboard
from demo import images
from demo.live import InProcessPipeline, LiveApi, read_topic, real_deps
from gridflow import topics
from gridflow.core.refdata import load_reference_data
from gridflow.settings import Settings
from processors.archive import thumbnail_key
from producers.app import create_app
from tests.support.api import report_id_of

pytestmark = pytest.mark.integration

REF = load_reference_data()
GRID = "421099101201001"  # 石门村一组网格, 青石镇: where the case lies
DEPT = "421099101201.cwh"  # 石门村村委会: the department its task goes to

# --- the callers ------------------------------------------------------------------------------

PEOPLE = {
    "worker_in": "gw0001",  # the case's grid (and its reporter)
    "worker_out": "gw0016",  # a grid of 白鹤乡
    "dept_in": "ds0019",  # 石门村村委会, the task's department
    "dept_out": "ds0003",  # 城管局
    "township_in": "sv0102",  # 青石镇
    "township_out": "sv0101",  # 城关街道 (also staff of its 综治中心: two roles, both out)
    "county": "sv0001",
    "leader": "ld0001",
    "auditor": "au0001",
    "admin": "ad0001",
}
KEYS = {
    "key_dept_in": Grant(DEPT_STAFF, DEPT),
    "key_dept_out": Grant(DEPT_STAFF, "county.chengguan"),
    "key_partner": Grant(OPEN311_PARTNER),
}
CALLERS = ("anonymous", *PEOPLE, *KEYS)
PERSONS = tuple(PEOPLE)
SEES_CASE = ("worker_in", "dept_in", "township_in", "county", "leader", "auditor", "key_dept_in")


def row(default: int, **statuses: int) -> dict[str, int]:
    """Expected status for every caller: `default`, except those named."""
    unknown = set(statuses) - set(CALLERS)
    assert not unknown, unknown
    return {c: statuses.get(c, default) for c in CALLERS}


def case_read(ok: int = 200) -> dict[str, int]:
    """A read of the case (or its report, photo, ...): 200 inside the scope, 404 outside,
    403 for roles that read no case data, 401 without signing in."""
    return row(404, anonymous=401, admin=403, key_partner=403, **dict.fromkeys(SEES_CASE, ok))


def dept_command() -> dict[str, int]:
    return row(403, anonymous=401, dept_in=202, dept_out=404, key_dept_in=202, key_dept_out=404,
               township_out=404)  # sv0101 is staff too (城关综治中心), the case is not theirs


def supervisor_command(leader: int = 403) -> dict[str, int]:
    return row(403, anonymous=401, township_in=202, township_out=404, county=202, leader=leader)


ANYONE = row(200)
SIGNED_IN = row(403, anonymous=401, **dict.fromkeys(PERSONS, 200))

TABLE: dict[str, dict[str, int]] = {
    # the ingest API ---------------------------------------------------------------------------
    "GET /api/v1/health": ANYONE,
    "GET /openapi.json": ANYONE,
    "GET /docs": ANYONE,
    # Prometheus metrics: a monitor API key only (tests/integration/test_metrics_live.py)
    "GET /metrics": row(403, anonymous=401),
    "POST /api/v1/auth/sign-in": ANYONE,
    "POST /api/v1/auth/password": row(422),  # reached by anyone: the body the table sends is bad
    "POST /api/v1/auth/sign-out": SIGNED_IN,
    "GET /api/v1/auth/me": SIGNED_IN,
    "GET /api/v1/admin/accounts": row(403, anonymous=401, admin=200),
    "POST /api/v1/reports": row(403, anonymous=401, worker_in=202, worker_out=202),
    "GET /api/v1/reports/{report_id}": case_read(),
    # a command outcome outside the scope reads as pending, as an unknown id does
    "GET /api/v1/commands/{command_id}": row(200, anonymous=401, admin=403, key_partner=403),
    "GET /api/v1/departments/{code}/inbox": row(
        404, anonymous=401, worker_in=403, worker_out=403, admin=403, key_partner=403,
        dept_in=200, township_in=200, county=200, leader=200, auditor=200, key_dept_in=200),
    "POST /api/v1/tasks/{task_id}/sign": dept_command(),
    "POST /api/v1/tasks/{task_id}/progress": dept_command(),
    "POST /api/v1/tasks/{task_id}/extension": dept_command(),
    "POST /api/v1/tasks/{task_id}/send-back": dept_command(),
    "POST /api/v1/tasks/{task_id}/resolve": dept_command(),
    "POST /api/v1/tasks/{task_id}/extension/decision": supervisor_command(),
    "POST /api/v1/tasks/{task_id}/cancel": supervisor_command(),
    "POST /api/v1/tasks/{task_id}/verify": {**supervisor_command(), "worker_in": 202,
                                             "worker_out": 404},
    "POST /api/v1/tasks/{task_id}/reject": {**supervisor_command(), "worker_in": 202,
                                             "worker_out": 404},
    "POST /api/v1/cases/{case_id}/rating": {**supervisor_command(), "worker_in": 202,
                                            "worker_out": 404},
    "POST /api/v1/cases/{case_id}/whistle": supervisor_command(leader=202),
    "GET /api/v1/cases/{case_id}/contacts": case_read(),  # masked but for 回访 roles
    "GET /api/v1/audit/access-log": row(403, anonymous=401, auditor=200),
    "GET /open311/v2/services.json": ANYONE,
    "POST /open311/v2/requests.json": row(201),  # the residents' door: no sign-in
    "GET /open311/v2/requests/{service_request_id}.json": ANYONE,  # status by ticket
    "GET /open311/v2/requests.json": row(200, anonymous=401, admin=403, key_partner=403),
    # the phone pages (mobile/): assets and the residents' QR page are public
    "GET /m/static/{name:path}": ANYONE,
    "GET /r/{code}": ANYONE,
    "POST /r/{code}": row(303),  # a resident's report, answered by its ticket page
    "GET /r/t/{ticket}": ANYONE,
    "GET /m/": ANYONE,  # the grid workers' app shell: nothing personal in it
    "GET /m/sw.js": ANYONE,
    "GET /m/manifest.webmanifest": ANYONE,
    "GET /m/sign-in": ANYONE,
    "POST /m/sign-in": row(403),  # the table's own account is no grid worker
    "POST /m/sign-out": row(403, anonymous=401, **dict.fromkeys(PERSONS, 303)),
    "GET /m/password": ANYONE,
    "POST /m/password": row(422),  # reached by anyone: the two new passwords differ
    "GET /m/api/me": row(403, anonymous=401, worker_in=200, worker_out=200),
    "GET /m/api/catalogue": row(403, anonymous=401, worker_in=200, worker_out=200),
    "GET /m/api/reports": row(403, anonymous=401, worker_in=200, worker_out=200),
    "GET /m/api/tasks": row(403, anonymous=401, worker_in=200, worker_out=200, township_in=200,
                            township_out=200, county=200),
    "GET /m/api/photos/{photo_id}": case_read(),
    "POST /m/api/tasks/{task_id}/verification": row(
        403, anonymous=401, worker_in=202, worker_out=404, township_out=404),
    # the departments' workbench and the supervisors' console (workbench/): a form answers 303
    # (to the page showing its outcome); browsers without a session go to /w/sign-in, the
    # table's bearer callers get 401
    "GET /w/sign-in": ANYONE,
    "POST /w/sign-in": row(303),  # signed in (as the table's own account) and sent on
    "POST /w/sign-out": row(403, anonymous=401, **dict.fromkeys(PERSONS, 303)),
    "GET /w/": row(403, anonymous=401, worker_in=303, worker_out=303, dept_in=303, dept_out=303,
                   township_in=303, township_out=200, county=303, leader=303, auditor=303,
                   admin=200),  # to the caller's inbox, console or phone app; else a chooser
    "GET /w/static/{name}": ANYONE,
    "GET /w/photos/{photo_id}/thumb": case_read(),
    "GET /w/photos/{photo_id}/original": {**case_read(), "township_in": 403, "county": 403,
                                          "leader": 403},  # supervisors: thumbnails only
    "GET /w/d/{code}/inbox": row(
        404, anonymous=401, worker_in=403, worker_out=403, admin=403, key_partner=403,
        dept_in=200, township_in=200, county=200, leader=200, auditor=200, key_dept_in=200),
    "GET /w/d/{code}/inbox/updates": row(
        404, anonymous=401, worker_in=403, worker_out=403, admin=403, key_partner=403,
        dept_in=200, township_in=200, county=200, leader=200, auditor=200, key_dept_in=200),
    "GET /w/cases/{case_id}": case_read(),
    **{f"GET /w/tasks/{{task_id}}/{form}": {k: 200 if v == 202 else v
                                            for k, v in dept_command().items()}
       for form in ("progress", "resolve", "send-back", "extension")},
    **{f"POST /w/tasks/{{task_id}}/{form}": {k: 303 if v == 202 else v
                                             for k, v in dept_command().items()}
       for form in ("sign", "progress", "resolve", "send-back", "extension", "assign")},
    # 二次派遣 and 常用回复: the department's head (石门村村委会 names none: each of its staff)
    "GET /w/tasks/{task_id}/assign": {k: 200 if v == 202 else v
                                      for k, v in dept_command().items()},
    "POST /w/d/{code}/assign": {k: 303 if v == 202 else v for k, v in dept_command().items()},
    "GET /w/d/{code}/templates": {k: 200 if v == 202 else v for k, v in dept_command().items()},
    "POST /w/d/{code}/templates": {k: 303 if v == 202 else v for k, v in dept_command().items()},
    "POST /w/d/{code}/templates/{template_id}/delete": {
        k: 303 if v == 202 else v for k, v in dept_command().items()},
    "GET /s/": row(403, anonymous=401, township_in=200, township_out=200, county=200,
                   leader=200, auditor=200),
    "GET /s/q/{key}": row(403, anonymous=401, township_in=200, township_out=200, county=200,
                          leader=200, auditor=200),
    **dict.fromkeys(("GET /s/board", "GET /s/board/indicators.{fmt}", "GET /s/map", "GET /s/cases",
                     "GET /s/cases/export.{fmt}"),
                    row(403, anonymous=401, township_in=200, township_out=200, county=200,
                        leader=200, auditor=200)),  # each inside the caller's jurisdiction
    "POST /w/tasks/{task_id}/extension-decision": {
        k: 303 if v == 202 else v for k, v in supervisor_command().items()},
    "GET /s/cases/{case_id}/whistle": {
        k: 200 if v == 202 else v for k, v in supervisor_command(leader=202).items()},
    "POST /s/cases/{case_id}/whistle": {
        k: 303 if v == 202 else v for k, v in supervisor_command(leader=202).items()},
    "GET /s/cases/{case_id}/cancel": {
        k: 200 if v == 202 else v for k, v in supervisor_command().items()},
    "POST /s/cases/{case_id}/cancel": {
        k: 303 if v == 202 else v for k, v in supervisor_command().items()},
    # the board ----------------------------------------------------------------------------------
    # pages: not signed in goes to the sign-in page (303)
    "BOARD GET /": row(403, anonymous=303, township_in=200, township_out=200, county=200,
                       leader=200, auditor=200),
    "BOARD GET /api/board": row(403, anonymous=401, township_in=200, township_out=200,
                                county=200, leader=200, auditor=200),
    "BOARD GET /cases/{case_id}": {**case_read(), "anonymous": 303},
    "BOARD GET /thumbs/{sha256}": case_read(),
    "BOARD GET /api/openapi.json": ANYONE,
    "BOARD GET /api/docs": ANYONE,
    "BOARD GET /static/board.css": ANYONE,
    "BOARD GET /sign-in": ANYONE,
    "BOARD POST /sign-in": row(303),  # signed in (as the table's own account) and sent back
    "BOARD GET /password": ANYONE,
    "BOARD POST /password": row(422),  # reached by anyone: the two new passwords differ
    "BOARD POST /sign-out": row(403, anonymous=401, **dict.fromkeys(PERSONS, 303)),
}


# --- the stack, one case, the signed-in callers --------------------------------------------


@dataclass
class World:
    api: str
    board: str
    sessions: SampleSessions
    keys: dict[str, str]
    report_id: str
    case_id: str
    task_id: str
    command_id: str
    sha256: str
    ticket: str
    photo: bytes

    def headers(self, caller: str) -> dict[str, str]:
        if caller == "anonymous":
            return {}
        if caller in self.keys:
            return {"Authorization": f"Bearer {self.keys[caller]}"}
        return self.sessions.bearer(PEOPLE[caller])


def upload_files(report: dict[str, Any], photo: bytes) -> list[Any]:
    return [("report", (None, json.dumps(report, ensure_ascii=False).encode(), "application/json")),
            ("photos", ("a.jpg", photo, "image/jpeg"))]


def new_report(photo_seed: int = 1) -> dict[str, Any]:
    return {"report_id": f"acl-{uuid.uuid4().hex[:16]}", "category_code": "E0102",
            "description": "村口垃圾堆积", "lat": 32.16, "lon": 109.96,
            "captured_at": (datetime.now(UTC) - timedelta(minutes=3)).isoformat()}


@pytest.fixture
def apps(stack: Any, stack_settings: Settings, pg_url: str) -> Iterator[tuple[FastAPI, FastAPI, Any]]:
    settings = stack_settings.with_(database_url=pg_url)
    s3 = stack.s3()
    deps = real_deps(settings, s3, REF)
    api = create_app(settings, deps)
    board = create_dashboard(settings, deps.engine, REF, lambda: datetime.now(UTC), s3,
                             accounts=api.state.accounts)
    try:
        yield api, board, (settings, s3, deps)
    finally:
        deps.engine.dispose()


@pytest.fixture
def world(apps: tuple[FastAPI, FastAPI, Any]) -> Iterator[World]:
    api_app, board_app, (settings, s3, deps) = apps
    store: AccountStore = api_app.state.accounts
    sessions = SampleSessions(store, "acl")
    keys = {name: store.add_key(name.replace("_", "-"), grant, "test")[1]
            for name, grant in KEYS.items()}
    photo = images.make_jpeg(320, 240, seed=3, gps=(32.16, 109.96))
    with LiveApi(api_app) as api, LiveApi(board_app) as board:
        report = new_report()
        r = httpx.post(f"{api.url}/api/v1/reports", files=upload_files(report, photo),
                       headers=sessions.bearer("gw0001"), timeout=60)
        assert r.status_code == 202, r.text
        rid = report["report_id"]
        pipeline = InProcessPipeline(deps.engine, REF)
        [record] = [x for x in read_topic(settings.kafka_bootstrap,
                                          topics.REPORTS.name(settings.topic_prefix),
                                          lambda rs: any(report_id_of(x) == rid for x in rs))
                    if report_id_of(x) == rid]
        pipeline.report(record.value, datetime.now(UTC))
        case_id = r.json()["case_id"]
        task_id = f"{case_id}-T01"
        [dispatched] = [e for e in pipeline.events if e.type == "TaskDispatched"]
        assert dispatched.data["department"] == DEPT and dispatched.data["task_id"] == task_id
        signed = httpx.post(f"{api.url}/api/v1/tasks/{task_id}/progress", json={"note": "到场"},
                            headers=sessions.bearer("ds0019"), timeout=30)
        assert signed.status_code == 202, signed.text
        import hashlib

        sha = hashlib.sha256(photo).hexdigest()
        thumb = images.make_jpeg(64, 48, seed=4)
        s3.put_object(settings.bucket_archive, thumbnail_key(sha), io.BytesIO(thumb), len(thumb),
                      content_type="image/jpeg")
        form = {"service_code": "illegal-parking", "lat": "32.16", "long": "109.96",
                "description": "消防通道被堵", "device_id": "acl-device"}
        ticket = httpx.post(f"{api.url}/open311/v2/requests.json", data=form,
                            timeout=30).json()[0]["service_request_id"]
        yield World(api.url, board.url, sessions, keys, rid, case_id, task_id,
                    signed.json()["command_id"], sha, ticket, photo)


# --- the requests of each route ------------------------------------------------------------

Request = tuple[str, str, dict[str, Any]]  # method, url, httpx keyword arguments


SIGNER_PASSWORD = "青山县-表格-密码-2031"
LOGIN_CSRF_VALUE = "table-login-csrf-0123456789"
LOGIN_CSRF = {"Cookie": f"gridflow_login_csrf={LOGIN_CSRF_VALUE}"}


def requests_for(w: World) -> dict[str, Callable[[str], Request]]:
    """route → caller → the request the table sends: a valid one, so that what answers is who
    may call it (and never a wrong body), unless the row says otherwise."""
    a, b, t, c = w.api, w.board, w.task_id, w.case_id
    resolution = [("resolution", (None, b'{"note": "done"}', "application/json")),
                  ("photos", ("after.jpg", w.photo, "image/jpeg"))]

    def post(url: str, **kw: Any) -> Callable[[str], Request]:
        return lambda caller: ("POST", url, kw)

    def get(url: str, **kw: Any) -> Callable[[str], Request]:
        return lambda caller: ("GET", url, kw)

    return {
        "GET /api/v1/health": get(f"{a}/api/v1/health"),
        "GET /openapi.json": get(f"{a}/openapi.json"),
        "GET /docs": get(f"{a}/docs"),
        "GET /metrics": get(f"{a}/metrics"),
        "POST /api/v1/auth/sign-in": lambda caller: (
            "POST", f"{a}/api/v1/auth/sign-in",
            {"json": {"login": "acl-signer", "password": SIGNER_PASSWORD}}),
        "POST /api/v1/auth/password": post(f"{a}/api/v1/auth/password",
                                           json={"login": "acl-signer", "code": "X",
                                                 "new_password": "short"}),
        "POST /api/v1/auth/sign-out": post(f"{a}/api/v1/auth/sign-out"),
        "GET /api/v1/auth/me": get(f"{a}/api/v1/auth/me"),
        "GET /api/v1/admin/accounts": get(f"{a}/api/v1/admin/accounts"),
        "POST /api/v1/reports": lambda caller: ("POST", f"{a}/api/v1/reports", {
            "files": upload_files(new_report(), w.photo)}),
        "GET /api/v1/reports/{report_id}": get(f"{a}/api/v1/reports/{w.report_id}"),
        "GET /api/v1/commands/{command_id}": get(f"{a}/api/v1/commands/{w.command_id}"),
        "GET /api/v1/departments/{code}/inbox": get(f"{a}/api/v1/departments/{DEPT}/inbox"),
        "POST /api/v1/tasks/{task_id}/sign": post(f"{a}/api/v1/tasks/{t}/sign", json={}),
        "POST /api/v1/tasks/{task_id}/progress": post(f"{a}/api/v1/tasks/{t}/progress",
                                                      json={"note": "进展"}),
        "POST /api/v1/tasks/{task_id}/extension": post(f"{a}/api/v1/tasks/{t}/extension",
                                                       json={"days": 1, "reason": "协调"}),
        "POST /api/v1/tasks/{task_id}/send-back": post(f"{a}/api/v1/tasks/{t}/send-back",
                                                       json={"reason": "非本部门"}),
        "POST /api/v1/tasks/{task_id}/resolve": lambda caller: (
            "POST", f"{a}/api/v1/tasks/{t}/resolve", {"files": resolution}),
        "POST /api/v1/tasks/{task_id}/extension/decision": post(
            f"{a}/api/v1/tasks/{t}/extension/decision", json={"approve": True}),
        "POST /api/v1/tasks/{task_id}/cancel": post(f"{a}/api/v1/tasks/{t}/cancel",
                                                    json={"reason": "重复"}),
        "POST /api/v1/tasks/{task_id}/verify": post(f"{a}/api/v1/tasks/{t}/verify", json={}),
        "POST /api/v1/tasks/{task_id}/reject": post(f"{a}/api/v1/tasks/{t}/reject",
                                                    json={"reason": "未整改"}),
        "POST /api/v1/cases/{case_id}/rating": post(f"{a}/api/v1/cases/{c}/rating",
                                                    json={"score": 5}),
        "POST /api/v1/cases/{case_id}/whistle": post(f"{a}/api/v1/cases/{c}/whistle",
                                                     json={"departments": ["county.huanjing"]}),
        "GET /api/v1/cases/{case_id}/contacts": get(f"{a}/api/v1/cases/{c}/contacts"),
        "GET /api/v1/audit/access-log": get(f"{a}/api/v1/audit/access-log",
                                            params={"case_id": c}),
        "GET /open311/v2/services.json": get(f"{a}/open311/v2/services.json"),
        "POST /open311/v2/requests.json": lambda caller: (
            "POST", f"{a}/open311/v2/requests.json",
            {"data": {"service_code": "illegal-parking", "lat": "32.16", "long": "109.96",
                      "description": f"占道 {caller} {uuid.uuid4().hex[:6]}",
                      "device_id": f"acl-{caller}"}}),
        "GET /open311/v2/requests/{service_request_id}.json": get(
            f"{a}/open311/v2/requests/{w.ticket}.json"),
        "GET /open311/v2/requests.json": get(f"{a}/open311/v2/requests.json"),
        "GET /m/static/{name:path}": get(f"{a}/m/static/app.css"),
        "GET /r/{code}": get(f"{a}/r/{GRID}"),
        "POST /r/{code}": lambda caller: ("POST", f"{a}/r/{GRID}", {"files": [
            ("report_id", (None, f"qr-acl-{caller}-{uuid.uuid4().hex[:8]}")),
            ("service_code", (None, "litter")), ("description", (None, f"垃圾 {caller}")),
            ("phone", (None, "13800001234"))]}),
        "GET /r/t/{ticket}": get(f"{a}/r/t/{w.ticket}"),
        "GET /m/": get(f"{a}/m/"),
        "GET /m/sw.js": get(f"{a}/m/sw.js"),
        "GET /m/manifest.webmanifest": get(f"{a}/m/manifest.webmanifest"),
        "GET /m/sign-in": get(f"{a}/m/sign-in"),
        "POST /m/sign-in": post(f"{a}/m/sign-in", headers={**LOGIN_CSRF,
                                                             "Accept": "application/json"},
                                data={"csrf": LOGIN_CSRF_VALUE, "login": "acl-signer",
                                      "password": SIGNER_PASSWORD}),
        "POST /m/sign-out": post(f"{a}/m/sign-out"),
        "GET /m/password": get(f"{a}/m/password"),
        "POST /m/password": post(f"{a}/m/password", headers=LOGIN_CSRF, data={
            "csrf": LOGIN_CSRF_VALUE, "login": "acl-signer", "code": "X",
            "new_password": "一个足够长的新密码-1", "confirm": "另一个足够长的密码-2"}),
        "GET /m/api/me": get(f"{a}/m/api/me"),
        "GET /m/api/catalogue": get(f"{a}/m/api/catalogue"),
        "GET /m/api/reports": get(f"{a}/m/api/reports"),
        "GET /m/api/tasks": get(f"{a}/m/api/tasks"),
        "GET /m/api/photos/{photo_id}": get(f"{a}/m/api/photos/{photo_id(w)}"),
        "POST /m/api/tasks/{task_id}/verification": lambda caller: (
            "POST", f"{a}/m/api/tasks/{t}/verification", {"files": [
                ("verification", (None, b'{"passed": true, "note": "ok"}', "application/json"))]}),
        **workbench_requests(w),
        "BOARD GET /": get(f"{b}/"),
        "BOARD GET /api/board": get(f"{b}/api/board"),
        "BOARD GET /cases/{case_id}": get(f"{b}/cases/{c}"),
        "BOARD GET /thumbs/{sha256}": get(f"{b}/thumbs/{w.sha256}"),
        "BOARD GET /api/openapi.json": get(f"{b}/api/openapi.json"),
        "BOARD GET /api/docs": get(f"{b}/api/docs"),
        "BOARD GET /static/board.css": get(f"{b}/static/board.css"),
        "BOARD GET /sign-in": get(f"{b}/sign-in"),
        "BOARD POST /sign-in": post(f"{b}/sign-in", headers=LOGIN_CSRF, data={
            "csrf": LOGIN_CSRF_VALUE, "login": "acl-signer", "password": SIGNER_PASSWORD}),
        "BOARD GET /password": get(f"{b}/password"),
        "BOARD POST /password": post(f"{b}/password", headers=LOGIN_CSRF, data={
            "csrf": LOGIN_CSRF_VALUE, "login": "acl-signer", "code": "X",
            "new_password": "one-password-2031", "confirm": "another-password-2031"}),
        "BOARD POST /sign-out": post(f"{b}/sign-out"),
    }


# --- the tests ------------------------------------------------------------------------------


def route_keys(app: FastAPI, prefix: str = "") -> dict[str, Any]:
    """"METHOD path" of every route an app serves."""
    return {f"{prefix}{method} {path}": route for method, path, route in served_routes(app)}


def test_every_route_has_a_row_and_declares_who_may_call_it(
    apps: tuple[FastAPI, FastAPI, Any], world: World
) -> None:
    api_app, board_app, _ = apps
    routes = {**route_keys(api_app), **route_keys(board_app, "BOARD ")}
    assert sorted(set(routes) - set(TABLE)) == [], "routes without a row in TABLE"
    assert sorted(set(TABLE) - set(routes)) == [], "rows of routes that do not exist"
    assert set(requests_for(world)) == set(TABLE)
    for key, route in routes.items():
        if isinstance(route, APIRoute):
            assert len(rule_of(route)) == 1, f"{key} must declare who may call it, once"
        else:  # the frameworks' own pages (OpenAPI documents): public
            assert TABLE[key] == ANYONE, key


def test_the_table(world: World) -> None:
    store = world.sessions.store
    _, code = store.add(_signer(), "test")
    store.set_password("acl-signer", code or "", SIGNER_PASSWORD, "10.99.0.1")
    requests = requests_for(world)
    wrong: list[str] = []
    with httpx.Client(timeout=60) as http:
        for route, expected in TABLE.items():
            for caller in CALLERS:
                method, url, kw = requests[route](caller)
                kw = dict(kw)
                headers = {**world.headers(caller), **kw.pop("headers", {})}
                http.cookies.clear()  # each request stands alone: no cookie from the last one
                r = http.request(method, url, headers=headers, follow_redirects=False, **kw)
                if r.status_code != expected[caller]:
                    wrong.append(f"{route} as {caller}: {r.status_code}, expected "
                                 f"{expected[caller]}: {r.text[:160]}")
                elif r.status_code == 403 and not bilingual(r):
                    wrong.append(f"{route} as {caller}: 403 without both reasons: {r.text}")
                if route.endswith("/sign-out") and caller in PEOPLE:
                    world.sessions.forget(PEOPLE[caller])  # every session of theirs ended
    assert wrong == [], "\n".join(wrong)


def bilingual(r: httpx.Response) -> bool:
    """A refusal's reason in Chinese and English (Open311 paths: one "zh / en" description;
    pages: the reason in Chinese, the code and the English under it)."""
    if r.headers.get("content-type", "").startswith("text/html"):
        return "无权" in r.text and "wrong_role" in r.text and "may not" in r.text
    body = r.json()
    if isinstance(body, list):
        text = str(body[0].get("description", ""))
        return " / " in text and any("\u4e00" <= ch <= "\u9fff" for ch in text)
    zh = str(body.get("message_zh") or "")
    return bool(body.get("message_en")) and any("\u4e00" <= ch <= "\u9fff" for ch in zh)


def workbench_requests(w: World) -> dict[str, Callable[[str], Request]]:
    """The pages' requests: forms with what they need, as a browser posts them."""
    a, t, c = w.api, w.task_id, w.case_id

    def post(url: str, **kw: Any) -> Callable[[str], Request]:
        return lambda caller: ("POST", url, kw)

    def get(url: str, **kw: Any) -> Callable[[str], Request]:
        return lambda caller: ("GET", url, kw)

    photo = [("photos", ("after.jpg", w.photo, "image/jpeg"))]
    from datetime import UTC, datetime

    from workbench import replies

    template = {caller: replies.save(w.sessions.store.engine, DEPT, f"模板 {caller}", "已处理",
                                     "any", "acl", datetime.now(UTC)) for caller in CALLERS}
    return {
        "GET /w/sign-in": get(f"{a}/w/sign-in"),
        "POST /w/sign-in": post(f"{a}/w/sign-in", headers=LOGIN_CSRF, data={
            "login_csrf": LOGIN_CSRF_VALUE, "login": "acl-signer", "password": SIGNER_PASSWORD,
            "next": "/w/"}),
        "POST /w/sign-out": post(f"{a}/w/sign-out"),
        "GET /w/": get(f"{a}/w/"),
        "GET /w/static/{name}": get(f"{a}/w/static/workbench.css"),
        "GET /w/photos/{photo_id}/thumb": get(f"{a}/w/photos/{photo_id(w)}/thumb"),
        "GET /w/photos/{photo_id}/original": get(f"{a}/w/photos/{photo_id(w)}/original"),
        "GET /w/d/{code}/inbox": get(f"{a}/w/d/{DEPT}/inbox"),
        "GET /w/d/{code}/inbox/updates": get(f"{a}/w/d/{DEPT}/inbox/updates"),
        "GET /w/cases/{case_id}": get(f"{a}/w/cases/{c}"),
        **{f"GET /w/tasks/{{task_id}}/{form}": get(f"{a}/w/tasks/{t}/{form}")
           for form in ("progress", "resolve", "send-back", "extension")},
        "POST /w/tasks/{task_id}/sign": post(f"{a}/w/tasks/{t}/sign", data={"form_key": "acl"}),
        "POST /w/tasks/{task_id}/progress": post(f"{a}/w/tasks/{t}/progress",
                                                 data={"note": "进展"}, files=photo),
        "POST /w/tasks/{task_id}/resolve": post(f"{a}/w/tasks/{t}/resolve",
                                                data={"note": "办结"}, files=photo),
        "POST /w/tasks/{task_id}/send-back": post(f"{a}/w/tasks/{t}/send-back", data={
            "reason": "非本部门", "reroute_to": "421099101.zongzhi"}),
        "POST /w/tasks/{task_id}/extension": post(f"{a}/w/tasks/{t}/extension",
                                                  data={"days": "1", "reason": "协调"}),
        "GET /w/tasks/{task_id}/assign": get(f"{a}/w/tasks/{t}/assign"),
        "POST /w/tasks/{task_id}/assign": post(f"{a}/w/tasks/{t}/assign",
                                               data={"assignee": "DS0019"}),
        "POST /w/d/{code}/assign": post(f"{a}/w/d/{DEPT}/assign",
                                        data={"assignee": "DS0019", "task_id": t}),
        "GET /w/d/{code}/templates": get(f"{a}/w/d/{DEPT}/templates"),
        "POST /w/d/{code}/templates": post(f"{a}/w/d/{DEPT}/templates", data={
            "title": "已清运", "body": "垃圾已清运", "kind": "resolve"}),
        "POST /w/d/{code}/templates/{template_id}/delete": lambda caller: (
            "POST", f"{a}/w/d/{DEPT}/templates/{template[caller]}/delete", {}),
        "GET /s/": get(f"{a}/s/"),
        "GET /s/q/{key}": get(f"{a}/s/q/extensions"),
        "GET /s/board": get(f"{a}/s/board"),
        "GET /s/board/indicators.{fmt}": get(f"{a}/s/board/indicators.xlsx"),
        "GET /s/map": get(f"{a}/s/map"),
        "GET /s/cases": get(f"{a}/s/cases"),
        "GET /s/cases/export.{fmt}": get(f"{a}/s/cases/export.csv"),
        "POST /w/tasks/{task_id}/extension-decision": post(
            f"{a}/w/tasks/{t}/extension-decision", data={"approve": "yes"}),
        "GET /s/cases/{case_id}/whistle": get(f"{a}/s/cases/{c}/whistle"),
        "POST /s/cases/{case_id}/whistle": post(f"{a}/s/cases/{c}/whistle", data={
            "departments": ["county.huanjing"], "reason": "联合处置"}),
        "GET /s/cases/{case_id}/cancel": get(f"{a}/s/cases/{c}/cancel"),
        "POST /s/cases/{case_id}/cancel": post(f"{a}/s/cases/{c}/cancel",
                                               data={"reason": "重复"}),
    }


def photo_id(w: World) -> str:
    """The id of the world's photo in the read models (what the phone app asks for)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from sinks.models import Photo

    with Session(w.sessions.store.engine) as session:
        return str(session.execute(select(Photo.id).where(Photo.sha256 == w.sha256)).scalar())


def _signer() -> Any:
    from accounts.roles import AUDITOR
    from accounts.store import NewAccount

    return NewAccount("acl-signer", "表格测试员", [Grant(AUDITOR)])
