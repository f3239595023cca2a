"""Accounts in the database: adding people with their roles, signing in, sessions, API keys,
and the lock after repeated failures.

Guarantees:
- no secret is stored in plain text: passwords and one-time codes as Argon2id hashes, session
  tokens and API keys as SHA-256 of 256 random bits; the plain value goes only to the caller
  that made it, once;
- every expiry (session idle and absolute, one-time codes, locks) runs on the wall clock handed
  in (never a simulated clock);
- signing out, disabling an account or resetting its password ends every session of the
  account at once; a revoked API key is refused on its next request;
- `lock_after` failures in a row, per account and per client address, lock sign-in for
  `lock_for`; a success clears both counters;
- a refused request writes nothing (a wrong password writes only its failure count).
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from accounts import credentials as cred
from accounts.roles import Grant, Principal, grant_problem
from accounts.tables import account_roles, accounts, api_keys, auth_sessions, sign_in_locks
from gridflow import durable
from gridflow.clock import Clock, wall_clock
from gridflow.core.refdata import ReferenceData

ACTIVE = "active"
DISABLED = "disabled"
LOCK_ACCOUNT = "account"
LOCK_ADDRESS = "address"


# The session, its person and their roles, for every request: built once (building and keying
# the statement anew cost more than PostgreSQL's answer).
_s, _a, _r = auth_sessions.c, accounts.c, account_roles.c
_SESSION_QUERY = (
    select(_s.account_id, _s.last_seen_at, _s.expires_at, _s.ended_at, _a.display_name,
           _a.status, _r.role, _r.scope)
    .join(accounts, _a.account_id == _s.account_id)
    .join(account_roles, _r.account_id == _s.account_id, isouter=True)
    .where(_s.session_hash == bindparam("digest"))
    .order_by(_r.role, _r.scope)
)


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)
    lock_after: int = 5
    lock_for: timedelta = timedelta(minutes=15)
    code_valid: timedelta = timedelta(hours=72)
    touch_every: timedelta = timedelta(seconds=60)  # last-seen / last-used written at most so often


class Refused(Exception):
    """A request the accounts refuse: HTTP status, stable code, Chinese and English reason."""

    def __init__(self, status: int, code: str, zh: str, en: str, field: str | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(f"{status} {code}: {en}")
        self.status, self.code, self.zh, self.en = status, code, zh, en
        self.field = field
        self.retry_after_s = retry_after_s


def _bad_credentials() -> Refused:
    return Refused(401, "bad_credentials", "账号或密码错误", "wrong account name, phone or password")


def _locked(until: datetime, now: datetime) -> Refused:
    seconds = max(1, int((until - now).total_seconds()))
    minutes = max(1, -(-seconds // 60))
    return Refused(429, "sign_in_locked",
                   f"连续登录失败次数过多, 已暂时锁定, 请 {minutes} 分钟后再试",
                   f"too many failed sign-ins in a row: locked for {minutes} more minute(s)",
                   retry_after_s=seconds)


def _not_found(what: str) -> Refused:
    return Refused(404, "account_not_found", f"账号「{what}」不存在", f"no account {what!r}")


@dataclass(frozen=True)
class SignedIn:
    token: str  # the session token: hand it to the person, never store it
    principal: Principal
    expires_at: datetime


@dataclass(frozen=True)
class AccountView:
    account_id: str
    login: str
    name: str
    phone: str | None
    status: str
    grants: tuple[Grant, ...]
    has_password: bool
    setup_pending: bool
    locked_until: datetime | None
    failures: int
    last_sign_in_at: datetime | None
    sessions: int


@dataclass(frozen=True)
class KeyView:
    key_id: str
    name: str
    grant: Grant
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass
class NewAccount:
    login: str
    name: str
    grants: list[Grant]
    phone: str | None = None
    account_id: str | None = None
    active: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class AccountStore:
    """The accounts of one database. `clock` is the wall clock (injectable for tests only)."""

    def __init__(self, engine: Engine, ref: ReferenceData | None = None, clock: Clock = wall_clock,
                 hasher: PasswordHasher | None = None, policy: SessionPolicy | None = None,
                 migrate: bool = True) -> None:
        self.engine = engine
        self.ref = ref
        self.clock = clock
        self.hasher = hasher or cred.default_hasher()
        self.policy = policy or SessionPolicy()
        if migrate:
            durable.upgrade(engine)

    # --- administration -------------------------------------------------------------------

    def check_grants(self, grants: Iterable[Grant], machine: bool = False) -> list[Grant]:
        out = list(dict.fromkeys(grants))
        if not out:
            raise Refused(422, "role_required", "至少需要一个角色", "at least one role is required",
                          field="roles")
        for g in out:
            problem = grant_problem(self.ref, g, machine) if self.ref else None
            if problem:
                raise Refused(422, "bad_role", problem[0], problem[1], field="roles")
        return out

    def add(self, new: NewAccount, by: str, with_code: bool = True) -> tuple[AccountView, str | None]:
        """Create an account; returns it and its one-time setup code (shown once)."""
        try:
            login = cred.check_login(new.login)
            name = cred.check_display_name(new.name)
            phone = cred.check_phone(new.phone) if new.phone else None
        except cred.InputRefused as exc:
            raise Refused(422, "invalid_input", exc.zh, exc.en, field=exc.field) from exc
        grants = self.check_grants(new.grants)
        account_id = new.account_id or f"U{secrets.token_hex(6).upper()}"
        now = self.clock()
        code = cred.new_setup_code() if with_code else None
        row = {
            "account_id": account_id, "login": login, "phone": phone, "display_name": name,
            "status": ACTIVE if new.active else DISABLED, "password_hash": None,
            "setup_code_hash": cred.hash_secret(self.hasher, code) if code else None,
            "setup_code_expires_at": now + self.policy.code_valid if code else None,
            "created_at": now, "updated_at": now, "created_by": by,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(accounts).values(**row))
                conn.execute(insert(account_roles), [
                    {"account_id": account_id, "role": g.role, "scope": g.scope} for g in grants
                ])
        except IntegrityError as exc:
            raise Refused(409, "account_exists", "账号名、手机号或编号已被使用",
                          "the account name, phone number or id is already taken") from exc
        return self.get(login), code

    def _account(self, conn: Connection, who: str) -> Any:
        """An account row by login, phone or account id (None if there is none)."""
        a = accounts.c
        key = who.strip()
        cond = or_(a.login == key.lower(), a.account_id == key)
        if cred.looks_like_phone(key):
            cond = or_(cond, a.phone == cred.check_phone(key))
        return conn.execute(select(accounts).where(cond)).first()

    def get(self, who: str) -> AccountView:
        with self.engine.connect() as conn:
            row = self._account(conn, who)
            if row is None:
                raise _not_found(who)
            return self._view(conn, row)

    def _view(self, conn: Connection, row: Any) -> AccountView:
        now = self.clock()
        lock = conn.execute(select(sign_in_locks).where(
            sign_in_locks.c.kind == LOCK_ACCOUNT, sign_in_locks.c.subject == row.account_id)).first()
        sessions = conn.execute(select(func.count()).select_from(auth_sessions).where(
            auth_sessions.c.account_id == row.account_id, auth_sessions.c.ended_at.is_(None),
            auth_sessions.c.expires_at > now)).scalar() or 0
        locked = lock.locked_until if lock and lock.locked_until and lock.locked_until > now else None
        return AccountView(
            row.account_id, row.login, row.display_name, row.phone, row.status,
            self._grants(conn, row.account_id), row.password_hash is not None,
            row.setup_code_hash is not None and (row.setup_code_expires_at or now) > now,
            locked, lock.failures if lock else 0, row.last_sign_in_at, int(sessions),
        )

    def _grants(self, conn: Connection, account_id: str) -> tuple[Grant, ...]:
        r = account_roles.c
        rows = conn.execute(select(r.role, r.scope).where(r.account_id == account_id)
                            .order_by(r.role, r.scope)).all()
        return tuple(Grant(role, scope) for role, scope in rows)

    def list(self) -> list[AccountView]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(accounts).order_by(accounts.c.login)).all()
            return [self._view(conn, row) for row in rows]

    def set_status(self, who: str, active: bool, by: str) -> AccountView:
        """Disable (every session ends at once) or enable (locks are cleared) an account."""
        now = self.clock()
        with self.engine.begin() as conn:
            row = self._account(conn, who)
            if row is None:
                raise _not_found(who)
            conn.execute(update(accounts).where(accounts.c.account_id == row.account_id)
                         .values(status=ACTIVE if active else DISABLED, updated_at=now))
            if active:
                conn.execute(delete(sign_in_locks).where(
                    sign_in_locks.c.kind == LOCK_ACCOUNT,
                    sign_in_locks.c.subject == row.account_id))
            else:
                self._end_sessions(conn, row.account_id, "disabled", now)
        return self.get(row.login)

    def reset_password(self, who: str, by: str) -> str:
        """Clear the password, end every session, and return a new one-time setup code."""
        now = self.clock()
        code = cred.new_setup_code()
        code_hash = cred.hash_secret(self.hasher, code)
        with self.engine.begin() as conn:
            row = self._account(conn, who)
            if row is None:
                raise _not_found(who)
            conn.execute(update(accounts).where(accounts.c.account_id == row.account_id).values(
                password_hash=None, setup_code_hash=code_hash,
                setup_code_expires_at=now + self.policy.code_valid, updated_at=now))
            conn.execute(delete(sign_in_locks).where(
                sign_in_locks.c.kind == LOCK_ACCOUNT, sign_in_locks.c.subject == row.account_id))
            self._end_sessions(conn, row.account_id, "password_reset", now)
        return code

    def _end_sessions(self, conn: Connection, account_id: str, reason: str, now: datetime) -> int:
        s = auth_sessions.c
        return conn.execute(update(auth_sessions)
                            .where(s.account_id == account_id, s.ended_at.is_(None))
                            .values(ended_at=now, ended_reason=reason)).rowcount

    # --- signing in ------------------------------------------------------------------------

    def _identify(self, who: str) -> str:
        """The login or phone a person typed, checked (422 if it cannot be either)."""
        if not isinstance(who, str) or not who.strip():
            raise Refused(422, "invalid_input", "请输入账号名或手机号",
                          "account name or phone is required", field="login")
        if cred.looks_like_phone(who):
            return cred.check_phone(who)
        try:
            return cred.check_login(who)
        except cred.InputRefused as exc:
            raise Refused(422, "invalid_input", "账号名或手机号格式不正确",
                          "not an account name or a phone number", field="login") from exc

    def _lock_of(self, conn: Connection, kind: str, subject: str, now: datetime) -> datetime | None:
        row = conn.execute(select(sign_in_locks.c.locked_until).where(
            sign_in_locks.c.kind == kind, sign_in_locks.c.subject == subject)).first()
        return row.locked_until if row and row.locked_until and row.locked_until > now else None

    def _fail(self, kind: str, subject: str, now: datetime) -> None:
        """Count a failure; the `lock_after`-th in a row locks for `lock_for`."""
        lk = sign_in_locks.c
        where = and_(lk.kind == kind, lk.subject == subject)
        with self.engine.begin() as conn:
            changed = conn.execute(update(sign_in_locks).where(where).values(
                failures=lk.failures + 1, last_failure_at=now)).rowcount
            if not changed:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(sign_in_locks).values(
                            kind=kind, subject=subject, failures=1, last_failure_at=now))
                except IntegrityError:
                    conn.execute(update(sign_in_locks).where(where).values(
                        failures=lk.failures + 1, last_failure_at=now))
            conn.execute(update(sign_in_locks)
                         .where(where, lk.failures >= self.policy.lock_after)
                         .values(failures=0, locked_until=now + self.policy.lock_for))

    def _clear(self, conn: Connection, kind: str, subject: str) -> None:
        conn.execute(delete(sign_in_locks).where(sign_in_locks.c.kind == kind,
                                                 sign_in_locks.c.subject == subject))

    def _check_locks(self, row: Any, client_addr: str, now: datetime) -> None:
        with self.engine.connect() as conn:
            for kind, subject in ((LOCK_ADDRESS, client_addr),
                                  (LOCK_ACCOUNT, row.account_id if row else None)):
                if subject is None:
                    continue
                until = self._lock_of(conn, kind, subject, now)
                if until is not None:
                    raise _locked(until, now)

    def _failed(self, row: Any, client_addr: str, now: datetime) -> Refused:
        self._fail(LOCK_ADDRESS, client_addr, now)
        if row is not None:
            self._fail(LOCK_ACCOUNT, row.account_id, now)
        return _bad_credentials()

    def sign_in(self, who: str, password: str, client_addr: str, user_agent: str = "") -> SignedIn:
        """A session for the right password; 401 / 403 / 422 / 429 otherwise."""
        key = self._identify(who)
        if not isinstance(password, str) or not password:
            raise Refused(422, "invalid_input", "请输入密码", "password is required",
                          field="password")
        if len(password) > cred.PASSWORD_MAX * 4:
            raise Refused(422, "invalid_input", "密码过长", "password too long", field="password")
        now = self.clock()
        with self.engine.connect() as conn:
            row = self._account(conn, key)
        self._check_locks(row, client_addr, now)
        if row is None:
            cred.burn_time(self.hasher, password)
            raise self._failed(None, client_addr, now)
        if row.password_hash is None:
            cred.burn_time(self.hasher, password)
            if row.status == ACTIVE and row.setup_code_hash is not None:
                raise Refused(403, "password_setup_required",
                              "请先使用管理员提供的一次性验证码设置密码",
                              "set a password first with the one-time code from your administrator")
            raise self._failed(row, client_addr, now)
        normalized = cred.normalize_password(password)
        if not cred.verify_secret(self.hasher, row.password_hash, normalized):
            raise self._failed(row, client_addr, now)
        if row.status != ACTIVE:
            raise Refused(403, "account_disabled", "账号已停用, 请联系管理员",
                          "this account is disabled")
        new_hash = (cred.hash_secret(self.hasher, normalized)
                    if self.hasher.check_needs_rehash(row.password_hash) else None)
        return self._open(row.account_id, client_addr, user_agent, now, new_hash)

    def set_password(self, who: str, code: str, new_password: str, client_addr: str,
                     user_agent: str = "") -> SignedIn:
        """First password or one after a reset, with the one-time code; signs the person in."""
        key = self._identify(who)
        now = self.clock()
        with self.engine.connect() as conn:
            row = self._account(conn, key)
        try:
            password = cred.check_password(new_password, row.login if row else key,
                                           field="new_password")
        except cred.InputRefused as exc:
            raise Refused(422, "invalid_input", exc.zh, exc.en, field=exc.field) from exc
        if not isinstance(code, str) or not code.strip() or len(code) > 64:
            raise Refused(422, "invalid_input", "请输入一次性验证码", "one-time code is required",
                          field="code")
        self._check_locks(row, client_addr, now)
        if row is None or row.setup_code_hash is None:
            cred.burn_time(self.hasher, code)
            raise self._failed(row, client_addr, now)
        if not cred.verify_secret(self.hasher, row.setup_code_hash, cred.normalize_code(code)):
            raise self._failed(row, client_addr, now)
        if row.setup_code_expires_at is None or row.setup_code_expires_at <= now:
            raise Refused(403, "code_expired", "一次性验证码已过期, 请联系管理员重新生成",
                          "the one-time code has expired: ask your administrator for a new one")
        if row.status != ACTIVE:
            raise Refused(403, "account_disabled", "账号已停用, 请联系管理员",
                          "this account is disabled")
        with self.engine.begin() as conn:
            changed = conn.execute(update(accounts).where(
                accounts.c.account_id == row.account_id,
                accounts.c.setup_code_hash == row.setup_code_hash,  # the code is used once
            ).values(password_hash=cred.hash_secret(self.hasher, password), setup_code_hash=None,
                     setup_code_expires_at=None, password_set_at=now, updated_at=now)).rowcount
            if not changed:
                raise _bad_credentials()
            self._end_sessions(conn, row.account_id, "password_set", now)
        return self._open(row.account_id, client_addr, user_agent, now)

    def _open(self, account_id: str, client_addr: str, user_agent: str, now: datetime,
              new_hash: str | None = None) -> SignedIn:
        token = cred.new_session_token()
        expires = now + self.policy.absolute
        with self.engine.begin() as conn:
            conn.execute(insert(auth_sessions).values(
                session_hash=cred.token_hash(token), account_id=account_id, created_at=now,
                last_seen_at=now, expires_at=expires, client_addr=client_addr[:64],
                user_agent=(user_agent or "")[:256]))
            values: dict[str, Any] = {"last_sign_in_at": now}
            if new_hash:
                values["password_hash"] = new_hash
            conn.execute(update(accounts).where(accounts.c.account_id == account_id)
                         .values(**values))
            self._clear(conn, LOCK_ACCOUNT, account_id)
            self._clear(conn, LOCK_ADDRESS, client_addr)
            principal = self._principal(conn, account_id, token)
        assert principal is not None
        return SignedIn(token, principal, expires)

    def open_session(self, who: str, client_addr: str = "local", user_agent: str = "") -> SignedIn:
        """A session for a trusted local tool (demo, simulator, tests) acting as the person,
        without their password. Only for code with direct access to the database."""
        with self.engine.connect() as conn:
            row = self._account(conn, who)
        if row is None:
            raise _not_found(who)
        if row.status != ACTIVE:
            raise Refused(403, "account_disabled", "账号已停用", "this account is disabled")
        return self._open(row.account_id, client_addr, user_agent, self.clock())

    def _principal(self, conn: Connection, account_id: str, token: str) -> Principal | None:
        row = conn.execute(select(accounts.c.display_name, accounts.c.status)
                           .where(accounts.c.account_id == account_id)).first()
        if row is None or row.status != ACTIVE:
            return None
        return Principal(account_id, row.display_name, self._grants(conn, account_id),
                         "session", cred.token_hash(token)[:12])

    def sign_out(self, token: str) -> int:
        """End every session of the token's account; returns how many ended."""
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(select(auth_sessions.c.account_id).where(
                auth_sessions.c.session_hash == cred.token_hash(token))).first()
            if row is None:
                return 0
            return self._end_sessions(conn, row.account_id, "signed_out", now)

    # --- every request --------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal | None:
        """The caller of a session token or API key; None if unknown, ended, expired, idle
        too long, revoked, or its account is disabled."""
        if not isinstance(token, str) or len(token) > 200:
            return None
        if token.startswith(cred.KEY_PREFIX):
            return self._by_key(token)
        if not token.startswith(cred.SESSION_PREFIX):
            return None
        now = self.clock()
        s = auth_sessions.c
        digest = cred.token_hash(token)
        with self.engine.connect() as conn:  # one round trip: the session, its person, roles
            rows = conn.execute(_SESSION_QUERY, {"digest": digest}).all()
        if not rows or rows[0].ended_at is not None:
            return None
        row = rows[0]
        reason = ("expired" if now >= row.expires_at
                  else "idle" if now - row.last_seen_at >= self.policy.idle else None)
        principal = None
        if not reason and row.status == ACTIVE:
            grants = tuple(Grant(x.role, x.scope) for x in rows if x.role is not None)
            principal = Principal(row.account_id, row.display_name, grants, "session",
                                  digest[:12])
        if reason:
            with self.engine.begin() as conn:
                conn.execute(update(auth_sessions).where(s.session_hash == digest,
                                                         s.ended_at.is_(None))
                             .values(ended_at=now, ended_reason=reason))
            return None
        if principal is not None and now - row.last_seen_at >= self.policy.touch_every:
            with self.engine.begin() as conn:
                conn.execute(update(auth_sessions).where(s.session_hash == digest)
                             .values(last_seen_at=now))
        return principal

    def _by_key(self, key: str) -> Principal | None:
        now = self.clock()
        k = api_keys.c
        digest = cred.token_hash(key)
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(k.key_hash == digest)).first()
        if row is None or row.revoked_at is not None:
            return None
        if row.last_used_at is None or now - row.last_used_at >= self.policy.touch_every:
            with self.engine.begin() as conn:
                conn.execute(update(api_keys).where(k.key_id == row.key_id).values(last_used_at=now))
        return Principal(f"key:{row.key_id}", row.name, (Grant(row.role, row.scope),), "api_key",
                         row.key_id)

    # --- API keys ---------------------------------------------------------------------------

    def add_key(self, name: str, grant: Grant, by: str) -> tuple[KeyView, str]:
        """A named, scoped API key for a machine client; the key itself is returned once."""
        try:
            name = cred.check_key_name(name)
        except cred.InputRefused as exc:
            raise Refused(422, "invalid_input", exc.zh, exc.en, field=exc.field) from exc
        self.check_grants([grant], machine=True)
        key_id = cred.new_key_id()
        key = cred.new_api_key(key_id)
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(api_keys).values(
                    key_id=key_id, key_hash=cred.token_hash(key), name=name, role=grant.role,
                    scope=grant.scope, created_at=now, created_by=by))
        except IntegrityError as exc:
            raise Refused(409, "key_exists", f"密钥名称「{name}」已被使用",
                          f"key name {name!r} is taken") from exc
        return self._key(name), key

    def _key(self, who: str) -> KeyView:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(
                or_(api_keys.c.name == who, api_keys.c.key_id == who))).first()
        if row is None:
            raise Refused(404, "key_not_found", f"密钥「{who}」不存在", f"no API key {who!r}")
        return _key_view(row)

    def list_keys(self) -> builtins.list[KeyView]:  # `list` here is AccountStore.list
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.name)).all()
        return [_key_view(r) for r in rows]

    def revoke_key(self, who: str, by: str) -> KeyView:
        view = self._key(who)
        with self.engine.begin() as conn:
            conn.execute(update(api_keys).where(api_keys.c.key_id == view.key_id,
                                                api_keys.c.revoked_at.is_(None))
                         .values(revoked_at=self.clock(), revoked_by=by))
        return self._key(view.key_id)


def _key_view(row: Any) -> KeyView:
    return KeyView(row.key_id, row.name, Grant(row.role, row.scope), row.created_at,
                   row.created_by, row.last_used_at, row.revoked_at)
