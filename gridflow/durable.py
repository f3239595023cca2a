"""Schema of the durable tables, the ones replay cannot rebuild: accounts, sessions, API keys,
sign-in locks, ingest receipts, notifications. Migrated with Alembic (gridflow/migrations/).

Guarantee: `upgrade(engine)` brings a database to this build's head revision and is idempotent;
two processes starting at once take turns (PostgreSQL advisory lock; on SQLite the loser of a
race retries); a database at a revision this build does not know is refused, not touched.
The read models (sinks.models) are not here: they are disposable and rebuilt by replay.
"""

from __future__ import annotations

import threading
import weakref
from functools import cache
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import OperationalError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"
_ADVISORY_LOCK = 7461005
_done: weakref.WeakSet[Engine] = weakref.WeakSet()  # engines this process has migrated
_lock = threading.Lock()


class DurableSchemaError(RuntimeError):
    """The database's durable tables are at a revision this build does not know."""


@cache
def _script():  # type: ignore[no-untyped-def]
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def _config():  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head() -> str:
    """This build's newest revision."""
    rev = _script().get_current_head()
    assert rev is not None
    return str(rev)


def current(conn: Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: Engine) -> str:
    """Migrate the durable tables to head (idempotent, cheap when already there)."""
    if engine in _done:
        return head()
    with _lock:
        for attempt in range(3):
            try:
                _upgrade(engine)
                break
            except OperationalError as exc:  # SQLite: another process created a table first
                if engine.dialect.name != "sqlite" or attempt == 2:
                    raise
                if "already exists" not in str(exc) and "locked" not in str(exc):
                    raise
        _done.add(engine)
    return head()


def _upgrade(engine: Engine) -> None:
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK})"))
        found = current(conn)
        if found == head():
            return
        if found is not None and not _known(found):
            raise DurableSchemaError(
                f"database {engine.url.render_as_string(hide_password=True)} has durable-table "
                f"revision {found!r}, unknown to this build (head {head()!r}): upgrade gridflow "
                "or point it at another database"
            )
        config = _config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def _known(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


def forget(engine: Engine) -> None:
    """Let the next `upgrade(engine)` look at the database again (tests that drop tables)."""
    _done.discard(engine)
