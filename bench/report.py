"""The results: the machine they were measured on, the table, and the generated section of
docs/PERFORMANCE.md (between the bench markers; the hand-written analysis around it stays).
"""

from __future__ import annotations

import os
import platform
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import Figure
from gridflow.settings import Settings

BEGIN = "<!-- bench:begin (written by `gridflow bench`; edit outside these markers) -->"
END = "<!-- bench:end -->"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def _pg_version(settings: Settings) -> str:
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=settings.postgres_port,
                             user=settings.postgres_user, dbname=settings.postgres_db,
                             connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "unknown"
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        return f"unknown ({type(exc).__name__})"


def machine(settings: Settings) -> dict[str, Any]:
    """Where and with what the figures were measured."""
    from importlib.metadata import version

    from infra import stack

    servers = {row.server: row.version for row in stack.status(settings)}
    load = os.getloadavg()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "memory": f"{_memory_gib():.1f} GiB",
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "kafka": servers.get("kafka", "unknown"),
        "minio": servers.get("minio", "unknown"),
        "postgresql": _pg_version(settings),
        "sqlite": sqlite3.sqlite_version,
        "libraries": ", ".join(
            f"{name} {version(name)}"
            for name in ("kafka-python", "aiokafka", "faust-streaming", "SQLAlchemy", "psycopg",
                         "minio", "fastapi", "uvicorn")
        ),
        "load average at start": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


def _ratio(f: Figure) -> str:
    return "—" if f.ratio is None else f"{f.ratio:.2f}"


def table(figures: list[Figure]) -> str:
    """A Markdown table, readable in a terminal too."""
    head = ["what", "our figure", "raw baseline (same run)", "ratio", "target", "verdict"]
    rows = [[f.what, f.ours, f.baseline, _ratio(f), f.target, f.verdict] for f in figures]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(head), "| " + " | ".join("-" * w for w in widths) + " |",
                      *(line(r) for r in rows)])


def section(figures: list[Figure], info: dict[str, Any], sizes: list[str], command: str,
            seconds: float) -> str:
    lines = [BEGIN, "", f"Measured by `{command}` in {seconds / 60:.1f} min.", ""]
    lines += [f"- **{k}**: {v}" for k, v in info.items()]
    lines += ["", "Sizes used:", ""] + [f"- {s}" for s in sizes] + ["", table(figures), ""]
    notes = [f for f in figures if f.note]
    if notes:
        lines += ["Details:", ""] + [f"- *{f.what}*: {f.note}" for f in notes] + [""]
    lines.append(END)
    return "\n".join(lines)


def write(path: Path, generated: str) -> None:
    """Replace the generated section of `path` (or append it if the markers are missing)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Performance\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + generated + tail
    else:
        text = text.rstrip("\n") + "\n\n" + generated + "\n"
    path.write_text(text, encoding="utf-8")
