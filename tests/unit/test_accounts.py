"""Accounts on SQLite: migrations, the sample county's people, sign-in with Argon2id, one-time
codes, the lock after five failures, session expiry and ending, API keys, refused input.

The wall clock is a fake one moved by the tests (expiry runs on the wall clock, never on the
simulated one); the hasher is Argon2id with the cheapest parameters, so tests stay fast.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, profiles
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, func, inspect, select, text

from accounts.cli import users
from accounts.people import county_people, import_people
from accounts.roles import (
    ADMIN,
    AUDITOR,
    COUNTY_SUPERVISOR,
    DEPT_STAFF,
    GRID_WORKER,
    OPEN311_PARTNER,
    TOWNSHIP_SUPERVISOR,
    Grant,
)
from accounts.store import AccountStore, NewAccount, Refused, SessionPolicy
from accounts.tables import metadata as account_metadata
from gridflow import durable
from gridflow.core.refdata import load_reference_data

REF = load_reference_data()
PASSWORD = "青山县-correct-horse-7"
T0 = datetime(2031, 3, 4, 1, 0, tzinfo=UTC)  # any instant: nothing here depends on today


class FakeWall:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return create_engine(f"sqlite:///{tmp_path / 'accounts.db'}")


@pytest.fixture
def wall() -> FakeWall:
    return FakeWall()


@pytest.fixture
def store(engine: Engine, wall: FakeWall) -> AccountStore:
    return AccountStore(engine, REF, wall, PasswordHasher.from_parameters(profiles.CHEAPEST))


def with_password(store: AccountStore, login: str, password: str = PASSWORD) -> None:
    code = store.reset_password(login, "test")
    store.set_password(login, code, password, "10.0.0.1")


def add_worker(store: AccountStore, login: str = "zhaojj", phone: str | None = "13907199999") -> str:
    _, code = store.add(NewAccount(login, "赵建军", [Grant(GRID_WORKER, "421099101201001")], phone),
                        "test")
    assert code is not None
    return code


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(text(table))).scalar() or 0)


# --- migrations -----------------------------------------------------------------------------


def test_migrations_create_the_tables_the_code_reads(engine: Engine) -> None:
    assert durable.upgrade(engine) == durable.head()
    found = inspect(engine)
    for table in account_metadata.sorted_tables:
        assert {c["name"] for c in found.get_columns(table.name)} == set(table.columns.keys())
    for durable_table in ("ingest_receipts", "notifications", "notify_offsets"):
        assert found.has_table(durable_table)
    with engine.connect() as conn:
        assert durable.current(conn) == durable.head()


def test_a_database_from_before_migrations_is_adopted(engine: Engine) -> None:
    from sqlalchemy import MetaData, Table

    from producers import receipts

    old = MetaData()  # ingest_receipts as create_tables made it before Alembic
    Table("ingest_receipts", old,
          *[c._copy() for c in receipts.ingest_receipts.c if c.name != "reporter"])
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO ingest_receipts VALUES ('r1','done','t','h','','{}',"
                          "'2031-01-01 00:00:00',0)"))
    durable.forget(engine)
    durable.upgrade(engine)
    assert inspect(engine).has_table("accounts")
    receipt = receipts.get(engine, "r1")
    assert receipt is not None and receipt.reporter == ""


def test_an_unknown_revision_is_refused(engine: Engine) -> None:
    durable.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    durable.forget(engine)
    with pytest.raises(durable.DurableSchemaError, match="9999"):
        durable.upgrade(engine)


# --- the sample county's people --------------------------------------------------------------


def test_import_creates_every_person_with_their_roles_once(store: AccountStore) -> None:
    people = county_people(REF)
    done = import_people(store, people, "test")
    assert len(done.created) == len(people) and not done.existing
    again = import_people(store, people, "test")
    assert not again.created and len(again.existing) == len(people)
    by_login = {a.login: a for a in store.list()}
    assert by_login["gw0001"].grants == (Grant(GRID_WORKER, "421099101201001"),)
    assert by_login["gw0001"].phone == "13907190001"
    assert by_login["gw0024"].status == "disabled"  # suspended in workers.json
    assert by_login["ds0003"].grants == (Grant(DEPT_STAFF, "county.chengguan"),)
    assert by_login["sv0001"].grants == (Grant(COUNTY_SUPERVISOR, "421099"),)
    assert set(by_login["sv0101"].grants) == {  # one person, two roles
        Grant(TOWNSHIP_SUPERVISOR, "421099001"), Grant(DEPT_STAFF, "421099001.zongzhi")}
    assert by_login["au0001"].grants == (Grant(AUDITOR),)
    assert by_login["ad0001"].grants == (Grant(ADMIN),)
    assert not any(a.has_password or a.setup_pending for a in by_login.values())


def test_reference_data_holds_no_credentials() -> None:
    root = Path(REF.source)
    for name in ("workers.json", "staff.json"):
        assert '"token"' not in (root / name).read_text(encoding="utf-8")


# --- signing in -----------------------------------------------------------------------------


def test_first_sign_in_sets_a_password_with_the_one_time_code(store: AccountStore) -> None:
    code = add_worker(store)
    with pytest.raises(Refused) as no_password:
        store.sign_in("zhaojj", "anything-at-all", "10.0.0.1")
    assert no_password.value.code == "password_setup_required"
    with pytest.raises(Refused) as wrong_code:
        store.set_password("zhaojj", "WRONGCODE234", PASSWORD, "10.0.0.1")
    assert wrong_code.value.status == 401
    signed = store.set_password("zhaojj", code.lower(), PASSWORD, "10.0.0.1")
    assert store.authenticate(signed.token) == signed.principal
    with pytest.raises(Refused):  # the code works once
        store.set_password("zhaojj", code, PASSWORD + "x", "10.0.0.1")
    by_phone = store.sign_in("139 0719 9999", PASSWORD, "10.0.0.2")
    assert by_phone.principal.account_id == signed.principal.account_id
    assert store.sign_in("ZhaoJJ", PASSWORD, "10.0.0.2").principal.grants == (
        Grant(GRID_WORKER, "421099101201001"),)


def test_one_time_codes_expire_on_the_wall_clock(store: AccountStore, wall: FakeWall) -> None:
    code = add_worker(store)
    wall.advance(hours=73)
    with pytest.raises(Refused) as refused:
        store.set_password("zhaojj", code, PASSWORD, "10.0.0.1")
    assert refused.value.code == "code_expired"


def test_no_secret_is_stored_in_plain_text(store: AccountStore, engine: Engine) -> None:
    code = add_worker(store)
    signed = store.set_password("zhaojj", code, PASSWORD, "10.0.0.1")
    _, key = store.add_key("partner-12345", Grant(OPEN311_PARTNER), "test")
    code2 = store.reset_password("zhaojj", "test")
    dump = "\n".join(engine.raw_connection().driver_connection.iterdump())  # type: ignore[union-attr]
    for secret in (PASSWORD, code, code2, signed.token, key, signed.token[4:], key[4:]):
        assert secret not in dump
    assert "$argon2id$" in dump


def test_five_failures_lock_the_account_for_a_while(store: AccountStore, wall: FakeWall) -> None:
    add_worker(store)
    with_password(store, "zhaojj")
    for i in range(5):
        with pytest.raises(Refused) as refused:
            store.sign_in("zhaojj", f"wrong-password-{i}", f"10.0.1.{i}")  # five addresses
        assert refused.value.code == "bad_credentials"
    with pytest.raises(Refused) as locked:
        store.sign_in("zhaojj", PASSWORD, "10.0.2.1")  # even the right password, from anywhere
    assert locked.value.status == 429 and locked.value.retry_after_s
    assert "锁定" in locked.value.zh
    view = store.get("zhaojj")
    assert view.locked_until == T0 + timedelta(minutes=15)  # visible to administrators
    wall.advance(minutes=16)
    assert store.sign_in("zhaojj", PASSWORD, "10.0.2.1").token
    assert store.get("zhaojj").locked_until is None and store.get("zhaojj").failures == 0


def test_five_failures_from_one_address_lock_that_address(store: AccountStore) -> None:
    for login in ("gw-one", "gw-two"):
        add_worker(store, login, None)
        with_password(store, login)
    for i in range(5):  # spread over accounts, some of which do not exist
        with pytest.raises(Refused):
            store.sign_in(("gw-one", "nobody-here", "gw-two")[i % 3], "wrong-password", "10.9.9.9")
    with pytest.raises(Refused) as locked:
        store.sign_in("gw-one", PASSWORD, "10.9.9.9")
    assert locked.value.code == "sign_in_locked"
    assert store.sign_in("gw-one", PASSWORD, "10.9.9.10").token  # another address is not locked


def test_enable_lifts_a_lock(store: AccountStore) -> None:
    add_worker(store)
    with_password(store, "zhaojj")
    for i in range(5):
        with pytest.raises(Refused):
            store.sign_in("zhaojj", "wrong-password", f"10.0.3.{i}")
    store.set_status("zhaojj", True, "admin")
    assert store.sign_in("zhaojj", PASSWORD, "10.0.3.99").token


# --- sessions ---------------------------------------------------------------------------------


def test_a_session_ends_after_idling_and_at_its_absolute_expiry(engine: Engine, wall: FakeWall) -> None:
    policy = SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=2))
    store = AccountStore(engine, REF, wall, PasswordHasher.from_parameters(profiles.CHEAPEST),
                         policy)
    add_worker(store)
    with_password(store, "zhaojj")
    idle = store.sign_in("zhaojj", PASSWORD, "10.0.0.1").token
    busy = store.sign_in("zhaojj", PASSWORD, "10.0.0.1").token
    for _ in range(5):
        wall.advance(minutes=20)
        assert store.authenticate(busy) is not None
    assert store.authenticate(idle) is None  # idle for 100 minutes
    wall.advance(minutes=20)
    assert store.authenticate(busy) is None  # 2 hours after sign-in, however busy
    wall.advance(minutes=-60)
    assert store.authenticate(busy) is None  # ended, not just expired


@pytest.mark.parametrize("how", ["sign_out", "disable", "reset_password"])
def test_every_session_of_the_account_ends_at_once(store: AccountStore, how: str) -> None:
    add_worker(store)
    with_password(store, "zhaojj")
    tokens = [store.sign_in("zhaojj", PASSWORD, "10.0.0.1").token for _ in range(3)]
    other = add_worker(store, "someone-else", None)
    other_token = store.set_password("someone-else", other, PASSWORD, "10.0.0.1").token
    if how == "sign_out":
        assert store.sign_out(tokens[0]) == 4  # and the one setting the password opened
    elif how == "disable":
        store.set_status("zhaojj", False, "admin")
    else:
        store.reset_password("zhaojj", "admin")
    assert [store.authenticate(t) for t in tokens] == [None, None, None]
    assert store.authenticate(other_token) is not None
    if how == "disable":
        with pytest.raises(Refused) as refused:
            store.sign_in("zhaojj", PASSWORD, "10.0.0.1")
        assert refused.value.code == "account_disabled"


def test_garbage_tokens_are_nobody(store: AccountStore) -> None:
    for token in ("", "gfs_", "gfs_x", "gfk_", "Bearer x", "x" * 5000, "gfs_' OR 1=1 --"):
        assert store.authenticate(token) is None


# --- API keys ---------------------------------------------------------------------------------


def test_api_keys_are_named_scoped_revocable_and_remember_their_last_use(
    store: AccountStore, wall: FakeWall
) -> None:
    view, key = store.add_key("chengguan-system", Grant(DEPT_STAFF, "county.chengguan"), "admin")
    assert view.last_used_at is None
    wall.advance(minutes=5)
    caller = store.authenticate(key)
    assert caller is not None and caller.via == "api_key"
    assert caller.grants == (Grant(DEPT_STAFF, "county.chengguan"),)
    assert store.list_keys()[0].last_used_at == T0 + timedelta(minutes=5)
    store.revoke_key("chengguan-system", "admin")
    assert store.authenticate(key) is None
    with pytest.raises(Refused) as taken:
        store.add_key("chengguan-system", Grant(OPEN311_PARTNER), "admin")
    assert taken.value.status == 409
    for bad in (Grant(ADMIN), Grant(DEPT_STAFF, "county.nowhere"), Grant(OPEN311_PARTNER, "x")):
        with pytest.raises(Refused):
            store.add_key("another-key", bad, "admin")


# --- refused input: a clear 4xx, nothing written -----------------------------------------------

LOOKALIKE = "zhаojj"  # Cyrillic а


@pytest.mark.parametrize(
    ("login", "name", "phone", "grants"),
    [
        ("x" * 33, "赵建军", None, [Grant(GRID_WORKER, "421099101201001")]),
        (LOOKALIKE, "赵建军", None, [Grant(GRID_WORKER, "421099101201001")]),
        ("ｚｈａｏｊｊ", "赵建军", None, [Grant(GRID_WORKER, "421099101201001")]),  # full width
        ("zhao'; DROP TABLE accounts; --", "赵建军", None, [Grant(GRID_WORKER, "421099101201001")]),
        ("", "赵建军", None, [Grant(GRID_WORKER, "421099101201001")]),
        ("zhaojj", "<script>alert(1)</script>", None, [Grant(GRID_WORKER, "421099101201001")]),
        ("zhaojj", "赵建军'); DELETE FROM accounts; --", None, [Grant(GRID_WORKER, "421099101201001")]),
        ("zhaojj", "赵" * 33, None, [Grant(GRID_WORKER, "421099101201001")]),
        ("zhaojj", "赵\u202e军", None, [Grant(GRID_WORKER, "421099101201001")]),  # bidi override
        ("zhaojj", "   ", None, [Grant(GRID_WORKER, "421099101201001")]),
        ("zhaojj", "赵建军", "１３９０７１９９９９９", [Grant(GRID_WORKER, "421099101201001")]),
        ("zhaojj", "赵建军", "139-0719-99' OR '1", [Grant(GRID_WORKER, "421099101201001")]),
        ("zhaojj", "赵建军", None, []),
        ("zhaojj", "赵建军", None, [Grant("root")]),
        ("zhaojj", "赵建军", None, [Grant(GRID_WORKER, "000000000000000")]),
        ("zhaojj", "赵建军", None, [Grant(AUDITOR, "421099")]),
    ],
)
def test_bad_account_input_is_refused_and_nothing_is_written(
    store: AccountStore, engine: Engine, login: str, name: str, phone: str | None,
    grants: list[Grant],
) -> None:
    with pytest.raises(Refused) as refused:
        store.add(NewAccount(login, name, grants, phone), "test")
    assert refused.value.status == 422 and refused.value.zh and refused.value.field
    assert count(engine, "accounts") == 0 and count(engine, "account_roles") == 0


@pytest.mark.parametrize(
    "password",
    ["", "short", "x" * 129, "aaaaaaaaaaaa", "zhaojj-is-my-name", "密码\x00密码密码密码密码", None],
)
def test_bad_new_passwords_are_refused_and_nothing_is_written(
    store: AccountStore, engine: Engine, password: Any
) -> None:
    code = add_worker(store)
    before = store.get("zhaojj")
    with pytest.raises(Refused) as refused:
        store.set_password("zhaojj", code, password, "10.0.0.1")
    assert refused.value.status == 422 and refused.value.field == "new_password"
    assert store.get("zhaojj") == before and count(engine, "auth_sessions") == 0
    assert count(engine, "sign_in_locks") == 0


@pytest.mark.parametrize(
    "login", ["", "   ", LOOKALIKE, "<b>gw0001</b>", "' OR '1'='1", "x" * 10_000, "gw0001\x00"]
)
def test_malformed_sign_ins_are_422_and_count_nothing(
    store: AccountStore, engine: Engine, login: str
) -> None:
    with pytest.raises(Refused) as refused:
        store.sign_in(login, "whatever-password", "10.0.0.1")
    assert refused.value.status == 422
    assert count(engine, "sign_in_locks") == 0 and count(engine, "auth_sessions") == 0


def test_a_duplicate_login_or_phone_is_409(store: AccountStore) -> None:
    add_worker(store)
    for login, phone in (("zhaojj", None), ("other-one", "13907199999")):
        with pytest.raises(Refused) as refused:
            store.add(NewAccount(login, "某人", [Grant(AUDITOR)], phone), "test")
        assert refused.value.status == 409


# --- gridflow users ---------------------------------------------------------------------------


def test_the_users_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = CliRunner().invoke

    def ok(*args: str) -> str:
        result = run(users, [*args, "--database", url])
        assert result.exit_code == 0, result.output
        return result.output

    assert "created" in ok("import")
    added = ok("add", "wangwu", "--name", "王五", "--role", "dept_staff:county.chengguan",
               "--role", "auditor", "--phone", "13800001234")
    code = added.split("one-time code: ")[1].split()[0]
    listed = ok("list", "--json")
    assert '"login": "wangwu"' in listed and code not in listed
    assert "sessions ended" in ok("reset-password", "wangwu")
    assert "disabled" in ok("disable", "wangwu") and "enabled" in ok("enable", "wangwu")
    key_out = ok("keys", "add", "partner-a", "--role", "open311_partner")
    key = key_out.split("hand it over safely:\n")[1].split()[0]
    assert key.startswith("gfk_") and key not in ok("keys", "list")
    assert "revoked" in ok("keys", "revoke", "partner-a")
    bad = run(users, ["add", "x", "--name", "<b>", "--role", "auditor", "--database", url])
    assert bad.exit_code != 0 and "账号名" in bad.output
