"""Near-duplicate detection: is a new report the same problem as a recent open case?

Pure and deterministic: same category, within `radius_m` metres and within `window` of
`now`; among several matches the nearest wins, then the earliest filed, then the lowest id.
Candidates may be `OpenCase` objects or plain dicts (e.g. from a state store).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from gridflow.core.geo import haversine_m
from gridflow.events import parse_ts

DEFAULT_RADIUS_M = 50.0
DEFAULT_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class OpenCase:
    """A recent open case, as far as duplicate detection needs to know it."""

    case_id: str
    category_code: str
    lat: float
    lon: float
    filed_at: datetime  # timezone-aware

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "category_code": self.category_code, "lat": self.lat,
                "lon": self.lon, "filed_at": self.filed_at.isoformat()}


@dataclass(frozen=True)
class DuplicateMatch:
    case_id: str
    distance_m: float
    filed_at: datetime


C = TypeVar("C")  # OpenCase or a mapping with the same keys


def _get(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, Mapping) else getattr(item, name)


def _filed_at(item: Any) -> datetime:
    value = _get(item, "filed_at")
    return value if isinstance(value, datetime) else parse_ts(value, "filed_at")


def prune(candidates: Iterable[C], now: datetime, window: timedelta = DEFAULT_WINDOW) -> list[C]:
    """The candidates filed no earlier than `now - window` (same objects, same order)."""
    oldest = now - window
    return [c for c in candidates if _filed_at(c) >= oldest]


def find_match(
    candidates: Iterable[OpenCase | Mapping[str, Any]],
    report: Any,
    now: datetime,
    radius_m: float = DEFAULT_RADIUS_M,
    window: timedelta = DEFAULT_WINDOW,
) -> DuplicateMatch | None:
    """The open case `report` duplicates, with its distance; None if it is a new problem.

    `report` is anything with category_code, lat and lon (attributes or mapping keys),
    e.g. an intake `Report`. A candidate matches when its category is the same, it lies
    within radius_m metres, and it was filed within `window` of `now` (either side).
    """
    category = str(_get(report, "category_code"))
    lat, lon = float(_get(report, "lat")), float(_get(report, "lon"))
    best: tuple[float, datetime, str] | None = None
    for c in candidates:
        if _get(c, "category_code") != category:
            continue
        filed_at = _filed_at(c)
        if abs(now - filed_at) > window:
            continue
        distance = haversine_m(lat, lon, float(_get(c, "lat")), float(_get(c, "lon")))
        if distance > radius_m:
            continue
        key = (distance, filed_at, str(_get(c, "case_id")))
        if best is None or key < best:
            best = key
    if best is None:
        return None
    return DuplicateMatch(case_id=best[2], distance_m=best[0], filed_at=best[1])


def find_duplicate(
    candidates: Iterable[OpenCase | Mapping[str, Any]],
    report: Any,
    now: datetime,
    radius_m: float = DEFAULT_RADIUS_M,
    window: timedelta = DEFAULT_WINDOW,
) -> str | None:
    """The case id `report` duplicates, or None (see `find_match`)."""
    match = find_match(candidates, report, now, radius_m, window)
    return match.case_id if match else None
