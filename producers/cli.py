"""`gridflow api`: serves the ingest API with uvicorn on GRIDFLOW_API_HOST:GRIDFLOW_API_PORT
until stopped. (`gridflow simulate`, which drives a running API, is demo.run's.)"""

from __future__ import annotations

import click

from gridflow.settings import load_settings


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
