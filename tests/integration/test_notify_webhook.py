"""Department notifications on the real stack: case events on Kafka, send states in PostgreSQL,
and a real HTTP webhook server on 127.0.0.1 that fails, times out, or works.

What a user would check: a department whose endpoint failed a few times still gets its notice,
exactly once; a timed-out call is tried again; every failure's count and reason, and when the
next attempt is due, are in the database; a restart or a redelivered event sends nothing twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from streams import produce

from bootstrap import bundled_planner
from gridflow import events as ev
from gridflow.core.case import decide, new_case
from gridflow.core.notify import load_notify_config
from gridflow.core.refdata import load_reference_data
from gridflow.events import Message, iso
from sinks.models import make_engine
from sinks.notify import Notifier, run_notifier, send_states
from sinks.notify_models import RETRYING, SENT, create_notify_tables

pytestmark = pytest.mark.integration

REF = load_reference_data()
PLANNER = bundled_planner()
T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)
GRID = "421099101201001"


@dataclass
class Call:
    path: str
    notice_id: str
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Webhooks:
    """A real HTTP server: /flaky fails its first `fail_first` calls of each notice with 500,
    /slow sleeps past the client's timeout on its first call, /down always answers 500."""

    fail_first: int = 3
    slow_s: float = 2.0
    calls: list[Call] = field(default_factory=list)
    arrived: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> int:
        notice = body.get("notice_id", "")
        with self.lock:  # counted on arrival: a call still sleeping counts
            seen = self.arrived.get(notice, 0)
            self.arrived[notice] = seen + 1
        status = 200
        if path == "/flaky" and seen < self.fail_first:
            status = 500
        elif path == "/slow" and seen == 0:
            time.sleep(self.slow_s)
            status = 0  # answered after the caller gave up: not a delivery it knows of
        elif path == "/down":
            status = 500
        with self.lock:
            self.calls.append(Call(path, notice, status, body, headers))
        return status

    def delivered(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == path and c.status == 200]

    def tried(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == path]


@pytest.fixture
def webhooks() -> Iterator[Webhooks]:
    hooks = Webhooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = hooks.handle(self.path, json.loads(raw), dict(self.headers.items()))
            try:
                self.send_response(status or 200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else "服务暂不可用 boom".encode())
            except OSError:
                pass  # the client gave up (timeout) and closed the connection

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hooks.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="webhooks", daemon=True)
    thread.start()
    try:
        yield hooks
    finally:
        server.shutdown()
        server.server_close()


def case_events(case_id: str, department: str) -> list[Message]:
    """A case filed to one department, by the real aggregate: CaseFiled, TaskDispatched."""
    filing = Message(
        id=f"file-{case_id}", type=ev.FILE_REPORT, case_id=case_id, at=iso(T0),
        actor=f"worker:GW0001@{GRID}",
        data={"report": {"report_id": f"r-{case_id}", "reporter": f"worker:GW0001@{GRID}",
                         "photos": []},
              "category_code": "E0102", "severity": 1, "grid_code": GRID,
              "village_code": "421099101201", "township_code": "421099101",
              "departments": [department]})
    return decide(new_case(case_id), filing, PLANNER).events


def wait_for(what: str, done: Callable[[], bool], thread: threading.Thread,
             timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return
        assert thread.is_alive(), "the notifier stopped"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Running:
    """run_notifier in a thread, as `gridflow notify` runs it, until stopped."""

    def __init__(self, settings: Any, notifier: Notifier) -> None:
        self.stop = threading.Event()
        self.notifier = notifier
        self.rounds = 0  # finished rounds: take in what was read, then deliver what is due
        self.thread = threading.Thread(
            target=run_notifier, args=(settings, notifier, self.stop),
            kwargs={"poll_timeout_ms": 100, "on_round": self._round}, name="notifier",
            daemon=True)
        self.thread.start()

    def _round(self, stats: Any) -> None:
        self.rounds += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.notifier.close()
        assert not self.thread.is_alive()


def test_failing_and_slow_webhooks_are_retried_until_delivered_once(
    stack, stack_settings, pg_url, webhooks, tmp_path: Path
):
    config_file = tmp_path / "notify.json"
    config_file.write_text(json.dumps({
        "default": {"method": "log"},
        "retry": {"first_s": 0.2, "max_s": 1.0},
        "departments": {
            "421099101201.cwh": {"method": "webhook", "url": f"{webhooks.url}/flaky"},
            "county.huanjing": {"method": "webhook", "url": f"{webhooks.url}/slow",
                                "timeout_s": 0.5},
            "county.shuili": {"method": "webhook", "url": f"{webhooks.url}/down"},
        },
    }), encoding="utf-8")
    config = load_notify_config(config_file, REF)
    engine = make_engine(pg_url)
    create_notify_tables(engine)
    prefix, bootstrap = stack_settings.topic_prefix, stack.bootstrap
    histories = {
        "AJ-FLAKY": case_events("AJ-FLAKY", "421099101201.cwh"),
        "AJ-SLOW": case_events("AJ-SLOW", "county.huanjing"),
        "AJ-DOWN": case_events("AJ-DOWN", "county.shuili"),
        "AJ-LOG": case_events("AJ-LOG", "county.chengguan"),  # no webhook: the default, log
    }
    for case_id, events in histories.items():
        for e in events:
            produce(bootstrap, f"{prefix}.case-events", case_id, e.encode())

    run = Running(stack_settings, Notifier(engine, config, REF, consumer="notify-it"))
    try:
        def state(case_id: str) -> dict[str, Any]:
            rows = send_states(engine, case_id=case_id)
            return rows[0] if rows else {}

        wait_for("the flaky and the slow webhook to get theirs",
                 lambda: state("AJ-FLAKY").get("status") == SENT
                 and state("AJ-SLOW").get("status") == SENT, run.thread)
        wait_for("the dead webhook to fail three times",
                 lambda: state("AJ-DOWN").get("fail_count", 0) >= 3, run.thread)
        wait_for("the slow webhook's first call to end",
                 lambda: len(webhooks.tried("/slow")) == 2, run.thread)
    finally:
        run.close()

    # the flaky endpoint: 500, 500, 500, then delivered — once
    flaky = state("AJ-FLAKY")
    task_id = histories["AJ-FLAKY"][1].data["task_id"]
    assert [c.status for c in webhooks.tried("/flaky")] == [500, 500, 500, 200]
    [delivered] = webhooks.delivered("/flaky")
    assert delivered.body["notice_id"] == flaky["notice_id"]
    assert delivered.headers["Idempotency-Key"] == flaky["notice_id"]
    assert delivered.body["kind"] == "new_task" and delivered.body["task_id"] == task_id
    assert "请于" in delivered.body["text_zh"] and delivered.body["sign_due"]
    assert (flaky["status"], flaky["fail_count"], flaky["attempts"]) == (SENT, 3, 4)
    assert flaky["last_failure"].startswith("HTTP 500") and flaky["task_id"] == task_id
    assert flaky["kind"] == "new_task" and flaky["target"] == f"{webhooks.url}/flaky"

    # the slow endpoint: the first call timed out, the second was delivered
    slow = state("AJ-SLOW")
    assert sorted(c.status for c in webhooks.tried("/slow")) == [0, 200]  # timed out, then ok
    assert {c.headers["Idempotency-Key"] for c in webhooks.tried("/slow")} == {slow["notice_id"]}
    assert (slow["status"], slow["fail_count"]) == (SENT, 1)
    assert "timed out after 0.5 s" in slow["last_failure"]

    # the dead endpoint: still retrying, with its count, reason and next attempt on record
    down = state("AJ-DOWN")
    assert down["status"] == RETRYING and down["sent_at"] is None
    assert down["fail_count"] >= 3 and down["last_failure"].startswith("HTTP 500")
    assert down["next_attempt_at"] > down["last_attempt_at"]

    assert state("AJ-LOG")["status"] == SENT and state("AJ-LOG")["method"] == "log"

    # the same events delivered again (a producer retry upstream), and a restart: nothing new
    for e in histories["AJ-FLAKY"]:
        produce(bootstrap, f"{prefix}.case-events", "AJ-FLAKY", e.encode())
    down_fails = down["fail_count"]

    def offsets() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(
                "SELECT sum(next_offset) FROM notify_offsets WHERE consumer = 'notify-it'"
            ).scalar() or 0)

    everything = sum(len(h) for h in histories.values()) + len(histories["AJ-FLAKY"])
    run = Running(stack_settings, Notifier(engine, config, REF, consumer="notify-it"))
    try:
        wait_for("the dead webhook to be tried again after the restart",
                 lambda: state("AJ-DOWN")["fail_count"] > down_fails, run.thread)
        wait_for("the restarted notifier to have taken in the events delivered again",
                 lambda: offsets() == everything, run.thread)
        rounds = run.rounds  # and the round that took them in to have delivered what was due
        wait_for("the notifier's next round to end", lambda: run.rounds > rounds, run.thread)
    finally:
        run.close()
    assert len(webhooks.delivered("/flaky")) == 1 and len(webhooks.tried("/flaky")) == 4
    assert len(send_states(engine, case_id="AJ-FLAKY")) == 1
    assert offsets() == everything
    engine.dispose()
