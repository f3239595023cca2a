"""The `gridflow` console command: one entry point. Each subcommand lives in a module that
may call the composition root (bootstrap.commands for the worker, the sink and the notifier,
whose packages may not; elsewhere next to what it runs)."""

from __future__ import annotations

import importlib

import click

# (module, attribute) of each subcommand; each module owns its own command.
COMMANDS: list[tuple[str, str]] = [
    ("infra.cli", "up"),
    ("infra.cli", "down"),
    ("infra.cli", "status"),
    ("bootstrap.commands", "worker"),
    ("bootstrap.commands", "sink"),
    ("producers.cli", "api"),
    ("demo.run", "simulate"),
    ("demo.run", "demo"),
    ("dashboard.app", "dashboard"),
    ("bench.cli", "bench"),
    ("bootstrap.commands", "notify"),
    ("audit.cli", "replay"),
    ("audit.cli", "audit"),
    ("audit.cli", "archive_log_command"),
    ("chaos.cli", "chaos"),
    ("accounts.cli", "users"),
    ("mobile.qrcodes", "qrcodes"),
]


def _guess_name(attr: str) -> str:
    return attr.removesuffix("_command").replace("_", "-")


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that command runs (`gridflow up` stays fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(_guess_name(a) for _, a in COMMANDS)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for module_name, attr in COMMANDS:
            if _guess_name(attr) == cmd_name:
                command = getattr(importlib.import_module(module_name), attr)
                if command.name == cmd_name:
                    return command
        for module_name, attr in COMMANDS:  # a command named unlike its attribute
            command = getattr(importlib.import_module(module_name), attr)
            if command.name == cmd_name:
                return command
        return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gridflow")
def main() -> None:
    """gridflow: grid-management reporting pipeline (网格化管理).

    Grid workers' photo reports and residents' complaints become dispatched,
    deadline-tracked, escalated and audited cases.
    """


if __name__ == "__main__":
    main()
