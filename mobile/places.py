"""The places a QR code names (码上说): a unit grid, or a door plate inside one.

A code's URL is `/r/<grid code>` for a grid (the location is a point inside it) or
`/r/<grid code>?at=<lat>,<lon>&n=<门牌>` for a door plate. Pure: a place is checked against
the reference data (the point must lie in the grid it names), never trusted as given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlencode

from gridflow.core.geo import locate, representative_point
from gridflow.core.refdata import ReferenceData

MAX_LABEL = 40


@dataclass(frozen=True)
class Place:
    grid_code: str
    grid_name: str
    village_name: str
    township_name: str
    lat: float
    lon: float
    label: str  # the door plate, or the grid's name
    plate: bool  # a door plate (its own point) rather than the grid's middle

    @property
    def where(self) -> str:
        """The place in words: 白鹤乡 白鹤村 白鹤村西片网格 (门牌)."""
        parts = [self.township_name, self.village_name, self.grid_name]
        if self.plate:
            parts.append(self.label)
        return " ".join(p for p in parts if p)

    def path(self) -> str:
        """The URL path (and query) a QR code for this place holds."""
        if not self.plate:
            return f"/r/{self.grid_code}"
        query = urlencode({"at": f"{self.lat:.6f},{self.lon:.6f}", "n": self.label})
        return f"/r/{self.grid_code}?{query}"


def _clean_label(label: str) -> str:
    text = " ".join(label.split())
    return "".join(ch for ch in text if ch.isprintable())[:MAX_LABEL]


def grid_place(ref: ReferenceData, grid_code: str) -> Place | None:
    grid = ref.grids.get(grid_code)
    if grid is None:
        return None
    lat, lon = representative_point(grid)
    village = ref.villages.get(grid.village_code)
    township = ref.townships.get(grid.township_code)
    return Place(grid.code, grid.name, village.name if village else "",
                 township.name if township else "", round(lat, 6), round(lon, 6), grid.name,
                 False)


def parse_point(text: str) -> tuple[float, float] | None:
    lat_s, sep, lon_s = text.partition(",")
    if not sep:
        return None
    try:
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90
            and -180 <= lon <= 180):
        return None
    return lat, lon


def find_place(ref: ReferenceData, grid_code: str, at: str | None = None,
               label: str | None = None) -> Place | None:
    """The place of a scanned code; None for a grid that does not exist. A door plate whose
    point lies outside the grid it names is taken as the grid itself (a misprinted code
    still reports somewhere true)."""
    place = grid_place(ref, grid_code)
    if place is None or not at:
        return place
    point = parse_point(at)
    name = _clean_label(label or "")
    if point is None or not name:
        return place
    found = locate(ref, point[0], point[1])
    if found is None or found.code != grid_code:
        return place
    return Place(place.grid_code, place.grid_name, place.village_name, place.township_name,
                 round(point[0], 6), round(point[1], 6), name, True)


def door_plate(ref: ReferenceData, label: str, lat: float, lon: float) -> Place | None:
    """A door plate at (lat, lon): its grid looked up; None outside every grid."""
    grid = locate(ref, lat, lon)
    if grid is None:
        return None
    return find_place(ref, grid.code, f"{lat},{lon}", label)
