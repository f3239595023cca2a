"""Kafka unreachable for the API's producer mid-stream: the API answers 503 with Retry-After,
the phones' retries land once afterwards, every acknowledged report reaches the read models
once. The short form of `gridflow chaos --scenario kafka-outage` (12 s instead of 30)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import kafka_outage

pytestmark = pytest.mark.integration


@pytest.mark.timeout(400)
def test_a_kafka_outage_answers_503_and_loses_nothing(stack_settings, tmp_path: Path) -> None:
    result = kafka_outage.run(stack_settings, tmp_path, outage_s=12.0, rate=3.0, warmup_s=5.0,
                              after_s=3.0, seed=5, echo=print)
    print("\n".join(result.lines()))
    assert result.acknowledged > 40
    assert result.lost == []
    assert result.counts.duplicate_rows == 0
    assert result.problems == []  # every refusal a 503 with Retry-After, all acknowledged
    assert any("× 503" in line for line in result.api), "the outage was not felt"
    assert result.dead_letters == 0
    assert result.recovery[0][1] == result.recovery[0][1]  # caught up (not NaN)
    assert result.audit_clean, "\n".join(result.audit_lines)
