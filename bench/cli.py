"""`gridflow bench`: run the benchmarks on the local stack, print the table, write the figures
with the machine's details to docs/PERFORMANCE.md.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import click

from bench.common import Context, Figure, say
from gridflow.settings import load_settings

# (name, module): run in this order; each module has run(ctx) -> list[Figure].
BENCHMARKS: list[tuple[str, str]] = [
    ("processing", "bench.processing"),
    ("ingest", "bench.ingest"),
    ("e2e", "bench.e2e"),
    ("archive", "bench.archive"),
    ("replay", "bench.replay"),
    ("deadlines", "bench.deadlines"),
    ("phone", "bench.phone"),
    ("workbench", "bench.workbench"),
    ("restart", "bench.restart"),
]
QUICK_SCALE = 0.01
DOC = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"


def run_benchmarks(scale: float, quick: bool, only: list[str] | None = None,
                   echo: Callable[[str], None] = click.echo, work_dir: Path | None = None,
                   ) -> list[Figure]:
    """Run the selected benchmarks; a benchmark that fails yields a figure saying so."""
    from infra import stack

    settings = load_settings()
    stack.up(settings, echo=lambda m: say(echo, f"  {m}"))
    own_dir = work_dir is None
    work = work_dir or Path(tempfile.mkdtemp(prefix="gridflow-bench-"))
    ctx = Context(settings, scale, quick, work, echo)
    figures: list[Figure] = []
    try:
        for name, module_name in BENCHMARKS:
            if only and name not in only:
                continue
            say(echo, f"== {name} ==")
            t0 = time.monotonic()
            try:
                module = importlib.import_module(module_name)
                figures += module.run(ctx)
            except Exception as exc:  # noqa: BLE001 - one failed benchmark, the rest still run
                traceback.print_exc()
                figures.append(Figure(name, "failed", target="", met=False,
                                      note=f"{type(exc).__name__}: {exc}"))
            say(echo, f"   ({time.monotonic() - t0:.0f} s)")
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    return figures


@click.command("bench")
@click.option("--quick", is_flag=True, help=f"Smoke run (sizes × {QUICK_SCALE}, short phases).")
@click.option("--scale", type=click.FloatRange(min=0.0001), default=None,
              help="Multiply every size by this [default: 1, or the --quick scale].")
@click.option("--only", metavar="NAMES",
              help=f"Comma-separated subset of: {', '.join(n for n, _ in BENCHMARKS)}.")
@click.option("--write/--no-write", default=True, show_default=True,
              help=f"Write the figures to {DOC.name}.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=DOC,
              show_default=True)
def bench(quick: bool, scale: float | None, only: str | None, write: bool, output: Path) -> None:
    """Measure throughput and latency against raw baselines of the same machine, same run."""
    from bench import report

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    scale = scale if scale is not None else (QUICK_SCALE if quick else 1.0)
    names = [n.strip() for n in only.split(",")] if only else None
    unknown = sorted(set(names or ()) - {n for n, _ in BENCHMARKS})
    if unknown:
        raise click.BadParameter(f"unknown benchmark(s): {', '.join(unknown)}", param_hint="--only")
    settings = load_settings()
    info = report.machine(settings)
    t0 = time.monotonic()
    figures = run_benchmarks(scale, quick, names)
    seconds = time.monotonic() - t0
    sizes = [f"scale {scale:g}{' (quick)' if quick else ''}"]
    sizes += [f"{f.what}: {f.raw['sizes']}" for f in figures if "sizes" in f.raw]
    click.echo("")
    click.echo(report.table(figures))
    click.echo("")
    for f in figures:
        if f.note:
            click.echo(f"- {f.what}: {f.note}")
    click.echo(f"\n{len(figures)} figures in {seconds / 60:.1f} min at scale {scale:g}")
    if write:
        command = "gridflow bench" + (" --quick" if quick else "") + (
            f" --scale {scale:g}" if scale not in (1.0, QUICK_SCALE) else "") + (
            f" --only {only}" if only else "")
        report.write(output, report.section(figures, info, sizes, command, seconds))
        click.echo(f"written to {output}")
    if any(f.ours == "failed" for f in figures):
        sys.exit(1)
