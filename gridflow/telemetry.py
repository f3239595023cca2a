"""What operators see: Prometheus metrics of every process, and logs as JSON lines.

Every long-lived process serves metrics (prometheus_client): the ingest API at `/metrics`
(behind the `ops.metrics` action: a `monitor` API key), the worker, the SQL sink and the
notifier each on a small HTTP server of their own (`GRIDFLOW_WORKER_METRICS_PORT`,
`GRIDFLOW_SINK_METRICS_PORT`, `GRIDFLOW_NOTIFY_METRICS_PORT`; 0 disables; on
`GRIDFLOW_METRICS_HOST`, loopback by default). Counters are counted where things happen;
gauges (lag, backlogs, open tasks) are read when scraped, from Kafka and the database, by
`PipelineCollector` (at most once a `ttl_s`, so a burst of scrapes costs one reading).

| metric | type | served by |
| --- | --- | --- |
| `gridflow_reports_accepted_total{channel}` | counter | API |
| `gridflow_reports_repeated_total{channel}` (a retry answered with the first answer) | counter | API |
| `gridflow_reports_refused_total{channel,reason}` | counter | API |
| `gridflow_consumer_lag{consumer,topic,partition}` (records behind the log's end) | gauge | worker (its group), sink, notifier |
| `gridflow_events_applied_total{type}` (rate(): events applied per second) | counter | sink |
| `gridflow_report_to_dispatch_seconds` (report accepted → its first task on the log) | histogram | sink |
| `gridflow_archive_backlog` (photos in the read models not archived yet) | gauge | sink |
| `gridflow_retries_total{policy}` (failed attempts retried after a backoff: `archive`, `sql-sink`, `notify`, ...; gridflow.retry) | counter | worker, sink, notifier |
| `gridflow_dead_letters` (records on `<p>.dead-letters`) | gauge | sink |
| `gridflow_tasks_open`, `gridflow_tasks_overdue` | gauge | sink |
| `gridflow_notifications_pending`, `gridflow_notifications_failing` | gauge | notifier |
| `gridflow_notifications_sent_total`, `gridflow_notification_failures_total` | counter | notifier |
| `gridflow_metrics_source_up{source}` (whether Kafka / the database could be read) | gauge | worker, sink, notifier |

`GRIDFLOW_LOG_FORMAT=json` makes every process log one JSON object per line (time, level,
logger, service, message, exception) for a log collector; `text` (default) is for people.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gridflow.settings import Settings

log = logging.getLogger("gridflow.telemetry")

# --- counted where it happens ----------------------------------------------------------------

REPORTS_ACCEPTED = Counter(
    "gridflow_reports_accepted", "Reports the API acknowledged (on the log), by channel",
    ["channel"])
REPORTS_REPEATED = Counter(
    "gridflow_reports_repeated",
    "Retries of an acknowledged report answered with the first answer (nothing new published)",
    ["channel"])
REPORTS_REFUSED = Counter(
    "gridflow_reports_refused", "Report submissions the API refused, by channel and reason code",
    ["channel", "reason"])
EVENTS_APPLIED = Counter(
    "gridflow_events_applied",
    "Case events the SQL sink applied to the read models (rate(): events per second), by type",
    ["type"])
REPORT_TO_DISPATCH = Histogram(
    "gridflow_report_to_dispatch_seconds",
    "From a report's acceptance (its events' time) to its first task dispatched on the log "
    "(the TaskDispatched record's timestamp)",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))
RETRIES = Counter(
    "gridflow_retries",
    "Failed attempts retried after a backoff, by retry policy (gridflow.core.retry)", ["policy"])
NOTIFICATIONS_SENT = Counter(
    "gridflow_notifications_sent", "Notices delivered (a 2xx from the webhook, or logged)")
NOTIFICATION_FAILURES = Counter(
    "gridflow_notification_failures", "Failed delivery attempts (each retried with backoff)")


# --- read when scraped -----------------------------------------------------------------------

@dataclass(frozen=True)
class Consumer:
    """A consumer whose lag is exported: a Kafka group (`kafka`) or offsets kept in the
    database (`database`: the sink's `sink_offsets`, the notifier's `notify_offsets`)."""

    name: str
    where: str  # "kafka" | "database"
    topics: tuple[str, ...]  # topic suffixes it reads
    table: str = ""  # database: the offsets table


def worker_consumer(group: str, archive_only: bool = False) -> Consumer:
    suffixes = ("case-events",) if archive_only else (
        "reports", "reports-located", "case-commands", "case-events", "deadline-ticks")
    return Consumer(group, "kafka", suffixes)


def sink_consumer(name: str = "sql-sink") -> Consumer:
    return Consumer(name, "database", ("case-events", "dead-letters"), "sink_offsets")


def notify_consumer(name: str = "notify") -> Consumer:
    return Consumer(name, "database", ("case-events",), "notify_offsets")


class DatabaseReader(Protocol):
    """Reads a process's database when scraped (sinks.gauges.DatabaseReader)."""

    def offsets(self, table: str, consumer: str) -> dict[tuple[str, int], int]:
        """(topic, partition) -> next offset of `consumer` in the offsets table `table`."""
        ...

    def gauges(self) -> list[Metric]:
        """The gauges read from the database's tables."""
        ...


@dataclass(eq=False)  # registered by identity
class PipelineCollector(Collector):
    """Gauges read from Kafka and the database when scraped (cached for `ttl_s`).

    `consumers`: whose lag per partition; `database`: where the offsets of database consumers
    and the database's gauges are read (sinks.gauges.DatabaseReader: the read models' and the
    notifier's tables, wired by the composition root); `dead_letters`: records on the
    dead-letters topic. What cannot be read is left out, and `gridflow_metrics_source_up`
    says which source failed (a scrape never fails because Kafka or the database is down).
    """

    settings: Settings
    consumers: tuple[Consumer, ...] = ()
    database: DatabaseReader | None = None
    dead_letters: bool = False
    ttl_s: float = 1.0
    timeout_s: float = 5.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cached: tuple[float, list[Metric]] | None = field(default=None, repr=False)
    _kafka: Any = field(default=None, repr=False)
    _admin: Any = field(default=None, repr=False)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.ttl_s:
                self._cached = (time.monotonic(), self._read())
            yield from self._cached[1]

    def describe(self) -> Iterable[Metric]:
        return []  # read lazily: registering must not touch Kafka or the database

    # --- one reading ---------------------------------------------------------------------

    def _read(self) -> list[Metric]:
        up = GaugeMetricFamily("gridflow_metrics_source_up",
                               "Whether this process could read the source of its gauges",
                               labels=["source"])
        out: list[Metric] = []
        names = _topic_names(self.settings.topic_prefix)
        wanted = {n for c in self.consumers for n in c.topics}
        if self.dead_letters:
            wanted.add("dead-letters")
        ends: dict[tuple[str, int], tuple[int, int]] = {}
        if wanted:
            try:
                ends = self._end_offsets([names[s] for s in sorted(wanted)])
                up.add_metric(["kafka"], 1)
            except Exception as exc:  # noqa: BLE001 - reported as a gauge, never a failed scrape
                log.debug("metrics: reading end offsets failed: %s", exc)
                self._reset_kafka()
                up.add_metric(["kafka"], 0)
        db_ok: bool | None = None
        lag = GaugeMetricFamily("gridflow_consumer_lag",
                                "Records behind the end of the log, per consumer and partition",
                                labels=["consumer", "topic", "partition"])
        suffix_of = {v: k for k, v in names.items()}
        for consumer in self.consumers:
            try:
                offsets = self._offsets(consumer)
            except Exception as exc:  # noqa: BLE001
                log.debug("metrics: offsets of %s: %s", consumer.name, exc)
                if consumer.where == "kafka":
                    self._reset_kafka()
                else:
                    db_ok = False
                continue
            if consumer.where == "database":
                db_ok = db_ok if db_ok is False else True
            if not ends:
                continue
            for (topic, partition), (start, end) in sorted(ends.items()):
                suffix = suffix_of.get(topic, topic)
                if suffix not in consumer.topics:
                    continue
                done = max(offsets.get((topic, partition), start), start)
                lag.add_metric([consumer.name, suffix, str(partition)], max(0, end - done))
        out.append(lag)
        if self.dead_letters and ends:
            dl = names["dead-letters"]
            out.append(GaugeMetricFamily(
                "gridflow_dead_letters", "Records on the dead-letters topic",
                value=sum(e - s for (t, _), (s, e) in ends.items() if t == dl)))
        if self.database is not None:
            try:
                out += self.database.gauges()
                db_ok = db_ok if db_ok is False else True
            except Exception as exc:  # noqa: BLE001
                log.debug("metrics: database gauges: %s", exc)
                db_ok = False
        if db_ok is not None:
            up.add_metric(["database"], 1 if db_ok else 0)
        out.append(up)
        return out

    def _end_offsets(self, topic_names: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
        from kafka import KafkaConsumer, TopicPartition

        ms = int(self.timeout_s * 1000)
        if self._kafka is None:
            self._kafka = KafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False,
                client_id="gridflow-metrics", request_timeout_ms=max(ms, 1000),
                metadata_max_age_ms=30000)
        tps = [TopicPartition(n, p) for n in topic_names
               for p in sorted(self._kafka.partitions_for_topic(n) or ())]
        if not tps:
            return {}
        ends = self._kafka.end_offsets(tps)
        starts = self._kafka.beginning_offsets(tps)
        return {(tp.topic, tp.partition): (int(starts[tp]), int(ends[tp])) for tp in tps}

    def _offsets(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        if consumer.where == "kafka":
            return self._group_offsets(consumer.name)
        if self.database is None:
            raise LookupError(f"no database to read the offsets of {consumer.name} from")
        return self.database.offsets(consumer.table, consumer.name)

    def _group_offsets(self, group: str) -> dict[tuple[str, int], int]:
        from kafka.admin import KafkaAdminClient

        from gridflow.kafka_groups import committed_offsets

        if self._admin is None:
            ms = int(self.timeout_s * 1000)
            self._admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap,
                                           client_id="gridflow-metrics",
                                           request_timeout_ms=max(ms, 1000))
        return committed_offsets(self._admin, group)

    def _reset_kafka(self) -> None:
        for client in (self._kafka, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing a broken client is best effort
                    pass
        self._kafka = self._admin = None


def _topic_names(prefix: str) -> dict[str, str]:
    from gridflow import topics

    return topics.topic_names(prefix)


# --- the sink's per-event observations -------------------------------------------------------

def sink_observer(clock_spec: str) -> Callable[[list[tuple[Any, Any]]], None]:
    """What the SQL sink calls with the (record, event) pairs a committed batch applied:
    counts them, and times each report's first dispatch (TaskDispatched for routing) from the
    event's time, the report's acceptance, to the record's log timestamp."""
    from gridflow import events as ev
    from gridflow.clock import wall_epoch_of

    wall_of = wall_epoch_of(clock_spec)

    def observe(applied: list[tuple[Any, Any]]) -> None:
        counts: dict[str, int] = {}
        for record, m in applied:
            counts[m.type] = counts.get(m.type, 0) + 1
            if m.type == ev.TASK_DISPATCHED and m.data.get("reason") == "routing":
                logged = _epoch_s(record.timestamp)
                if logged is not None:
                    try:
                        REPORT_TO_DISPATCH.observe(max(0.0, logged - wall_of(m.at_dt)))
                    except Exception:  # noqa: BLE001 - a bad time is not worth a sink crash
                        log.debug("no dispatch latency for %s", m.id, exc_info=True)
        for kind, n in counts.items():
            EVENTS_APPLIED.labels(kind).inc(n)

    return observe


def _epoch_s(ts: Any) -> float | None:
    if isinstance(ts, datetime):
        return ts.timestamp()
    if isinstance(ts, int | float) and ts > 0:
        return float(ts) / 1000.0
    return None


# --- serving -------------------------------------------------------------------------------

def serve_metrics(port: int, host: str, *collectors: Collector,
                  registry: CollectorRegistry = REGISTRY) -> int | None:
    """Register `collectors` and serve `registry` on host:port in a daemon thread; the port
    served (None when disabled by port 0, or when it cannot be bound: that is logged and the
    process goes on, metrics are never a reason not to run)."""
    from prometheus_client import start_http_server

    for c in collectors:
        registry.register(c)
    if not port:
        return None
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("metrics: cannot listen on %s:%d (%s); running without a metrics server",
                    host, port, exc)
        return None
    served = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", host, served)
    return served


# --- logs ----------------------------------------------------------------------------------

class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, service, pid, msg,
    and exc (the traceback) when there is one."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service or os.environ.get("GRIDFLOW_SERVICE", "")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["exc"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(settings: Settings, level: str, service: str) -> dict[str, Any]:
    """A logging.config.dictConfig for a process: every record to stderr, as JSON lines when
    `settings.log_format` is "json", else as text. Also what uvicorn and faust are given."""
    json_lines = settings.log_format == "json"
    formatter: dict[str, Any] = (
        {"()": "gridflow.telemetry.JsonFormatter", "service": service} if json_lines
        else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["default"]},
        # uvicorn's own loggers go through the root handler (no second, plain-text copy)
        "loggers": {name: {"handlers": [], "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def configure_logging(settings: Settings, level: str, service: str) -> None:
    """Set up this process's logging (`logging_config`)."""
    logging.config.dictConfig(logging_config(settings, level, service))
    if settings.log_format == "json":
        sys.stderr.flush()


def count_notify_round(stats: Any) -> None:
    """The notifier's on_round callback: notices delivered and failed attempts."""
    if stats.sent:
        NOTIFICATIONS_SENT.inc(stats.sent)
    if stats.failed:
        NOTIFICATION_FAILURES.inc(stats.failed)
