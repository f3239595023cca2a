"""A private PostgreSQL cluster (Debian binaries) on loopback, never the system cluster.

Guarantee: one cluster per state dir, trust auth on loopback only, and after provision
a login role `gridflow` (CREATEDB) owning the database `gridflow`.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from infra.procs import Echo, ServerError, port_open, run_logged, split_host_port
from infra.server import Server

OS_USER = "postgres"  # PostgreSQL refuses to run as root; as root we run it as this user
SUPERUSER = "postgres"
FALLBACK_ROOT = Path("/var/lib/gridflow")


def find_bindir() -> Path | None:
    """Newest PostgreSQL bin dir of the Debian layout, or the one holding `postgres` on PATH."""
    candidates = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


class PostgreSQL(Server):
    name = "postgres"
    title = "PostgreSQL"
    stop_signal = signal.SIGINT  # "fast" shutdown: disconnect clients, checkpoint, exit
    start_timeout_s = 30.0
    stop_timeout_s = 30.0

    # --- paths ---------------------------------------------------------------
    @property
    def home(self) -> Path:
        # May be a symlink to FALLBACK_ROOT/... (see _ensure_home); the server gets resolved paths.
        return (self.settings.state_dir / self.name).resolve()

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.postgres_port}"

    def listen_addresses(self) -> list[tuple[str, int]]:
        return [split_host_port(self.address)]

    def run_as(self) -> str | None:
        return OS_USER if os.geteuid() == 0 else None

    # --- install -------------------------------------------------------------
    def installed(self) -> bool:
        return find_bindir() is not None

    def install(self, echo: Echo) -> None:
        if self.installed():
            return
        apt = shutil.which("apt-get")
        if os.geteuid() != 0 or apt is None:
            raise ServerError(self.name, "PostgreSQL binaries not found; install them "
                              "(Debian/Ubuntu: sudo apt-get install -y postgresql)")
        echo(f"{self.name}: installing the Debian package postgresql (first time only) ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run_logged(self.name, [apt, "update"], self.install_log, "running apt-get update", echo,
                   env=env, timeout_s=900)
        run_logged(self.name, [apt, "install", "-y", "--no-install-recommends", "postgresql"],
                   self.install_log, "installing postgresql", echo, env=env, timeout_s=1800)
        if not self.installed():
            raise ServerError(self.name, "apt-get installed postgresql but no server binary "
                              "was found under /usr/lib/postgresql/*/bin", self.install_log)

    def _bin(self, tool: str) -> str:
        bindir = find_bindir()
        if bindir is None:
            raise ServerError(self.name, "PostgreSQL binaries not found")
        return str(bindir / tool)

    # --- prepare -------------------------------------------------------------
    def prepare(self, echo: Echo) -> None:
        user = self.run_as()
        if user is not None:
            ensure_os_user(user, echo)
        self._ensure_home(user, echo)
        if not (self.data_dir / "PG_VERSION").exists():
            echo(f"{self.name}: initdb {self.data_dir}")
            run_logged(
                self.name,
                self._as_user(user, [
                    self._bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                    "-E", "UTF8", "--no-locale", "--auth-local=trust", "--auth-host=trust",
                    "--no-sync",
                ]),
                self.log_path, "initialising the cluster", echo, cwd=self.home, timeout_s=180,
            )

    def _ensure_home(self, user: str | None, echo: Echo) -> None:
        """Create the cluster dir, owned by the server's OS user, where that user can reach it."""
        link = self.settings.state_dir / self.name
        if not link.exists():
            self.settings.state_dir.mkdir(parents=True, exist_ok=True)
            if user is not None and not can_traverse(user, self.settings.state_dir):
                # e.g. state dir under /root (mode 0700): keep the cluster where `postgres`
                # can reach it, and leave a symlink in the state dir.
                digest = hashlib.sha1(str(self.settings.state_dir).encode()).hexdigest()[:12]
                target = FALLBACK_ROOT / f"postgres-{digest}"
                target.mkdir(parents=True, exist_ok=True)
                link.symlink_to(target)
                echo(f"{self.name}: user {user} cannot reach {self.settings.state_dir}; "
                     f"cluster lives in {target} (symlinked from {link})")
            else:
                link.mkdir(parents=True)
        home = self.home
        for d in (home, self.data_dir, self.socket_dir):
            d.mkdir(exist_ok=True)
            if user is not None:
                shutil.chown(d, user, user)
        os.chmod(self.data_dir, 0o700)

    @staticmethod
    def _as_user(user: str | None, argv: list[str]) -> list[str]:
        return argv if user is None else ["runuser", "-u", user, "--", *argv]

    # --- run -----------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            self._bin("postgres"), "-D", str(self.data_dir),
            "-c", f"port={self.settings.postgres_port}",
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "logging_collector=off",
            "-c", "max_connections=200",
        ]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LANG="C", LC_ALL="C")
        if self.run_as() is not None:
            env["HOME"] = str(self.home)
        return env

    def healthy(self) -> bool:
        if not port_open("127.0.0.1", self.settings.postgres_port):
            return False
        try:
            with self.connect(SUPERUSER, "postgres") as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    def connect(self, user: str, dbname: str, autocommit: bool = False):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.settings.postgres_port, user=user,
                               dbname=dbname, connect_timeout=3, autocommit=autocommit)

    def provision(self, echo: Echo) -> None:
        role, db = self.settings.postgres_user, self.settings.postgres_db
        with self.connect(SUPERUSER, "postgres", autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                conn.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB')
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{db}" OWNER "{role}"')
        echo(f"{self.name}: role {role}, database {db} ready")

    def version(self) -> str:
        bindir = find_bindir()
        if bindir is None:
            return "not installed"
        try:
            out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                                 text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        match = re.search(r"(\d+(?:\.\d+)+)", out)
        return match.group(1) if match else out.strip()


def ensure_os_user(user: str, echo: Echo) -> None:
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    echo(f"postgres: creating system user {user}")
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--shell", "/usr/sbin/nologin", user], check=True)


def can_traverse(user: str, directory: Path) -> bool:
    """True when `user` may walk into `directory` (every ancestor searchable)."""
    result = subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(directory)],
                            capture_output=True)
    return result.returncode == 0


def drop_database(admin: dict[str, Any], name: str, attempts: int = 8) -> None:
    """Drop database `name` (IF EXISTS, WITH (FORCE)) as the non-superuser in `admin`
    (psycopg.connect keywords, autocommit), retrying while it cannot.

    FORCE terminates the other sessions on the database, but only those the caller may
    signal: an autovacuum worker (or a superuser's session) that happens to be on it makes
    the drop fail with "must be a member of the role whose process is being terminated" (seen
    in test teardowns, and after the replay benchmark's million rows, whose analyze outlasted
    the retries). When every such session is an autovacuum worker, a plain DROP follows, which
    has the server end them. Any other is short-lived, so the drop is tried again; when it
    keeps failing, the error names the sessions still on the database."""
    import time

    import psycopg

    for attempt in range(1, attempts + 1):
        try:
            with psycopg.connect(**admin) as conn:
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except psycopg.errors.InsufficientPrivilege:
                    if not _only_autovacuum_on(admin, name):
                        raise
                    # FORCE must signal every session itself, and may not signal an autovacuum
                    # worker (it has no role); a plain DROP has the server tell autovacuum
                    # workers to exit, and waits for them (a bulk load's analyze can outlast
                    # the retries below).
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            return
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse) as exc:
            if attempt == attempts:
                raise RuntimeError(f"database {name} could not be dropped after {attempts} "
                                   f"tries ({exc}); sessions still on it: "
                                   f"{_sessions_on(admin, name)}") from exc
            time.sleep(min(0.25 * attempt, 2.0))


def _only_autovacuum_on(admin: dict[str, Any], name: str) -> bool:
    """Whether every other session on database `name` is one without a role, which is what a
    non-superuser sees of an autovacuum worker (its backend type and query are hidden)."""
    sessions = _sessions_on(admin, name)
    return bool(sessions) and all("error" not in s and s["user"] is None for s in sessions)


def _sessions_on(admin: dict[str, Any], name: str) -> list[dict[str, Any]]:
    import psycopg

    try:
        with psycopg.connect(**admin) as conn:
            rows = conn.execute(
                "SELECT pid, usename, backend_type, state, left(query, 80) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
    except psycopg.Error as exc:
        return [{"error": str(exc)}]
    return [dict(zip(("pid", "user", "backend", "state", "query"), row, strict=True))
            for row in rows]
