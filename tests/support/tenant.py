"""A tenant of its own on the shared local stack: the catalogue's topics under a tag, an
incoming and an archive (object lock) bucket, and a PostgreSQL database; all removed when the
block ends, pass or fail.

Used by the fixtures that run whole services (the browser, end-to-end and audit tests), so
that modules sharing one stack never see each other's records, objects or rows. What could not
be created is not removed; what cannot be removed (objects under an unexpired COMPLIANCE
retention, and so their bucket) is left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gridflow.settings import Settings
from gridflow.topics import delete_topics
from infra.kafka import ensure_catalogue
from infra.postgres import drop_database


@dataclass(frozen=True)
class Tenant:
    tag: str  # the topic prefix, the buckets' prefix and the database's name
    incoming: str
    archive: str
    database: str
    database_url: str  # SQLAlchemy URL of the tenant's PostgreSQL database
    s3: Any  # a minio client

    def settings(self, base: Settings, **more: Any) -> Settings:
        """`base` pointed at this tenant's topics, buckets and database (`more` on top)."""
        values: dict[str, Any] = {
            "topic_prefix": self.tag, "bucket_incoming": self.incoming,
            "bucket_archive": self.archive, "database_url": self.database_url,
        }
        return base.with_(**{**values, **more})


def admin_connection(settings: Settings) -> dict[str, Any]:
    """psycopg connection arguments for the stack's PostgreSQL as its owner, in autocommit
    (CREATE and DROP DATABASE cannot run in a transaction)."""
    return dict(host="127.0.0.1", port=settings.postgres_port, user=settings.postgres_user,
                dbname=settings.postgres_db, autocommit=True, connect_timeout=10)


@contextlib.contextmanager
def tenant(stack: Any, tag: str, database: str | None = None) -> Iterator[Tenant]:
    """A tenant under `tag` (S3- and PostgreSQL-valid: lower-case letters and digits) on
    `stack` (the `stack` fixture); its database is named `database`, or `tag`."""
    import psycopg

    base = stack.settings
    name = database or tag
    admin = admin_connection(base)
    s3 = stack.s3()
    incoming, archive = f"{tag}-incoming", f"{tag}-archive"
    with contextlib.ExitStack() as undo:
        ensure_catalogue(stack.bootstrap, tag)
        undo.callback(delete_topics, stack.bootstrap, tag)
        s3.make_bucket(incoming)
        undo.callback(remove_bucket, s3, incoming)
        s3.make_bucket(archive, object_lock=True)
        undo.callback(remove_bucket, s3, archive)
        with psycopg.connect(**admin) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        undo.callback(drop_database, admin, name)
        yield Tenant(tag, incoming, archive, name,
                     f"postgresql+psycopg://{base.postgres_user}@127.0.0.1:"
                     f"{base.postgres_port}/{name}", s3)


def remove_bucket(s3: Any, name: str) -> None:
    """Empty a bucket (every version) and remove it. Objects under an unexpired COMPLIANCE
    retention cannot be removed: the bucket then stays, and nothing is raised."""
    from minio.deleteobjects import DeleteObject

    versions = [DeleteObject(o.object_name, o.version_id)
                for o in s3.list_objects(name, recursive=True, include_version=True)]
    if versions and list(s3.remove_objects(name, versions, bypass_governance_mode=True)):
        return  # e.g. COMPLIANCE-locked versions: the bucket has to stay
    with contextlib.suppress(Exception):
        s3.remove_bucket(name)
