"""Alembic environment of the durable tables (gridflow.durable): run on a connection handed in.

gridflow runs migrations from code (`gridflow.durable.upgrade(engine)`), never from an ini file:
the connection arrives in `config.attributes["connection"]`, inside the caller's transaction.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the durable-table migrations through gridflow.durable.upgrade(engine)")
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
