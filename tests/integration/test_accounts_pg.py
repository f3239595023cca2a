"""Accounts on the real PostgreSQL: migrations from several processes at once, sign-in and the
lock after five failures, sessions ended at once (the unit tests run the same on SQLite)."""

from __future__ import annotations

import subprocess
import sys

from argon2 import PasswordHasher, profiles
from sqlalchemy import inspect

from accounts.roles import DEPT_STAFF, Grant
from accounts.store import AccountStore, NewAccount, Refused
from gridflow import durable
from gridflow.core.refdata import load_reference_data
from sinks.models import make_engine

MIGRATE = "import sys; from gridflow import durable; from sinks.models import make_engine; " \
          "print(durable.upgrade(make_engine(sys.argv[1])))"


def test_three_processes_migrate_one_database_at_once(pg_url: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE, pg_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert {o[0].strip() for o in outs} == {durable.head()}
    engine = make_engine(pg_url)
    try:
        assert {"accounts", "auth_sessions", "api_keys", "sign_in_locks", "ingest_receipts",
                "notifications"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_sign_in_lock_and_sessions_on_postgres(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        store = AccountStore(engine, load_reference_data(),
                             hasher=PasswordHasher.from_parameters(profiles.CHEAPEST))
        _, code = store.add(NewAccount("wangfang", "王芳", [Grant(DEPT_STAFF, "county.chengguan")],
                                       "13812345678"), "test")
        assert code
        first = store.set_password("wangfang", code, "一二三四-abcd-5678", "10.1.1.1")
        second = store.sign_in("13812345678", "一二三四-abcd-5678", "10.1.1.2")
        a, b = store.authenticate(first.token), store.authenticate(second.token)
        assert a is not None and b is not None and a.account_id == b.account_id
        for _ in range(5):
            try:
                store.sign_in("wangfang", "not-the-password", "10.1.1.3")
            except Refused as exc:
                assert exc.code == "bad_credentials"
        try:
            store.sign_in("wangfang", "一二三四-abcd-5678", "10.1.1.4")
            raise AssertionError("a locked account signed in")
        except Refused as exc:
            assert exc.status == 429
        assert store.get("wangfang").locked_until is not None
        store.set_status("wangfang", False, "admin")
        assert store.authenticate(first.token) is None and store.authenticate(second.token) is None
    finally:
        engine.dispose()
