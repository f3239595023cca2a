"""A worker processes every record that waits for it (issue 15: "a freshly started worker
sometimes never processes").

A stalled worker on this machine, attached to with gdb, showed the fetcher waiting for a fetch
that faust's consumer thread never answered: the thread's method queue empty, its workers idle,
the request's future pending (processors.delivery, shortcut 6). Each test injects one fault into
a real faust worker process (GridflowApp, as gridflow's worker) on the real broker, and checks
that every record is still processed:

- records waiting at the start of a new consumer group and of a restarted one, with a slow seek
  to the committed offsets: processed with no rescue at all;
- a fetch the consumer thread never answers: asked again (GridflowConsumerThread.getmany);
- every record of one partition thrown away between the fetcher and the stream on its first
  reading: found by the stall watchdog (GridflowConsumer._watch_stalls) and read again.

The agent records each (partition, offset) it processed in a file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 3

WORKER_APP = """
import asyncio, os, time
import processors.delivery as delivery
from processors.delivery import (GridflowApp, GridflowConsumer, GridflowConsumerThread,
                                 GridflowTransport)

env = os.environ
SOURCE = env["T_SOURCE"]
PARTITIONS = int(env["T_PARTITIONS"])
SEEK_DELAY_S = float(env.get("T_SEEK_DELAY", "0"))
LOSE_FETCH = env.get("T_LOSE_FETCH") == "1"
DROP_PARTITION = int(env.get("T_DROP_PARTITION", "-1"))
# "partition:offset": the first reading of that one record is thrown away
DROP_ONE = tuple(int(x) for x in env["T_DROP_ONE"].split(":")) if env.get("T_DROP_ONE") else None
ORDERED = env.get("T_ORDERED") == "1"
delivery.FETCH_STUCK_AFTER_S = 3.0
delivery.STALL_AFTER_S = 4.0


class LosingThread(GridflowConsumerThread):
    # The first fetch that could return the source's records is never answered.
    lost = False

    async def _fetch_records(self, consumer, active_partitions, timeout=None, max_records=None):
        if LOSE_FETCH and not LosingThread.lost and any(
                tp.topic == SOURCE for tp in active_partitions or ()):
            LosingThread.lost = True
            await asyncio.Event().wait()
        return await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                            max_records=max_records)


class FaultyConsumer(GridflowConsumer):
    def on_init(self):
        super().on_init()
        self._stalls = delivery.StallWatch(delivery.STALL_AFTER_S)
        deliver, dropped = self.callback, set()

        async def callback(message):
            # The first reading of every record of one partition is thrown away between the
            # fetcher and the stream, as faust's queues cleared on resume do.
            key = (message.partition, message.offset)
            if (message.topic == SOURCE and key not in dropped
                    and (message.partition == DROP_PARTITION or key == DROP_ONE)):
                dropped.add(key)
                return
            await deliver(message)

        self.callback = callback

    def _new_consumer_thread(self):
        return LosingThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_to_committed(self):
        # Widens the window between the seek to the committed offsets and the flow's resume.
        committed = await super().seek_to_committed()
        await asyncio.sleep(SEEK_DELAY_S)
        return committed


class Transport(GridflowTransport):
    Consumer = FaultyConsumer


class App(GridflowApp):
    def _new_transport(self):
        return Transport(self.conf.broker_consumer, self)


app = App(
    env["T_APP_ID"],
    dense_topics=[SOURCE],
    broker="kafka://" + env["T_BOOTSTRAP"],
    store="memory://",
    datadir=env["T_DATADIR"],
    web_enabled=False,
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    broker_commit_every=1,
    broker_commit_interval=0.5,
    stream_wait_empty=False,
)
source = app.topic(SOURCE, partitions=PARTITIONS, key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
# A table, so that the worker goes through table recovery as gridflow's worker does.
seen = app.Table("seen", default=int, partitions=PARTITIONS)


in_order = app.in_order("slow", [SOURCE]) if ORDERED else (lambda m: True)


@app.agent(source)
async def slow(stream):
    async for event in stream.events():
        if not in_order(event.message):
            continue
        await asyncio.sleep(0.2)
        seen[event.key.decode()] += 1
        with open(env["T_DONE"], "a") as f:
            f.write(f"{event.message.partition}:{event.message.offset}:{time.time():.3f}\\n")


if __name__ == "__main__":
    app.main()
"""


class Worker:
    def __init__(self, tmp: Path, env: dict[str, str], name: str) -> None:
        self.log = tmp / f"{name}.log"
        app_file = tmp / "stall_app.py"
        app_file.write_text(WORKER_APP)
        worker_env = dict(os.environ, **env, PYTHONPATH=str(ROOT),
                          T_DATADIR=str(tmp / f"data-{name}"))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(app_file), "worker", "--loglevel", "info"],
                cwd=tmp, env=worker_env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def source(stack, topic_prefix: str) -> str:  # type: ignore[no-untyped-def]
    name = f"{topic_prefix}.stall-src"
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    try:
        admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        admin.close()
    return name


@pytest.fixture
def started() -> Iterator[list[Worker]]:
    workers: list[Worker] = []
    yield workers
    for worker in workers:
        worker.kill()


def produce(bootstrap: str, topic: str, first: int, count: int) -> set[tuple[int, int]]:
    """`count` records spread over every partition; their (partition, offset)s."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        futures = [producer.send(topic, key=f"k{n}".encode(), value=b"x",
                                 partition=n % PARTITIONS)
                   for n in range(first, first + count)]
        producer.flush(timeout=30)
        return {(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)}
    finally:
        producer.close()


def first_order(done: Path) -> dict[int, list[int]]:
    """Each partition's offsets in the order the agent first processed them."""
    order: dict[int, list[int]] = {}
    seen: set[tuple[int, int]] = set()
    for line in done.read_text().split():
        p, o, _ = line.split(":")
        if (int(p), int(o)) not in seen:
            seen.add((int(p), int(o)))
            order.setdefault(int(p), []).append(int(o))
    return order


def processed(done: Path) -> set[tuple[int, int]]:
    try:
        lines = done.read_text().split()
    except OSError:
        return set()
    return {(int(p), int(o)) for p, o, _ in (line.split(":") for line in lines)}


def wait_processed(worker: Worker, done: Path, wanted: set[tuple[int, int]],
                   timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited ({worker.proc.returncode}):\n{worker.tail()}")
        if wanted <= processed(done):
            return
        time.sleep(0.5)
    missing = sorted(wanted - processed(done))
    pytest.fail(f"{len(missing)} of {len(wanted)} records never processed, e.g. "
                f"{missing[:6]} (partition, offset)\n{worker.tail()}")


def env_for(stack, source: str, tmp_path: Path, app_id: str, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"T_SOURCE": source, "T_APP_ID": app_id, "T_BOOTSTRAP": stack.bootstrap,
            "T_PARTITIONS": str(PARTITIONS), "T_DONE": str(tmp_path / "done.txt"), **extra}


def test_records_waiting_at_start_are_all_processed(stack, source, topic_prefix, tmp_path,  # type: ignore[no-untyped-def]
                                                    started) -> None:
    """A new consumer group and a restarted one, each with records waiting on every partition
    and a slow seek to the committed offsets: every record processed, no rescue needed."""
    done = tmp_path / "done.txt"
    env = env_for(stack, source, tmp_path, f"{topic_prefix}-stall", T_SEEK_DELAY="2.0")
    wanted = produce(stack.bootstrap, source, 0, 30)
    started.append(Worker(tmp_path, env, "first"))
    wait_processed(started[-1], done, wanted)

    # Stopped, restarted with committed offsets above 0 and new records waiting.
    time.sleep(2.0)  # a commit or two (every 0.5 s)
    started[-1].stop()
    wanted |= produce(stack.bootstrap, source, 30, 30)
    started.append(Worker(tmp_path, env, "second"))
    wait_processed(started[-1], done, wanted)
    for worker in started:
        assert "rewinding" not in worker.text(), worker.tail()
        assert "was not answered" not in worker.text(), worker.tail()
    started[-1].stop()


def test_a_fetch_the_consumer_thread_never_answers_is_asked_again(  # type: ignore[no-untyped-def]
        stack, source, topic_prefix, tmp_path, started) -> None:
    """The stall seen on this machine: the first fetch that could return the waiting records
    is never answered by faust's consumer thread. Without GridflowConsumerThread.getmany's
    limit the worker waits for it forever."""
    done = tmp_path / "done.txt"
    env = env_for(stack, source, tmp_path, f"{topic_prefix}-lost", T_LOSE_FETCH="1")
    wanted = produce(stack.bootstrap, source, 0, 30)
    started.append(Worker(tmp_path, env, "lost-fetch"))
    wait_processed(started[-1], done, wanted)
    assert "was not answered in 4 s; asking again (1 lost so far)" in started[-1].text(), \
        started[-1].tail()
    started[-1].stop()


def test_the_watchdog_rewinds_a_partition_whose_records_were_dropped(  # type: ignore[no-untyped-def]
        stack, source, topic_prefix, tmp_path, started) -> None:
    """Every record of one partition is thrown away between the fetcher and the stream the
    first time it is read. Nothing later on that partition is processed, so the hole rewind
    (which needs a later record processed) never fires; the stall watchdog finds the
    partition and every record is processed."""
    done = tmp_path / "done.txt"
    env = env_for(stack, source, tmp_path, f"{topic_prefix}-dropped", T_DROP_PARTITION="0")
    wanted = produce(stack.bootstrap, source, 0, 30)
    started.append(Worker(tmp_path, env, "dropped"))
    wait_processed(started[-1], done, wanted)
    log = started[-1].text()
    assert "with the worker idle; rewinding to 0" in log, started[-1].tail()
    started[-1].stop()


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_an_ordered_agent_decides_a_dropped_record_before_the_ones_after_it(  # type: ignore[no-untyped-def]
        stack, source, topic_prefix, tmp_path, started, ordered) -> None:
    """The first reading of one record in the middle of a partition is thrown away between the
    fetcher and the stream (as a rebalance's window once did on a partition's new owner).
    An ordered agent (GridflowApp.in_order) refuses the records after it and rewinds the
    partition at once: every record is processed, each partition's in order. An agent that
    does not ask decides the later ones first (the check is able to see that)."""
    done = tmp_path / "done.txt"
    env = env_for(stack, source, tmp_path, f"{topic_prefix}-order{int(ordered)}",
                  T_DROP_ONE="0:3", T_ORDERED="1" if ordered else "0")
    wanted = produce(stack.bootstrap, source, 0, 30)
    started.append(Worker(tmp_path, env, "order"))
    wait_processed(started[-1], done, wanted)
    order = first_order(done)
    log = started[-1].text()
    if ordered:
        assert all(offsets == sorted(offsets) for offsets in order.values()), order
        assert "slow was handed record 4 before 3; not decided, rewinding to 3" in log, \
            started[-1].tail()
    else:
        assert order[0] != sorted(order[0]), order
    started[-1].stop()
