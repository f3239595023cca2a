"""Kafka + faust on the real broker: kafka-python produces, a faust worker counts into a Table,
and a restarted worker (new process, same app id, empty in-memory store) gets the table back
from its changelog topic.

The worker runs as a subprocess (`python app.py worker`), as in production: faust keeps
process-global state, so a fresh process per worker is the robust way to "restart" it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from gridflow.topics import REPORTS

pytestmark = pytest.mark.integration

WORKER_APP = '''
import json, os
import faust

env = os.environ
RUN = int(env["T_RUN"])
DUMP = env["T_DUMP"]

app = faust.App(
    env["T_APP_ID"],
    broker="kafka://" + env["T_BOOTSTRAP"],
    store="memory://",
    datadir=env["T_DATADIR"],
    web_enabled=False,
    topic_partitions=4,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    broker_commit_every=1,
    broker_commit_interval=0.5,
)
source = app.topic(env["T_SOURCE"], key_serializer="json", value_serializer="json")
# Each entry remembers which worker run created it: a count restored from the changelog
# keeps run 1, while re-processing the source from scratch would say run 2.
counts = app.Table("counts", default=None, partitions=4)


@app.agent(source)
async def count(stream):
    async for key, _value in stream.items():
        entry = counts.get(key) or {"count": 0, "run": RUN}
        counts[key] = {"count": entry["count"] + 1, "run": entry["run"]}


@app.timer(0.3)
async def dump():
    tmp = DUMP + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(counts.items()), f, sort_keys=True)
    os.replace(tmp, DUMP)


if __name__ == "__main__":
    app.main()
'''


class Worker:
    """One faust worker process of the test app; its log is kept for failure messages."""

    def __init__(self, tmp: Path, env: dict[str, str], run: int) -> None:
        self.dump = tmp / f"dump{run}.json"
        self.log = tmp / f"worker{run}.log"
        app_file = tmp / "counter_app.py"
        app_file.write_text(WORKER_APP)
        worker_env = dict(os.environ, **env, T_RUN=str(run), T_DUMP=str(self.dump),
                          T_DATADIR=str(tmp / f"data{run}"))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(app_file), "worker", "--loglevel", "info"],
                cwd=tmp, env=worker_env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def table(self) -> dict[str, dict[str, int]] | None:
        try:
            return json.loads(self.dump.read_text())
        except (OSError, ValueError):
            return None

    def wait_for(self, expected: dict[str, dict[str, int]], timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"faust worker exited ({self.proc.returncode}):\n{self.tail()}")
            if self.table() == expected:
                return
            time.sleep(0.2)
        pytest.fail(f"table is {self.table()}, expected {expected}\n{self.tail()}")

    def stop(self, timeout_s: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                pytest.fail(f"faust worker ignored SIGTERM for {timeout_s} s:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.proc.poll() is None:
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()


def produce(bootstrap: str, topic: str, keys: list[str]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    try:
        for i, key in enumerate(keys):
            value = {"seq": i, "report_id": key}
            producer.send(topic, key=json.dumps(key).encode(), value=json.dumps(value).encode())
        producer.flush(timeout=30)
    finally:
        producer.close()


def test_table_is_restored_from_changelog(stack, topic_prefix, tmp_path, workers) -> None:  # type: ignore[no-untyped-def]
    source = REPORTS.name(topic_prefix)  # created explicitly (4 partitions) by the fixture
    app_id = f"{topic_prefix}-counter"  # faust's own topics start with the prefix: cleaned up too
    env = {"T_APP_ID": app_id, "T_BOOTSTRAP": stack.bootstrap, "T_SOURCE": source}
    keys = ["r-1", "r-2", "r-3", "r-1", "r-2", "r-1", "r-4", "r-5"]
    produce(stack.bootstrap, source, keys)
    expected = {k: {"count": keys.count(k), "run": 1} for k in sorted(set(keys))}

    first = Worker(tmp_path, env, run=1)
    workers.append(first)
    first.wait_for(expected)
    first.stop()

    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    try:
        changelog = f"{app_id}-counts-changelog"
        assert changelog in admin.list_topics(), "faust creates the changelog topic itself"
        (described,) = admin.describe_topics([changelog])
        assert len(described["partitions"]) == 4
    finally:
        admin.close()

    second = Worker(tmp_path, env, run=2)
    workers.append(second)
    second.wait_for(expected)  # run 1 values: recovered from the changelog, not recomputed

    produce(stack.bootstrap, source, ["r-4"])  # and it keeps counting on the restored state
    second.wait_for({**expected, "r-4": {"count": 2, "run": 1}})
    second.stop()
