"""Accounts: people with their roles, browser and app sessions, machine API keys, sign-in locks.

Every secret is stored hashed: passwords and one-time setup codes with Argon2id, session
tokens and API keys (random, 256 bits) with SHA-256.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UTC_TS = sa.DateTime(timezone=True).with_variant(sa.String(26), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(32), primary_key=True),
        sa.Column("login", sa.String(32), nullable=False, unique=True),
        sa.Column("phone", sa.String(16), unique=True),
        sa.Column("display_name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),  # active | disabled
        sa.Column("password_hash", sa.Text),  # Argon2id; NULL until the person sets one
        sa.Column("setup_code_hash", sa.Text),  # Argon2id of the one-time code, while unused
        sa.Column("setup_code_expires_at", UTC_TS),
        sa.Column("password_set_at", UTC_TS),
        sa.Column("last_sign_in_at", UTC_TS),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "account_roles",
        sa.Column(
            "account_id",
            sa.String(32),
            sa.ForeignKey("accounts.account_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("role", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(64), primary_key=True),  # '' for county-less roles
    )
    op.create_table(
        "auth_sessions",
        sa.Column("session_hash", sa.String(64), primary_key=True),  # sha256 of the token
        sa.Column("account_id", sa.String(32), nullable=False, index=True),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("last_seen_at", UTC_TS, nullable=False),
        sa.Column("expires_at", UTC_TS, nullable=False),  # absolute expiry
        sa.Column("client_addr", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(256), nullable=False),
        sa.Column("ended_at", UTC_TS),
        sa.Column("ended_reason", sa.String(32)),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),  # public, part of the key
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("last_used_at", UTC_TS),
        sa.Column("revoked_at", UTC_TS),
        sa.Column("revoked_by", sa.String(64)),
    )
    op.create_table(
        "sign_in_locks",
        sa.Column("kind", sa.String(16), primary_key=True),  # account | address
        sa.Column("subject", sa.String(128), primary_key=True),  # account id | client address
        sa.Column("failures", sa.Integer, nullable=False),  # in a row
        sa.Column("last_failure_at", UTC_TS, nullable=False),
        sa.Column("locked_until", UTC_TS),
    )


def downgrade() -> None:
    for table in ("sign_in_locks", "api_keys", "auth_sessions", "account_roles", "accounts"):
        op.drop_table(table)
