"""What every benchmark shares: the run context, the Figure it reports, and the throw-away
topics, buckets and databases it makes (each removed again, pass or fail).
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridflow.settings import Settings
from gridflow.topics import delete_topics

Echo = Callable[[str], None]


@dataclass
class Figure:
    """One row of the results table: our figure beside its raw baseline from the same run."""

    what: str
    ours: str
    baseline: str = "—"
    ratio: float | None = None  # ours / baseline (higher is better), when both are rates
    target: str = ""
    met: bool | None = None  # None: no target, or not measurable in this run
    note: str = ""  # sizes used, and why a target is not met
    raw: dict[str, Any] = field(default_factory=dict)  # the numbers behind ours/baseline

    @property
    def verdict(self) -> str:
        return {True: "met", False: "NOT met", None: "—"}[self.met]


@dataclass
class Context:
    """A benchmark run: the base settings, the size factor and where scratch files go."""

    settings: Settings
    scale: float
    quick: bool
    work_dir: Path
    echo: Echo
    run_id: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:8]}")

    def n(self, full: int, minimum: int = 1) -> int:
        """A size of the full run, times the scale."""
        return max(minimum, int(round(full * self.scale)))

    def unique(self, tag: str) -> str:
        return f"{self.run_id}-{tag}"


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def fmt_rate(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"


def fmt_ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:,.0f} ms"


def say(echo: Echo, line: str) -> None:
    echo(line)
    sys.stdout.flush()


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- throw-away resources -----------------------------------------------------------------


@contextlib.contextmanager
def topic_prefix(settings: Settings, prefix: str) -> Iterator[str]:
    """Every catalogue topic under `prefix`; afterwards every topic starting with it goes."""
    from infra.kafka import ensure_catalogue

    ensure_catalogue(settings.kafka_bootstrap, prefix)
    try:
        yield prefix
    finally:
        delete_topics(settings.kafka_bootstrap, prefix)


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)], timeout_ms=30000)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            described = admin.describe_topics([name])
            if described and all(p.get("leader", -1) >= 0 for p in described[0]["partitions"]) \
                    and len(described[0]["partitions"]) == partitions:
                return
            time.sleep(0.2)
    finally:
        admin.close()


def s3_client(settings: Settings) -> Any:
    """A MinIO client whose connection pool serves 64 threads (the SDK's default keeps 10)."""
    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(maxsize=64, timeout=urllib3.Timeout(connect=3.0, read=60.0),
                               retries=urllib3.Retry(total=2, backoff_factor=0.2))
    return Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
                 secret_key=settings.s3_secret_key, secure=settings.s3_secure,
                 region=settings.s3_region, http_client=http)


@contextlib.contextmanager
def buckets(settings: Settings, prefix: str) -> Iterator[tuple[str, str]]:
    """Fresh incoming and archive (object lock) buckets, emptied and removed afterwards."""
    s3 = s3_client(settings)
    incoming, archive = f"{prefix}-in", f"{prefix}-arch"
    s3.make_bucket(incoming)
    s3.make_bucket(archive, object_lock=True)
    try:
        yield incoming, archive
    finally:
        for name in (incoming, archive):
            remove_bucket(s3, name)


def remove_bucket(s3: Any, name: str) -> None:
    from minio.deleteobjects import DeleteObject

    with contextlib.suppress(Exception):
        versions = [DeleteObject(o.object_name, o.version_id)
                    for o in s3.list_objects(name, recursive=True, include_version=True)]
        for i in range(0, len(versions), 1000):
            list(s3.remove_objects(name, versions[i:i + 1000], bypass_governance_mode=True))
        s3.remove_bucket(name)


@contextlib.contextmanager
def pg_database(settings: Settings, name: str) -> Iterator[str]:
    """A fresh PostgreSQL database on the local server; dropped afterwards. Yields its URL."""
    import psycopg

    admin = dict(host="127.0.0.1", port=settings.postgres_port, user=settings.postgres_user,
                 dbname=settings.postgres_db, autocommit=True, connect_timeout=10)
    name = name.replace("-", "_")
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (f"postgresql+psycopg://{settings.postgres_user}@127.0.0.1:"
               f"{settings.postgres_port}/{name}")
    finally:
        _drop_database(admin, name)


def _drop_database(admin: dict[str, Any], name: str, attempts: int = 5) -> None:
    """Drop a benchmark's database, retrying while sessions linger; a database that still
    cannot be dropped is reported, not raised, so the figures measured before stand."""
    import psycopg

    from infra.postgres import drop_database

    try:
        drop_database(admin, name, attempts=attempts)
    except (psycopg.Error, RuntimeError) as exc:
        print(f"bench: could not drop database {name} ({exc}); drop it by hand", file=sys.stderr)


def tree_cpu_s(root: int) -> float:
    """CPU time (user + system, s) of process `root` and its live descendants, from /proc
    (0 for root 0)."""
    if not root:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, pp in parent.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(cpu.get(pid, 0.0) for pid in tree)


def own_cpu_s() -> float:
    """CPU time (user + system, s) of this process, all its threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def spy(name: str, pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy recording `pid` for `seconds` into $GRIDFLOW_BENCH_PYSPY/<name>.speedscope.json,
    when that variable is set (profiles of the child processes while a benchmark runs). With
    GRIDFLOW_BENCH_PYSPY_GIL=1 only threads holding the GIL are sampled: Python's CPU, without
    the threads that wait."""
    out_dir = os.environ.get("GRIDFLOW_BENCH_PYSPY")
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not out_dir or not Path(exe).exists():
        return None
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    recorder = subprocess.Popen(
        [exe, "record", "-p", str(pid), "--subprocesses",
         *(["--gil"] if os.environ.get("GRIDFLOW_BENCH_PYSPY_GIL") == "1" else []),
         "-d", str(int(seconds)), "-r", "50", "-f", "speedscope",
         "-o", str(Path(out_dir) / f"{name}.speedscope.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _recorders.append(recorder)
    return recorder


_recorders: list[subprocess.Popen[bytes]] = []


def stop_spies(timeout_s: float = 60) -> None:
    """Ends every py-spy recording still running and waits for its file. Call it while the
    targets still run: py-spy following subprocesses does not notice its target's exit and
    would otherwise never write (it writes on SIGINT, as on Ctrl-C)."""
    while _recorders:
        recorder = _recorders.pop()
        if recorder.poll() is None:
            recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            recorder.kill()
