"""`gridflow up --brokers 3`: three KRaft nodes on loopback (the test session's own cluster,
own ports and state dir; the shared single-node Kafka is never touched): every node up and
shown, catalogue topics with three replicas and min.insync.replicas 2, a second `up` a no-op,
a node that cannot start named with its log, and `down` leaving nothing behind."""

from __future__ import annotations

import json

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from gridflow import topics
from infra.procs import is_alive, port_bindable, split_host_port

NODES = ["kafka-1", "kafka-2", "kafka-3"]


def rows_of(cluster) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    result = cluster.gridflow("status", "--json", "--only", "kafka")
    assert result.returncode == 0, result.output
    return {row["server"]: row for row in json.loads(result.stdout)["servers"]}


def test_three_nodes_one_cluster_replicated_topics(kafka_cluster) -> None:  # type: ignore[no-untyped-def]
    rows = rows_of(kafka_cluster)
    assert sorted(rows) == NODES and all(r["state"] == "up" for r in rows.values()), rows
    assert len({r["address"] for r in rows.values()}) == 3
    assert len({r["data_dir"] for r in rows.values()}) == 3
    settings = kafka_cluster.settings
    assert settings.kafka_bootstrap.count(",") == 2
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=30000)
    try:
        cluster = admin.describe_cluster()
        assert sorted(b["broker_id"] for b in cluster["brokers"]) == [1, 2, 3]
        names = [spec.name(settings.topic_prefix) for spec in topics.CATALOGUE]
        for described in admin.describe_topics(names):
            for p in described["partitions"]:
                assert sorted(p["replica_nodes"]) == [1, 2, 3], described
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)
                                          for name in names])
        text = str(configs)
        assert text.count("'min.insync.replicas': {'value': '2'") == len(names), text[:2000]
    finally:
        admin.close()

    again = kafka_cluster.gridflow("up", "--only", "kafka")
    assert again.returncode == 0, again.output
    assert "all were already running" in again.stdout
    assert {n: r["pid"] for n, r in rows_of(kafka_cluster).items()} == {
        n: r["pid"] for n, r in rows.items()}
    table = kafka_cluster.gridflow("status", "--only", "kafka")
    assert all(name in table.stdout for name in NODES), table.stdout


def test_a_node_that_cannot_start_fails_up_with_its_log(kafka_cluster) -> None:  # type: ignore[no-untyped-def]
    stopped = kafka_cluster.gridflow("down", "--only", "kafka-2")
    assert stopped.returncode == 0, stopped.output
    assert rows_of(kafka_cluster)["kafka-2"]["state"] == "down"
    meta = kafka_cluster.state_dir / "kafka-2" / "data" / "meta.properties"
    saved = meta.read_text()
    meta.write_text("\n".join(
        "cluster.id=AAAAAAAAAAAAAAAAAAAAAA" if line.startswith("cluster.id=") else line
        for line in saved.splitlines()) + "\n")
    try:
        failed = kafka_cluster.gridflow("up", "--only", "kafka", timeout=400)
        assert failed.returncode == 1, failed.output
        assert "kafka-2" in failed.stderr and "kafka-2.log" in failed.stderr, failed.stderr
        assert "INFO" in failed.stderr  # the node's log tail is shown
        log = (kafka_cluster.state_dir / "logs" / "kafka-2.log").read_text()
        assert "AAAAAAAAAAAAAAAAAAAAAA" in log  # and the log says why
    finally:
        meta.write_text(saved)
    healed = kafka_cluster.gridflow("up", "--only", "kafka", timeout=400)
    assert healed.returncode == 0, healed.output
    assert all(r["state"] == "up" for r in rows_of(kafka_cluster).values())


def test_down_stops_every_node_and_up_brings_the_same_cluster_back(kafka_cluster) -> None:  # type: ignore[no-untyped-def]
    pids = {n: r["pid"] for n, r in rows_of(kafka_cluster).items()}
    stopped = kafka_cluster.gridflow("down", "--only", "kafka", timeout=120)
    assert stopped.returncode == 0, stopped.output
    assert not any(is_alive(pid) for pid in pids.values())
    rows = rows_of(kafka_cluster)
    assert {r["state"] for r in rows.values()} == {"down"}
    assert all(port_bindable(*split_host_port(r["address"])) for r in rows.values())
    again = kafka_cluster.gridflow("up", "--only", "kafka", timeout=400)
    assert again.returncode == 0, again.output
    assert "present" in again.stdout  # the same cluster: its topics survived
    assert all(r["state"] == "up" for r in rows_of(kafka_cluster).values())
