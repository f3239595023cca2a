"""Reply templates (常用回复) per department: configuration, not facts about a case, so they live
in a durable table (gridflow/migrations 0004) that replay leaves alone. Staff pick one to fill a
progress note or a resolution; the department's head keeps them.

Guarantee: every read and write is within one department (a template id of another department
reads as missing); titles and bodies are bounded.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, Engine, MetaData, String, Table, Text, delete, select, update

from sinks.models import UTCDateTime

metadata = MetaData()

reply_templates = Table(
    "reply_templates",
    metadata,
    Column("template_id", String(32), primary_key=True),
    Column("department", String(64), nullable=False),
    Column("title", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_by", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

KINDS = {"any": "进展与办结通用", "progress": "处置进展", "resolve": "办结说明"}
TITLE_MAX, BODY_MAX = 40, 2000


@dataclass(frozen=True)
class Template:
    id: str
    department: str
    title: str
    text: str
    kind: str
    updated_by: str
    updated_at: datetime

    @property
    def kind_zh(self) -> str:
        return KINDS.get(self.kind, self.kind)


def _template(row: object) -> Template:
    r = row._mapping  # type: ignore[attr-defined]
    return Template(r["template_id"], r["department"], r["title"], r["body"], r["kind"],
                    r["updated_by"], r["updated_at"])


def templates_of(engine: Engine, department: str, kind: str | None = None) -> list[Template]:
    """The department's templates (for a form: those of its kind and the general ones)."""
    t = reply_templates.c
    query = select(reply_templates).where(t.department == department)
    if kind is not None:
        query = query.where(t.kind.in_((kind, "any")))
    with engine.connect() as conn:
        return [_template(r) for r in conn.execute(query.order_by(t.title, t.template_id))]


def template(engine: Engine, department: str, template_id: str) -> Template | None:
    t = reply_templates.c
    with engine.connect() as conn:
        row = conn.execute(select(reply_templates).where(
            t.template_id == template_id, t.department == department)).first()
    return _template(row) if row is not None else None


def problems(title: str, body: str, kind: str) -> list[tuple[str, str]]:
    """What is wrong with a template (field, Chinese), or nothing."""
    out = []
    if not title:
        out.append(("title", "请填写常用回复的标题"))
    elif len(title) > TITLE_MAX:
        out.append(("title", f"标题不超过{TITLE_MAX}个字"))
    if not body:
        out.append(("body", "请填写常用回复的内容"))
    elif len(body) > BODY_MAX:
        out.append(("body", f"内容不超过{BODY_MAX}个字"))
    if kind not in KINDS:
        out.append(("kind", "请选择用途"))
    return out


def save(engine: Engine, department: str, title: str, body: str, kind: str, by: str,
         now: datetime, template_id: str | None = None) -> str | None:
    """Add a template, or change one of the department's; its id (None: no such template)."""
    t = reply_templates.c
    with engine.begin() as conn:
        if template_id:
            done = conn.execute(update(reply_templates).where(
                t.template_id == template_id, t.department == department).values(
                title=title, body=body, kind=kind, updated_by=by, updated_at=now))
            return template_id if done.rowcount else None
        new_id = uuid.uuid4().hex
        conn.execute(reply_templates.insert().values(
            template_id=new_id, department=department, title=title, body=body, kind=kind,
            created_by=by, created_at=now, updated_by=by, updated_at=now))
        return new_id


def remove(engine: Engine, department: str, template_id: str) -> bool:
    t = reply_templates.c
    with engine.begin() as conn:
        done = conn.execute(delete(reply_templates).where(
            t.template_id == template_id, t.department == department))
    return bool(done.rowcount)
