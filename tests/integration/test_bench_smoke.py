"""`gridflow bench --quick --no-write`, in-process: every benchmark runs on the real stack and
yields its figures. Only that figures came out is asserted: timings are never asserted."""

from __future__ import annotations

from pathlib import Path

from bench.cli import BENCHMARKS, QUICK_SCALE, run_benchmarks
from bench.report import table


def test_quick_bench_produces_figures(stack: object, tmp_path: Path) -> None:
    lines: list[str] = []
    figures = run_benchmarks(QUICK_SCALE, quick=True, echo=lines.append, work_dir=tmp_path)

    failed = [f"{f.what}: {f.note}" for f in figures if f.ours == "failed"]
    assert not failed, "\n".join(failed + lines[-20:])
    assert len(figures) >= len(BENCHMARKS)
    assert all(f.ours and f.target for f in figures)
    assert table(figures).count("\n") == len(figures) + 1
    # End to end ran the pipeline and the photo archive as two workers (--role pipeline /
    # --role archive): every photo of the run was archived, not only every task dispatched.
    e2e = next(f for f in figures if f.what.startswith("end to end"))
    assert e2e.raw.get("archive_lag_s") is not None, e2e.note
    # and stepped the rate: every step it tried is in the figure, with its verdict
    search = next(f for f in figures if f.what.startswith("end to end: the highest"))
    assert search.raw["steps"] and all("held" in st for st in search.raw["steps"]), search.note
    # processing counts the whole work too (the deadline book and the sink's catching up),
    # never faster than the rate up to the last task
    proc = next(f for f in figures if f.what.startswith("processing"))
    assert 0 < proc.raw["rate_until_idle"] <= proc.raw["ours_rate"], proc.note
    # and counts what the worker's state writes cost Kafka: every report's case is written
    per_table = proc.raw["changelog_per_report"]
    assert per_table.get("cases", 0) > 0 and sum(per_table.values()) > per_table["cases"], per_table
