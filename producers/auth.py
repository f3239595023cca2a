"""Who is calling: bearer tokens of grid workers, department staff and supervisors → actors.

Grid workers come from the reference data (workers.json); department staff and supervisors
from staff.json in the same directory. Guarantee: a request is either refused (401 unknown
token, 403 suspended or wrong role) or carries exactly one actor string the processor
understands: `worker:<id>@<grid>`, `dept:<department code>`, `supervisor:<id>`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gridflow.core.refdata import ReferenceData
from producers.errors import ApiError, forbidden, unauthorized

WORKER = "worker"
DEPT = "dept"
SUPERVISOR = "supervisor"

ROLE_NAMES_ZH = {WORKER: "网格员", DEPT: "部门工作人员", SUPERVISOR: "督办人员"}

@dataclass(frozen=True)
class Principal:
    kind: str  # worker | dept | supervisor
    id: str
    name: str
    actor: str
    active: bool
    grid_code: str = ""  # workers: their own grid
    department: str = ""  # staff: their department; supervisors: their office
    area: str = ""  # supervisors: the county / township code they oversee


class StaffFileError(ValueError):
    pass


def _entry(path: Path, where: str, entry: object, ref: ReferenceData) -> tuple[str, dict]:
    if not isinstance(entry, dict):
        raise StaffFileError(f"{path}: {where}: expected an object")
    token = str(entry.get("token", ""))
    if len(token) < 16:
        raise StaffFileError(f"{path}: {where}.token: must be at least 16 characters")
    if not entry.get("id"):
        raise StaffFileError(f"{path}: {where}.id: required")
    dept = str(entry.get("department", ""))
    if dept and dept not in ref.departments:
        raise StaffFileError(f"{path}: {where}.department: unknown department {dept!r}")
    return token, entry


def read_staff(path: Path, ref: ReferenceData) -> dict[str, Principal]:
    """staff.json: {"staff": [{id, name, token, department, status}],
    "supervisors": [{id, name, token, area, department, status}]} → token → Principal."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StaffFileError(f"{path}: {exc}") from exc
    out: dict[str, Principal] = {}
    for i, raw in enumerate(doc.get("staff", [])):
        token, s = _entry(path, f"$.staff[{i}]", raw, ref)
        if not s.get("department"):
            raise StaffFileError(f"{path}: $.staff[{i}].department: required")
        out[token] = Principal(
            DEPT,
            str(s["id"]),
            str(s.get("name", "")),
            f"dept:{s['department']}",
            s.get("status", "active") == "active",
            department=str(s["department"]),
        )
    for i, raw in enumerate(doc.get("supervisors", [])):
        token, s = _entry(path, f"$.supervisors[{i}]", raw, ref)
        out[token] = Principal(
            SUPERVISOR,
            str(s["id"]),
            str(s.get("name", "")),
            f"supervisor:{s['id']}",
            s.get("status", "active") == "active",
            department=str(s.get("department", "")),
            area=str(s.get("area", "")),
        )
    return out


def staff_file(ref: ReferenceData) -> Path | None:
    """The reference data's staff.json, or None when the county has no staff file."""
    path = Path(ref.source) / "staff.json"
    return path if path.exists() else None


def load_staff(ref: ReferenceData) -> dict[str, Principal]:
    """Token → department staff and supervisors of the reference data (empty without a file)."""
    path = staff_file(ref)
    return read_staff(path, ref) if path else {}


class Authenticator:
    """Token → Principal, built once from the reference data."""

    def __init__(self, ref: ReferenceData) -> None:
        tokens: dict[str, Principal] = {}
        for w in ref.workers.values():
            tokens[w.token] = Principal(
                WORKER,
                w.id,
                w.name,
                f"worker:{w.id}@{w.grid_code}",
                w.active,
                grid_code=w.grid_code,
            )
        for token, principal in load_staff(ref).items():
            if token in tokens:
                raise StaffFileError(
                    f"{staff_file(ref)}: token of {principal.id} is already in use"
                )
            tokens[token] = principal
        self._tokens: Mapping[str, Principal] = tokens

    def identify(self, authorization: str | None) -> Principal:
        """The caller, or 401 / 403."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized()
        principal = self._tokens.get(token.strip())
        if principal is None:
            raise unauthorized()
        if not principal.active:
            raise forbidden("账号已停用, 请联系管理员", "this account is suspended", "suspended")
        return principal

    def require(self, authorization: str | None, *kinds: str) -> Principal:
        """The caller, who must be one of `kinds`."""
        principal = self.identify(authorization)
        if principal.kind not in kinds:
            raise wrong_role(kinds)
        return principal


def wrong_role(kinds: tuple[str, ...]) -> ApiError:
    zh = "、".join(ROLE_NAMES_ZH[k] for k in kinds)
    return forbidden(f"此操作仅限{zh}", f"this action is for: {', '.join(kinds)}", "wrong_role")
