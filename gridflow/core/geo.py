"""Plane geometry for unit grids: point-in-polygon, grid lookup, distances.

Pure and deterministic: a point on a shared edge belongs to exactly one of the two
grids (half-open ray casting), and a point is looked up in milliseconds or less.
Public functions take (lat, lon); polygon rings store GeoJSON (lon, lat) pairs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gridflow.core.refdata import Grid, ReferenceData

Position = tuple[float, float]  # (lon, lat), as in GeoJSON
Ring = tuple[Position, ...]  # closed: first == last
Polygon = tuple[Ring, ...]  # exterior ring, then holes


@dataclass(frozen=True)
class BBox:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def contains(self, lat: float, lon: float) -> bool:
        return self.min_lat <= lat <= self.max_lat and self.min_lon <= lon <= self.max_lon

    def intersects(self, other: BBox) -> bool:
        return not (
            other.min_lon > self.max_lon or other.max_lon < self.min_lon
            or other.min_lat > self.max_lat or other.max_lat < self.min_lat
        )


EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS-84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bbox_of(polygons: Iterable[Polygon]) -> BBox:
    xs: list[float] = []
    ys: list[float] = []
    for polygon in polygons:
        for x, y in polygon[0]:
            xs.append(x)
            ys.append(y)
    if not xs:
        raise ValueError("empty geometry")
    return BBox(min(xs), min(ys), max(xs), max(ys))


def _ring_contains(x: float, y: float, ring: Ring) -> bool:
    """Even-odd ray casting towards +x. Half-open in y, so shared edges never double count."""
    inside = False
    x1, y1 = ring[-1]
    for x2, y2 in ring:
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
        x1, y1 = x2, y2
    return inside


def _polygon_contains(x: float, y: float, polygon: Polygon) -> bool:
    if not _ring_contains(x, y, polygon[0]):
        return False
    return not any(_ring_contains(x, y, hole) for hole in polygon[1:])


def point_in_polygon(lat: float, lon: float, polygon: Sequence[Sequence[Position]]) -> bool:
    """True when (lat, lon) lies inside the polygon's exterior ring and outside its holes."""
    rings = tuple(tuple((float(p[0]), float(p[1])) for p in ring) for ring in polygon)
    return _polygon_contains(lon, lat, rings)


def grid_contains(grid: Grid, lat: float, lon: float) -> bool:
    """True when the point lies in the grid (bbox prefilter, then every polygon part)."""
    if not grid.bbox.contains(lat, lon):
        return False
    return any(_polygon_contains(lon, lat, polygon) for polygon in grid.polygons)


class _HasShape(Protocol):
    @property
    def code(self) -> str: ...

    @property
    def bbox(self) -> BBox: ...

    @property
    def polygons(self) -> tuple[Polygon, ...]: ...


class GridIndex:
    """Uniform bucket index over grid bounding boxes: a lookup tests only a few polygons."""

    def __init__(self, grids: Iterable[Grid], cells: int = 32) -> None:
        self._grids: tuple[Grid, ...] = tuple(sorted(grids, key=lambda g: g.code))
        if not self._grids:
            self.bbox = BBox(0.0, 0.0, 0.0, 0.0)
            self._buckets: dict[tuple[int, int], tuple[Grid, ...]] = {}
            self._nx = self._ny = 1
            self._dx = self._dy = 1.0
            return
        self.bbox = BBox(
            min(g.bbox.min_lon for g in self._grids), min(g.bbox.min_lat for g in self._grids),
            max(g.bbox.max_lon for g in self._grids), max(g.bbox.max_lat for g in self._grids),
        )
        self._nx = self._ny = max(1, cells)
        self._dx = (self.bbox.max_lon - self.bbox.min_lon) / self._nx or 1.0
        self._dy = (self.bbox.max_lat - self.bbox.min_lat) / self._ny or 1.0
        buckets: dict[tuple[int, int], list[Grid]] = {}
        for grid in self._grids:
            ix0, iy0 = self._cell(grid.bbox.min_lat, grid.bbox.min_lon)
            ix1, iy1 = self._cell(grid.bbox.max_lat, grid.bbox.max_lon)
            for ix in range(ix0, ix1 + 1):
                for iy in range(iy0, iy1 + 1):
                    buckets.setdefault((ix, iy), []).append(grid)
        self._buckets = {k: tuple(v) for k, v in buckets.items()}

    def _cell(self, lat: float, lon: float) -> tuple[int, int]:
        ix = int((lon - self.bbox.min_lon) / self._dx)
        iy = int((lat - self.bbox.min_lat) / self._dy)
        return min(max(ix, 0), self._nx - 1), min(max(iy, 0), self._ny - 1)

    def candidates(self, lat: float, lon: float) -> tuple[Grid, ...]:
        """Grids whose bounding box bucket covers the point (a superset of the answer)."""
        if not self.bbox.contains(lat, lon):
            return ()
        return self._buckets.get(self._cell(lat, lon), ())

    def locate(self, lat: float, lon: float) -> Grid | None:
        """The grid containing the point; if bad data makes grids overlap, the lowest code."""
        for grid in self.candidates(lat, lon):
            if grid_contains(grid, lat, lon):
                return grid
        return None

    def locate_all(self, lat: float, lon: float) -> list[Grid]:
        """Every grid containing the point (more than one only for overlapping data)."""
        return [g for g in self.candidates(lat, lon) if grid_contains(g, lat, lon)]


def locate(ref: ReferenceData, lat: float, lon: float) -> Grid | None:
    """The unit grid of the county that contains (lat, lon), or None outside every grid."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    return ref.spatial.locate(lat, lon)


def representative_point(grid: _HasShape) -> tuple[float, float]:
    """A deterministic (lat, lon) inside the grid, near its middle: the midpoint of the widest
    span of the most central horizontal scan line that crosses it well."""
    polygon = max(grid.polygons, key=lambda p: _ring_area(p[0]))
    box = bbox_of([polygon])
    fallback: tuple[float, float, float] | None = None  # (width, x, y)
    for frac in (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8, 0.1, 0.9):
        y = box.min_lat + (box.max_lat - box.min_lat) * frac
        xs = sorted(_crossings(y, polygon))
        spans = [(b - a, (a + b) / 2, y) for a, b in zip(xs[0::2], xs[1::2], strict=False)]
        if not spans:
            continue
        widest = max(spans)
        if widest[0] >= 0.25 * (box.max_lon - box.min_lon):
            return widest[2], widest[1]
        if fallback is None or widest[0] > fallback[0]:
            fallback = widest
    if fallback is None:
        raise ValueError(f"grid {grid.code} has no interior")
    return fallback[2], fallback[1]


def _crossings(y: float, polygon: Polygon) -> list[float]:
    xs: list[float] = []
    for ring in polygon:
        x1, y1 = ring[-1]
        for x2, y2 in ring:
            if (y1 > y) != (y2 > y):
                xs.append(x1 + (y - y1) * (x2 - x1) / (y2 - y1))
            x1, y1 = x2, y2
    return xs


def _ring_area(ring: Ring) -> float:
    s = 0.0
    for (x1, y1), (x2, y2) in zip(ring, ring[1:], strict=False):
        s += x1 * y2 - x2 * y1
    return abs(s) / 2


def random_point_in(grid: Grid, rng: random.Random, tries: int = 1000) -> tuple[float, float]:
    """A uniformly random (lat, lon) inside the grid, drawn from `rng` (deterministic per seed)."""
    b = grid.bbox
    for _ in range(tries):
        lat = rng.uniform(b.min_lat, b.max_lat)
        lon = rng.uniform(b.min_lon, b.max_lon)
        if grid_contains(grid, lat, lon):
            return lat, lon
    return representative_point(grid)
