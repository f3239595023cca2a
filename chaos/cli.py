"""`gridflow chaos`: fault scenarios on the local stack, with their accounting.

Exit 0 when every scenario kept everything it acknowledged, 1 otherwise.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from gridflow.settings import load_settings


@click.command("chaos")
@click.option("--scenario", type=click.Choice(["kill-worker"]), default="kill-worker",
              show_default=True, help="Which fault to inject.")
@click.option("--full", is_flag=True,
              help="The long form: 50 kill cycles instead of 12.")
@click.option("--cycles", type=click.IntRange(1, 1000), default=None,
              help="Kill cycles (default 12, or 50 with --full).")
@click.option("--rate", type=click.FloatRange(0.5, 500), default=10.0, show_default=True,
              help="Reports per second while the worker is being killed.")
@click.option("--session-timeout", type=click.FloatRange(3, 300), default=6.0,
              show_default=True,
              help="The worker's Kafka session timeout (how long a killed worker's partitions "
                   "wait before they are handed out again).")
@click.option("--static/--dynamic", "static", default=False, show_default=True,
              help="Restart the worker under the same group instance id (static membership).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the processes' logs go (default: a new temporary directory).")
def chaos(scenario: str, full: bool, cycles: int | None, rate: float, session_timeout: float,
          static: bool, seed: int, log_dir: Path | None) -> None:
    """Inject faults into gridflow's own processes on the running local stack and count what
    was acknowledged against what was kept (needs `gridflow up`)."""
    from chaos import kill_worker

    settings = load_settings()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="gridflow-chaos-"))
    n = cycles or (50 if full else 12)
    click.echo(f"chaos {scenario}: {n} cycles at {rate:g} reports/s; logs in {log_dir}")
    result = kill_worker.run(settings, log_dir, cycles=n, rate=rate,
                             session_timeout_s=session_timeout, static_membership=static,
                             seed=seed,
                             echo=lambda line: click.echo(line))
    for line in result.lines():
        click.echo(line)
    sys.exit(0 if result.clean else 1)
