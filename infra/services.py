"""Runs gridflow's own long-lived parts (worker, sink, API) as child processes.

Used by the demo, the benchmarks and the end-to-end tests: each child gets the
exact settings through GRIDFLOW_* variables, logs to its own file, and is
stopped with SIGTERM (then SIGKILL) so nothing is left behind. A child that
dies early raises with the tail of its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gridflow.settings import Settings, settings_env


class ServiceDied(RuntimeError):
    pass


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Service:
    name: str
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, settings: Settings, extra_env: dict[str, str] | None = None) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings_env(settings), **(extra_env or {}),
               "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bootstrap.cli", *self.args], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        return self

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceDied(
                f"{self.name} exited with code {self.proc.returncode}; last lines of "
                f"{self.log_path}:\n{log_tail(self.log_path)}"
            )

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, for fault scenarios) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.1)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)


def start(name: str, args: list[str], settings: Settings, log_dir: Path,
          extra_env: dict[str, str] | None = None) -> Service:
    return Service(name, args, log_dir / f"{name}.log").start(settings, extra_env)
