"""The SQL sink and the notifier killed with SIGKILL again and again under acknowledged
reports: every report reaches the read models once, every task's notice reaches the webhook
(at least once: a repeat carries the same Idempotency-Key). The short form of
`gridflow chaos --scenario kill-sink-notify`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from chaos import kill_sink_notify

pytestmark = pytest.mark.integration


@pytest.mark.timeout(400)
def test_nothing_is_lost_or_doubled_when_the_sink_and_the_notifier_are_killed(
        stack_settings, tmp_path: Path) -> None:
    result = kill_sink_notify.run(stack_settings, tmp_path, kills=8, rate=6.0, max_up_s=5.0,
                                  seed=7, echo=print)
    print("\n".join(result.lines()))
    # 8 kills of up to 5 s at 6 reports/s: ~120 on a quiet machine, 58 seen on a loaded one
    assert result.acknowledged > 40, "too few reports to mean anything"
    assert result.lost == []
    assert result.counts.duplicate_rows == 0
    assert result.problems == []
    n = result.notices
    # one 新任务 notice per dispatched task (a near-duplicate report joins a case: no new task)
    assert n["missing"] == 0 and n["distinct"] == n["notices"] == result.counts.tasks
    assert result.dead_letters == 0
    # caught up: the wait returns NaN for seconds when the pipeline never caught up
    assert result.recovery and not math.isnan(result.recovery[0][1])
    assert result.audit_clean, "\n".join(result.audit_lines)
