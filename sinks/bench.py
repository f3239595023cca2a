"""Throughput of the SQL sink: `python -m sinks.bench [--cases N] [--batch B] [--url URL]`.

Builds N sample cases with the real aggregate (every event type), then times apply_batch
alone over a fresh database (SQLite in a temp dir unless --url is given). Prints events/s.
`--replay` times the replay fast path (sinks.replay_fast.Replayer) on the same records instead.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sinks import sample
from sinks.models import create_schema, drop_schema, make_engine
from sinks.sql import BatchStats, SqlSink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--url", default="")
    parser.add_argument("--replay", action="store_true", help="the replay fast path instead")
    args = parser.parse_args()

    t = time.perf_counter()
    cases = [
        sample.eventful_lifecycle(f"AJ{i:06d}", sample.T0 + timedelta(minutes=i))
        for i in range(args.cases)
    ]
    stream = sample.interleaved(cases, "bench.case-events")
    print(f"built {len(stream)} events for {len(cases)} cases in {time.perf_counter() - t:.1f}s")

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(args.url or f"sqlite:///{Path(tmp) / 'bench.db'}")
        drop_schema(engine)
        create_schema(engine)
        sink = SqlSink(engine, "bench")
        if args.replay:
            from sinks.replay_fast import Replayer

            t = time.perf_counter()
            replayer = Replayer(engine, "bench")
            replayer.begin()
            totals = BatchStats()
            for i in range(0, len(stream), args.batch):
                totals.add(replayer.add_case_records(stream[i : i + args.batch]))
            replayer.finish()
            elapsed = time.perf_counter() - t
            print(f"replayed {totals.applied} events in {elapsed:.2f}s: "
                  f"{totals.applied / elapsed:,.0f} events/s ({engine.dialect.name}, fast path; "
                  f"writing {replayer.write_s:.2f}s of it)")
            engine.dispose()
            return
        totals = BatchStats()
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(stream), args.batch):
            totals.add(sink.apply_batch(stream[i : i + args.batch]))
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
        print(
            f"applied {totals.applied} events in {elapsed:.2f}s: "
            f"{totals.applied / elapsed:,.0f} events/s wall, {totals.applied / cpu:,.0f} per "
            f"CPU-second of this process ({engine.dialect.name}, batches of {args.batch})"
        )
        t = time.perf_counter()
        again = sink.apply_batch(stream[: args.batch])
        print(f"a redelivered batch: {again.stale} skipped in {time.perf_counter() - t:.3f}s")
        engine.dispose()


if __name__ == "__main__":
    main()
