"""SQLAlchemy round trips on the real local PostgreSQL and on SQLite: the two read-model backends."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.integration

metadata = sa.MetaData()
cases = sa.Table(
    "cases", metadata,
    sa.Column("case_id", sa.String(64), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")


def test_round_trip(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(cases.insert(), [
                {"case_id": "C-1", "title": "河道垃圾堆积", "state": "filed", "payload": {"grid": "G01"}},
                {"case_id": "C-2", "title": "路灯不亮", "state": "dispatched", "payload": {"n": 2}},
            ])
        with engine.begin() as conn:
            conn.execute(cases.update().where(cases.c.case_id == "C-1").values(state="signed"))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(cases.insert(), {"case_id": "C-2", "title": "dup", "state": "x", "payload": {}})
        with engine.connect() as conn:
            rows = conn.execute(sa.select(cases).order_by(cases.c.case_id)).mappings().all()
        assert [dict(r) for r in rows] == [
            {"case_id": "C-1", "title": "河道垃圾堆积", "state": "signed", "payload": {"grid": "G01"}},
            {"case_id": "C-2", "title": "路灯不亮", "state": "dispatched", "payload": {"n": 2}},
        ]
    finally:
        engine.dispose()


def test_postgres_is_the_local_cluster(pg_url: str, stack) -> None:  # type: ignore[no-untyped-def]
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            port = conn.execute(sa.text("SELECT inet_server_port()")).scalar_one()
            user = conn.execute(sa.text("SELECT current_user")).scalar_one()
            encoding = conn.execute(sa.text("SHOW server_encoding")).scalar_one()
        assert port == stack.settings.postgres_port
        assert user == stack.settings.postgres_user
        assert encoding == "UTF8"
    finally:
        engine.dispose()
