"""MinIO object storage, built from source with `go install` at a pinned version and run on loopback.

Guarantee: the binary is built once into <cache>/bin; after provision the incoming bucket
exists and the archive bucket exists with object lock enabled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

from gridflow.settings import Settings
from infra.procs import Echo, ServerError, file_lock, port_open, run_logged, split_host_port
from infra.server import Server, require_tool

MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"


def client(settings: Settings, timeout_s: float = 10.0, retries: int = 0):  # type: ignore[no-untyped-def]
    """A minio SDK client for `settings` with bounded timeouts (the SDK default is 5 minutes)."""
    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(timeout_s, 3.0), read=timeout_s),
        retries=urllib3.Retry(total=retries, backoff_factor=0.2),
    )
    return Minio(
        settings.s3_endpoint, access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
        secure=settings.s3_secure, region=settings.s3_region, http_client=http,
    )


class MinIOServer(Server):
    name = "minio"
    title = "MinIO"
    start_timeout_s = 30.0
    stop_timeout_s = 20.0

    # --- paths ---------------------------------------------------------------
    @property
    def binary(self) -> Path:
        return self.settings.cache_dir / "bin" / "minio"

    @property
    def stamp(self) -> Path:
        return self.settings.cache_dir / "bin" / "minio.version"

    # --- addresses -----------------------------------------------------------
    @property
    def address(self) -> str:
        return self.settings.s3_endpoint

    @property
    def console_address(self) -> str:
        host, _ = split_host_port(self.address)
        return f"{host}:{self.settings.s3_console_port}"

    def listen_addresses(self) -> list[tuple[str, int]]:
        return [split_host_port(self.address), split_host_port(self.console_address)]

    # --- install -------------------------------------------------------------
    def installed(self) -> bool:
        if not os.access(self.binary, os.X_OK):
            return False
        if self.stamp.is_file():
            return self.stamp.read_text().strip() == MINIO_VERSION
        # A binary built by hand (or by an older infra): trust it if Go says it is our version.
        if built_version(self.binary) == MINIO_VERSION:
            self.stamp.write_text(MINIO_VERSION + "\n")
            return True
        return False

    def install(self, echo: Echo) -> None:
        if self.installed():
            return
        go = require_tool(self.name, "go", "install Go 1.24+ from https://go.dev/dl/ "
                          "(MinIO is built from source, first time only)")
        with file_lock(self.settings.cache_dir / ".minio-build.lock", "MinIO build", echo):
            if self.installed():
                return
            self._build(go, echo)

    def _build(self, go: str, echo: Echo) -> None:
        echo(f"{self.name}: building MinIO {MINIO_VERSION} from source, first time only, "
             f"several minutes (log: {self.install_log}) ...")
        staging = self.binary.parent / ".build"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        env = dict(os.environ, GOBIN=str(staging), CGO_ENABLED="0")
        run_logged(self.name, [go, "install", f"{MINIO_MODULE}@{MINIO_VERSION}"],
                   self.install_log, "building MinIO", echo, env=env, timeout_s=3600,
                   progress_every_s=30)
        (staging / "minio").replace(self.binary)
        staging.rmdir()
        self.stamp.write_text(MINIO_VERSION + "\n")
        echo(f"{self.name}: built {self.binary}")

    # --- run -----------------------------------------------------------------
    def prepare(self, echo: Echo) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [str(self.binary), "server", str(self.data_dir),
                "--address", self.address, "--console-address", self.console_address]

    def environment(self) -> dict[str, str]:
        return dict(
            os.environ,
            MINIO_ROOT_USER=self.settings.s3_access_key,
            MINIO_ROOT_PASSWORD=self.settings.s3_secret_key,
            MINIO_REGION=self.settings.s3_region,
            MINIO_UPDATE="off",
        )

    def healthy(self) -> bool:
        host, port = split_host_port(self.address)
        if not port_open(host, port):
            return False
        try:
            with urllib.request.urlopen(f"http://{self.address}/minio/health/live", timeout=3) as r:
                if r.status != 200:
                    return False
            client(self.settings, timeout_s=3).list_buckets()
            return True
        except Exception:
            return False

    def provision(self, echo: Echo) -> None:
        s3 = client(self.settings, retries=3)
        incoming, archive = self.settings.bucket_incoming, self.settings.bucket_archive
        if not s3.bucket_exists(incoming):
            s3.make_bucket(incoming)
        if not s3.bucket_exists(archive):
            s3.make_bucket(archive, object_lock=True)
        elif not has_object_lock(s3, archive):
            raise ServerError(self.name, f"bucket {archive} exists without object lock; "
                              "delete it (or pick another GRIDFLOW_BUCKET_ARCHIVE) and run up again")
        echo(f"{self.name}: buckets {incoming}, {archive} (object lock) ready")

    def version(self) -> str:
        return MINIO_VERSION if self.installed() else f"{MINIO_VERSION} (not built)"


def has_object_lock(s3, bucket: str) -> bool:  # type: ignore[no-untyped-def]
    from minio.error import S3Error

    try:
        s3.get_object_lock_config(bucket)
        return True
    except S3Error as exc:
        if exc.code == "ObjectLockConfigurationNotFoundError":
            return False
        raise


def built_version(binary: Path) -> str | None:
    """Module version Go recorded in a binary (`go version -m`), or None if unknown."""
    go = shutil.which("go")
    if go is None:
        return None
    try:
        out = subprocess.run([go, "version", "-m", str(binary)], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "mod" and parts[1] == MINIO_MODULE:
            return parts[2]
    return None
