"""`gridflow users`: the administrator's commands for accounts and API keys.

Whoever runs them has the database's credentials (GRIDFLOW_DATABASE_URL), so they act as an
administrator. One-time codes and API keys are printed once and stored only as hashes.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import timedelta
from typing import Any

import click

from accounts.roles import ROLE_NAMES_ZH, Grant, parse_grant
from accounts.store import AccountStore, AccountView, KeyView, NewAccount, Refused

LOCAL = timedelta(hours=8)


def _store(database_url: str | None) -> AccountStore:
    from bootstrap import bootstrap

    world = bootstrap()
    return AccountStore(world.engine(database_url), world.ref)


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in this environment
        return "cli"


def _fail(exc: Refused) -> None:
    raise click.ClickException(f"{exc.zh}\n{exc.code}: {exc.en}")


def _local(value: Any) -> str:
    return (value + LOCAL).strftime("%Y-%m-%d %H:%M") if value else "—"


def _grant_text(g: Grant) -> str:
    return f"{ROLE_NAMES_ZH.get(g.role, g.role)}({g.role}{':' + g.scope if g.scope else ''})"


database_option = click.option("--database", "database_url", default=None, metavar="URL",
                               help="SQLAlchemy URL [default: GRIDFLOW_DATABASE_URL].")


@click.group("users")
def users() -> None:
    """账号与接口密钥管理 / accounts and API keys (administrators)."""


@users.command("import")
@database_option
def import_command(database_url: str | None) -> None:
    """Create the reference data's people (the sample county's by default) as accounts."""
    from accounts.people import PeopleFileError, county_people, import_people

    store = _store(database_url)
    assert store.ref is not None
    try:
        done = import_people(store, county_people(store.ref), _by())
    except PeopleFileError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"已创建 {len(done.created)} 个账号, {len(done.existing)} 个已存在"
               f" / created {len(done.created)}, already there {len(done.existing)}")
    click.echo("账号尚无密码: 用 `gridflow users reset-password <账号>` 生成一次性验证码, 本人首次"
               "登录时设置密码 / no passwords yet: `gridflow users reset-password <login>` prints "
               "a one-time code the person uses to set one")


@users.command("add")
@click.argument("login")
@click.option("--name", required=True, help="姓名 / display name.")
@click.option("--role", "roles", multiple=True, required=True, metavar="ROLE[:SCOPE]",
              help="e.g. grid_worker:421099101201001, dept_staff:county.chengguan, "
                   "township_supervisor:421099101, county_supervisor:421099, auditor, admin. "
                   "Repeat for more than one role.")
@click.option("--phone", default=None, help="手机号 (sign-in by phone) / mobile number.")
@database_option
def add_command(login: str, name: str, roles: tuple[str, ...], phone: str | None,
                database_url: str | None) -> None:
    """Create an account; prints the one-time code the person sets a password with."""
    store = _store(database_url)
    try:
        view, code = store.add(NewAccount(login, name, [parse_grant(r) for r in roles], phone),
                               _by())
    except Refused as exc:
        _fail(exc)
        return
    click.echo(f"已创建账号 {view.login} ({view.name}) / created {view.account_id}")
    _print_code(view.login, code)


def _print_code(login: str, code: str | None) -> None:
    click.echo(f"一次性验证码 / one-time code: {code}")
    click.echo(f"请 {login} 本人在登录页选择「首次登录 / 重置密码」, 用此验证码设置密码(72 小时内有效,"
               f"仅可使用一次) / {login} sets a password with it on the sign-in page (valid 72 h, "
               "once)")


@users.command("disable")
@click.argument("login")
@database_option
def disable_command(login: str, database_url: str | None) -> None:
    """Disable an account: every session of it ends at once."""
    try:
        view = _store(database_url).set_status(login, False, _by())
    except Refused as exc:
        _fail(exc)
        return
    click.echo(f"已停用 {view.login}, 其全部登录已失效 / disabled {view.login}, sessions ended")


@users.command("enable")
@click.argument("login")
@database_option
def enable_command(login: str, database_url: str | None) -> None:
    """Enable an account again (and lift a sign-in lock)."""
    try:
        view = _store(database_url).set_status(login, True, _by())
    except Refused as exc:
        _fail(exc)
        return
    click.echo(f"已启用 {view.login} / enabled {view.login}")


@users.command("reset-password")
@click.argument("login")
@database_option
def reset_password_command(login: str, database_url: str | None) -> None:
    """Clear the password and end every session; prints a new one-time code."""
    store = _store(database_url)
    try:
        code = store.reset_password(login, _by())
        view = store.get(login)
    except Refused as exc:
        _fail(exc)
        return
    click.echo(f"已重置 {view.login} 的密码, 其全部登录已失效 / password of {view.login} reset, "
               "sessions ended")
    _print_code(view.login, code)


def _account_json(a: AccountView) -> dict[str, Any]:
    return {
        "account_id": a.account_id, "login": a.login, "name": a.name, "phone": a.phone,
        "status": a.status, "roles": [{"role": g.role, "scope": g.scope} for g in a.grants],
        "has_password": a.has_password, "setup_pending": a.setup_pending,
        "locked_until": a.locked_until.isoformat() if a.locked_until else None,
        "failures": a.failures, "sessions": a.sessions,
        "last_sign_in_at": a.last_sign_in_at.isoformat() if a.last_sign_in_at else None,
    }


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines for scripts.")
@database_option
def list_command(as_json: bool, database_url: str | None) -> None:
    """Every account: roles, status, password set or pending, sign-in lock, open sessions."""
    accounts = _store(database_url).list()
    if as_json:
        for a in accounts:
            click.echo(json.dumps(_account_json(a), ensure_ascii=False))
        return
    click.echo("账号 login | 姓名 name | 角色 roles | 状态 status | 密码 password | 锁定至 locked "
               "until | 在线 sessions | 最近登录 last sign-in (北京时间)")
    for a in accounts:
        password = "已设置 set" if a.has_password else (
            "待设置 code issued" if a.setup_pending else "未设置 none")
        status = "正常 active" if a.status == "active" else "停用 disabled"
        click.echo(" | ".join([
            a.login, a.name, ", ".join(_grant_text(g) for g in a.grants), status, password,
            _local(a.locked_until) + (f" ({a.failures} 次失败)" if a.failures else ""),
            str(a.sessions), _local(a.last_sign_in_at),
        ]))


@users.group("keys")
def keys() -> None:
    """接口密钥 / API keys of machine clients."""


def _key_line(k: KeyView) -> str:
    state = f"已吊销 revoked {_local(k.revoked_at)}" if k.revoked_at else "有效 active"
    return " | ".join([k.name, k.key_id, _grant_text(k.grant), state,
                       f"最近使用 last used {_local(k.last_used_at)}",
                       f"创建 created {_local(k.created_at)} by {k.created_by}"])


@keys.command("add")
@click.argument("name")
@click.option("--role", required=True, metavar="ROLE[:SCOPE]",
              help="open311_partner (posts Open311 requests) or dept_staff:<department> "
                   "(reads and works its inbox).")
@database_option
def keys_add(name: str, role: str, database_url: str | None) -> None:
    """Create a named, scoped API key; prints it once."""
    try:
        view, key = _store(database_url).add_key(name, parse_grant(role), _by())
    except Refused as exc:
        _fail(exc)
        return
    click.echo(f"已创建密钥 {view.name} / created key {view.key_id}")
    click.echo(f"密钥仅显示这一次, 请妥善交给对接系统 / shown once, hand it over safely:\n{key}")
    click.echo("使用方式 / use: Authorization: Bearer <key>")


@keys.command("list")
@database_option
def keys_list(database_url: str | None) -> None:
    """Every API key (never the key itself): role, scope, state, last use."""
    for k in _store(database_url).list_keys():
        click.echo(_key_line(k))


@keys.command("revoke")
@click.argument("name")
@database_option
def keys_revoke(name: str, database_url: str | None) -> None:
    """Revoke an API key: refused from its next request on."""
    try:
        view = _store(database_url).revoke_key(name, _by())
    except Refused as exc:
        _fail(exc)
        return
    click.echo(f"已吊销密钥 {view.name} / revoked {view.key_id}")


def main() -> None:  # pragma: no cover - `python -m accounts.cli`
    users(sys.argv[1:])
