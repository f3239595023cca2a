"""Deadline benchmark: the deadline book (gridflow.core.deadlines, as the deadline agent keeps it)
holding N open task stages, each with two warnings and a breach; ticks a minute apart, each
finding a given share of them due. Memory is the resident size the book adds to a fresh
process; tick time is peek + pop, as the agent does, firing breaches that schedule escalations.
Run with N open and 1% due, with N/10 open and the same number due, and with N open and 0.1%
due: tick time should follow what is due, not what is open.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import Context, Figure, percentile, rss_bytes, say

FULL_OPEN = 1_000_000
TICKS = 5
T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
MEMORY_TARGET = 1 << 30


def build(open_count: int, due_per_tick: int) -> Any:
    """A book whose minute k (k < open/due) holds `due_per_tick` breaches."""
    from gridflow.core.calendar import UNKNOWN_YEARS_WEEKDAYS, load_bundled_calendar
    from gridflow.core.deadlines import (
        BREACH,
        WARN,
        DeadlineBook,
        DeadlineEntry,
        Due,
        encode_entry,
    )
    from gridflow.core.sla import load_bundled_policy

    calendar = replace(load_bundled_calendar(), unknown_years=UNKNOWN_YEARS_WEEKDAYS)
    book = DeadlineBook({}, {}, policy=load_bundled_policy(), calendar=calendar, namespace="p0:")
    period = max(1, open_count // due_per_tick)
    buckets: dict[str, list[str]] = {}
    for i in range(open_count):
        minute = i % period
        breach = T0 + timedelta(minutes=minute, seconds=10)
        entry = DeadlineEntry(
            task_id=f"AJ20261102-{i:08d}-T01", stage="sign", case_id=f"AJ20261102-{i:08d}",
            start=T0 - timedelta(hours=2), due_at=breach,
            dues=(Due(BREACH, breach), Due(WARN, breach + timedelta(minutes=period), 0.5),
                  Due(WARN, breach + timedelta(minutes=2 * period), 0.8)),
        )
        key, filed = entry.key, tuple(book._bucket_of(d.at) for d in entry.dues)
        for b in filed:  # the same str: no copies left behind
            buckets.setdefault(book._shard_key(b, key), []).append(key)
        book.entries[key] = encode_entry(entry, filed, book.bucket_seconds)
    for bkey, keys in buckets.items():
        book.buckets[bkey] = "\n".join(keys)
    book.buckets[book._cursor_key()] = {"low": book._bucket_of(T0), "primed": True}
    return book


def _measure(open_count: int, due_per_tick: int, ticks: int, out: Any) -> None:
    import gc

    from gridflow.core import deadlines  # noqa: F401 - imports counted before the baseline

    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    book = build(open_count, due_per_tick)
    build_s = time.perf_counter() - t0
    gc.collect()
    memory = rss_bytes() - before
    times, cpu, fired = [], [], []
    for k in range(ticks):
        now = T0 + timedelta(minutes=k, seconds=30)
        t, c = time.perf_counter(), time.process_time()
        peeked = book.peek_due(now)
        popped = book.pop_due(now)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)  # what the tick used, whatever else runs
        fired.append(len(popped))
        assert len(peeked) == len(popped)
    # filing one more stage clock into a minute that already holds due_per_tick keys
    from gridflow.core.deadlines import BREACH, DeadlineEntry, Due

    sample = min(200, due_per_tick)
    # the minute filed into holds due_per_tick keys, as the first minutes did
    at = T0 + timedelta(minutes=ticks + 1, seconds=10)
    crowd = [f"Y{j}#sign" for j in range(due_per_tick)]
    counted = book.buckets = _Counted(book.buckets)
    book._bucket_extend(book._bucket_of(at), crowd)
    counted.written = 0
    t = time.perf_counter()
    for j in range(sample):
        book.upsert(DeadlineEntry(task_id=f"X{j}", stage="sign", case_id=f"X{j}",
                                  start=T0, due_at=at, dues=(Due(BREACH, at),)))
    upsert_s = (time.perf_counter() - t) / sample
    upsert_bytes = counted.written / sample
    out.put({"open": open_count, "due": due_per_tick, "memory": memory, "build_s": build_s,
             "tick_p50": percentile(times, 0.5), "tick_max": max(times), "fired": fired,
             "tick_cpu_p50": percentile(cpu, 0.5),
             "upsert_s": upsert_s, "upsert_bucket_bytes": upsert_bytes})


class _Counted(dict[str, Any]):
    """The bucket map, counting the bytes of the values written to it: what each write costs
    in changelog traffic in the worker (the value is written whole)."""

    written = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.written += len(value) if isinstance(value, str) else 0
        super().__setitem__(key, value)


def measure(open_count: int, due_per_tick: int, ticks: int = TICKS) -> dict[str, Any]:
    """In a fresh process, so its resident size is the book's."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(open_count, due_per_tick, ticks, q))
    p.start()
    try:
        result = q.get(timeout=1800)
    finally:
        p.join(timeout=60)
    return dict(result)


def run(ctx: Context) -> list[Figure]:
    n = ctx.n(FULL_OPEN, 10_000)
    runs = [(n, n // 100), (n // 10, n // 100), (n, n // 1000)]
    results = []
    for open_count, due in runs:
        say(ctx.echo, f"deadlines: {open_count:,} open, {due:,} due per tick ...")
        r = measure(open_count, due)
        say(ctx.echo, f"deadlines: {r['memory'] / 2**20:,.0f} MiB, tick p50 "
                      f"{r['tick_p50'] * 1000:.0f} ms (CPU {r['tick_cpu_p50'] * 1000:.0f} ms; "
                      f"built in {r['build_s']:.0f} s)")
        results.append(r)
    a, b, c = results
    per_due = a["tick_p50"] / max(1, a["due"]) * 1e6
    follows_due = b["tick_p50"] <= a["tick_p50"] * 2 and c["tick_p50"] <= a["tick_p50"] / 3

    def cpu(r: dict[str, Any]) -> str:
        return f"{r['tick_cpu_p50'] * 1000:,.0f} ms"

    def tick(r: dict[str, Any]) -> str:
        return f"{r['tick_p50'] * 1000:,.0f} ms ({r['open']:,} open, {r['due']:,} due)"

    return [
        Figure(f"deadlines: memory of {n:,} open tasks", f"{a['memory'] / 2**20:,.0f} MiB", "—",
               None, "≤ 1 GB", a["memory"] <= MEMORY_TARGET,
               f"resident size the book adds to a fresh process; built in {a['build_s']:.0f} s",
               {"sizes": f"{n:,} open task stages, 3 instants each", **a}),
        Figure("deadlines: time per tick", f"{tick(a)}; {tick(b)}; {tick(c)}", "—", None,
               "grows with what is due, not with what is open", follows_due,
               f"{per_due:.0f} µs per due item at 1% due; max tick {a['tick_max'] * 1000:.0f} ms; "
               f"CPU p50 {cpu(a)}, {cpu(b)}, {cpu(c)} (the machine is shared); "
               f"filing one more clock into a minute holding {a['due']:,}: "
               f"{a['upsert_s'] * 1e6:,.0f} µs and {a['upsert_bucket_bytes']:,.0f} bytes of "
               "bucket written (a changelog record in the worker)",
               {"runs": results}),
    ]
