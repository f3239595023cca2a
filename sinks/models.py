"""The read-model schema: SQLAlchemy models shared by the sinks, the API and the dashboard.

Guarantee: the same code creates the same tables on SQLite and PostgreSQL; every timestamp
is stored as UTC and reads back timezone-aware; `create_schema` is idempotent and refuses a
database whose schema is newer than this build. Tables are disposable: replay rebuilds them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from gridflow.events import parse_ts

# Bump with a migration in MIGRATIONS whenever a table changes shape.
DB_SCHEMA_VERSION = 4


class SchemaVersionError(RuntimeError):
    """The database was written by another (newer, or unmigratable) schema version."""


def utc_datetime(value: datetime | str | None) -> datetime | None:
    """A timestamp (aware datetime or ISO 8601 text) as an aware UTC datetime; naive refused."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_ts(value)
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must be timezone-aware")
        value = value.astimezone(UTC)
    return value


def utc_text(value: datetime | str | None) -> str | None:
    """How SQLite stores a timestamp: UTC text of fixed width (less its "+00:00")."""
    value = utc_datetime(value)
    return None if value is None else value.isoformat(" ", "microseconds")[:26]


class UTCDateTime(TypeDecorator[datetime]):
    """The one place timestamps are normalised: aware UTC in, aware UTC out, on every database.

    Accepts an aware datetime or an ISO 8601 string with an offset. PostgreSQL stores
    timestamptz. SQLite has no time type: there it is UTC text in SQLAlchemy's own SQLite
    format ("2026-11-02 01:00:00.000000"), uniform, so comparisons and ORDER BY hold.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(26))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | str | None, dialect: Dialect) -> Any:
        return utc_text(value) if dialect.name == "sqlite" else utc_datetime(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite
            if len(value) == 26:  # UTC text as written above (fast path)
                return datetime.fromisoformat(value + "+00:00")
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSONB on PostgreSQL (indexable), JSON text elsewhere; SQL NULL for None.
JSONType = JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


class Base(DeclarativeBase):
    pass


class Case(Base):
    """One row per case id: what the case is, where, its status and its chain position."""

    __tablename__ = "cases"

    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="new")  # new|open|closed|not_filed
    category_code: Mapped[str | None] = mapped_column(String(32))
    category_name: Mapped[str | None] = mapped_column(String(128))
    severity: Mapped[int | None] = mapped_column(Integer)
    grid_code: Mapped[str | None] = mapped_column(String(64), index=True)
    village_code: Mapped[str | None] = mapped_column(String(64))
    township_code: Mapped[str | None] = mapped_column(String(64), index=True)
    reporter: Mapped[str | None] = mapped_column(String(128))
    report_id: Mapped[str | None] = mapped_column(String(128))  # the report that opened it
    source: Mapped[str | None] = mapped_column(String(32))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    description: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    cross_grid: Mapped[bool] = mapped_column(Boolean, default=False)
    departments: Mapped[Any] = mapped_column(JSONType, nullable=True)  # routed at filing
    routing_reason: Mapped[str | None] = mapped_column(Text)
    filed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    whistled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rating: Mapped[int | None] = mapped_column(Integer)
    rating_comment: Mapped[str | None] = mapped_column(Text)
    rated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    not_filed_code: Mapped[str | None] = mapped_column(String(64))
    not_filed_reason_zh: Mapped[str | None] = mapped_column(Text)
    not_filed_reason_en: Mapped[str | None] = mapped_column(Text)
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64), default="")
    # First seq whose seq/prev_hash did not continue the chain seen so far (audit flag).
    chain_broken_at_seq: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_cases_status_filed", "status", "filed_at"),
        # the board's ranges and trends (schema 2)
        Index("ix_cases_filed", "filed_at"),
        Index("ix_cases_closed", "closed_at"),
    )


class Report(Base):
    """One row per report (grid worker upload or resident complaint), filed, merged or refused."""

    __tablename__ = "reports"

    report_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str | None] = mapped_column(String(32))
    reporter: Mapped[str | None] = mapped_column(String(128))
    category_code: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    captured_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    merged: Mapped[bool] = mapped_column(Boolean, default=False)
    distance_m: Mapped[float | None] = mapped_column(Float)
    photo_count: Mapped[int] = mapped_column(Integer, default=0)
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # event time of filing


class Photo(Base):
    """One row per photo reference an event carried; archive columns fill in on PhotoArchived."""

    __tablename__ = "photos"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # derived from event id + index
    case_id: Mapped[str] = mapped_column(String(64))
    report_id: Mapped[str | None] = mapped_column(String(128), index=True)
    task_id: Mapped[str | None] = mapped_column(String(80), index=True)
    role: Mapped[str] = mapped_column(String(16))  # before | after | progress | verification
    incoming_bucket: Mapped[str | None] = mapped_column(String(128))
    incoming_key: Mapped[str | None] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    content_type: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(64))  # the event that referenced it
    added_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    archive_status: Mapped[str | None] = mapped_column(String(16))  # archived | missing | corrupt
    archive_problem: Mapped[str | None] = mapped_column(Text)
    archive_bucket: Mapped[str | None] = mapped_column(String(128))
    archive_key: Mapped[str | None] = mapped_column(String(512))
    thumbnail_key: Mapped[str | None] = mapped_column(String(512))
    # The versions PhotoArchived recorded (None for events written before it did): readers
    # read these, whatever was written or deleted at the key later.
    archive_version_id: Mapped[str | None] = mapped_column(String(1024))
    thumbnail_version_id: Mapped[str | None] = mapped_column(String(1024))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    exif_taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exif_lat: Mapped[float | None] = mapped_column(Float)
    exif_lon: Mapped[float | None] = mapped_column(Float)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_photos_case_sha", "case_id", "sha256"),)


class Task(Base):
    """One row per task (a department's share of a case): state, clocks and how it went."""

    __tablename__ = "tasks"

    task_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64), index=True)
    department: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # gridflow.core.case task states
    dispatch_reason: Mapped[str | None] = mapped_column(String(32))  # routing|sent_back|whistle
    replaces_task: Mapped[str | None] = mapped_column(String(80))
    category_code: Mapped[str | None] = mapped_column(String(32))
    grid_code: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[int | None] = mapped_column(Integer)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sign_due: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolve_due: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verify_due: Mapped[datetime | None] = mapped_column(UTCDateTime)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    on_time_sign: Mapped[bool | None] = mapped_column(Boolean)
    on_time_resolve: Mapped[bool | None] = mapped_column(Boolean)
    reopened: Mapped[int] = mapped_column(Integer, default=0)
    extensions: Mapped[int] = mapped_column(Integer, default=0)
    pending_extension: Mapped[Any] = mapped_column(
        JSONType, nullable=True
    )  # {request_id, days, reason}
    sent_back: Mapped[bool] = mapped_column(Boolean, default=False)
    sent_back_reason: Mapped[str | None] = mapped_column(Text)
    reroute_to: Mapped[str | None] = mapped_column(String(64))
    whistled: Mapped[bool] = mapped_column(Boolean, default=False)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    escalation_level_code: Mapped[str | None] = mapped_column(String(32))
    # The clock of the current stage: on_time | warned | overdue | escalated.
    deadline_state: Mapped[str] = mapped_column(String(16), default="on_time")
    last_warned_stage: Mapped[str | None] = mapped_column(String(16))
    last_warned_fraction: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # 二次派遣: the staff member of the department working it (TaskAssigned), schema 2
    assignee: Mapped[str | None] = mapped_column(String(64))
    assignee_name: Mapped[str | None] = mapped_column(String(128))
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_tasks_department_state", "department", "state"),
        # the board (schema 2): tasks by state (open ones, closed ones by day), by dispatch time
        Index("ix_tasks_state_closed", "state", "closed_at"),
        Index("ix_tasks_dispatched", "dispatched_at"),
        # a department's finished tasks, the latest first (the workbench's 已办结, schema 4)
        Index("ix_tasks_department_resolved", "department", "resolved_at"),
    )


class TaskHistory(Base):
    """One row per event touching a task: the task's timeline."""

    __tablename__ = "task_history"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    department: Mapped[str | None] = mapped_column(String(64))
    summary: Mapped[Any] = mapped_column(JSONType, nullable=True)  # the event data less task_id

    __table_args__ = (Index("ix_task_history_task_seq", "task_id", "seq"),)


class CaseEvent(Base):
    """The ledger: every case event applied, verbatim, with where it was read from."""

    __tablename__ = "case_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    data: Mapped[Any] = mapped_column(JSONType, nullable=True)
    schema: Mapped[int] = mapped_column(Integer, default=1)
    causation_id: Mapped[str] = mapped_column(String(128), default="")
    prev_hash: Mapped[str] = mapped_column(String(64), default="")
    hash: Mapped[str] = mapped_column(String(64))  # gridflow.events.Message.hash()
    topic: Mapped[str] = mapped_column(String(255))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)

    # Not unique on purpose: two events claiming one seq is an upstream fault the audit
    # must see, not a reason for the sink to stop.
    __table_args__ = (Index("ix_case_events_case_seq", "case_id", "seq"),)


class CommandOutcome(Base):
    """What became of each command: accepted (it produced events) or refused, and why."""

    __tablename__ = "command_outcomes"

    command_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str | None] = mapped_column(String(80))
    command_type: Mapped[str | None] = mapped_column(String(40))
    accepted: Mapped[bool] = mapped_column(Boolean)
    code: Mapped[str | None] = mapped_column(String(64))
    reason_zh: Mapped[str | None] = mapped_column(Text)
    reason_en: Mapped[str | None] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(String(64))  # the first event it produced
    event_type: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeadLetter(Base):
    """Input nobody could read: the original (text or hex), where it came from and why."""

    __tablename__ = "dead_letters"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # gridflow.events.dead_letter id
    source_topic: Mapped[str] = mapped_column(String(255))
    partition: Mapped[int | None] = mapped_column(Integer)
    offset: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    original: Mapped[str] = mapped_column(Text)
    original_encoding: Mapped[str] = mapped_column(String(8))  # utf-8 | hex
    at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SinkOffset(Base):
    """Where each sink's consumer resumes: written in the same transaction as what it applied."""

    __tablename__ = "sink_offsets"

    consumer: Mapped[str] = mapped_column(String(128), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)
    # Set when the rows were built "as of" a moment (events after it skipped): such a
    # database is a snapshot and must not be continued by a live sink.
    as_of: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SchemaVersion(Base):
    __tablename__ = "schema_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    version: Mapped[int] = mapped_column(Integer)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime)


def table_of(model: type[Base]) -> Table:
    """A model's Core table (typed as the Table it always is for these models)."""
    return cast(Table, model.__table__)


def _to_2(conn: Connection) -> None:
    """Tasks get their assignee (二次派遣); the board's indexes. Rows keep NULL until replayed
    or assigned: no TaskAssigned event was ever written before this version."""
    timestamp = "VARCHAR(26)" if conn.dialect.name == "sqlite" else "TIMESTAMP WITH TIME ZONE"
    existing = {c["name"] for c in inspect(conn).get_columns("tasks")}
    for name, kind in (("assignee", "VARCHAR(64)"), ("assignee_name", "VARCHAR(128)"),
                       ("assigned_at", timestamp)):
        if name not in existing:
            conn.execute(text(f"ALTER TABLE tasks ADD COLUMN {name} {kind}"))
    for table in (Task.__table__, Case.__table__):
        for index in cast(Table, table).indexes:
            index.create(conn, checkfirst=True)


def _to_3(conn: Connection) -> None:
    """Photos get the archive versions PhotoArchived records (archive_version_id,
    thumbnail_version_id): NULL until replayed, and for events written before they were
    recorded (readers then read the latest version)."""
    existing = {c["name"] for c in inspect(conn).get_columns("photos")}
    for name in ("archive_version_id", "thumbnail_version_id"):
        if name not in existing:
            conn.execute(text(f"ALTER TABLE photos ADD COLUMN {name} VARCHAR(1024)"))


# version n -> function that migrates a database at version n to n + 1.
def _to_4(conn: Connection) -> None:
    """The index of a department's finished tasks by resolution time."""
    for index in cast(Table, Task.__table__).indexes:
        index.create(conn, checkfirst=True)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _to_2, 2: _to_3, 3: _to_4}


def json_text(value: Any) -> str:
    """The JSON text a JSON column is written with: orjson's compact form, at about a sixth of
    json.dumps's CPU (the sink writes several JSON values per event). What orjson refuses (keys
    that are not strings, integers beyond 64 bits) is written by json.dumps as before. The
    text differs from json.dumps's (no spaces; 1e16, not 1e+16) but reads back as the same
    value; NaN and Infinity, which no event can carry (the canonical encoding refuses them),
    would be written as null, valid JSON, where json.dumps wrote NaN."""
    try:
        return _orjson_dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, ensure_ascii=False)


_orjson_dumps = orjson.dumps


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the read models: SQLite gets WAL (readers never block the sink); JSON
    columns are written by `json_text`."""
    kwargs.setdefault("json_serializer", json_text)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def create_schema(engine: Engine) -> int:
    """Create or migrate every read-model table; idempotent. Returns the schema version.

    Raises SchemaVersionError if the database carries a newer version than this build.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # two processes starting at once take turns
            conn.execute(text("SELECT pg_advisory_xact_lock(7461001)"))
        found = _stored_version(conn)
        if found is not None and found > DB_SCHEMA_VERSION:
            raise SchemaVersionError(
                f"database {engine.url.render_as_string(hide_password=True)} has read-model schema "
                f"version {found}, newer than this build's {DB_SCHEMA_VERSION}: upgrade gridflow "
                "or point it at another database"
            )
        for version in range(found or DB_SCHEMA_VERSION, DB_SCHEMA_VERSION):
            if version not in MIGRATIONS:
                raise SchemaVersionError(f"no migration from read-model schema version {version}")
            MIGRATIONS[version](conn)
        Base.metadata.create_all(conn, checkfirst=True)
        _store_version(conn, found)
    return DB_SCHEMA_VERSION


def drop_schema(engine: Engine) -> None:
    """Drop every read-model table (they are rebuilt by replay)."""
    Base.metadata.drop_all(engine, checkfirst=True)


def _stored_version(conn: Connection) -> int | None:
    if not conn.dialect.has_table(conn, SchemaVersion.__tablename__):
        return None
    return conn.execute(select(SchemaVersion.version).where(SchemaVersion.id == 1)).scalar()


def _store_version(conn: Connection, found: int | None) -> None:
    if found == DB_SCHEMA_VERSION:
        return
    table = table_of(SchemaVersion)
    row = {"version": DB_SCHEMA_VERSION, "applied_at": datetime.now(UTC)}
    if found is None:
        conn.execute(table.insert().values(id=1, **row))
    else:
        conn.execute(table.update().where(table.c.id == 1).values(**row))
