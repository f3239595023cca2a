"""Settings: the one place that reads the environment.

Every knob is a GRIDFLOW_* environment variable with a default that runs the
local stack started by infra/. Production points the same names at existing
Kafka / MinIO (or S3) / PostgreSQL servers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(f"GRIDFLOW_{name}", default)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(f"GRIDFLOW_{name}")
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"GRIDFLOW_{name} must be an integer, got {raw!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(f"GRIDFLOW_{name}")
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    # Where downloaded / built server artifacts are cached (jars, minio binary).
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "gridflow")
    # Where the local stack keeps its data dirs, logs and pid files.
    state_dir: Path = field(default_factory=lambda: Path.home() / ".local" / "state" / "gridflow")

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_controller_port: int = 19093
    # Nodes of the local Kafka cluster `gridflow up` runs (KRaft, each broker + controller):
    # 1, or 3 for the production shape (node i listens on the bootstrap's port + 2(i-1), its
    # controller on kafka_controller_port + 2(i-1)).
    kafka_brokers: int = 1
    # Replication factor of the topics gridflow and faust create; 0: what fits the cluster
    # (3 on three brokers or more, else the number of brokers). min.insync.replicas follows it
    # (2 for 3 replicas), so a write acknowledged with acks=all is on two brokers at least.
    kafka_replication: int = 0
    topic_prefix: str = "gridflow"

    # Object storage (MinIO or any S3)
    s3_endpoint: str = "127.0.0.1:19000"
    s3_console_port: int = 19001
    s3_access_key: str = "gridflow"
    s3_secret_key: str = "gridflow-secret-key"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    bucket_incoming: str = "gridflow-incoming"
    bucket_archive: str = "gridflow-archive"
    archive_retention_days: int = 3650
    # Object-lock mode of archived photos: GOVERNANCE (a credential with the bypass permission,
    # e.g. the store's administrator, can shorten or lift it: tests clean up this way) or
    # COMPLIANCE (nobody can until the date has passed: production).
    archive_lock_mode: str = "GOVERNANCE"

    # Databases: the read models. SQLite is the zero-setup default.
    database_url: str = ""
    postgres_port: int = 15432
    postgres_user: str = "gridflow"
    postgres_db: str = "gridflow"

    # HTTP ingest API
    api_host: str = "127.0.0.1"
    api_port: int = 18080

    # Photo rules
    max_photo_bytes: int = 10 * 1024 * 1024
    max_photo_pixels: int = 40_000_000
    max_photos_per_report: int = 9

    # Near-duplicates: a report of the same category this close to a case filed this recently
    # joins that case.
    dedupe_radius_m: float = 50.0
    dedupe_window_hours: float = 24.0

    # Reference data (county, grids, workers, departments, categories, routing); None: the
    # packaged sample county.
    refdata_dir: Path | None = None
    # The working calendar: a directory of calendar_<year>.json (holidays and 调休, one file per
    # year, docs/CALENDAR.md); None: the bundled gridflow/refdata. Read when a worker starts.
    calendar_dir: Path | None = None

    # Time: "wall", or a scaled simulated clock shared by every process (see gridflow.clock)
    clock: str = "wall"

    # Accounts (always on the wall clock, whatever `clock` says): a session ends after this long
    # without a request, and at the latest this long after signing in.
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    # Browser sessions: the cookie's Secure flag ("auto": when the request came over TLS, or a
    # proxy says X-Forwarded-Proto: https), and the hosts allowed to frame the pages
    # (CSP frame-ancestors, space-separated, e.g. the county's 企业微信 / 钉钉 workbench hosts).
    cookie_secure: str = "auto"
    frame_ancestors: str = ""
    # Reverse proxies (their addresses, space-separated) whose X-Forwarded-For names the client:
    # sign-in locks count failures per client address, not per proxy.
    trusted_proxies: str = ""

    # SQL sink: how long the broker may hold a fetch to gather more events (one transaction
    # per fetch: a caught-up sink otherwise commits a handful of events at a time)
    sink_fetch_wait_ms: int = 100

    # Faust worker
    worker_web_port: int = 16066
    # How long the broker waits for a silent worker before handing its partitions to the
    # others (a worker killed without a goodbye stalls its partitions this long).
    worker_session_timeout_s: float = 60.0
    # Static group membership (Kafka KIP-345): a worker restarted under the same id takes its
    # partitions straight back instead of waiting out the session timeout; a cleanly stopped
    # one leaves the group at once. Empty (the default): an id derived from the host, the role
    # and the worker's own data directory (processors.tablestore.instance_id_for); "dynamic":
    # dynamic membership; anything else: that id (each worker process of a group its own).
    worker_instance_id: str = ""
    faust_data_dir: Path | None = None
    # Where the worker keeps its tables (processors.tablestore): "rocksdb" on local disk, kept
    # across restarts (each worker process takes its own directory under faust_data_dir), or
    # "memory", rebuilt from the changelogs at every start.
    worker_store: str = "rocksdb"
    # The event loop the worker runs on: "uvloop" (libuv's, in C: the worker spends about a
    # tenth less CPU per report; docs/PERFORMANCE.md, steps 10 and 11) or "asyncio" (its own).
    # Where uvloop is not installed (it has no Windows build) the worker says so and runs on
    # asyncio's.
    worker_loop: str = "uvloop"
    # A finished case (closed, or not filed) untouched this many days of domain time leaves the
    # case processor's table (a tombstone on its changelog; gridflow.core.eviction); a later
    # command for it is refused with code case_evicted. 0: kept for ever.
    closed_case_evict_days: float = 30.0
    # The case processor files the stage clocks of the events it decides in the same step
    # (processors.deadlines.ClockFollower), and marks those events so that the deadline agent
    # only reads what an older worker wrote. Off: the deadline agent follows every case event
    # from the log, as before (issue 16, step 4).
    deadlines_inline: bool = True

    # Operators' view (gridflow.telemetry): the worker, the sink and the notifier each serve
    # Prometheus metrics on their own port (0: none) on `metrics_host`; the API serves them at
    # /metrics. Logs as "text" lines for people or "json" lines for a log collector.
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 18091
    sink_metrics_port: int = 18092
    notify_metrics_port: int = 18093
    log_format: str = "text"

    def __post_init__(self) -> None:
        mode = self.archive_lock_mode.strip().upper()
        if mode not in ("GOVERNANCE", "COMPLIANCE"):
            raise ValueError("GRIDFLOW_ARCHIVE_LOCK_MODE must be GOVERNANCE or COMPLIANCE, "
                             f"got {self.archive_lock_mode!r}")
        object.__setattr__(self, "archive_lock_mode", mode)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.state_dir / 'gridflow.db'}")
        if self.faust_data_dir is None:
            object.__setattr__(self, "faust_data_dir", self.state_dir / "faust")
        if self.worker_store not in ("rocksdb", "memory"):
            raise ValueError(f"GRIDFLOW_WORKER_STORE must be rocksdb or memory, got {self.worker_store!r}")
        if self.worker_loop not in ("uvloop", "asyncio"):
            raise ValueError(f"GRIDFLOW_WORKER_LOOP must be uvloop or asyncio, got {self.worker_loop!r}")
        if self.kafka_brokers < 1:
            raise ValueError(f"GRIDFLOW_KAFKA_BROKERS must be at least 1, got {self.kafka_brokers}")
        if self.kafka_replication < 0:
            raise ValueError("GRIDFLOW_KAFKA_REPLICATION must be 0 (auto) or more, "
                             f"got {self.kafka_replication}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"GRIDFLOW_LOG_FORMAT must be text or json, got {self.log_format!r}")

    @property
    def postgres_url(self) -> str:
        """URL of the local PostgreSQL started by infra/ (tests and `--db postgres`)."""
        return (
            f"postgresql+psycopg://{self.postgres_user}@127.0.0.1:{self.postgres_port}/"
            f"{self.postgres_db}"
        )

    def kafka_nodes(self) -> list[tuple[str, str]]:
        """(broker address, controller address) of each node of the local Kafka cluster, from
        the first bootstrap address and the controller port, two ports apart per node."""
        host, port = self.kafka_bootstrap.split(",")[0].strip().rsplit(":", 1)
        return [(f"{host}:{int(port) + 2 * i}", f"{host}:{self.kafka_controller_port + 2 * i}")
                for i in range(self.kafka_brokers)]

    def with_brokers(self, count: int) -> Settings:
        """These settings for a local cluster of `count` nodes: clients bootstrap from every
        node (a client started while one is down still finds the others)."""
        shaped = replace(self, kafka_brokers=count)
        if count > 1 and "," not in self.kafka_bootstrap:
            shaped = replace(shaped, kafka_bootstrap=",".join(b for b, _ in shaped.kafka_nodes()))
        return shaped

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def load_settings() -> Settings:
    """Build the settings object from GRIDFLOW_* environment variables."""
    base = Settings()
    cache_dir = Path(_env("CACHE_DIR", str(base.cache_dir))).expanduser()
    state_dir = Path(_env("STATE_DIR", str(base.state_dir))).expanduser()
    settings = Settings(
        cache_dir=cache_dir,
        state_dir=state_dir,
        kafka_bootstrap=_env("KAFKA_BOOTSTRAP", base.kafka_bootstrap),
        kafka_controller_port=_env_int("KAFKA_CONTROLLER_PORT", base.kafka_controller_port),
        kafka_replication=_env_int("KAFKA_REPLICATION", base.kafka_replication),
        topic_prefix=_env("TOPIC_PREFIX", base.topic_prefix),
        s3_endpoint=_env("S3_ENDPOINT", base.s3_endpoint),
        s3_console_port=_env_int("S3_CONSOLE_PORT", base.s3_console_port),
        s3_access_key=_env("S3_ACCESS_KEY", base.s3_access_key),
        s3_secret_key=_env("S3_SECRET_KEY", base.s3_secret_key),
        s3_secure=_env_bool("S3_SECURE", base.s3_secure),
        s3_region=_env("S3_REGION", base.s3_region),
        bucket_incoming=_env("BUCKET_INCOMING", base.bucket_incoming),
        bucket_archive=_env("BUCKET_ARCHIVE", base.bucket_archive),
        archive_retention_days=_env_int("ARCHIVE_RETENTION_DAYS", base.archive_retention_days),
        archive_lock_mode=_env("ARCHIVE_LOCK_MODE", base.archive_lock_mode),
        database_url=_env("DATABASE_URL", ""),
        postgres_port=_env_int("POSTGRES_PORT", base.postgres_port),
        postgres_user=_env("POSTGRES_USER", base.postgres_user),
        postgres_db=_env("POSTGRES_DB", base.postgres_db),
        api_host=_env("API_HOST", base.api_host),
        api_port=_env_int("API_PORT", base.api_port),
        max_photo_bytes=_env_int("MAX_PHOTO_BYTES", base.max_photo_bytes),
        max_photo_pixels=_env_int("MAX_PHOTO_PIXELS", base.max_photo_pixels),
        worker_web_port=_env_int("WORKER_WEB_PORT", base.worker_web_port),
        clock=_env("CLOCK", base.clock),
        session_idle_minutes=_env_int("SESSION_IDLE_MINUTES", base.session_idle_minutes),
        session_max_hours=_env_int("SESSION_MAX_HOURS", base.session_max_hours),
        cookie_secure=_env("COOKIE_SECURE", base.cookie_secure),
        frame_ancestors=_env("FRAME_ANCESTORS", base.frame_ancestors),
        trusted_proxies=_env("TRUSTED_PROXIES", base.trusted_proxies),
        dedupe_radius_m=float(_env("DEDUPE_RADIUS_M", str(base.dedupe_radius_m))),
        dedupe_window_hours=float(_env("DEDUPE_WINDOW_HOURS", str(base.dedupe_window_hours))),
        sink_fetch_wait_ms=int(_env("SINK_FETCH_WAIT_MS", str(base.sink_fetch_wait_ms))),
        worker_session_timeout_s=float(_env("WORKER_SESSION_TIMEOUT_S",
                                            str(base.worker_session_timeout_s))),
        worker_instance_id=_env("WORKER_INSTANCE_ID", ""),
        refdata_dir=Path(_env("REFDATA_DIR", "")).expanduser() if _env("REFDATA_DIR", "") else None,
        calendar_dir=(Path(_env("CALENDAR_DIR", "")).expanduser() if _env("CALENDAR_DIR", "")
                      else None),
        faust_data_dir=Path(_env("FAUST_DATA_DIR", str(state_dir / "faust"))),
        worker_store=_env("WORKER_STORE", base.worker_store),
        worker_loop=_env("WORKER_LOOP", base.worker_loop).strip().lower(),
        closed_case_evict_days=float(_env("CLOSED_CASE_EVICT_DAYS",
                                          str(base.closed_case_evict_days))),
        deadlines_inline=_env_bool("DEADLINES_INLINE", base.deadlines_inline),
        metrics_host=_env("METRICS_HOST", base.metrics_host),
        worker_metrics_port=_env_int("WORKER_METRICS_PORT", base.worker_metrics_port),
        sink_metrics_port=_env_int("SINK_METRICS_PORT", base.sink_metrics_port),
        notify_metrics_port=_env_int("NOTIFY_METRICS_PORT", base.notify_metrics_port),
        log_format=_env("LOG_FORMAT", base.log_format).strip().lower(),
    )
    return settings.with_brokers(_env_int("KAFKA_BROKERS", base.kafka_brokers))


_ENV_FIELDS = {
    "cache_dir": "CACHE_DIR", "state_dir": "STATE_DIR", "kafka_bootstrap": "KAFKA_BOOTSTRAP",
    "kafka_controller_port": "KAFKA_CONTROLLER_PORT", "topic_prefix": "TOPIC_PREFIX",
    "kafka_brokers": "KAFKA_BROKERS", "kafka_replication": "KAFKA_REPLICATION",
    "s3_endpoint": "S3_ENDPOINT", "s3_console_port": "S3_CONSOLE_PORT",
    "s3_access_key": "S3_ACCESS_KEY", "s3_secret_key": "S3_SECRET_KEY", "s3_secure": "S3_SECURE",
    "s3_region": "S3_REGION", "bucket_incoming": "BUCKET_INCOMING",
    "bucket_archive": "BUCKET_ARCHIVE", "archive_retention_days": "ARCHIVE_RETENTION_DAYS",
    "archive_lock_mode": "ARCHIVE_LOCK_MODE",
    "database_url": "DATABASE_URL", "postgres_port": "POSTGRES_PORT",
    "postgres_user": "POSTGRES_USER", "postgres_db": "POSTGRES_DB", "api_host": "API_HOST",
    "api_port": "API_PORT", "max_photo_bytes": "MAX_PHOTO_BYTES",
    "max_photo_pixels": "MAX_PHOTO_PIXELS", "worker_web_port": "WORKER_WEB_PORT",
    "clock": "CLOCK", "faust_data_dir": "FAUST_DATA_DIR", "refdata_dir": "REFDATA_DIR",
    "calendar_dir": "CALENDAR_DIR",
    "dedupe_radius_m": "DEDUPE_RADIUS_M", "dedupe_window_hours": "DEDUPE_WINDOW_HOURS",
    "sink_fetch_wait_ms": "SINK_FETCH_WAIT_MS",
    "worker_session_timeout_s": "WORKER_SESSION_TIMEOUT_S",
    "worker_instance_id": "WORKER_INSTANCE_ID", "worker_store": "WORKER_STORE",
    "worker_loop": "WORKER_LOOP",
    "closed_case_evict_days": "CLOSED_CASE_EVICT_DAYS", "deadlines_inline": "DEADLINES_INLINE",
    "session_idle_minutes": "SESSION_IDLE_MINUTES", "session_max_hours": "SESSION_MAX_HOURS",
    "cookie_secure": "COOKIE_SECURE", "frame_ancestors": "FRAME_ANCESTORS",
    "trusted_proxies": "TRUSTED_PROXIES",
    "metrics_host": "METRICS_HOST", "worker_metrics_port": "WORKER_METRICS_PORT",
    "sink_metrics_port": "SINK_METRICS_PORT", "notify_metrics_port": "NOTIFY_METRICS_PORT",
    "log_format": "LOG_FORMAT",
}


def settings_env(settings: Settings) -> dict[str, str]:
    """The GRIDFLOW_* environment that makes a child process load exactly these settings."""
    env = {}
    for attr, name in _ENV_FIELDS.items():
        value = getattr(settings, attr)
        if value is None:
            continue
        env[f"GRIDFLOW_{name}"] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return env
