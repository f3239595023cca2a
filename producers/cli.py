"""`gridflow simulate` and `gridflow api`: the ingest side from the command line.

`api` serves the ingest API with uvicorn on GRIDFLOW_API_HOST:GRIDFLOW_API_PORT until
stopped; `simulate` drives an already running API and exits non-zero if any request failed
without an answer or with a 5xx (refusals of deliberately bad uploads are expected).
"""

from __future__ import annotations

import sys

import click

from gridflow.settings import load_settings


@click.command("simulate")
@click.option(
    "--api",
    "api_url",
    default=None,
    metavar="URL",
    help="Base URL of the running API [default: from GRIDFLOW_API_HOST/PORT].",
)
@click.option(
    "--rate",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Requests started per second.",
)
@click.option(
    "--count", default=None, type=click.IntRange(min=1), help="Stop after this many requests."
)
@click.option(
    "--duration", default=None, type=click.FloatRange(min=0.1), help="Stop after this many seconds."
)
@click.option(
    "--seed",
    default=1,
    show_default=True,
    type=int,
    help="Same seed, same workers, places, photos and mishaps.",
)
@click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="At most this many requests in flight.",
)
def simulate(
    api_url: str | None,
    rate: float,
    count: int | None,
    duration: float | None,
    seed: int,
    concurrency: int,
) -> None:
    """Simulate the sample county's grid workers and residents against a running API.

    Photo reports with real JPEGs (EXIF GPS), retries of the same report, near-duplicates by a
    second worker, a few fake images, and residents' Open311 complaints; prints progress and
    a summary (accepted, duplicates by retry, refusals with reasons, p50/p99 latency).
    """
    from bootstrap import bootstrap
    from producers.simulator import sample_tokens
    from producers.simulator import simulate as run

    if count is None and duration is None:
        count = 100
    world = bootstrap()
    settings = world.settings
    url = api_url or settings.api_url
    click.echo(
        f"gridflow simulate: {url}, {rate:g}/s, "
        f"{f'{count} requests' if count else f'{duration:g} s'}, seed {seed}"
    )
    # The workers sign in to the API's database (GRIDFLOW_DATABASE_URL) as trusted local tools.
    tokens = sample_tokens(settings.database_url, world.ref)
    # The API's clock (GRIDFLOW_CLOCK): capture times must not lie in a simulated clock's future.
    summary = run(url, rate, count, duration, seed, concurrency, world.clock, tokens)
    click.echo(summary.render())
    if summary.counts()["failed"]:
        sys.exit(1)


@click.command("api")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--workers",
    default=0,
    type=click.IntRange(min=0),
    envvar="GRIDFLOW_API_WORKERS",
    help="API processes sharing the port [default: one per CPU; env GRIDFLOW_API_WORKERS].",
)
def api(log_level: str, workers: int) -> None:
    """Serve the ingest API (docs at /docs) until stopped."""
    from producers.app import default_workers, serve

    settings = load_settings()
    workers = workers or default_workers()
    click.echo(f"gridflow api: {settings.api_url} (docs {settings.api_url}/docs), "
               f"{workers} worker process{'es' if workers > 1 else ''}")
    serve(settings, log_level, workers)
