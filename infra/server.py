"""The contract every local server (Kafka, MinIO, PostgreSQL) implements for infra/stack.py.

Guarantee: all of a server's files live under settings.cache_dir (install) and
settings.state_dir (data, config, log, pid file), named after the server.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
from abc import ABC, abstractmethod
from pathlib import Path

from gridflow.settings import Settings
from infra.procs import Echo, ServerError, split_host_port


class Server(ABC):
    """One local server process: how to install, configure, start, probe and provision it."""

    name: str = ""
    title: str = ""
    stop_signal: signal.Signals = signal.SIGTERM
    start_timeout_s: float = 30.0  # how long start-up may go without a line in its log
    start_cap_s: float = 300.0  # how long start-up may take at most, log moving or not
    stop_timeout_s: float = 30.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- where things live -------------------------------------------------
    @property
    def home(self) -> Path:
        return self.settings.state_dir / self.name

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.settings.state_dir / "logs" / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.settings.state_dir / "run" / f"{self.name}.pid"

    @property
    def install_log(self) -> Path:
        return self.settings.state_dir / "logs" / f"{self.name}-install.log"

    # --- addresses ---------------------------------------------------------
    @property
    @abstractmethod
    def address(self) -> str:
        """host:port clients use."""

    @abstractmethod
    def listen_addresses(self) -> list[tuple[str, int]]:
        """Every (host, port) the server binds; all must be free before a start."""

    def check_local(self) -> None:
        """Refuse to manage a server whose configured address is not on this machine."""
        host, _ = split_host_port(self.address)
        if host != "localhost":
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ServerError(
                    self.name,
                    f"configured address {self.address} is not a loopback address; "
                    "infra/ only starts local servers (unset the GRIDFLOW_* override to use them)",
                )

    # --- lifecycle hooks ---------------------------------------------------
    @abstractmethod
    def installed(self) -> bool:
        """True when the cached artifacts are complete (cheap, no network)."""

    @abstractmethod
    def install(self, echo: Echo) -> None:
        """Download/build the server into the cache; idempotent."""

    @abstractmethod
    def prepare(self, echo: Echo) -> None:
        """Write config and initialise the data dir if needed; idempotent."""

    @abstractmethod
    def command(self) -> list[str]:
        """argv of the server process."""

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def run_as(self) -> str | None:
        """OS user the server process runs as; None for the current user."""
        return None

    def cwd(self) -> Path:
        return self.home

    @abstractmethod
    def healthy(self) -> bool:
        """One bounded probe (a few seconds at most): True when clients can use the server."""

    @abstractmethod
    def provision(self, echo: Echo) -> None:
        """Create what gridflow needs on a healthy server (topics, buckets, roles); idempotent."""

    @abstractmethod
    def version(self) -> str:
        """Human-readable version of the installed server, or why it is unknown."""


def require_tool(server: str, tool: str, hint: str) -> str:
    """Absolute path of an executable on PATH, or a ServerError that says how to get it."""
    found = shutil.which(tool)
    if found is None:
        raise ServerError(server, f"`{tool}` not found on PATH; {hint}")
    return found
