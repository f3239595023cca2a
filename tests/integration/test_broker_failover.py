"""Issue 15, scenario 6 (short form of `gridflow chaos --scenario broker-failover`): in a
three-broker cluster of the test session's own (replication 3, min.insync.replicas 2), the
broker leading most case-events partitions is killed with SIGKILL mid-stream under uploads
and complaints through the API, and restarted after a pause: every acknowledged report is in
the read models once, no notice or deadline twice, no dead letter, a clean audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import broker_failover

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_killing_the_case_events_leader_loses_nothing(stack_settings, kafka_cluster,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    cluster = kafka_cluster.settings
    settings = stack_settings.with_(
        state_dir=cluster.state_dir, kafka_bootstrap=cluster.kafka_bootstrap,
        kafka_controller_port=cluster.kafka_controller_port, kafka_brokers=3)
    result = broker_failover.run(settings, tmp_path, rate=3.0, complaint_rate=1.0,
                                 warmup_s=12.0, down_s=20.0, after_s=8.0,
                                 wait_deadlines=False, seed=6, echo=print)
    print("\n".join(result.lines()))
    assert result.acknowledged > 60
    assert result.lost == []
    assert result.counts.duplicate_rows == 0
    assert result.problems == []  # no notice or deadline twice, all acknowledged, ISR whole
    assert result.notices["notices"] > 0 and result.notices["missing"] == 0
    assert result.dead_letters == 0
    assert result.recovery[0][1] == result.recovery[0][1]  # caught up (not NaN)
    assert any("leaders elsewhere" in line for line in result.api), result.api
    assert result.audit_clean, "\n".join(result.audit_lines)
