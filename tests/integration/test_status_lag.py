"""`gridflow status` shows each consumer's lag and the dead letters, read from Kafka and the
database (infra.lag)."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from infra.lag import lag_lines, pipeline_lag

pytestmark = pytest.mark.integration


def test_lag_follows_what_the_groups_committed_and_dead_letters_are_counted(stack_settings):
    s = stack_settings
    reports, dead = f"{s.topic_prefix}.reports", f"{s.topic_prefix}.dead-letters"
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    for _ in range(3):
        producer.send(reports, key=b"r", value=b"{}", partition=0).get(30)
    producer.send(dead, key=b"x", value=b"{}").get(30)
    producer.close()

    before = pipeline_lag(s)
    processor = next(c for c in before.consumers if c.consumer.endswith("-processor"))
    assert processor.lag.get("reports") == 3
    assert before.dead_letters == 1

    group = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap,
                          group_id=f"{s.topic_prefix}-processor", enable_auto_commit=False)
    group.commit({TopicPartition(reports, 0): OffsetAndMetadata(2, "", -1)})
    group.close()
    after = pipeline_lag(s)
    processor = next(c for c in after.consumers if c.consumer.endswith("-processor"))
    assert processor.lag.get("reports") == 1
    lines = "\n".join(lag_lines(after))
    assert f"{s.topic_prefix}-processor" in lines and "死信 / dead letters: 1" in lines
    assert "sql-sink" in lines  # the database-kept offsets are shown too
