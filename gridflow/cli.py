"""The `gridflow` console command: one entry point, subcommands live next to what they run."""

from __future__ import annotations

import importlib

import click

# (module, attribute) of each subcommand; each module owns its own command.
COMMANDS: list[tuple[str, str]] = [
    ("infra.cli", "up"),
    ("infra.cli", "down"),
    ("infra.cli", "status"),
    ("processors.worker", "worker_command"),
    ("sinks.cli", "sink"),
    ("producers.cli", "api"),
    ("producers.cli", "simulate"),
    ("gridflow.demo", "demo"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gridflow")
def main() -> None:
    """gridflow: grid-management reporting pipeline (网格化管理).

    Grid workers' photo reports and residents' complaints become dispatched,
    deadline-tracked, escalated and audited cases.
    """


def _register() -> None:
    for module_name, attr in COMMANDS:
        module = importlib.import_module(module_name)
        main.add_command(getattr(module, attr))


_register()

if __name__ == "__main__":
    main()
