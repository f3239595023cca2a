"""infra.postgres.drop_database: a test's or a run's database is dropped even when a session the
`gridflow` role may not terminate is on it for a moment (an autovacuum worker, or here a
superuser's session), and says which sessions block it when one stays."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from infra.postgres import SUPERUSER, drop_database

pytestmark = pytest.mark.integration


def _admin(stack, user: str, dbname: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return dict(host="127.0.0.1", port=stack.settings.postgres_port, user=user, dbname=dbname,
                autocommit=True, connect_timeout=10)


def _exists(stack, name: str) -> bool:  # type: ignore[no-untyped-def]
    with psycopg.connect(**_admin(stack, SUPERUSER, "postgres")) as conn:  # type: ignore[arg-type]
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (name,)).fetchone() is not None


@pytest.fixture
def database(stack):  # type: ignore[no-untyped-def]
    admin = _admin(stack, stack.settings.postgres_user, stack.settings.postgres_db)
    name = f"t_drop_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin, name
    with psycopg.connect(**_admin(stack, SUPERUSER, "postgres")) as conn:  # type: ignore[arg-type]
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_session_it_may_not_end_delays_the_drop_but_does_not_fail_it(stack, database) -> None:  # type: ignore[no-untyped-def]
    admin, name = database
    blocker = psycopg.connect(**_admin(stack, SUPERUSER, name))  # type: ignore[arg-type]
    # The plain FORCE drop is refused while the superuser's session is there ...
    with psycopg.connect(**admin) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):  # type: ignore[arg-type]
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    # ... and drop_database waits it out.
    closer = threading.Timer(1.0, blocker.close)
    closer.start()
    try:
        drop_database(admin, name)
    finally:
        closer.join()
    assert not _exists(stack, name)


def test_a_session_that_stays_is_named(stack, database) -> None:  # type: ignore[no-untyped-def]
    admin, name = database
    with psycopg.connect(**_admin(stack, SUPERUSER, name)):  # type: ignore[arg-type]
        with pytest.raises(RuntimeError) as err:
            drop_database(admin, name, attempts=3)
    assert f"database {name} could not be dropped after 3 tries" in str(err.value)
    assert f"'user': '{SUPERUSER}'" in str(err.value)
    drop_database(admin, name)  # gone once the session is
    assert not _exists(stack, name)


def test_a_database_that_is_not_there_is_fine(stack) -> None:  # type: ignore[no-untyped-def]
    drop_database(_admin(stack, stack.settings.postgres_user, stack.settings.postgres_db),
                  f"t_absent_{uuid.uuid4().hex[:8]}")
