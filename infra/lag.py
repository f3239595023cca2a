"""How far behind each consumer of the pipeline is, and how many dead letters there are.

Adapter for `gridflow status`. The stream workers keep their offsets in Kafka (consumer groups
`<prefix>-processor` and `<prefix>-archive`); the SQL sink and the notifier keep theirs in the
database, beside what they wrote (`sink_offsets`, `notify_offsets`). Lag is the log's end offset
minus the consumer's next offset, summed over partitions. Read-only; never raises: what cannot
be read is reported as such.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gridflow import topics
from gridflow.settings import Settings

SINK_CONSUMER = "sql-sink"
NOTIFY_CONSUMER = "notify"


@dataclass
class ConsumerLag:
    consumer: str  # group or stored-offsets name
    where: str  # "kafka" or "database"
    lag: dict[str, int] = field(default_factory=dict)  # topic suffix -> records behind
    error: str = ""

    @property
    def total(self) -> int:
        return sum(self.lag.values())


@dataclass
class PipelineLag:
    prefix: str
    consumers: list[ConsumerLag] = field(default_factory=list)
    dead_letters: int | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "consumers": [{**asdict(c), "total": c.total}
                                              for c in self.consumers]}


def _end_offsets(bootstrap: str, names: list[str]) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             request_timeout_ms=10000)
    try:
        tps = [TopicPartition(name, p) for name in names
               for p in sorted(consumer.partitions_for_topic(name) or ())]
        ends = consumer.end_offsets(tps) if tps else {}
        starts = consumer.beginning_offsets(tps) if tps else {}
        return {(tp.topic, tp.partition): int(ends[tp]) for tp in tps} | {
            (tp.topic, -1 - tp.partition): int(starts[tp]) for tp in tps}
    finally:
        consumer.close()


def _group_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int] | None:
    """A Kafka group's committed offsets; None when the group has never committed."""
    from kafka.admin import KafkaAdminClient

    from gridflow.kafka_groups import committed_offsets

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gridflow-status",
                             request_timeout_ms=10000)
    try:
        return committed_offsets(admin, group) or None
    finally:
        admin.close()


def _stored_offsets(database_url: str, table: str, consumer: str) -> dict[tuple[str, int], int]:
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(database_url)
    try:
        if not inspect(engine).has_table(table):
            return {}
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT topic, partition, next_offset FROM {table} "
                                     "WHERE consumer = :c"), {"c": consumer}).all()
        return {(r[0], int(r[1])): int(r[2]) for r in rows}
    finally:
        engine.dispose()


def lag_of(offsets: dict[tuple[str, int], int] | None, ends: dict[tuple[str, int], int],
           names: dict[str, str]) -> dict[str, int]:
    """Records behind per topic suffix: end offset minus next offset over each partition of
    the topics in `names` (name -> suffix); a partition never read counts from its start."""
    out: dict[str, int] = {}
    for (topic, partition), end in ends.items():
        if partition < 0 or topic not in names:
            continue
        start = ends.get((topic, -1 - partition), 0)
        done = (offsets or {}).get((topic, partition), start)
        out[names[topic]] = out.get(names[topic], 0) + max(0, end - max(done, start))
    return out


def pipeline_lag(settings: Settings) -> PipelineLag:
    """The lag of every consumer of the pipeline on `settings.topic_prefix`."""
    prefix = settings.topic_prefix
    report = PipelineLag(prefix)
    all_names = topics.topic_names(prefix)
    try:
        ends = _end_offsets(settings.kafka_bootstrap, list(all_names.values()))
    except Exception as exc:  # Kafka down: status says so, and goes on
        report.error = f"Kafka: {type(exc).__name__}: {exc}"
        return report
    dead = all_names["dead-letters"]
    report.dead_letters = sum(end - ends.get((t, -1 - p), 0) for (t, p), end in ends.items()
                              if t == dead and p >= 0)

    def inputs(*suffixes: str) -> dict[str, str]:
        return {all_names[s]: s for s in suffixes}

    processor_inputs = inputs("reports", "reports-located", "case-commands", "case-events",
                              "deadline-ticks")
    for group, names in ((f"{prefix}-processor", processor_inputs),
                         (f"{prefix}-archive", inputs("case-events"))):
        entry = ConsumerLag(group, "kafka")
        try:
            offsets = _group_offsets(settings.kafka_bootstrap, group)
            if offsets is None and group.endswith("-archive"):
                continue  # no separate archive worker in this deployment
            entry.lag = lag_of(offsets, ends, names)
        except Exception as exc:
            entry.error = f"{type(exc).__name__}: {exc}"
        report.consumers.append(entry)
    for consumer, table in ((SINK_CONSUMER, "sink_offsets"), (NOTIFY_CONSUMER, "notify_offsets")):
        entry = ConsumerLag(consumer, "database")
        try:
            entry.lag = lag_of(_stored_offsets(settings.database_url, table, consumer), ends,
                               inputs("case-events", "dead-letters") if table == "sink_offsets"
                               else inputs("case-events"))
        except Exception as exc:
            entry.error = f"{type(exc).__name__}: {exc}"
        report.consumers.append(entry)
    return report


def lag_lines(report: PipelineLag) -> list[str]:
    """The status table's lines, in Chinese with English beside it."""
    lines = [f"消费进度 / consumer lag (prefix {report.prefix}):"]
    if report.error:
        return [*lines, f"  无法读取 / cannot read: {report.error}"]
    for c in report.consumers:
        if c.error:
            lines.append(f"  {c.consumer:<28} 无法读取 / cannot read: {c.error}")
            continue
        detail = ", ".join(f"{k} {v}" for k, v in sorted(c.lag.items()) if v) or "caught up"
        lines.append(f"  {c.consumer:<28} 积压 {c.total:>8}  ({detail})")
    lines.append(f"  死信 / dead letters: {report.dead_letters}")
    return lines
