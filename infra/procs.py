"""Process plumbing for the local servers: pid files, detached spawn, stop, health waits, log tails.

Guarantee: a pid file names exactly one live process we started (pid + kernel start time),
and `stop_process` never returns while that process or its process group is still alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

Echo = Callable[[str], None]

LOG_TAIL_LINES = 40


class ServerError(RuntimeError):
    """A server could not be installed, started or stopped; the message says which and why."""

    def __init__(self, server: str, message: str, log: Path | None = None) -> None:
        self.server = server
        self.log = log
        text = f"{server}: {message}"
        if log is not None:
            text += f"\n--- last {LOG_TAIL_LINES} lines of {log} ---\n{log_tail(log)}"
        super().__init__(text)


# --- pid files ----------------------------------------------------------------


@dataclass(frozen=True)
class PidRecord:
    """What we know about a server process we started."""

    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells a reused pid from ours
    address: str
    command: list[str]
    started_at: float

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> PidRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def alive(self) -> bool:
        return process_start_ticks(self.pid) == self.start_ticks


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; everything after the last ')' is safe.
    return raw[raw.rindex(")") + 2 :].split()


def process_start_ticks(pid: int) -> int | None:
    """Kernel start time of a live (non-zombie) process, or None when it is gone."""
    fields = _proc_stat(pid)
    if fields is None:
        return None
    if fields[0] in ("Z", "X"):
        _reap(pid)
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    """Collect a zombie child of this process (servers started by a pytest session are)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int) -> bool:
    return process_start_ticks(pid) is not None


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in process group `pgid` (a server's session)."""
    _reap(pgid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                return True
    return False


# --- spawn / stop -------------------------------------------------------------


def rotate_log(log: Path) -> None:
    """Keep the previous run's log as <name>.log.1 so the current log holds this start only."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists() and log.stat().st_size > 0:
        log.replace(log.with_name(log.name + ".1"))


def spawn_detached(
    command: list[str],
    log: Path,
    env: dict[str, str],
    cwd: Path,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server in its own session, output to `log`, so it outlives the calling CLI."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} gridflow: {' '.join(command)}\n".encode())
        out.flush()
        return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
        )


def record_for(proc: subprocess.Popen[bytes], address: str, command: list[str]) -> PidRecord:
    ticks = process_start_ticks(proc.pid)
    if ticks is None:
        ticks = -1  # exited already; the health wait reports it
    return PidRecord(proc.pid, ticks, address, command, time.time())


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(pid) and not group_alive(pid):
            return True
        time.sleep(0.1)
    return not is_alive(pid) and not group_alive(pid)


def stop_process(record: PidRecord, sig: signal.Signals, timeout_s: float) -> str:
    """Signal the server, wait, then SIGKILL its whole process group. Returns how it ended."""
    if not record.alive():
        if not group_alive(record.pid):
            return "not running"
        # The server died but left children (e.g. postgres backends). A live member keeps
        # the group id reserved, so this group is still ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGKILL)
        wait_gone(record.pid, 10.0)
        return "not running (killed its leftover processes)"
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, sig)
    if wait_gone(record.pid, timeout_s):
        return "stopped"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.pid, signal.SIGKILL)
    if wait_gone(record.pid, 10.0):
        return f"killed (no exit {timeout_s:.0f} s after {sig.name})"
    raise RuntimeError(f"pid {record.pid} survived SIGKILL")


# --- health and ports ---------------------------------------------------------


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def port_bindable(host: str, port: int) -> bool:
    """True when nothing listens on host:port, i.e. a server could bind it now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def run_logged(
    name: str,
    command: list[str],
    log: Path,
    what: str,
    echo: Echo,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 1800.0,
    progress_every_s: float = 20.0,
) -> None:
    """Run an install/setup command to completion, output to `log`, printing progress while it runs."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} gridflow: {' '.join(command)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(  # noqa: S603
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=cwd,
            )
        except OSError as exc:
            raise ServerError(name, f"cannot run {command[0]}: {exc}") from exc
        next_report = started + progress_every_s
        while proc.poll() is None:
            now = time.monotonic()
            if now - started > timeout_s:
                proc.kill()
                proc.wait()
                raise ServerError(name, f"{what} did not finish in {timeout_s:.0f} s", log)
            if now >= next_report:
                echo(f"{name}: ... still {what} ({now - started:.0f} s)")
                next_report = now + progress_every_s
            time.sleep(0.2)
    if proc.returncode != 0:
        raise ServerError(name, f"{what} failed (exit code {proc.returncode})", log)


# --- locks --------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: Path, what: str, echo: Echo, timeout_s: float = 1800.0) -> Iterator[None]:
    """Exclusive advisory lock shared by every gridflow process using the same path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout_s
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    echo(f"waiting for another gridflow process ({what}, lock {path}) ...")
                    told = True
                if time.monotonic() > deadline:
                    raise TimeoutError(f"lock {path} held for more than {timeout_s:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
