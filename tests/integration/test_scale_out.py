"""Three workers in one consumer group, one killed with SIGKILL and a fourth added under a
stream of reports on a fast simulated clock: nothing lost, nothing applied twice, every
deadline fired once, the deadline books restored on the partitions' new owners, and
`gridflow audit verify` clean. The short form of `gridflow chaos --scenario scale-out`."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import scale_out

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_a_worker_killed_and_one_added_lose_nothing_and_fire_every_deadline_once(
        stack_settings, tmp_path: Path) -> None:
    result = scale_out.run(stack_settings, tmp_path, seconds=45.0, rate=6.0, speed=900.0,
                           session_timeout_s=6.0, settle_s=150.0, seed=3, echo=print)
    print("\n".join(result.lines()))
    assert result.sent > 100
    assert result.lost == [] and result.kept == result.sent
    assert result.duplicate_rows == 0
    assert result.tasks_past_due > 50, "too few deadlines passed to mean anything"
    assert result.breaches_missing == [], "deadlines that never fired"
    assert result.deadlines_twice == 0
    assert result.audit_clean, "\n".join(result.audit_lines)
