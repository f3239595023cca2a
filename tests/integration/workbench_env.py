"""The workbench on the real stack for page tests: the API app with the pages mounted, a real
Kafka log, MinIO and PostgreSQL, and the processors' steps plus the SQL sink run in-process on
the very records the pages published (demo.live.InProcessPipeline).

A `Person` is a browser without scripts: the session cookie, the CSRF field in every form, and
redirects read by hand, as a page's links and forms would be followed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import httpx

from accounts import credentials as cred
from accounts.sample import SampleSessions
from accounts.store import AccountStore
from demo import images
from demo.live import InProcessPipeline, LiveApi, real_deps
from gridflow import topics
from gridflow.core.refdata import load_reference_data
from gridflow.events import decode_message
from gridflow.settings import Settings
from producers.app import create_app
from tests.support.api import ApiEnv, report_id_of

REF = load_reference_data()
VILLAGE = "421099101201.cwh"  # 石门村村委会: E0102 in 石门村一组网格 goes here
CENTRE = "421099101.zongzhi"  # 青石镇综治中心: where a send-back goes by default
DEPT_LOGIN = {VILLAGE: "ds0019", CENTRE: "ds0015", "county.chengguan": "ds0003",
              "county.huanjing": "ds0004", "county.zhujian": "ds0005"}


def workbench_app(settings: Settings, deps: Any) -> Any:
    """The API app with the pages (mounted by producers.app once that edit lands; installed
    here otherwise)."""
    from workbench.app import install

    app = create_app(settings, deps)
    if not hasattr(app.state, "workbench"):
        install(app)
    return app


@dataclass
class Person:
    env: WorkbenchEnv
    login: str

    @property
    def token(self) -> str:
        return self.env.sessions.token(self.login)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.env.url, timeout=60, follow_redirects=False,
                            cookies={"gridflow_session": self.token},
                            headers={"Accept": "text/html"})

    @property
    def csrf(self) -> str:
        return cred.csrf_token(self.token)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        with self.client() as c:
            return c.get(path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, files: Any = None,
             csrf: bool = True) -> httpx.Response:
        fields = {"csrf_token": self.csrf} if csrf else {}
        fields.update(data or {})
        with self.client() as c:
            if files:  # the CSRF field first, as the pages' forms put it
                parts = [(k, (None, str(v).encode())) for k, v in fields.items()]
                return c.post(path, files=[*parts, *files])
            return c.post(path, data=fields)


class MovableClock:
    """The API's (domain) clock, set back for a test's history and forward again."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class WorkbenchEnv(ApiEnv):
    def __init__(self, settings: Any, s3: Any, deps: Any, url: str, pipeline: InProcessPipeline,
                 sessions: SampleSessions, clock: MovableClock) -> None:
        super().__init__(settings, s3, deps, url)
        self.pipeline = pipeline
        self.sessions = sessions
        self.clock = clock

    def person(self, login: str) -> Person:
        return Person(self, login)

    def staff(self, department: str) -> Person:
        return self.person(DEPT_LOGIN[department])

    def file_report(self, category: str = "E0102", lat: float = 32.16, lon: float = 109.96,
                    worker: str = "gw0001", description: str = "村口垃圾堆积") -> str:
        """A grid worker's report through the API, filed: the case id."""
        report = {"report_id": f"wb-{uuid.uuid4().hex[:16]}", "category_code": category,
                  "description": description, "lat": lat, "lon": lon,
                  "captured_at": (self.clock() - timedelta(minutes=3)).isoformat()}
        r = httpx.post(f"{self.url}/api/v1/reports", headers=self.sessions.bearer(worker),
                       timeout=60, files=[
                           ("report", (None, json.dumps(report).encode(), "application/json")),
                           ("photos", ("a.jpg", photo(1), "image/jpeg"))])
        assert r.status_code == 202, r.text
        rid = report["report_id"]
        [record] = [x for x in self.report_records(rid) if report_id_of(x) == rid]
        self.pipeline.report(record.value, self.clock())
        return str(r.json()["case_id"])

    def decide(self, answer: httpx.Response) -> list[str]:
        """The commands a form's redirect names: taken off case-commands and decided."""
        assert answer.status_code == 303, answer.text[:2000]
        location = answer.headers["location"]
        ids = re.findall(r"cmd=([0-9a-f]{32})", location)
        assert ids, location
        for cid in ids:
            self.decide_id(cid)
        return ids

    def decide_id(self, cid: str) -> None:
        def mine(r: Any) -> bool:
            return decode_message(r.value).id == cid

        records = self.read(topics.CASE_COMMANDS, lambda rs: any(mine(r) for r in rs))
        record = next(r for r in records if mine(r))
        self.pipeline.command(record.value, record.key.decode(), self.clock())


def photo(seed: int) -> bytes:
    return images.make_jpeg(320, 240, seed=seed, gps=(32.16, 109.96))


def outcomes_of(html: str) -> list[tuple[str, str]]:
    """The decisions a page announces at its top: (accepted | refused | pending, text)."""
    return [(status, text_of(body)) for status, body in re.findall(
        r'<div class="outcome outcome-(\w+)"[^>]*>(.*?)</div>', html, flags=re.S)]


def text_of(html: str) -> str:
    """A page's visible text, roughly: tags out, whitespace folded."""
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def running_workbench(stack: Any, stack_settings: Settings, pg_url: str) -> Iterator[WorkbenchEnv]:
    """What a test module's `wb` fixture yields (see test_workbench_department)."""
    settings = stack_settings.with_(database_url=pg_url)
    s3 = stack.s3()
    deps = real_deps(settings, s3, REF)
    clock = MovableClock()
    deps.clock = clock
    app = workbench_app(settings, deps)
    with LiveApi(app) as api:
        sessions = SampleSessions(AccountStore(deps.engine, REF), "wb-test")
        yield WorkbenchEnv(settings, s3, deps, api.url, InProcessPipeline(deps.engine, REF),
                           sessions, clock)
    deps.engine.dispose()
