"""The local stack as a whole: install, start (idempotent, in parallel), provision, stop and status.

Guarantee: `up` returns only when every selected server answers its health probe and is
provisioned, or raises StackError naming each failed server with its log tail; `down` leaves
no process of ours behind and removes the pid files. Both hold the state dir's lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from gridflow.settings import Settings
from infra.kafka import Kafka, read_cluster_record, recorded_brokers, write_cluster_record
from infra.minio import MinIOServer
from infra.postgres import PostgreSQL
from infra.procs import (
    Echo,
    PidRecord,
    ServerError,
    file_lock,
    log_tail,
    port_bindable,
    process_start_ticks,
    record_for,
    rotate_log,
    spawn_detached,
    stop_process,
)
from infra.server import Server

# Start order; `down` goes in reverse (clients of Kafka first, the database last).
SERVER_TYPES: tuple[type[Server], ...] = (PostgreSQL, MinIOServer, Kafka)
SERVER_NAMES: tuple[str, ...] = tuple(t.name for t in SERVER_TYPES)


def _quiet(_: str) -> None:
    pass


def servers(settings: Settings, only: Iterable[str] | None = None) -> list[Server]:
    """The selected servers in start order; unknown names are an error. Kafka is one server
    (`kafka`) or, for a cluster, one per node (`kafka-1` ...): `kafka` selects them all."""
    wanted = list(only) if only else list(SERVER_NAMES)
    nodes = kafka_nodes(settings)
    node_names = {node.name for node in nodes}
    unknown = sorted(set(wanted) - set(SERVER_NAMES) - node_names)
    if unknown:
        raise ValueError(f"unknown server(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(sorted(set(SERVER_NAMES) | node_names))}")
    selected: list[Server] = []
    for t in SERVER_TYPES:
        if t is Kafka:
            selected += [n for n in nodes if "kafka" in wanted or n.name in wanted]
        elif t.name in wanted:
            selected.append(t(settings))
    return selected


def kafka_shape(settings: Settings) -> Settings:
    """The settings with the Kafka shape of this state dir: GRIDFLOW_KAFKA_BROKERS when it asks
    for a cluster, else the cluster `up --brokers N` recorded here, else one node."""
    if settings.kafka_brokers > 1:
        return settings
    return settings.with_brokers(recorded_brokers(settings))


def kafka_nodes(settings: Settings) -> list[Kafka]:
    shaped = kafka_shape(settings)
    return [Kafka(shaped, node) for node in range(1, shaped.kafka_brokers + 1)]


def set_kafka_shape(settings: Settings, brokers: int, echo: Echo) -> Settings:
    """`up --brokers N`: record the shape of this state dir's Kafka (so that `up`, `down` and
    `status` find every node), refusing while Kafka of another shape runs here."""
    current = kafka_nodes(settings)
    if len(current) != brokers:
        live = [n.name for n in current
                if (rec := PidRecord.read(n.pid_path)) is not None and rec.alive()]
        if live:
            raise ServerError("kafka", f"{', '.join(live)} running here with "
                              f"{len(current)} node(s); `gridflow down --only kafka` first to "
                              f"run {brokers}")
    shaped = settings.with_brokers(brokers)
    record = read_cluster_record(settings)
    if brokers > 1:
        if record.get("brokers") != brokers:
            # A new cluster shape is a new cluster: its nodes are formatted with a new id
            write_cluster_record(settings, {"brokers": brokers})
    elif record:
        write_cluster_record(settings, {**record, "brokers": 1})
    if len(current) != brokers:
        echo(f"kafka: {brokers} node(s) in {settings.state_dir}")
    return shaped


def stack_lock(settings: Settings, echo: Echo) -> contextlib.AbstractContextManager[None]:
    return file_lock(settings.state_dir / "run" / "stack.lock", "up/down", echo)


# --- up -------------------------------------------------------------------------


@dataclass
class Started:
    server: Server
    record: PidRecord
    fresh: bool  # True when this call started the process
    t0: float


def up(settings: Settings, only: Iterable[str] | None = None, echo: Echo = _quiet,
       brokers: int | None = None) -> list[str]:
    """Install, start and provision the selected servers. Returns the names this call started.
    `brokers`: the number of Kafka nodes (recorded for this state dir; None: as recorded)."""
    with stack_lock(settings, echo):
        if brokers is not None:
            set_kafka_shape(settings, brokers, echo)
        selected = servers(settings, only)
        launched, errors = _launch_all(selected, echo)
        ready: list[Started] = []
        nodes = [item for item in launched if isinstance(item.server, Kafka)]
        for item in launched:
            try:
                _wait_healthy(item, echo, nodes if item in nodes else [])
                ready.append(item)
            except ServerError as exc:
                errors.append(exc)
        for item in ready:
            try:
                item.server.provision(echo)
            except ServerError as exc:
                errors.append(exc)
            except Exception as exc:  # a client library error while provisioning
                where = "".join(traceback.format_exception(exc)[-3:]).rstrip()
                errors.append(ServerError(item.server.name, f"provisioning failed: {exc!r}\n{where}"))
    if errors:
        raise StackError(errors)
    return [item.server.name for item in ready if item.fresh]


class StackError(RuntimeError):
    """One or more servers failed; the message holds every failure with its log tail."""

    def __init__(self, errors: list[ServerError]) -> None:
        self.errors = errors
        self.servers = [e.server for e in errors]
        super().__init__("\n\n".join(str(e) for e in errors))


def _launch_all(selected: list[Server], echo: Echo) -> tuple[list[Started], list[ServerError]]:
    """Installs first (slow the first time), then starts everything not yet running, so each
    server's start-up clock begins only when it is actually launched."""
    launched: list[Started] = []
    to_start: list[Server] = []
    errors: list[ServerError] = []
    for server in selected:
        try:
            running_one = _already_running(server)
            if running_one is not None:
                launched.append(running_one)
            else:
                _check_ports_free(server)
                server.install(echo)
                to_start.append(server)
        except Exception as exc:
            errors.append(_as_server_error(server, "install", exc))
    for server in to_start:
        try:
            launched.append(_launch(server, echo))
        except Exception as exc:
            errors.append(_as_server_error(server, "start", exc))
    return launched, errors


def _as_server_error(server: Server, step: str, exc: Exception) -> ServerError:
    """Keep ServerErrors; name the server on anything else (OSError, CalledProcessError, ...)."""
    if isinstance(exc, ServerError):
        return exc
    return ServerError(server.name, f"{step} failed: {type(exc).__name__}: {exc}")


def _already_running(server: Server) -> Started | None:
    """Our live process of this server, or None (a stale pid file is removed)."""
    server.check_local()
    record = PidRecord.read(server.pid_path)
    if record is None or not record.alive():
        server.pid_path.unlink(missing_ok=True)
        return None
    if record.address != server.address:
        raise ServerError(server.name, f"already running (pid {record.pid}) on {record.address}, "
                          f"but settings say {server.address}; run `gridflow down` first")
    return Started(server, record, False, time.monotonic())


def _launch(server: Server, echo: Echo) -> Started:
    """Configure and spawn an installed server; does not wait for health."""
    server.prepare(echo)
    rotate_log(server.log_path)
    command = server.command()
    proc = spawn_detached(command, server.log_path, server.environment(), server.cwd(),
                          user=server.run_as())
    record = record_for(proc, server.address, command)
    record.write(server.pid_path)
    echo(f"{server.name}: starting {server.title} {server.version()} (pid {proc.pid}, "
         f"log {server.log_path})")
    return Started(server, record, True, time.monotonic())


def _check_ports_free(server: Server) -> None:
    for host, port in server.listen_addresses():
        if not port_bindable(host, port):
            raise ServerError(server.name, f"port {host}:{port} is already in use by a process "
                              f"gridflow did not start from {server.settings.state_dir}; stop it "
                              "or choose other ports (GRIDFLOW_* settings)")


def _wait_healthy(item: Started, echo: Echo, cluster: Sequence[Started] = ()) -> None:
    """Poll the health probe; fail fast if the process exits, or (a node of a cluster) if
    another node's process exited: the cluster cannot become healthy then.

    A server gets `start_timeout_s` of silence, not of start-up: while its log keeps growing
    (Kafka loading thousands of partitions after a hard stop takes minutes) the wait goes on,
    up to `start_cap_s` in all, and says every `PROGRESS_EVERY_S` what the server is doing.
    A server that fails is stopped with its full stop timeout, so that Kafka shuts down
    cleanly and does not have to recover its logs again on the next start."""
    server, record = item.server, item.record
    size = _size(server.log_path)
    heard = item.t0
    next_note = item.t0 + PROGRESS_EVERY_S
    while True:
        if not record.alive():
            server.pid_path.unlink(missing_ok=True)
            raise ServerError(server.name, f"process {record.pid} exited during start-up",
                              server.log_path)
        if server.healthy():
            break
        now = time.monotonic()
        grown = _size(server.log_path)
        if grown != size:
            size, heard = grown, now
        dead = [other.server.name for other in cluster
                if other is not item and not other.record.alive()]
        silent = now - heard > server.start_timeout_s
        capped = now - item.t0 > server.start_cap_s
        if dead or silent or capped:
            if item.fresh:
                stop_process(record, server.stop_signal, server.stop_timeout_s)
                server.pid_path.unlink(missing_ok=True)
            hint = " (stopped it)" if item.fresh else f" (pid {record.pid}; try `gridflow down`)"
            took = now - item.t0
            if dead:
                why = f"not healthy: node(s) {', '.join(dead)} of its cluster exited"
            elif silent:
                why = (f"not healthy after {took:.0f} s, its log silent for the last "
                       f"{server.start_timeout_s:.0f} s")
            else:
                why = (f"not healthy within {server.start_cap_s:.0f} s, though its log kept "
                       "growing")
            raise ServerError(server.name, why + hint, server.log_path)
        if item.fresh and now >= next_note:
            next_note = now + PROGRESS_EVERY_S
            echo(f"{server.name}: still starting after {now - item.t0:.0f} s, log at "
                 f"{size / 1e6:.1f} MB: {_last_line(server.log_path)}")
        time.sleep(0.25)
    took = time.monotonic() - item.t0
    how = f"up in {took:.1f} s" if item.fresh else "already running"
    echo(f"{server.name}: {how} at {server.address} (pid {record.pid})")


PROGRESS_EVERY_S = 15.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _last_line(path: Path, width: int = 140) -> str:
    """The log's last line, shortened: what a slow start is busy with."""
    line = log_tail(path, 1).strip()
    return line if len(line) <= width else line[:width - 1] + "…"


# --- down -----------------------------------------------------------------------


def down(settings: Settings, only: Iterable[str] | None = None, echo: Echo = _quiet) -> list[str]:
    """Stop the selected servers (all signalled at once, then awaited). Returns those stopped."""
    selected = list(reversed(servers(settings, only)))
    with stack_lock(settings, echo):
        return _stop_all(selected, echo)


def _stop_all(selected: list[Server], echo: Echo) -> list[str]:
    """Stop servers concurrently (each its own signal and timeout); report each as it ends.
    The nodes of a Kafka cluster are stopped together (`_stop_cluster`)."""
    stopped: list[str] = []
    cluster = [s for s in selected if isinstance(s, Kafka) and s.clustered]
    alone = [s for s in selected if s not in cluster]
    with ThreadPoolExecutor(max_workers=len(alone) + 1) as pool:
        futures: dict[Future[list[str]], list[str]] = {
            pool.submit(_stop_one, server): [server.name] for server in alone}
        if cluster:
            futures[pool.submit(_stop_cluster, cluster)] = [n.name for n in cluster]
        for future in as_completed(futures):
            for name, how in zip(futures[future], future.result(), strict=True):
                echo(f"{name}: {how}")
                if how != "not running":
                    stopped.append(name)
    return stopped


def _stop_cluster(nodes: list[Kafka], grace_s: float = 5.0) -> list[str]:
    """SIGTERM to the selected nodes of a Kafka cluster at once: each hands its partitions over
    and leaves (controlled shutdown, committed by the quorum). A node left when the quorum is
    gone (fewer than a majority of the cluster's nodes still running) cannot complete that
    step — Kafka would wait 5 minutes — so it gets SIGKILL after `grace_s`: nothing it
    acknowledged is lost (its log is written; the next start checks it)."""
    everyone = kafka_nodes(nodes[0].settings)
    majority = len(everyone) // 2 + 1
    how: dict[str, str] = {}
    live: dict[str, tuple[Kafka, PidRecord]] = {}
    for node in nodes:
        record = PidRecord.read(node.pid_path)
        if record is None or not record.alive():
            how[node.name] = stop_process(record, node.stop_signal, 1.0) if record else "not running"
            node.pid_path.unlink(missing_ok=True)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, node.stop_signal)
        live[node.name] = (node, record)
    deadline = time.monotonic() + max(n.stop_timeout_s for n in nodes)
    no_quorum_since: float | None = None
    while live:
        for name, (node, record) in list(live.items()):
            if not record.alive():
                how[name] = stop_process(record, node.stop_signal, 1.0).replace(
                    "not running", "stopped")
                node.pid_path.unlink(missing_ok=True)
                del live[name]
        running = sum(1 for n in everyone
                      if (r := PidRecord.read(n.pid_path)) is not None and r.alive())
        if live and running < majority:
            no_quorum_since = no_quorum_since or time.monotonic()
        now = time.monotonic()
        if live and (now > deadline or (no_quorum_since and now - no_quorum_since > grace_s)):
            why = ("no quorum left for its controlled shutdown" if no_quorum_since
                   else "no exit in time")
            for name, (node, record) in live.items():
                stop_process(record, signal.SIGKILL, 10.0)
                node.pid_path.unlink(missing_ok=True)
                how[name] = f"stopped (SIGKILL: {why})"
            break
        time.sleep(0.1)
    return [how[n.name] for n in nodes]


def _stop_one(server: Server) -> list[str]:
    return [_stop(server)]


def _stop(server: Server) -> str:
    record = PidRecord.read(server.pid_path)
    if record is None:
        server.pid_path.unlink(missing_ok=True)
        return "not running"
    how = stop_process(record, server.stop_signal, server.stop_timeout_s)
    server.pid_path.unlink(missing_ok=True)
    return how


# --- status ---------------------------------------------------------------------


@dataclass
class Status:
    server: str
    state: str  # up | unhealthy | down | port busy
    pid: int | None
    address: str
    version: str
    data_dir: str
    log: str

    @property
    def up(self) -> bool:
        return self.state == "up"


def status(settings: Settings, only: Iterable[str] | None = None) -> list[Status]:
    return [_status(server) for server in servers(settings, only)]


def _status(server: Server) -> Status:
    record = PidRecord.read(server.pid_path)
    pid: int | None = None
    if record is not None and record.alive():
        pid = record.pid
        state = "up" if server.healthy() else "unhealthy"
    elif any(not port_bindable(h, p) for h, p in server.listen_addresses()):
        state = "port busy"
    else:
        state = "down"
    address = record.address if pid is not None and record is not None else server.address
    return Status(server.name, state, pid, address, server.version(), str(server.data_dir),
                  str(server.log_path))


def status_json(rows: list[Status], notices: Sequence[str] = ()) -> str:
    """`notices`: what operators must act on beside the servers (e.g. the working calendar
    ending), in Chinese."""
    return json.dumps({"servers": [asdict(r) for r in rows],
                       "all_up": all(r.up for r in rows), "notices": list(notices)},
                      indent=2, ensure_ascii=False)


def status_table(rows: list[Status]) -> str:
    header = ("SERVER", "STATE", "PID", "ADDRESS", "VERSION", "DATA DIR", "LOG")
    body = [(r.server, r.state, str(r.pid or "-"), r.address, r.version, r.data_dir, r.log)
            for r in rows]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in (header, *body))


# --- shared use by test sessions ---------------------------------------------------


def _leases_dir(settings: Settings) -> Path:
    return settings.state_dir / "run" / "test-sessions"


def _owned_path(settings: Settings) -> Path:
    return settings.state_dir / "run" / "test-owned.json"


def _read_owned(settings: Settings) -> set[str]:
    try:
        return set(json.loads(_owned_path(settings).read_text()))
    except (OSError, ValueError):
        return set()


def _write_owned(settings: Settings, names: set[str]) -> None:
    path = _owned_path(settings)
    if names:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sorted(names)))
    else:
        path.unlink(missing_ok=True)


def install(settings: Settings, only: Iterable[str] | None = None, echo: Echo = _quiet) -> None:
    """Download/build every selected server into the cache without starting anything."""
    for server in servers(settings, only):
        server.check_local()
        server.install(echo)


def running(settings: Settings) -> set[str]:
    """Names of the servers whose pid file names a live process."""
    return {srv.name for srv in servers(settings)
            if (rec := PidRecord.read(srv.pid_path)) is not None and rec.alive()}


def join_test_session(settings: Settings, echo: Echo = _quiet) -> list[str]:
    """Register this process as a test session and bring the stack up. Returns what it started.

    Servers already running (e.g. started by a developer with `gridflow up`) are used and
    never stopped by tests. Servers a test session starts are stopped when the last live
    test session leaves (concurrent sessions share them). On failure the session is left.
    """
    lease = _lease_path(settings)
    PidRecord(os.getpid(), process_start_ticks(os.getpid()) or -1, "", [], time.time()).write(lease)
    before = running(settings)
    try:
        up(settings, echo=echo)
    except BaseException:
        _mark_owned(settings, running(settings) - before, echo)
        leave_test_session(settings, echo)
        raise
    started = running(settings) - before
    _mark_owned(settings, started, echo)
    return sorted(started)


def leave_test_session(settings: Settings, echo: Echo = _quiet) -> list[str]:
    """Unregister this test session; the last one out stops the servers test sessions started."""
    _lease_path(settings).unlink(missing_ok=True)
    with stack_lock(settings, echo):
        if _other_live_sessions(settings):
            return []
        owned = _read_owned(settings)
        _write_owned(settings, set())
        if not owned:
            return []
        return _stop_all(list(reversed(servers(settings, owned))), echo)


def only_test_session(settings: Settings) -> bool:
    """True when no test session but this process's is running on this state dir."""
    with stack_lock(settings, _quiet):
        return not _other_live_sessions(settings)


def _lease_path(settings: Settings) -> Path:
    return _leases_dir(settings) / f"{os.getpid()}.lease"


def _mark_owned(settings: Settings, names: set[str], echo: Echo) -> None:
    if names:
        with stack_lock(settings, echo):
            _write_owned(settings, _read_owned(settings) | names)


def _other_live_sessions(settings: Settings) -> bool:
    live = False
    for path in _leases_dir(settings).glob("*.lease"):
        if path == _lease_path(settings):
            continue
        record = PidRecord.read(path)
        if record is not None and record.alive():
            live = True
        else:
            path.unlink(missing_ok=True)
    return live
