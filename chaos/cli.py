"""`gridflow chaos`: fault scenarios on the local stack, with their accounting.

Each scenario is a module of this package with a `cli(settings, log_dir, options, echo)`
function returning (clean, lines); `SCENARIOS` names them. Exit 0 when every scenario run kept
everything it acknowledged, 1 otherwise.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gridflow.settings import Settings, load_settings

# scenario name -> (module under chaos/, what it does)
SCENARIOS: dict[str, tuple[str, str]] = {
    "kill-worker": ("chaos.kill_worker", "the worker (and the sink) killed with SIGKILL again "
                    "and again under acknowledged reports"),
    "scale-out": ("chaos.scale_out", "three workers in one group: one killed, a fourth added "
                  "under load (--split: pipeline and archive workers side by side)"),
    "kill-sink-notify": ("chaos.kill_sink_notify", "the SQL sink and the notifier killed with "
                         "SIGKILL under load; a webhook receiver counts every notice and its "
                         "repeats"),
    "kafka-outage": ("chaos.kafka_outage", "Kafka unreachable for the API's producer for 30 s "
                     "under phones that retry after Retry-After"),
    "broker-failover": ("chaos.broker_failover", "a three-broker Kafka cluster (replication 3, "
                        "min.insync.replicas 2): the leader of the case-event partitions killed "
                        "with SIGKILL mid-stream and restarted after a pause, under uploads and "
                        "complaints through the API"),
    "storage-outage": ("chaos.storage_outage", "MinIO unreachable for 60 s during uploads and "
                       "archiving, then PostgreSQL for 60 s under the sink and the API's "
                       "receipts, under phones that retry"),
    "tamper": ("chaos.tamper", "the photo archive tampered with by a holder of the store's "
               "credentials (plain DELETE, overwrite, shortened retention), and what the audit "
               "says (GRIDFLOW_ARCHIVE_LOCK_MODE)"),
    "fuzz": ("chaos.fuzz", "the API fuzzed from its OpenAPI document with signed-in callers "
             "(schemathesis): no 5xx, every answer as documented"),
}

Echo = Callable[[str], None]


@click.command("chaos")
@click.option("--scenario", "names", multiple=True, type=click.Choice(sorted(SCENARIOS)),
              help="Which fault(s) to inject (repeatable; default: kill-worker).")
@click.option("--full", is_flag=True, help="The long form of each scenario.")
@click.option("--cycles", type=click.IntRange(1, 1000), default=None,
              help="kill-worker: kill cycles (default 12, or 50 with --full).")
@click.option("--rate", type=click.FloatRange(0.5, 500), default=None,
              help="Reports per second under the fault (scenario's default otherwise).")
@click.option("--session-timeout", type=click.FloatRange(3, 300), default=6.0,
              show_default=True,
              help="The workers' Kafka session timeout (how long a killed worker's partitions "
                   "wait before they are handed out again).")
@click.option("--static/--dynamic", "static", default=True, show_default=True,
              help="kill-worker: static group membership (the worker's default: restarted, "
                   "it comes back under the same instance id) or dynamic.")
@click.option("--split", is_flag=True,
              help="scale-out: pipeline and archive workers side by side.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the processes' logs go (default: a new temporary directory).")
def chaos(names: tuple[str, ...], log_dir: Path | None, **options: Any) -> None:
    """Inject faults into gridflow's own processes on the running local stack and count what
    was acknowledged against what was kept (needs `gridflow up`)."""
    settings = load_settings()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="gridflow-chaos-"))
    clean = True
    for name in names or ("kill-worker",):
        module = importlib.import_module(SCENARIOS[name][0])
        click.echo(f"chaos {name}: {SCENARIOS[name][1]}; logs in {log_dir / name}")
        ok, lines = module.cli(settings, log_dir / name, options, click.echo)
        for line in lines:
            click.echo(line)
        clean = clean and ok
    sys.exit(0 if clean else 1)


def run_scenario(name: str, settings: Settings, log_dir: Path, options: dict[str, Any],
                 echo: Echo = print) -> tuple[bool, list[str]]:
    """One scenario by name, as the command runs it (for scripts and tests)."""
    module = importlib.import_module(SCENARIOS[name][0])
    result: tuple[bool, list[str]] = module.cli(settings, log_dir, options, echo)
    return result
