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


def test_an_autovacuum_worker_on_the_database_does_not_stop_the_drop(stack, database) -> None:  # type: ignore[no-untyped-def]
    """What a bulk load leaves behind (the replay benchmark's database after a million rows):
    an autovacuum worker that stays longer than the retries. FORCE may not end it; the plain
    drop that follows has the server end it."""
    import time

    admin, name = database
    su = _admin(stack, SUPERUSER, "postgres")
    with psycopg.connect(**su) as conn:  # type: ignore[arg-type]
        conn.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        with psycopg.connect(**{**admin, "dbname": name}) as conn:  # type: ignore[arg-type]
            # a vacuum throttled to a page per tenth of a second: it stays on the database
            conn.execute("CREATE TABLE slow (x int) WITH (autovacuum_vacuum_cost_delay = 100, "
                         "autovacuum_vacuum_cost_limit = 1, autovacuum_vacuum_threshold = 0, "
                         "autovacuum_vacuum_scale_factor = 0, autovacuum_analyze_threshold = 0, "
                         "autovacuum_analyze_scale_factor = 0)")
            conn.execute("INSERT INTO slow SELECT generate_series(1, 200000)")
            conn.execute("DELETE FROM slow")
        deadline, seen = time.monotonic() + 60, False
        with psycopg.connect(**su) as conn:  # type: ignore[arg-type]
            while not seen and time.monotonic() < deadline:
                seen = conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = %s "
                    "AND backend_type = 'autovacuum worker'", (name,)).fetchone() is not None
                time.sleep(0.2)
        assert seen, "no autovacuum worker came to the database within 60 s"
        with psycopg.connect(**admin) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):  # type: ignore[arg-type]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # what failed
        drop_database(admin, name, attempts=2)
        assert not _exists(stack, name)
    finally:
        with psycopg.connect(**su) as conn:  # type: ignore[arg-type]
            conn.execute("ALTER SYSTEM RESET autovacuum_naptime")
            conn.execute("SELECT pg_reload_conf()")
