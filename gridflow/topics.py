"""Topic catalogue: the one home of topic names, partition counts, retention and compaction.

Every topic is created explicitly (infra/ and the test fixtures call
`ensure_topics`) before any worker starts, so faust never auto-creates a source
topic with another partition count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gridflow.core.partitioning import CASE_PARTITIONS as CASE_PARTITIONS  # re-exported

FOREVER = -1
WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    suffix: str
    partitions: int
    retention_ms: int
    compacted: bool
    key: str
    doc: str

    def name(self, prefix: str) -> str:
        return f"{prefix}.{self.suffix}"

    def configs(self, replication: int = 1) -> dict[str, str]:
        cfg = {"retention.ms": str(self.retention_ms)}
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        if replication > 1:
            cfg["min.insync.replicas"] = str(min_insync_replicas(replication))
        return cfg


# CASE_PARTITIONS (from gridflow.core.partitioning): the partition count of every case-keyed
# topic. Topics read together must agree.

REPORTS = TopicSpec(
    "reports", CASE_PARTITIONS, FOREVER, False, "report_id",
    "ReportSubmitted from the ingest API (grid workers and Open311 residents).",
)
REPORTS_LOCATED = TopicSpec(
    "reports-located", CASE_PARTITIONS, FOREVER, False, "township_code",
    "Validated reports with their grid resolved, keyed by township for near-duplicate detection.",
)
CASE_COMMANDS = TopicSpec(
    "case-commands", CASE_PARTITIONS, FOREVER, False, "case_id",
    "Commands decided by the case processor against current state (file, sign, resolve, ...).",
)
CASE_EVENTS = TopicSpec(
    "case-events", CASE_PARTITIONS, FOREVER, False, "case_id",
    "Every fact about a case, totally ordered per case. The record: kept forever.",
)
DEADLINE_TICKS = TopicSpec(
    "deadline-ticks", CASE_PARTITIONS, 24 * 3600 * 1000, False, "partition number",
    "Clock ticks, one per partition, that make the deadline processor pop what is due.",
)
DEAD_LETTERS = TopicSpec(
    "dead-letters", 1, FOREVER, False, "source topic",
    "Undecodable or invalid input: the original bytes, where they came from and why.",
)

ACCESS_LOG = TopicSpec(
    "access-log", 1, FOREVER, False, "case_id",
    "Who read which case's personal data (PersonalDataRead), for auditors (accounts.access_log).",
)

CATALOGUE: tuple[TopicSpec, ...] = (
    REPORTS, REPORTS_LOCATED, CASE_COMMANDS, CASE_EVENTS, DEADLINE_TICKS, DEAD_LETTERS,
    ACCESS_LOG,
)


def topic_names(prefix: str) -> dict[str, str]:
    return {spec.suffix: spec.name(prefix) for spec in CATALOGUE}


def min_insync_replicas(replication: int) -> int:
    """How many replicas must have a record before acks=all acknowledges it: 2 of 3 (one broker
    may be down, and an acknowledged record is still on two), 1 below 3 replicas."""
    return 2 if replication >= 3 else 1


def fitting_replication(brokers: int) -> int:
    """The replication factor that fits a cluster of `brokers`: 3, or all of them if fewer."""
    return max(1, min(3, brokers))


def replication_factor(bootstrap: str, wanted: int = 0, timeout_s: float = 30.0) -> int:
    """`wanted` (GRIDFLOW_KAFKA_REPLICATION), or when 0 what fits the cluster at `bootstrap`."""
    if wanted > 0:
        return wanted
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="gridflow-admin",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        return fitting_replication(len(admin.describe_cluster()["brokers"]))
    finally:
        admin.close()


def ensure_topics(bootstrap: str, prefix: str, timeout_s: float = 30.0,
                  replication: int = 0) -> list[str]:
    """Create every catalogue topic under `prefix` that does not exist yet. Returns created names.

    `replication`: the replication factor (0: what fits the cluster, `fitting_replication`);
    with 3 replicas or more a topic takes min.insync.replicas=2. Fails if an existing topic has
    a different partition count than the catalogue says.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="gridflow-admin",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        existing = set(admin.list_topics())
        rf = replication or fitting_replication(len(admin.describe_cluster()["brokers"]))
        wanted = [
            NewTopic(spec.name(prefix), spec.partitions, rf, topic_configs=spec.configs(rf))
            for spec in CATALOGUE
            if spec.name(prefix) not in existing
        ]
        created: list[str] = []
        if wanted:
            try:
                admin.create_topics(wanted, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
            except TopicAlreadyExistsError:
                pass
            created = [t.name for t in wanted]
        by_name = _partition_counts(admin, [spec.name(prefix) for spec in CATALOGUE], timeout_s)
        for spec in CATALOGUE:
            got = by_name.get(spec.name(prefix))
            if got is not None and got != spec.partitions:
                raise RuntimeError(
                    f"topic {spec.name(prefix)} has {got} partitions, the catalogue says "
                    f"{spec.partitions}; delete it or use another GRIDFLOW_TOPIC_PREFIX"
                )
        return created
    finally:
        admin.close()


def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix` (a test's, a benchmark's, a demo's
    own topics, faust's changelogs of its app id included). Best effort; returns the names."""
    import contextlib

    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        doomed = [t for t in admin.list_topics() if t.startswith(prefix)]
        if doomed:
            with contextlib.suppress(Exception):
                admin.delete_topics(doomed, timeout_ms=30000)
        return doomed
    finally:
        admin.close()


def _partition_counts(admin: Any, names: list[str], timeout_s: float) -> dict[str, int]:
    """Each topic's partition count as the cluster describes it (0: not listed yet). A topic
    is in the brokers' metadata a moment after its creation is acknowledged: until then a
    broker describes it with no partitions (seen on a three-broker cluster) or as unknown,
    which can fail the whole request. So the topics are described again, up to `timeout_s`,
    until each has partitions; a request still failing at the deadline raises."""
    import time

    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    while True:
        try:
            # kafka-python 2.x names the key "topic", 3.x "name"
            counts = {d.get("topic", d.get("name")): len(d.get("partitions") or ())
                      for d in admin.describe_topics(names) if not d.get("error_code")}
        except Exception:  # an unknown topic: ask again, until the deadline
            if time.monotonic() >= deadline:
                raise
            counts = {}
        if all(counts.get(n) for n in names) or time.monotonic() >= deadline:
            return counts
        time.sleep(0.1)


def wait_until_described(bootstrap: str, names: list[str], timeout_s: float = 30.0) -> list[str]:
    """Wait until the cluster's metadata lists each topic with its partitions (a client that
    asks before is told the topic does not exist, and faust then counts a just-created
    changelog's partitions as 0), up to `timeout_s`; returns those still not listed."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gridflow-admin",
                             request_timeout_ms=int(max(1.0, timeout_s) * 1000))
    try:
        counts = _partition_counts(admin, names, timeout_s)
        return [n for n in names if not counts.get(n)]
    finally:
        admin.close()


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java client, kafka-python and
    aiokafka compute it) puts a record with this key on."""
    from gridflow.core import partitioning

    return partitioning.partition_of(key, partitions)


def report_id_of(value: bytes | None, key: bytes | None = None) -> str:
    """The report id of a record on `<p>.reports`: read from the ReportSubmitted itself, since
    the topic is keyed by township (gridflow.core.intake.report_key); the key when the value is
    not a report (an undecodable record, "" without a key)."""
    import json

    try:
        return str(json.loads(value or b"")["data"]["report_id"])
    except (TypeError, ValueError, KeyError):
        return key.decode("utf-8", "replace") if key else ""
