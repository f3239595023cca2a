"""Reading the moments an auditor types ("2026-10-01 09:00") into UTC instants.

Guarantee: a time without an offset is Beijing time (Asia/Shanghai), one with an offset or
"Z" is taken as given, and the explanation says which reading was used; a bare date or
anything unparseable is refused with a hint, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

BEIJING = ZoneInfo("Asia/Shanghai")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HAS_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE)


class MomentError(ValueError):
    """A moment that cannot be read unambiguously; the message says what to type instead."""


@dataclass(frozen=True)
class Moment:
    utc: datetime
    explanation: str  # which reading was used, Chinese + English


def parse_moment(text: str) -> Moment:
    """'2026-10-01 09:00' (Beijing time) or ISO 8601 with an offset ('2026-10-01T01:00Z')."""
    raw = text.strip()
    if not raw:
        raise MomentError("empty time / 时间为空")
    if _DATE_ONLY.match(raw):
        raise MomentError(
            f"{raw!r} is a date without a time of day; say which moment, e.g. "
            f"'{raw} 00:00' or '{raw} 23:59:59' (Beijing time) / 请给出具体时刻"
        )
    iso_text = raw[:-1] + "+00:00" if raw[-1:] in "zZ" else raw
    try:
        parsed = datetime.fromisoformat(iso_text)
    except ValueError as exc:
        raise MomentError(
            f"cannot read {raw!r} as a time; use 'YYYY-MM-DD HH:MM[:SS]' (Beijing time) or "
            f"ISO 8601 with an offset such as '2026-10-01T09:00+08:00' / 时间格式无法识别"
        ) from exc
    if parsed.tzinfo is None:
        local = parsed.replace(tzinfo=BEIJING)
        utc = local.astimezone(UTC)
        how = (
            f"按北京时间解读 / read as Beijing time (UTC+08:00): "
            f"{local:%Y-%m-%d %H:%M:%S} = {utc:%Y-%m-%dT%H:%M:%S}Z"
        )
    else:
        utc = parsed.astimezone(UTC)
        bj = utc.astimezone(BEIJING)
        offset = "Z" if _HAS_OFFSET.search(raw) and raw[-1:] in "zZ" else parsed.strftime("%z")
        how = (
            f"按给定时区 {offset} 解读 / read with its own offset {offset}: "
            f"{utc:%Y-%m-%dT%H:%M:%S}Z = 北京时间 {bj:%Y-%m-%d %H:%M:%S}"
        )
    return Moment(utc, how)


def beijing(ts: datetime | None, seconds: bool = True) -> str:
    """An instant as Beijing wall time, for auditors ('2026-11-16 09:00:00')."""
    if ts is None:
        return "—"
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return ts.astimezone(BEIJING).strftime(fmt)
