"""Integration-test helpers: every test here is marked `integration`; a throw-away second stack
(own state dir, own free ports, shared cache) for tests that stop, break or restart servers.

Guarantee: an isolated stack is always brought down and its state dir removed, pass or fail.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gridflow.settings import Settings, load_settings
from infra.procs import port_bindable

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def free_ports(count: int) -> list[int]:
    """Distinct free ports below the kernel's ephemeral range (32768+), so no outgoing
    connection can take one between this check and the server binding it."""
    rng = random.Random()
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(20000, 32000)
        if port not in chosen and port_bindable("127.0.0.1", port):
            chosen.append(port)
    return chosen


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass(frozen=True)
class IsolatedStack:
    """A second local stack: its own state dir and ports, the shared cache (no rebuilds)."""

    state_dir: Path
    env: dict[str, str]

    @property
    def settings(self) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.update({k: v for k, v in self.env.items() if k.startswith("GRIDFLOW_")})
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def gridflow(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> CliResult:
        """Run the `gridflow` CLI in a subprocess against this stack."""
        proc = subprocess.run(
            [sys.executable, "-m", "bootstrap.cli", *args], cwd=REPO, env=env or self.env,
            capture_output=True, text=True, timeout=timeout,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def isolated_stack() -> Iterator[IsolatedStack]:
    # Not under pytest's tmp dir: that is mode 0700 and PostgreSQL runs as `postgres` when root.
    state_dir = Path(tempfile.mkdtemp(prefix="gridflow-it-"))
    state_dir.chmod(0o755)
    kafka, controller, s3, console, pg = free_ports(5)
    env = dict(
        os.environ,
        GRIDFLOW_STATE_DIR=str(state_dir),
        GRIDFLOW_KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka}",
        GRIDFLOW_KAFKA_CONTROLLER_PORT=str(controller),
        GRIDFLOW_S3_ENDPOINT=f"127.0.0.1:{s3}",
        GRIDFLOW_S3_CONSOLE_PORT=str(console),
        GRIDFLOW_POSTGRES_PORT=str(pg),
    )
    iso = IsolatedStack(state_dir, env)
    try:
        yield iso
    finally:
        result = iso.gridflow("down", timeout=120)
        shutil.rmtree(state_dir, ignore_errors=True)
        assert result.returncode == 0, result.output


def cluster_ports(nodes: int = 3) -> tuple[int, int]:
    """A broker port base and a controller port base with every node's port free (node i:
    base + 2(i-1)), as `gridflow up --brokers N` lays them out."""
    rng = random.Random()
    while True:
        broker, controller = rng.randrange(20000, 31900, 2), rng.randrange(20001, 31900, 2)
        wanted = {base + 2 * i for base in (broker, controller) for i in range(nodes)}
        if len(wanted) == 2 * nodes and all(port_bindable("127.0.0.1", p) for p in wanted):
            return broker, controller


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[IsolatedStack]:
    """A three-broker Kafka cluster (KRaft, every node broker + controller) of the test session's
    own: its own state dir and ports, the shared cache; MinIO and PostgreSQL stay the shared
    stack's. Started on first use, stopped (`gridflow down --only kafka`) at the end."""
    state_dir = Path(tempfile.mkdtemp(prefix="gridflow-brokers-"))
    broker, controller = cluster_ports(3)
    env = {k: v for k, v in os.environ.items() if k not in (
        "GRIDFLOW_KAFKA_BOOTSTRAP", "GRIDFLOW_KAFKA_CONTROLLER_PORT", "GRIDFLOW_KAFKA_BROKERS",
        "GRIDFLOW_KAFKA_REPLICATION", "GRIDFLOW_STATE_DIR")}
    env.update(GRIDFLOW_STATE_DIR=str(state_dir), GRIDFLOW_KAFKA_BOOTSTRAP=f"127.0.0.1:{broker}",
               GRIDFLOW_KAFKA_CONTROLLER_PORT=str(controller), GRIDFLOW_KAFKA_BROKERS="3")
    cluster = IsolatedStack(state_dir, env)
    try:
        started = cluster.gridflow("up", "--only", "kafka", timeout=400)
        assert started.returncode == 0, started.output
        yield cluster
    finally:
        result = cluster.gridflow("down", "--only", "kafka", timeout=120)
        shutil.rmtree(state_dir, ignore_errors=True)
        assert result.returncode == 0, result.output
