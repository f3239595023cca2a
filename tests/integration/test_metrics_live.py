"""The operators' metrics, by use: a report driven through the real API (two processes), worker,
SQL sink and notifier, and the numbers read back from each process's /metrics; logs as JSON
lines."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts.roles import MONITOR, Grant
from accounts.sample import SampleSessions
from accounts.store import AccountStore
from chaos.observe import WebhookReceiver, metrics_url, present, scrape, total
from demo import images
from demo.live import free_port
from gridflow.core.refdata import load_reference_data
from gridflow.settings import Settings
from infra import services
from sinks.models import make_engine

pytestmark = pytest.mark.integration

REF = load_reference_data()


def wait_for(what: str, probe: Callable[[], Any], procs: list[services.Service],
             timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        for p in procs:
            p.check()
        try:
            last = probe()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


CAPTURED = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()


def report_files(report_id: str, photo: bytes) -> list[Any]:
    report = {"report_id": report_id, "category_code": "E0102", "description": "村口垃圾堆积",
              "lat": 32.16, "lon": 109.96, "captured_at": CAPTURED}
    return [("report", (None, json.dumps(report, ensure_ascii=False).encode(),
                        "application/json")),
            ("photos", ("a.jpg", photo, "image/jpeg"))]


@pytest.mark.timeout(300)
def test_a_report_shows_in_every_process_metrics(stack_settings: Settings,
                                                 tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("api", "worker", "sink", "notify")}
    settings = stack_settings.with_(
        api_port=ports["api"], worker_metrics_port=ports["worker"],
        sink_metrics_port=ports["sink"], notify_metrics_port=ports["notify"],
        faust_data_dir=tmp_path / "faust", worker_session_timeout_s=6.0, log_format="json")
    procs: list[services.Service] = []
    with WebhookReceiver() as hooks:
        config = tmp_path / "notify.json"
        config.write_text(json.dumps({
            "retry": {"first_s": 0.5, "max_s": 5},
            "departments": {code: {"method": "webhook", "url": f"{hooks.url}/{code}"}
                            for code in REF.departments}}), encoding="utf-8")
        try:
            procs.append(services.start("api", ["api", "--workers", "2"], settings, tmp_path))
            api = settings.api_url
            wait_for("the API", lambda: httpx.get(f"{api}/api/v1/health").status_code == 200,
                     procs, 60)
            procs += [
                services.start("worker", ["worker", "--loglevel", "info"], settings, tmp_path),
                services.start("sink", ["sink"], settings, tmp_path),
                services.start("notify", ["notify", "--config", str(config)], settings, tmp_path),
            ]
            engine = make_engine(settings.database_url)
            store = AccountStore(engine, REF)
            worker = SampleSessions(store, "metrics").bearer("gw0001")
            _, key = store.add_key("prometheus", Grant(MONITOR), "test")
            monitor = {"Authorization": f"Bearer {key}"}

            # one report accepted, its retry answered again, one refused (not an image)
            photo = images.make_jpeg(320, 240, seed=5, gps=(32.16, 109.96))
            rid = f"metrics-{uuid.uuid4().hex[:12]}"
            first = httpx.post(f"{api}/api/v1/reports", files=report_files(rid, photo),
                               headers=worker, timeout=60)
            assert first.status_code == 202, first.text
            again = httpx.post(f"{api}/api/v1/reports", files=report_files(rid, photo),
                               headers=worker, timeout=60)
            assert again.status_code == 200, again.text
            bad = httpx.post(f"{api}/api/v1/reports", headers=worker, timeout=60,
                             files=report_files(f"metrics-{uuid.uuid4().hex[:12]}",
                                                b"not a picture at all"))
            assert 400 <= bad.status_code < 500, bad.text
            reason = bad.json()["code"]

            # the API's /metrics: a monitor key only; the counts of both API processes
            assert httpx.get(f"{api}/metrics").status_code == 401
            assert httpx.get(f"{api}/metrics", headers=worker).status_code == 403
            api_samples = scrape(f"{api}/metrics", monitor)
            assert total(api_samples, "gridflow_reports_accepted_total", channel="app") == 1
            assert total(api_samples, "gridflow_reports_repeated_total", channel="app") == 1
            assert total(api_samples, "gridflow_reports_refused_total", channel="app",
                         reason=reason) == 1

            # the sink: the report's events applied, its dispatch timed, one open task, its
            # photo archived (backlog back to 0), nothing behind
            sink_url = metrics_url(ports["sink"])

            def sink_done() -> Any:
                s = scrape(sink_url)
                done = (total(s, "gridflow_events_applied_total", type="TaskDispatched") >= 1
                        and total(s, "gridflow_events_applied_total", type="PhotoArchived") >= 1
                        and total(s, "gridflow_archive_backlog") == 0
                        # the gauges read the database: wait until its commit is visible too
                        and total(s, "gridflow_tasks_open") == 1
                        and present(s, "gridflow_consumer_lag", consumer="sql-sink")
                        and total(s, "gridflow_consumer_lag", consumer="sql-sink") == 0)
                return s if done else None

            sink = wait_for("the sink's metrics to show the report", sink_done, procs)
            assert total(sink, "gridflow_report_to_dispatch_seconds_count") == 1
            assert 0 < total(sink, "gridflow_report_to_dispatch_seconds_sum") < 60
            assert total(sink, "gridflow_tasks_open") == 1
            assert total(sink, "gridflow_tasks_overdue") == 0
            assert total(sink, "gridflow_dead_letters") == 0
            assert total(sink, "gridflow_metrics_source_up", source="kafka") == 1
            assert total(sink, "gridflow_metrics_source_up", source="database") == 1

            # the worker: its group's lag per partition, every input topic, caught up
            group = f"{settings.topic_prefix}-processor"

            def worker_caught_up() -> Any:
                s = scrape(metrics_url(ports["worker"]))
                lagging = [(lab, v) for n, lab, v in s
                           if n == "gridflow_consumer_lag" and lab["topic"] != "deadline-ticks"
                           and v]
                return s if present(s, "gridflow_consumer_lag", consumer=group) \
                    and not lagging else None

            worker_samples = wait_for("the worker's group to catch up", worker_caught_up, procs)
            topics = {lab["topic"] for n, lab, _ in worker_samples
                      if n == "gridflow_consumer_lag"}
            assert {"reports", "reports-located", "case-commands", "case-events"} <= topics

            # the notifier: the new task's notice delivered, none pending or failing
            def notified() -> Any:
                s = scrape(metrics_url(ports["notify"]))
                return s if (total(s, "gridflow_notifications_sent_total") >= 1
                             and total(s, "gridflow_notifications_pending") == 0) else None

            note = wait_for("the notice to be delivered", notified, procs)
            assert total(note, "gridflow_notifications_failing") == 0
            assert total(note, "gridflow_consumer_lag", consumer="notify") == 0
            assert hooks.distinct == 1 and hooks.repeats == 0
        finally:
            for p in procs:
                p.stop()

    # GRIDFLOW_LOG_FORMAT=json: every log record on stderr is one JSON object
    for name in ("sink", "notify", "worker", "api"):
        records = [json.loads(line) for line in
                   (tmp_path / f"{name}.log").read_text(errors="replace").splitlines()
                   if line.startswith("{")]
        assert records, f"{name} logged no JSON line"
        assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
        assert {r["service"] for r in records} == {name}
