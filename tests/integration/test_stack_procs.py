"""Process plumbing of infra/ with stand-in processes: the start deadline, SIGKILL escalation,
and leftover children. (No servers needed; it sits with the stack tests it protects.)"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from gridflow.settings import Settings
from infra import stack as infra_stack
from infra.procs import (
    PidRecord,
    ServerError,
    group_alive,
    is_alive,
    record_for,
    spawn_detached,
    stop_process,
)
from infra.server import Server

pytestmark = pytest.mark.integration

NEVER_HEALTHY = "import time\nprint('booting, never ready', flush=True)\ntime.sleep(120)\n"
IGNORES_TERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\ntime.sleep(120)\n"
)
FORKS_CHILD = (
    "import os, sys, time\nif os.fork() == 0:\n    time.sleep(120)\n    sys.exit(0)\n"
    "print('parent ready', flush=True)\ntime.sleep(120)\n"
)


class StandIn(Server):
    """A 'server' that is a small Python script; never healthy."""

    name = "standin"
    title = "stand-in"
    start_timeout_s = 1.5
    stop_timeout_s = 2.0
    script = NEVER_HEALTHY

    @property
    def address(self) -> str:
        return "127.0.0.1:1"

    def listen_addresses(self) -> list[tuple[str, int]]:
        return []

    def installed(self) -> bool:
        return True

    def install(self, echo) -> None:  # type: ignore[no-untyped-def]
        pass

    def prepare(self, echo) -> None:  # type: ignore[no-untyped-def]
        self.home.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.script]

    def healthy(self) -> bool:
        return False

    def provision(self, echo) -> None:  # type: ignore[no-untyped-def]
        pass

    def version(self) -> str:
        return "0"


def spawn(tmp_path: Path, script: str) -> PidRecord:
    log = tmp_path / "p.log"
    command = [sys.executable, "-c", script]
    proc = spawn_detached(command, log, {}, tmp_path)
    deadline = time.monotonic() + 10
    # The log's first line echoes the command (which contains the word): wait for a line of output.
    while not any(line.endswith("ready") for line in log.read_text().splitlines()):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return record_for(proc, "127.0.0.1:1", command)


def test_a_server_that_never_gets_healthy_is_stopped_and_reported(tmp_path: Path) -> None:
    server = StandIn(Settings(state_dir=tmp_path, cache_dir=tmp_path / "cache"))
    started = infra_stack._launch(server, echo=lambda _: None)
    with pytest.raises(ServerError) as failed:
        infra_stack._wait_healthy(started, echo=lambda _: None)
    message = str(failed.value)
    assert message.startswith("standin: not healthy after 2 s, its log silent for the last 2 s "
                              "(stopped it)"), message
    assert "booting, never ready" in message  # the log tail
    assert not is_alive(started.record.pid)
    assert not server.pid_path.exists()


CHATTY = (
    "import pathlib, sys, time\nfor i in range(int(sys.argv[2])):\n"
    "    print(f'loading partition {i}', flush=True)\n    time.sleep(0.2)\n"
    "pathlib.Path(sys.argv[1]).write_text('ok')\nprint('ready', flush=True)\ntime.sleep(120)\n"
)


class Chatty(StandIn):
    """Logs a line every 0.2 s for `lines` lines, then is healthy: a slow but busy start."""

    lines = 15  # 3 s of start-up, twice the 1.5 s of silence allowed

    def command(self) -> list[str]:
        return [sys.executable, "-c", CHATTY, str(self.home / "ready"), str(self.lines)]

    def healthy(self) -> bool:
        return (self.home / "ready").exists()


def test_a_start_that_keeps_logging_gets_more_time_and_says_so(tmp_path: Path) -> None:
    server = Chatty(Settings(state_dir=tmp_path, cache_dir=tmp_path / "cache"))
    said: list[str] = []
    started = infra_stack._launch(server, echo=said.append)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(infra_stack, "PROGRESS_EVERY_S", 1.0)
            infra_stack._wait_healthy(started, echo=said.append)
        took = time.monotonic() - started.t0
        assert took > 2.5  # longer than start_timeout_s: it was not cut off
        assert said[-1].startswith("standin: up in ")
        progress = [line for line in said if "still starting after" in line]
        assert progress and "loading partition" in progress[0], said
    finally:
        stop_process(started.record, signal.SIGKILL, 5.0)


def test_a_start_that_logs_forever_stops_at_the_cap(tmp_path: Path) -> None:
    server = Chatty(Settings(state_dir=tmp_path, cache_dir=tmp_path / "cache"))
    server.lines = 10_000
    server.start_cap_s = 2.5
    started = infra_stack._launch(server, echo=lambda _: None)
    with pytest.raises(ServerError) as failed:
        infra_stack._wait_healthy(started, echo=lambda _: None)
    assert str(failed.value).startswith(
        "standin: not healthy within 2 s, though its log kept growing (stopped it)"), failed.value
    assert "loading partition" in str(failed.value)
    assert not is_alive(started.record.pid)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    record = spawn(tmp_path, IGNORES_TERM)
    how = stop_process(record, signal.SIGTERM, timeout_s=1.0)
    assert how.startswith("killed")
    assert not is_alive(record.pid)


def test_stop_leaves_no_child_behind(tmp_path: Path) -> None:
    record = spawn(tmp_path, FORKS_CHILD)
    # The parent exits on SIGTERM, its child does not get the signal: the group is killed.
    assert stop_process(record, signal.SIGTERM, timeout_s=1.0).startswith("killed")
    assert not group_alive(record.pid)


def test_stopping_a_dead_server_kills_its_orphans(tmp_path: Path) -> None:
    record = spawn(tmp_path, FORKS_CHILD)
    os.kill(record.pid, signal.SIGKILL)  # the server crashes, its child lives on
    deadline = time.monotonic() + 5
    while is_alive(record.pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert group_alive(record.pid)
    assert stop_process(record, signal.SIGTERM, timeout_s=1.0).startswith("not running (killed")
    assert not group_alive(record.pid)


def test_only_test_session_counts_live_sessions_but_this_one(tmp_path: Path) -> None:
    import subprocess

    from infra.procs import process_start_ticks

    settings = Settings(state_dir=tmp_path, cache_dir=tmp_path / "cache")
    leases = infra_stack._leases_dir(settings)
    leases.mkdir(parents=True, exist_ok=True)
    PidRecord(os.getpid(), process_start_ticks(os.getpid()) or -1, "", [], time.time()).write(
        leases / f"{os.getpid()}.lease")
    assert infra_stack.only_test_session(settings)  # our own lease does not count
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lease = leases / f"{other.pid}.lease"
        PidRecord(other.pid, process_start_ticks(other.pid) or -1, "", [], time.time()).write(lease)
        assert not infra_stack.only_test_session(settings)
    finally:
        other.kill()
        other.wait()
    assert infra_stack.only_test_session(settings)  # a dead session's lease is swept
    assert not lease.exists()
