"""The local stack as a whole: install, start (idempotent, in parallel), provision, stop and status.

Guarantee: `up` returns only when every selected server answers its health probe and is
provisioned, or raises StackError naming each failed server with its log tail; `down` leaves
no process of ours behind and removes the pid files. Both hold the state dir's lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from gridflow.settings import Settings
from infra.kafka import Kafka
from infra.minio import MinIOServer
from infra.postgres import PostgreSQL
from infra.procs import (
    Echo,
    PidRecord,
    ServerError,
    file_lock,
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
    """The selected servers in start order; unknown names are an error."""
    wanted = list(only) if only else list(SERVER_NAMES)
    unknown = sorted(set(wanted) - set(SERVER_NAMES))
    if unknown:
        raise ValueError(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVER_NAMES)}")
    return [t(settings) for t in SERVER_TYPES if t.name in wanted]


def stack_lock(settings: Settings, echo: Echo) -> contextlib.AbstractContextManager[None]:
    return file_lock(settings.state_dir / "run" / "stack.lock", "up/down", echo)


# --- up -------------------------------------------------------------------------


@dataclass
class Started:
    server: Server
    record: PidRecord
    fresh: bool  # True when this call started the process
    t0: float


def up(settings: Settings, only: Iterable[str] | None = None, echo: Echo = _quiet) -> list[str]:
    """Install, start and provision the selected servers. Returns the names this call started."""
    selected = servers(settings, only)
    with stack_lock(settings, echo):
        launched, errors = _launch_all(selected, echo)
        ready: list[Started] = []
        for item in launched:
            try:
                _wait_healthy(item, echo)
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


def _wait_healthy(item: Started, echo: Echo) -> None:
    """Poll the health probe until the deadline; fail fast if the process exits."""
    server, record = item.server, item.record
    deadline = item.t0 + server.start_timeout_s
    while True:
        if not record.alive():
            server.pid_path.unlink(missing_ok=True)
            raise ServerError(server.name, f"process {record.pid} exited during start-up",
                              server.log_path)
        if server.healthy():
            break
        if time.monotonic() > deadline:
            if item.fresh:
                stop_process(record, server.stop_signal, 10.0)
                server.pid_path.unlink(missing_ok=True)
            hint = " (stopped it)" if item.fresh else f" (pid {record.pid}; try `gridflow down`)"
            raise ServerError(server.name, f"not healthy within {server.start_timeout_s:.0f} s"
                              + hint, server.log_path)
        time.sleep(0.25)
    took = time.monotonic() - item.t0
    how = f"up in {took:.1f} s" if item.fresh else "already running"
    echo(f"{server.name}: {how} at {server.address} (pid {record.pid})")


# --- down -----------------------------------------------------------------------


def down(settings: Settings, only: Iterable[str] | None = None, echo: Echo = _quiet) -> list[str]:
    """Stop the selected servers (all signalled at once, then awaited). Returns those stopped."""
    selected = list(reversed(servers(settings, only)))
    with stack_lock(settings, echo):
        return _stop_all(selected, echo)


def _stop_all(selected: list[Server], echo: Echo) -> list[str]:
    """Stop servers concurrently (each its own signal and timeout); report each as it ends."""
    stopped: list[str] = []
    with ThreadPoolExecutor(max_workers=len(selected) or 1) as pool:
        futures = {pool.submit(_stop, server): server for server in selected}
        for future in as_completed(futures):
            name = futures[future].name
            how = future.result()
            echo(f"{name}: {how}")
            if how != "not running":
                stopped.append(name)
    return stopped


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


def _lease_path(settings: Settings) -> Path:
    return _leases_dir(settings) / f"{os.getpid()}.lease"


def _mark_owned(settings: Settings, names: set[str], echo: Echo) -> None:
    if names:
        with stack_lock(settings, echo):
            _write_owned(settings, _read_owned(settings) | names)


def _other_live_sessions(settings: Settings) -> bool:
    live = False
    for path in _leases_dir(settings).glob("*.lease"):
        record = PidRecord.read(path)
        if record is not None and record.alive():
            live = True
        else:
            path.unlink(missing_ok=True)
    return live
