"""gridflow.topics.wait_until_described on the real broker: a topic just created is waited for
until the cluster's metadata gives it partitions; one that does not exist is reported back
once the timeout has passed (the worker then starts anyway and says so)."""

from __future__ import annotations

import time

from kafka.admin import KafkaAdminClient, NewTopic

from gridflow.topics import wait_until_described


def test_a_just_created_topic_is_described_and_a_missing_one_reported(stack, topic_prefix):
    name = f"{topic_prefix}-t-described-changelog"
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    try:
        admin.create_topics([NewTopic(name, 4, 1)])
    finally:
        admin.close()
    assert wait_until_described(stack.bootstrap, [name], 30.0) == []
    t0 = time.monotonic()
    absent = f"{topic_prefix}-never-created"
    assert wait_until_described(stack.bootstrap, [name, absent], 1.5) == [absent]
    assert 1.0 < time.monotonic() - t0 < 15.0
