"""The account tables as SQLAlchemy Core sees them; their DDL is gridflow/migrations (0002).

Guarantee: these definitions and the migrations describe the same columns (checked by
tests/unit/test_accounts.py against a migrated database).
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table, Text

from sinks.models import UTCDateTime

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(32), primary_key=True),
    Column("login", String(32), nullable=False, unique=True),
    Column("phone", String(16), unique=True),
    Column("display_name", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("password_hash", Text),
    Column("setup_code_hash", Text),
    Column("setup_code_expires_at", UTCDateTime),
    Column("password_set_at", UTCDateTime),
    Column("last_sign_in_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("created_by", String(64), nullable=False),
)

account_roles = Table(
    "account_roles",
    metadata,
    Column("account_id", String(32), primary_key=True),
    Column("role", String(32), primary_key=True),
    Column("scope", String(64), primary_key=True),
)

auth_sessions = Table(
    "auth_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("account_id", String(32), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("client_addr", String(64), nullable=False),
    Column("user_agent", String(256), nullable=False),
    Column("ended_at", UTCDateTime),
    Column("ended_reason", String(32)),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    Column("scope", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Column("revoked_by", String(64)),
)

sign_in_locks = Table(
    "sign_in_locks",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("subject", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime),
)
