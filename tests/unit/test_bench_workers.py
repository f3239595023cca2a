"""The processing benchmark's worker count (GRIDFLOW_BENCH_WORKERS)."""

from __future__ import annotations

import pytest

from bench.processing import worker_count
from gridflow import topics


def test_one_worker_unless_asked(monkeypatch):
    monkeypatch.delenv("GRIDFLOW_BENCH_WORKERS", raising=False)
    assert worker_count() == 1
    monkeypatch.setenv("GRIDFLOW_BENCH_WORKERS", "2")
    assert worker_count() == 2


@pytest.mark.parametrize("raw", ["two", "0", str(topics.CASE_PARTITIONS + 1)])
def test_a_count_that_cannot_share_the_partitions_is_refused(monkeypatch, raw):
    monkeypatch.setenv("GRIDFLOW_BENCH_WORKERS", raw)
    with pytest.raises(ValueError, match="GRIDFLOW_BENCH_WORKERS"):
        worker_count()
