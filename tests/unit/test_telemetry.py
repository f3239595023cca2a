"""The operators' metrics and logs, the pure parts: which requests are report submissions and
how they are counted, the sink's observations, JSON log lines, the wall clock behind a scaled
one, and the Kafka proxy's rewriting of advertised broker ports."""

from __future__ import annotations

import json
import logging
import struct
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from chaos.proxy import KafkaProxy
from gridflow.clock import clock_from_spec, scaled_spec, wall_epoch_of
from gridflow.settings import Settings, load_settings
from gridflow.telemetry import JsonFormatter, logging_config, sink_observer
from producers.metrics import channel_of, count


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_report_submissions_are_recognised_by_method_and_path() -> None:
    assert channel_of("POST", "/api/v1/reports") == "app"
    assert channel_of("POST", "/open311/v2/requests.json") == "open311"
    assert channel_of("POST", "/r/421099101201001") == "qr"
    assert channel_of("POST", "/r/t/QS-1") is None  # a ticket page, not a report
    assert channel_of("GET", "/api/v1/reports") is None
    assert channel_of("POST", "/api/v1/tasks/x/sign") is None


def test_outcomes_are_counted_as_accepted_repeated_or_refused_with_their_reason() -> None:
    before = (sample("gridflow_reports_accepted_total", channel="app"),
              sample("gridflow_reports_repeated_total", channel="app"),
              sample("gridflow_reports_refused_total", channel="app", reason="log_unavailable"),
              sample("gridflow_reports_refused_total", channel="qr", reason="http_422"),
              sample("gridflow_reports_accepted_total", channel="qr"))
    count("app", 202, None)
    count("app", 200, None)  # a retry answered with the first answer
    count("app", 503, "log_unavailable")
    count("qr", 422, None)  # a refusal without a code of ours
    count("qr", 303, None)  # the form's redirect to its ticket page
    after = (sample("gridflow_reports_accepted_total", channel="app"),
             sample("gridflow_reports_repeated_total", channel="app"),
             sample("gridflow_reports_refused_total", channel="app", reason="log_unavailable"),
             sample("gridflow_reports_refused_total", channel="qr", reason="http_422"),
             sample("gridflow_reports_accepted_total", channel="qr"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1, 1]


def test_the_sink_times_a_reports_first_dispatch_from_its_event_time_to_the_log() -> None:
    at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)

    def event(type_: str, reason: str = "routing") -> SimpleNamespace:
        return SimpleNamespace(id=type_, type=type_, data={"reason": reason}, at_dt=at)

    logged = int((at + timedelta(seconds=1.5)).timestamp() * 1000)
    record = SimpleNamespace(timestamp=logged)
    n0 = sample("gridflow_report_to_dispatch_seconds_count")
    s0 = sample("gridflow_report_to_dispatch_seconds_sum")
    a0 = sample("gridflow_events_applied_total", type="TaskDispatched")
    sink_observer("wall")([(record, event("CaseFiled")), (record, event("TaskDispatched")),
                           (record, event("TaskDispatched", reason="whistle"))])
    assert sample("gridflow_report_to_dispatch_seconds_count") - n0 == 1  # routing only
    assert sample("gridflow_report_to_dispatch_seconds_sum") - s0 == pytest.approx(1.5)
    assert sample("gridflow_events_applied_total", type="TaskDispatched") - a0 == 2


def test_a_scaled_clocks_time_maps_back_to_the_wall_clock() -> None:
    spec = scaled_spec(datetime(2026, 11, 30, 0, 31, tzinfo=UTC), 120.0, anchor_epoch=1000.0)
    sim = clock_from_spec(spec)
    wall_of = wall_epoch_of(spec)
    assert wall_of(datetime(2026, 11, 30, 0, 33, tzinfo=UTC)) == pytest.approx(1001.0)
    assert abs(wall_of(sim()) - datetime.now(UTC).timestamp()) < 1.0
    assert wall_epoch_of("wall")(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(
        2026, 1, 1, tzinfo=UTC).timestamp()


def test_json_log_lines_carry_time_level_logger_service_and_the_exception() -> None:
    fmt = JsonFormatter("sink")
    try:
        raise ValueError("数据库不可用")
    except ValueError:
        import sys

        record = logging.LogRecord("gridflow.sinks", logging.WARNING, __file__, 1,
                                   "applying %d events failed", (3,), sys.exc_info())
    line = json.loads(fmt.format(record))
    assert line["level"] == "warning" and line["logger"] == "gridflow.sinks"
    assert line["service"] == "sink" and line["msg"] == "applying 3 events failed"
    assert "ValueError: 数据库不可用" in line["exc"]
    assert datetime.fromisoformat(line["ts"]).tzinfo is not None
    text = logging_config(Settings(), "info", "sink")
    assert "format" in text["formatters"]["default"]
    assert logging_config(Settings(log_format="json"), "info", "sink")["formatters"][
        "default"]["()"] == "gridflow.telemetry.JsonFormatter"


def test_log_format_and_metrics_ports_come_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDFLOW_LOG_FORMAT", "JSON")
    monkeypatch.setenv("GRIDFLOW_SINK_METRICS_PORT", "0")
    s = load_settings()
    assert s.log_format == "json" and s.sink_metrics_port == 0
    assert s.worker_metrics_port == 18091
    monkeypatch.setenv("GRIDFLOW_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="GRIDFLOW_LOG_FORMAT"):
        load_settings()


def test_the_kafka_proxy_rewrites_the_advertised_port_in_both_string_encodings() -> None:
    proxy = KafkaProxy("127.0.0.1", 19092)
    host = b"127.0.0.1"
    classic = struct.pack(">i", 1) + struct.pack(">h", len(host)) + host + struct.pack(
        ">i", 19092)
    compact = struct.pack(">i", 1) + bytes([len(host) + 1]) + host + struct.pack(">i", 19092)
    other = struct.pack(">i", 19092) + b"payload"  # the port alone, not after the host
    for frame in (classic, compact):
        out = proxy._rewrite(frame)
        assert len(out) == len(frame)
        assert out.endswith(struct.pack(">i", proxy.port))
    assert proxy._rewrite(other) == other
