"""`gridflow up / down / status` as a user runs them: idempotent up, status, stop/start, and
loud failures with the server's log tail.

Stop/start and failure cases run against an isolated second stack (own state dir and free
ports, shared cache), never against the session's shared stack.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from infra.procs import is_alive, port_bindable, split_host_port
from infra.stack import SERVER_NAMES

pytestmark = pytest.mark.integration


def status_of(iso) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    result = iso.gridflow("status", "--json")
    assert result.returncode == 0, result.output
    return {row["server"]: row for row in json.loads(result.stdout)["servers"]}


def test_up_twice_on_the_shared_stack_is_a_no_op(stack, isolated_stack) -> None:  # type: ignore[no-untyped-def]
    shared_env = {k: v for k, v in isolated_stack.env.items() if not k.startswith("GRIDFLOW_")}
    pids_before = {row["server"]: row["pid"] for row in
                   json.loads(isolated_stack.gridflow("status", "--json", env=shared_env).stdout)["servers"]}
    for _ in range(2):
        result = isolated_stack.gridflow("up", env=shared_env)
        assert result.returncode == 0, result.output
        assert "all were already running" in result.stdout
    status = json.loads(isolated_stack.gridflow("status", "--json", env=shared_env).stdout)
    assert status["all_up"] is True
    assert {row["server"]: row["pid"] for row in status["servers"]} == pids_before


def test_up_status_down_up_down(isolated_stack) -> None:  # type: ignore[no-untyped-def]
    iso = isolated_stack
    assert {row["state"] for row in status_of(iso).values()} == {"down"}

    first = iso.gridflow("up")
    assert first.returncode == 0, first.output
    rows = status_of(iso)  # the servers outlived the CLI process that started them
    assert all(rows[name]["state"] == "up" for name in SERVER_NAMES), rows
    pids = {name: rows[name]["pid"] for name in SERVER_NAMES}
    assert all(is_alive(pid) for pid in pids.values())

    again = iso.gridflow("up")
    assert again.returncode == 0, again.output
    assert "all were already running" in again.stdout
    assert {name: row["pid"] for name, row in status_of(iso).items()} == pids

    table = iso.gridflow("status")
    assert table.returncode == 0 and "SERVER" in table.stdout and "kafka" in table.stdout

    stopped = iso.gridflow("down")
    assert stopped.returncode == 0, stopped.output
    assert not any(is_alive(pid) for pid in pids.values()), "no server process left behind"
    assert not list((iso.state_dir / "run").glob("*.pid")), "pid files removed"
    rows = status_of(iso)
    assert {row["state"] for row in rows.values()} == {"down"}
    for row in rows.values():
        assert port_bindable(*split_host_port(row["address"]))

    restarted = iso.gridflow("up")
    assert restarted.returncode == 0, restarted.output
    assert "present" in restarted.stdout  # Kafka kept its topics across the restart
    assert all(row["state"] == "up" for row in status_of(iso).values())

    assert iso.gridflow("down").returncode == 0
    assert iso.gridflow("down").returncode == 0  # nothing running: still fine
    assert "nothing was running" in iso.gridflow("down").stdout


def test_up_only_selects_servers(isolated_stack) -> None:  # type: ignore[no-untyped-def]
    result = isolated_stack.gridflow("up", "--only", "postgres,minio")
    assert result.returncode == 0, result.output
    rows = status_of(isolated_stack)
    assert rows["postgres"]["state"] == "up" and rows["minio"]["state"] == "up"
    assert rows["kafka"]["state"] == "down"
    bad = isolated_stack.gridflow("up", "--only", "redis")
    assert bad.returncode != 0 and "redis" in bad.output


def test_occupied_port_fails_loudly(isolated_stack) -> None:  # type: ignore[no-untyped-def]
    host, port = split_host_port(isolated_stack.settings.kafka_bootstrap)
    with socket.socket() as squatter:
        squatter.bind((host, port))
        squatter.listen()
        result = isolated_stack.gridflow("up", "--only", "kafka")
    assert result.returncode != 0
    assert "gridflow up FAILED (kafka)" in result.stderr
    assert f"port {host}:{port} is already in use" in result.stderr


def test_broken_kafka_storage_fails_with_log_tail(isolated_stack) -> None:  # type: ignore[no-untyped-def]
    data = isolated_stack.state_dir / "kafka" / "data"
    data.mkdir(parents=True)
    # Storage formatted for another node: Kafka refuses to start and says why in its log.
    (data / "meta.properties").write_text(
        "version=1\nnode.id=7\ncluster.id=MkU3OEVBNTcwNTJENDM2Qg\ndirectory.id=5Z8Qx2cHR9uYlb2k5p1W6g\n"
    )
    result = isolated_stack.gridflow("up", "--only", "kafka")
    assert result.returncode != 0
    # reported as the crash it is ("exited"), not as a start-up that ran out of time
    assert "kafka: process" in result.stderr and "exited during start-up" in result.stderr
    assert "not healthy within" not in result.stderr
    assert "last 40 lines of" in result.stderr
    assert "Stored node id 7 doesn't match previous node id 1" in result.stderr
    assert status_of(isolated_stack)["kafka"]["state"] == "down"


def test_missing_java_is_named(isolated_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = dict(isolated_stack.env, PATH=str(tmp_path))  # an empty PATH: no java, mvn, go
    result = isolated_stack.gridflow("up", "--only", "kafka", env=env)
    assert result.returncode != 0
    assert "kafka: `java` not found on PATH" in result.stderr
