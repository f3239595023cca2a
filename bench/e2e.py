"""End-to-end benchmark: a steady stream of grid workers' photo uploads through the real API,
worker (with the photo archive) and SQL sink, all child processes on PostgreSQL; for each
accepted upload, the time from sending it until its case's tasks are visible in the database
(polled every 20 ms, so a figure is late by at most that much).

Two figures: the latency at RATE, the issue's target rate, for the run's full length; then the
highest rate at which p99 stays under a second, found by stepping the rate up (STEP_RATES, a
short run each, the backlog drained in between) until a step misses, and trying once halfway
between the last step that held and the one that did not.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import bindparam, text

from bench.common import (
    Context,
    Figure,
    buckets,
    fmt_ms,
    own_cpu_s,
    percentile,
    pg_database,
    say,
    topic_prefix,
    tree_cpu_s,
)
from bench.ingest import Uploads, start_api
from bench.load import small_jpeg, variant
from demo.simulator import sample_tokens
from infra import services

RATE = 50.0  # uploads per second: the target's rate
FULL_SECONDS = 60.0
# The search for the highest rate that keeps p99 under TARGET_P99_S: each step runs
# STEP_SECONDS (times the scale); a quick run only tries the first QUICK_STEPS.
STEP_RATES = (20.0, 35.0, 50.0, 70.0, 100.0, 140.0, 200.0, 280.0)
STEP_SECONDS = 20.0
QUICK_STEPS = 2
ARCHIVE_NICE = 10
ARCHIVE_WAIT_S = 600.0
POLL_S = 0.02
TARGET_P99_S = 1.0


class Watcher(threading.Thread):
    """Polls the database for reports whose case has tasks; notes when each was first seen."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        from sinks.models import make_engine

        self.engine = make_engine(url)
        self.pending: dict[str, float] = {}  # report id -> upload start (perf_counter)
        self.latency: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.query = text(
            "SELECT DISTINCT r.report_id FROM reports r JOIN tasks t ON t.case_id = r.case_id "
            "WHERE r.report_id IN :ids").bindparams(bindparam("ids", expanding=True))

    def expect(self, report_id: str, started: float) -> None:
        with self.lock:
            self.pending[report_id] = started

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                ids = list(self.pending)
            if ids:
                with self.engine.connect() as conn:
                    found = conn.execute(self.query, {"ids": ids}).scalars().all()
                now = time.perf_counter()
                with self.lock:
                    for rid in found:
                        started = self.pending.pop(rid, None)
                        if started is not None:
                            self.latency[rid] = now - started
            self.stop.wait(POLL_S)
        self.engine.dispose()


IN_FLIGHT = 128


def steady(url: str, seconds: float, run: str, watcher: Watcher, tokens: Mapping[str, str],
           rate: float = RATE) -> list[tuple[int, float]]:
    """Uploads due at RATE per second for `seconds`, at most IN_FLIGHT at a time (a thread and
    a keep-alive connection each); the rest wait in the pool's queue, and that wait counts:
    each upload is timed from when it was due."""
    photo = small_jpeg()
    uploads = Uploads(url, run, tokens, seed=37, timeout=60)
    results: list[tuple[int, float]] = []

    def one(i: int, scheduled: float) -> None:
        status, latency, _ = uploads.one(i, variant(photo, i))
        results.append((status, latency))
        if status == 202:  # end-to-end time counts from when the upload was due
            watcher.expect(f"{run}-{i:07d}", scheduled)

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        t0 = time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < seconds:
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i, due)
            i += 1
    return results


def run(ctx: Context) -> list[Figure]:
    from demo.live import free_port
    from sinks.models import create_schema, make_engine

    seconds = max(5.0, FULL_SECONDS * ctx.scale)
    run_dir = ctx.work_dir / "e2e"
    run_dir.mkdir(parents=True, exist_ok=True)
    with topic_prefix(ctx.settings, ctx.unique("e2e")) as prefix, \
            buckets(ctx.settings, ctx.unique("e2e")) as (incoming, archive), \
            pg_database(ctx.settings, ctx.unique("e2e")) as db_url:
        settings = ctx.settings.with_(
            topic_prefix=prefix, bucket_incoming=incoming, bucket_archive=archive,
            database_url=db_url, api_port=free_port(), faust_data_dir=Path(run_dir / "faust"))
        engine = make_engine(db_url)
        create_schema(engine)
        engine.dispose()
        procs: list[services.Service] = []
        watcher = Watcher(db_url)
        try:
            # The photo archive runs in a worker of its own at a lower CPU priority: on two
            # shared cores its decode and copies would otherwise queue the reports behind the
            # photos. The figure is report → tasks; the archive's lag is noted beside it.
            procs.append(services.start("worker", ["worker", "--role", "pipeline"], settings,
                                        run_dir))
            procs.append(services.start("archive", ["worker", "--role", "archive", "--nice",
                                                    str(ARCHIVE_NICE)], settings, run_dir))
            procs.append(services.start("sink", ["sink", "--loglevel", "warning"], settings,
                                        run_dir))
            procs.append(start_api(settings, run_dir, procs))
            tokens = sample_tokens(db_url)  # the sample workers signed in, in memory only
            _warm_up(settings.api_url, ctx.run_id, watcher, procs, tokens)
            watcher.start()
            say(ctx.echo, f"e2e: {RATE:g} uploads/s for {seconds:g} s ...")
            cpu0 = {p.name: tree_cpu_s(p.proc.pid) for p in procs if p.proc}
            own0, t0 = own_cpu_s(), time.monotonic()
            results = steady(settings.api_url, seconds, ctx.run_id, watcher, tokens)
            t_sent = time.monotonic()
            _drain(watcher, procs)
            wall = time.monotonic() - t0
            # Cores each process kept busy from the first upload until the last was seen
            # with tasks: where this machine's two cores went.
            cores = {p.name: (tree_cpu_s(p.proc.pid) - cpu0.get(p.name, 0.0)) / wall
                     for p in procs if p.proc}
            cores["load generator"] = (own_cpu_s() - own0) / wall
            archive_lag = _archive_caught_up(db_url, procs, t_sent)
            with watcher.lock:
                lat = list(watcher.latency.values())
                watcher.latency.clear()
                watcher.pending.clear()
            steps = search_rate(ctx, settings.api_url, watcher, procs, tokens)
        finally:
            watcher.stop.set()
            for p in reversed(procs):
                p.stop()
    sent = len(results)
    accepted = sum(1 for s, _ in results if s == 202)
    p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
    missing = accepted - len(lat)
    note = (f"{sent} uploads of a {len(small_jpeg()) / 1024:.0f} KB 640×480 JPEG in {seconds:g} s "
            f"({accepted} accepted, {len(lat)} seen with tasks"
            f"{f', {missing} not seen within 60 s' if missing else ''}); "
            f"upload p50 {fmt_ms(percentile([r[1] for r in results], 0.5))}; HTTP status counts "
            f"{dict(sorted(Counter(s for s, _ in results).items()))} (0: no answer within 60 s). "
            f"Cores busy during the {RATE:g}/s run: "
            + ", ".join(f"{name} {c:.2f}" for name, c in cores.items()) + ". "
            f"Photo archive in its own worker (nice {ARCHIVE_NICE}): "
            + (f"every photo archived {archive_lag:.0f} s after the last upload was sent"
               if archive_lag is not None else
               f"photos still unarchived {ARCHIVE_WAIT_S:.0f} s after the last upload"))
    best = max((st.rate for st in steps if st.held), default=None)
    tried = "; ".join(st.line() for st in steps)
    last_tried = max(st.rate for st in steps)
    searched = ("every rate tried held, so the highest is at least that" if best == last_tried
                else "the next rate tried did not hold")
    return [
        Figure(
            f"end to end at {RATE:g} uploads/s with photos (upload → tasks in the database)",
            f"p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)}", "—", None,
            f"p99 < {TARGET_P99_S * 1000:.0f} ms",
            bool(lat) and missing == 0 and p99 < TARGET_P99_S, note,
            {"sizes": f"{RATE:g}/s for {seconds:g} s", "p50": p50, "p99": p99,
             "archive_lag_s": archive_lag, "cores": cores}),
        Figure(
            "end to end: the highest upload rate with p99 under 1 s (rate stepped up)",
            f"{best:g} uploads/s" if best is not None else "none held", "—", None,
            "reported (≥ 50/s)", best is not None and best >= RATE,
            f"{len(steps)} steps of {steps[0].seconds:g} s, the backlog drained between them; "
            f"{searched}: {tried}.",
            {"best_rate": best, "steps": [st.raw() for st in steps]}),
    ]


@dataclass
class Step:
    """One step of the rate search."""

    rate: float
    seconds: float
    sent: int
    accepted: int
    seen: int
    p50: float
    p99: float

    @property
    def held(self) -> bool:
        return (self.sent > 0 and self.accepted == self.sent and self.seen == self.accepted
                and self.p99 < TARGET_P99_S)

    def line(self) -> str:
        lost = (f", {self.sent - self.accepted} refused or unanswered"
                if self.accepted < self.sent else "")
        late = (f", {self.accepted - self.seen} not seen within 60 s"
                if self.seen < self.accepted else "")
        return (f"{self.rate:g}/s p50 {fmt_ms(self.p50)} p99 {fmt_ms(self.p99)}{lost}{late} "
                f"({'held' if self.held else 'missed'})")

    def raw(self) -> dict[str, float | int | bool]:
        return {"rate": self.rate, "sent": self.sent, "accepted": self.accepted,
                "seen": self.seen, "p50": self.p50, "p99": self.p99, "held": self.held}


def search_rate(ctx: Context, url: str, watcher: Watcher, procs: list[services.Service],
                tokens: Mapping[str, str]) -> list[Step]:
    """Step the rate up until p99 reaches TARGET_P99_S (or an upload is refused or lost), then
    try once halfway between the last rate that held and the first that did not."""
    seconds = max(5.0, STEP_SECONDS * ctx.scale)
    rates = list(STEP_RATES[:QUICK_STEPS] if ctx.quick else STEP_RATES)
    steps: list[Step] = []

    def step(rate: float) -> Step:
        say(ctx.echo, f"e2e: rate search, {rate:g} uploads/s for {seconds:g} s ...")
        results = steady(url, seconds, f"{ctx.run_id}r{rate:g}", watcher, tokens, rate)
        _drain(watcher, procs)
        with watcher.lock:
            lat = list(watcher.latency.values())
            backlog = len(watcher.pending)
            watcher.latency.clear()
            watcher.pending.clear()
        accepted = sum(1 for s, _ in results if s == 202)
        done = Step(rate, seconds, len(results), accepted, accepted - backlog,
                    percentile(lat, 0.5), percentile(lat, 0.99))
        say(ctx.echo, f"e2e:   {done.line()}")
        steps.append(done)
        if backlog:  # what was left keeps the pipeline busy: let it finish before going on
            _drain(watcher, procs, timeout_s=120.0)
        return done

    for rate in rates:
        if not step(rate).held:
            good = [st.rate for st in steps if st.held]
            if good:
                middle = round((max(good) + rate) / 2 / 5) * 5
                if max(good) < middle < rate:
                    step(middle)
            break
    return steps


def _archive_caught_up(url: str, procs: list[services.Service], since: float) -> float | None:
    """Seconds from `since` until no photo in the database waits for its archive; None if
    that took longer than ARCHIVE_WAIT_S."""
    from sinks.models import make_engine

    engine = make_engine(url)
    query = text("SELECT count(*) FROM photos WHERE archive_status IS NULL")
    try:
        while time.monotonic() - since < ARCHIVE_WAIT_S:
            for p in procs:
                p.check()
            with engine.connect() as conn:
                if not conn.execute(query).scalar():
                    return time.monotonic() - since
            time.sleep(0.5)
        return None
    finally:
        engine.dispose()


def _drain(watcher: Watcher, procs: list[services.Service], timeout_s: float = 60.0) -> None:
    """Until every accepted upload was seen with tasks, or `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while watcher.pending and time.monotonic() < deadline:
        for p in procs:
            p.check()
        time.sleep(0.2)


def _warm_up(url: str, run: str, watcher: Watcher, procs: list[services.Service],
             tokens: Mapping[str, str]) -> None:
    """One upload through the whole pipeline before timing (the worker's first rebalance)."""
    Uploads(url, f"{run}w", tokens, seed=41, timeout=60).one(0, variant(small_jpeg(), 10**6))
    watcher.expect(f"{run}w-{0:07d}", time.perf_counter())
    deadline = time.monotonic() + 120
    while watcher.pending and time.monotonic() < deadline:
        for p in procs:
            p.check()
        watcher_poll(watcher)
        time.sleep(0.2)
    watcher.pending.clear()
    watcher.latency.clear()


def watcher_poll(watcher: Watcher) -> None:
    with watcher.engine.connect() as conn:
        found = conn.execute(watcher.query, {"ids": list(watcher.pending)}).scalars().all()
    for rid in found:
        watcher.pending.pop(rid, None)
