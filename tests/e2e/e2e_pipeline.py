"""End-to-end helpers: what phones, department staff and supervisors do over HTTP against the
child processes of tests/e2e/conftest.py, and a webhook server standing in for departments.

For tests only. Every wait polls with a deadline and checks the children are still alive, so
a dead worker fails the test with its log tail instead of a timeout.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from accounts.people import county_people
from accounts.roles import COUNTY_SUPERVISOR, DEPT_STAFF
from accounts.sample import SampleSessions
from accounts.store import AccountStore
from demo import images
from gridflow.clock import clock_from_spec
from gridflow.core import geo
from gridflow.core.refdata import Worker, load_reference_data
from gridflow.settings import Settings
from infra import services
from infra.procs import port_bindable

REF = load_reference_data()
# Monday 2026-11-30 08:31 in Beijing: a working morning, 3.5 working hours before lunch.
SIM_START = datetime(2026, 11, 30, 0, 31, tzinfo=UTC)
SPEED = 120.0  # simulated seconds per real second: a 30-minute sign-for limit is 15 s


def free_port() -> int:
    """A free port below the ephemeral range (no outgoing connection can take it meanwhile)."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 32000)
        if port_bindable("127.0.0.1", port):
            return port


# --- a department's webhook endpoint ---------------------------------------------------------


@dataclass
class Inbox:
    """Everything the notifier POSTed to the test's webhook server (always answers 200)."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def notices(self, **match: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [n for n in self.received if all(n.get(k) == v for k, v in match.items())]


@contextlib.contextmanager
def webhook_server() -> Iterator[Inbox]:
    inbox = Inbox()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with inbox.lock:
                inbox.received.append({**body, "path": self.path})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    inbox.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="e2e-webhooks", daemon=True)
    thread.start()
    try:
        yield inbox
    finally:
        server.shutdown()
        server.server_close()


# --- the pipeline and a client for it --------------------------------------------------------


@dataclass
class Upload:
    report_id: str
    case_id: str
    worker: Worker


class Pipeline:
    """The children, and what phones, department staff and supervisors do over HTTP."""

    def __init__(self, settings: Settings, procs: list[services.Service], inbox: Inbox,
                 clock_spec: str) -> None:
        self.settings, self.procs, self.webhooks = settings, procs, inbox
        self.clock = clock_from_spec(clock_spec)
        self.http = httpx.Client(base_url=settings.api_url, timeout=60)
        from sinks.models import make_engine

        # The sample county's people as accounts in the API's database, signed in as a test
        # does it: through the account store, tokens in memory only.
        self.engine = make_engine(settings.database_url)
        self.sessions = SampleSessions(AccountStore(self.engine, REF), "e2e")
        people = sorted((p for p in county_people(REF) if p.active), key=lambda p: p.login)
        self.staff: dict[str, list[str]] = {}
        for p in people:
            for g in p.grants:
                if g.role == DEPT_STAFF:
                    self.staff.setdefault(g.scope, []).append(p.login)
        self.supervisor = self.sessions.token(next(
            p.login for p in people if any(g.role == COUNTY_SUPERVISOR for g in p.grants)))
        self._n = 0

    # --- who -------------------------------------------------------------------------------

    def dept(self, code: str, which: int = 0) -> str:
        """A session token of the department's `which`-th staff member."""
        return self.sessions.token(self.staff[code][which])

    def worker(self, worker: Worker) -> str:
        """A session token of the grid worker."""
        return self.sessions.token(worker.id)

    def check(self) -> None:
        for p in self.procs:
            p.check()

    def wait(self, what: str, probe: Callable[[], Any], timeout_s: float = 60) -> Any:
        """Poll `probe` until it returns something truthy; fail naming `what` and the last try."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            self.check()
            last = probe()
            if last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}")

    # --- phones ----------------------------------------------------------------------------

    def upload(self, worker: Worker, category: str, photos: int = 2,
               description: str = "现场问题, 请处理") -> Upload:
        """A grid worker's phone upload: report JSON + real JPEGs with EXIF GPS and time."""
        self._n += 1
        lat, lon = geo.representative_point(REF.grids[worker.grid_code])
        now = self.clock()
        report_id = f"e2e-{uuid.uuid4().hex[:16]}"
        report = {"report_id": report_id, "category_code": category, "description": description,
                  "lat": lat, "lon": lon, "captured_at": (now - timedelta(minutes=2)).isoformat()}
        taken = now.astimezone(UTC).replace(tzinfo=None) + timedelta(hours=8)
        files = [("report", (None, json.dumps(report, ensure_ascii=False).encode(),
                             "application/json"))]
        for i in range(photos):
            jpeg = images.make_jpeg(640, 480, seed=self._n * 10 + i, gps=(lat, lon),
                                    taken_at=taken)
            files.append(("photos", (f"IMG_{i}.jpg", jpeg, "image/jpeg")))
        r = self.http.post("/api/v1/reports", files=files, headers=self.auth(self.worker(worker)))
        assert r.status_code == 202, r.text
        return Upload(report_id, r.json()["case_id"], worker)

    def report(self, up: Upload) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/reports/{up.report_id}",
                          headers=self.auth(self.worker(up.worker)))
        assert r.status_code == 200, r.text
        return r.json()

    def report_when(self, up: Upload, what: str, done: Callable[[dict[str, Any]], bool],
                    timeout_s: float = 60) -> dict[str, Any]:
        return self.wait(what, lambda: (lambda s: s if done(s) else None)(self.report(up)),
                         timeout_s)

    def filed(self, up: Upload, tasks: int = 1) -> dict[str, Any]:
        return self.report_when(up, f"report {up.report_id} filed with {tasks} task(s)",
                                lambda s: s["status"] == "filed" and len(s["tasks"]) >= tasks)

    # --- commands --------------------------------------------------------------------------

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def post(self, path: str, token: str, key: str | None = None, **kwargs: Any) -> dict[str, Any]:
        headers = self.auth(token) | ({"Idempotency-Key": key} if key else {})
        r = self.http.post(path, headers=headers, **kwargs)
        assert r.status_code == 202, r.text
        return r.json()

    def outcome(self, submitted: dict[str, Any], timeout_s: float = 60) -> dict[str, Any]:
        """GET /api/v1/commands/{id} until the processor has decided it."""
        def probe() -> dict[str, Any] | None:
            r = self.http.get(submitted["status_url"], params={"wait": 2},
                              headers=self.auth(self.supervisor))
            assert r.status_code == 200, r.text
            body = r.json()
            return body if body["status"] != "pending" else None

        return self.wait(f"the outcome of {submitted['command_id']}", probe, timeout_s)

    def do(self, path: str, token: str, **kwargs: Any) -> dict[str, Any]:
        """Submit a command and wait for it to be accepted."""
        outcome = self.outcome(self.post(path, token, **kwargs))
        assert outcome["status"] == "accepted", outcome
        return outcome

    def resolve(self, task_id: str, token: str, photos: int = 2) -> dict[str, Any]:
        part = json.dumps({"note": "已处置完毕, 现场已恢复"}, ensure_ascii=False).encode()
        files = [("resolution", (None, part, "application/json"))] + [
            ("photos", (f"after{i}.jpg", images.make_jpeg(640, 480, seed=900 + i),
                        "image/jpeg")) for i in range(photos)]
        return self.do(f"/api/v1/tasks/{task_id}/resolve", token, files=files)

    def inbox(self, code: str, token: str, **params: Any) -> list[str]:
        r = self.http.get(f"/api/v1/departments/{code}/inbox", headers=self.auth(token),
                          params={k: v for k, v in params.items() if v is not None})
        assert r.status_code == 200, r.text
        return sorted(t["task_id"] for t in r.json()["tasks"])



def healthy(p: Pipeline) -> bool:
    try:
        return p.http.get("/api/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
