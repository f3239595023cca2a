"""Repeated SIGKILL of the worker (and the sink) under a stream of acknowledged reports: every
report on the reports topic reaches the read models, once, and every task signed by its
department meanwhile is signed. The short form of
`gridflow chaos --scenario kill-worker` (the long form: `gridflow chaos --full`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import kill_worker

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_no_acknowledged_report_is_lost_when_the_worker_is_killed_again_and_again(
        stack_settings, tmp_path: Path) -> None:
    # 15 cycles: every third kill within the worker's first seconds (before its first commit,
    # or with a rebalance still under way), the others anywhere up to 8 s; the sink killed
    # every third cycle. A 6 s session timeout makes each restart's rebalance quick.
    # (this test's own buckets; the scenario makes its own topic prefix and database)
    result = kill_worker.run(stack_settings, tmp_path, cycles=15, rate=12.0, max_up_s=8.0,
                             sink_every=3, session_timeout_s=6.0, seed=11, echo=print)
    print("\n".join(result.lines()))
    assert result.sent > 100, "the scenario acknowledged too few reports to mean anything"
    assert result.lost == [], f"acknowledged reports lost; worker log: {result.worker_log}"
    assert result.kept == result.sent
    assert result.duplicate_rows == 0
    # the departments signed every task they saw dispatched, some just before a kill: each
    # sign accepted, none refused because the worker's state of its case was lost
    assert result.signs_sent > 50, (
        "too few tasks signed to mean anything; the signer's reads answered / failed: "
        f"{result.signer_reads}, its last read error: {result.signer_read_error or 'none'}; "
        f"{len(result.ready_after_s)} of {result.worker_starts} worker starts were ready before "
        f"their kill, after {sorted(result.ready_after_s)} s")
    assert result.signs_refused == [] and result.signs_undecided == []
    assert result.signs_accepted == result.signs_sent
    # and the auditor's view agrees: read models equal a replay, chains intact, and every
    # record the worker's group committed past was handed on (audit.completeness)
    assert result.audit_clean, "\n".join(result.audit_lines)
