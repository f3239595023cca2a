"""The county's people as accounts to create: grid workers (workers.json) and staff,
supervisors, leaders, auditors and administrators (staff.json) of the reference data.

These files hold who people are and what they do, never a credential: `gridflow users import`
creates the accounts without passwords (each person sets one with a one-time code).
Guarantee: importing twice creates nothing new (existing logins are left as they are).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accounts.roles import (
    ADMIN,
    AUDITOR,
    COUNTY_LEADER,
    COUNTY_SUPERVISOR,
    DEPT_STAFF,
    GRID_WORKER,
    TOWNSHIP_SUPERVISOR,
    Grant,
    parse_grant,
)
from accounts.store import AccountStore, NewAccount, Refused
from gridflow.core.refdata import ReferenceData


class PeopleFileError(ValueError):
    pass


def staff_file(ref: ReferenceData) -> Path | None:
    path = Path(ref.source) / "staff.json"
    return path if path.exists() else None


def _active(entry: dict[str, Any]) -> bool:
    return entry.get("status", "active") == "active"


def _extra(entry: dict[str, Any]) -> list[Grant]:
    return [parse_grant(str(g)) for g in entry.get("roles", [])]


def county_people(ref: ReferenceData) -> list[NewAccount]:
    """Everyone the reference data names, with their grants (login = id in lower case)."""
    people = [
        NewAccount(w.id.lower(), w.name, [Grant(GRID_WORKER, w.grid_code)], w.phone or None,
                   w.id, w.active)
        for w in sorted(ref.workers.values(), key=lambda w: w.id)
    ]
    path = staff_file(ref)
    if path is None:
        return people
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PeopleFileError(f"{path}: {exc}") from exc

    def person(section: str, i: int, entry: Any, grants: list[Grant]) -> NewAccount:
        if not isinstance(entry, dict) or not entry.get("id") or not entry.get("name"):
            raise PeopleFileError(f"{path}: $.{section}[{i}]: needs id and name")
        if "token" in entry:
            raise PeopleFileError(f"{path}: $.{section}[{i}].token: credentials do not belong "
                                  "in reference data (create accounts with `gridflow users`)")
        pid = str(entry["id"])
        return NewAccount(pid.lower(), str(entry["name"]), [*grants, *_extra(entry)],
                          entry.get("phone") or None, pid, _active(entry))

    for i, e in enumerate(doc.get("staff", [])):
        people.append(person("staff", i, e, [Grant(DEPT_STAFF, str(e.get("department", "")))]))
    for i, e in enumerate(doc.get("supervisors", [])):
        area = str(e.get("area", ""))
        role = COUNTY_SUPERVISOR if area == ref.county.code else TOWNSHIP_SUPERVISOR
        people.append(person("supervisors", i, e, [Grant(role, area)]))
    for i, e in enumerate(doc.get("leaders", [])):
        people.append(person("leaders", i, e,
                             [Grant(COUNTY_LEADER, str(e.get("area", ref.county.code)))]))
    for i, e in enumerate(doc.get("auditors", [])):
        people.append(person("auditors", i, e, [Grant(AUDITOR)]))
    for i, e in enumerate(doc.get("administrators", [])):
        people.append(person("administrators", i, e, [Grant(ADMIN)]))
    return people


@dataclass(frozen=True)
class Imported:
    created: list[str]  # logins
    existing: list[str]


def import_people(store: AccountStore, people: list[NewAccount], by: str) -> Imported:
    """Create the accounts that do not exist yet (no password, no code: see reset-password)."""
    existing = {a.login for a in store.list()}
    created: list[str] = []
    for p in people:
        if p.login in existing:
            continue
        try:
            store.add(p, by, with_code=False)
        except Refused as exc:
            raise PeopleFileError(f"{p.account_id} ({p.name}): {exc.en}") from exc
        created.append(p.login)
    return Imported(created, sorted(existing & {p.login for p in people}))
