"""Roles, their scopes, and who may see and do what: the access rules in one place (pure).

A person holds one or more grants (role + scope). Every check an HTTP route makes goes through
this module: `may(principal, action)` for a command or page (else 403), `sees_case(principal,
facts)` for an id (else 404, as if it did not exist). Nothing here reads the clock, the
database or the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gridflow.core.refdata import ReferenceData

GRID_WORKER = "grid_worker"
DEPT_STAFF = "dept_staff"
TOWNSHIP_SUPERVISOR = "township_supervisor"
COUNTY_SUPERVISOR = "county_supervisor"
COUNTY_LEADER = "county_leader"
AUDITOR = "auditor"
ADMIN = "admin"
OPEN311_PARTNER = "open311_partner"  # machine clients only: a partner system posting requests
MONITOR = "monitor"  # machine clients only: the operators' Prometheus reading /metrics

PERSON_ROLES = (
    GRID_WORKER, DEPT_STAFF, TOWNSHIP_SUPERVISOR, COUNTY_SUPERVISOR, COUNTY_LEADER, AUDITOR, ADMIN,
)
KEY_ROLES = (DEPT_STAFF, OPEN311_PARTNER, MONITOR)  # what an API key may be for
ROLES = (*PERSON_ROLES, OPEN311_PARTNER, MONITOR)

ROLE_NAMES_ZH = {
    GRID_WORKER: "网格员",
    DEPT_STAFF: "部门工作人员",
    TOWNSHIP_SUPERVISOR: "乡镇(街道)督办人员",
    COUNTY_SUPERVISOR: "县级督办人员",
    COUNTY_LEADER: "县领导",
    AUDITOR: "审计人员",
    ADMIN: "系统管理员",
    OPEN311_PARTNER: "诉求对接系统",
    MONITOR: "运维监控系统",
}

# What a role's scope names: a grid code, a department code, a township code, the county code,
# or nothing (auditors read everything; administrators see no case data; partners post only).
SCOPE_KIND = {
    GRID_WORKER: "grid",
    DEPT_STAFF: "department",
    TOWNSHIP_SUPERVISOR: "township",
    COUNTY_SUPERVISOR: "county",
    COUNTY_LEADER: "county",
    AUDITOR: "",
    ADMIN: "",
    OPEN311_PARTNER: "",
    MONITOR: "",
}
SUPERVISING = (TOWNSHIP_SUPERVISOR, COUNTY_SUPERVISOR, COUNTY_LEADER)
# Who calls residents back (回访) and so sees their names and phone numbers unmasked.
CALLBACK_ROLES = (TOWNSHIP_SUPERVISOR, COUNTY_SUPERVISOR)
# Who sees original photos (with EXIF); everyone else in scope gets the EXIF-free thumbnail.
ORIGINAL_PHOTO_ROLES = (GRID_WORKER, DEPT_STAFF, AUDITOR)


# --- actions: what a route does, and which roles may ask for it -----------------------------

@dataclass(frozen=True)
class Action:
    name: str
    roles: tuple[str, ...]
    zh: str  # what it is, for the 403 message


def _action(name: str, zh: str, *roles: str) -> Action:
    return Action(name, roles, zh)


READ_ROLES = (GRID_WORKER, DEPT_STAFF, *SUPERVISING, AUDITOR)
ACTIONS = {
    a.name: a
    for a in (
        _action("report.submit", "上报问题", GRID_WORKER),
        _action("report.read", "查询上报办理情况", *READ_ROLES),
        _action("command.read", "查询指令结果", GRID_WORKER, DEPT_STAFF, *SUPERVISING, AUDITOR),
        _action("inbox.read", "查看部门待办", DEPT_STAFF, *SUPERVISING, AUDITOR),
        _action("task.sign", "签收", DEPT_STAFF),
        _action("task.progress", "填报处置进展", DEPT_STAFF),
        _action("task.extension", "申请延期", DEPT_STAFF),
        _action("task.send_back", "退单", DEPT_STAFF),
        _action("task.resolve", "办结", DEPT_STAFF),
        _action("task.decide_extension", "审批延期", TOWNSHIP_SUPERVISOR, COUNTY_SUPERVISOR),
        _action("task.cancel", "撤销任务", TOWNSHIP_SUPERVISOR, COUNTY_SUPERVISOR),
        _action("task.verify", "核查", GRID_WORKER, TOWNSHIP_SUPERVISOR, COUNTY_SUPERVISOR),
        _action("case.rate", "回访评价", GRID_WORKER, TOWNSHIP_SUPERVISOR, COUNTY_SUPERVISOR),
        _action("case.whistle", "吹哨报到", *SUPERVISING),
        _action("case.read", "查看案件", *READ_ROLES),
        _action("board.read", "查看督办看板", *SUPERVISING, AUDITOR),
        _action("photo.read", "查看照片", *READ_ROLES),
        _action("access_log.read", "查看个人信息访问记录", AUDITOR),
        _action("open311.partner", "以对接系统身份提交诉求", OPEN311_PARTNER),
        _action("self.read", "查看或退出本人账号", *PERSON_ROLES),
        _action("accounts.admin", "管理账号", ADMIN),
        _action("ops.metrics", "读取运行指标", MONITOR),
    )
}


@dataclass(frozen=True)
class Grant:
    role: str
    scope: str = ""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a signed-in person (via "session") or a machine (via "api_key")."""

    account_id: str
    name: str
    grants: tuple[Grant, ...]
    via: str = "session"
    credential_id: str = ""  # the session hash prefix or API key id, for logs

    def roles(self) -> set[str]:
        return {g.role for g in self.grants}

    def scopes(self, *roles: str) -> set[str]:
        return {g.scope for g in self.grants if g.role in roles}

    def has(self, *roles: str) -> bool:
        return any(g.role in roles for g in self.grants)

    def worker_actor(self) -> str | None:
        grids = sorted(self.scopes(GRID_WORKER))
        return f"worker:{self.account_id}@{grids[0]}" if grids else None


# What only a signed-in person does, never a machine client's API key.
PEOPLE_ONLY = frozenset({"self.read", "accounts.admin"})


def may(principal: Principal, action: str) -> bool:
    if principal.via == "api_key" and action in PEOPLE_ONLY:
        return False
    return principal.has(*ACTIONS[action].roles)


def refusal(action: str) -> tuple[str, str]:
    """The 403 reason (Chinese, English) for a role that may not `action`."""
    a = ACTIONS[action]
    zh = "、".join(ROLE_NAMES_ZH[r] for r in a.roles)
    return (f"您的角色无权{a.zh}(仅限{zh})",
            f"your role may not do this ({a.name}); it is for: {', '.join(a.roles)}")


# --- scope of a case -------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseFacts:
    """What scope decisions need to know about a case (from the read models)."""

    case_id: str
    grid_code: str = ""
    township_code: str = ""
    reporters: frozenset[str] = field(default_factory=frozenset)  # actors of its reports
    departments: frozenset[str] = field(default_factory=frozenset)  # of its tasks, any state

    @property
    def county_code(self) -> str:
        return (self.grid_code or self.township_code)[:6]


def _own_report(principal: Principal, facts: CaseFacts) -> bool:
    prefix = f"worker:{principal.account_id}@"
    return any(r.startswith(prefix) for r in facts.reporters)


def grant_sees(grant: Grant, principal: Principal, facts: CaseFacts) -> bool:
    role, scope = grant.role, grant.scope
    if role == GRID_WORKER:
        return (bool(facts.grid_code) and facts.grid_code == scope) or _own_report(principal, facts)
    if role == DEPT_STAFF:
        return scope in facts.departments
    if role == TOWNSHIP_SUPERVISOR:
        return bool(scope) and facts.township_code == scope
    if role in (COUNTY_SUPERVISOR, COUNTY_LEADER):
        return bool(scope) and facts.county_code == scope
    return role == AUDITOR


def sees_case(principal: Principal, facts: CaseFacts, roles: Iterable[str] = ROLES) -> bool:
    """Whether the case is inside the scope of one of the caller's grants (of `roles`)."""
    wanted = set(roles)
    return any(g.role in wanted and grant_sees(g, principal, facts) for g in principal.grants)


def acting_grant(principal: Principal, action: str, facts: CaseFacts | None) -> Grant | None:
    """The caller's grant that may do `action` on this case (first in role order), or None."""
    allowed = ACTIONS[action].roles
    for role in allowed:
        for g in principal.grants:
            if g.role == role and (facts is None or grant_sees(g, principal, facts)):
                return g
    return None


def actor_of(principal: Principal, grant: Grant) -> str:
    """The actor string the case processor knows (gridflow.core.case.actor_roles)."""
    if grant.role == GRID_WORKER:
        return f"worker:{principal.account_id}@{grant.scope}"
    if grant.role == DEPT_STAFF:
        return f"dept:{grant.scope}"
    if grant.role in SUPERVISING:
        return f"supervisor:{principal.account_id}"
    return f"{grant.role}:{principal.account_id}"


def sees_unmasked(principal: Principal, facts: CaseFacts) -> bool:
    """Whether residents' names and phone numbers of this case are shown in full (回访)."""
    return sees_case(principal, facts, CALLBACK_ROLES)


def sees_originals(principal: Principal, facts: CaseFacts) -> bool:
    return sees_case(principal, facts, ORIGINAL_PHOTO_ROLES)


# --- checking a grant against the reference data --------------------------------------------

def grant_problem(ref: ReferenceData, grant: Grant, machine: bool = False) -> tuple[str, str] | None:
    """Why a grant cannot be given (Chinese, English), or None when it is sound."""
    allowed = KEY_ROLES if machine else PERSON_ROLES
    if grant.role not in allowed:
        return (f"未知的角色「{grant.role}」", f"unknown role {grant.role!r}; one of: "
                f"{', '.join(allowed)}")
    kind, scope = SCOPE_KIND[grant.role], grant.scope
    known = {
        "grid": ref.grids,
        "department": ref.departments,
        "township": ref.townships,
        "county": {ref.county.code: ref.county},
    }
    if not kind:
        if scope:
            return (f"角色「{ROLE_NAMES_ZH[grant.role]}」不带管辖范围",
                    f"role {grant.role} takes no scope")
        return None
    if scope not in known[kind]:
        zh = {"grid": "网格", "department": "部门", "township": "乡镇(街道)", "county": "县"}[kind]
        return (f"{zh}编码「{scope}」不存在", f"unknown {kind} code {scope!r} for {grant.role}")
    return None


def parse_grant(text: str) -> Grant:
    """'role' or 'role:scope' (the CLI's form)."""
    role, _, scope = text.strip().partition(":")
    return Grant(role.strip(), scope.strip())
