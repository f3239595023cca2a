"""Maps as SVG from the county's own grid polygons (its GeoJSON): no tile server, no script.

Pure. A local equirectangular projection (longitudes shrunk by cos(latitude) at the centre) is
exact enough at county scale; y grows downwards as SVG's does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gridflow.core.geo import BBox
from gridflow.core.refdata import Grid


@dataclass(frozen=True)
class Projection:
    min_lon: float
    max_lat: float
    kx: float  # cos(latitude at the centre)
    scale: float  # pixels per (shrunk) degree
    pad: float
    width: float
    height: float

    def raw_xy(self, lon: float, lat: float) -> tuple[float, float]:
        return (self.pad + (lon - self.min_lon) * self.kx * self.scale,
                self.pad + (self.max_lat - lat) * self.scale)

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        x, y = self.raw_xy(lon, lat)
        return round(x, 1), round(y, 1)

    def inside(self, lon: float | None, lat: float | None) -> bool:
        if lon is None or lat is None:
            return False
        x, y = self.xy(lon, lat)
        return 0 <= x <= self.width and 0 <= y <= self.height


def union(boxes: Iterable[BBox]) -> BBox:
    boxes = list(boxes)
    return BBox(min(b.min_lon for b in boxes), min(b.min_lat for b in boxes),
                max(b.max_lon for b in boxes), max(b.max_lat for b in boxes))


def projection(box: BBox, width: float, max_height: float | None = None,
               pad: float = 8.0) -> Projection:
    """Fit `box` into `width` pixels, and `max_height` if given (the other side follows the
    box's shape)."""
    kx = math.cos(math.radians((box.min_lat + box.max_lat) / 2))
    span_x = max((box.max_lon - box.min_lon) * kx, 1e-9)
    span_y = max(box.max_lat - box.min_lat, 1e-9)
    scale = (width - 2 * pad) / span_x
    if max_height is not None:
        scale = min(scale, (max_height - 2 * pad) / span_y)
    return Projection(box.min_lon, box.max_lat, kx, scale, pad,
                      round(span_x * scale + 2 * pad, 1), round(span_y * scale + 2 * pad, 1))


def ring_path(p: Projection, ring: Sequence[tuple[float, float]]) -> str:
    points = [p.xy(lon, lat) for lon, lat in ring]
    if not points:
        return ""
    head, *rest = points
    return f"M{head[0]} {head[1]}" + "".join(f"L{x} {y}" for x, y in rest) + "Z"


def grid_path(p: Projection, grid: Grid) -> str:
    """Every polygon of the grid, holes included (fill-rule evenodd)."""
    return "".join(ring_path(p, ring) for polygon in grid.polygons for ring in polygon)


def centroid(grid: Grid) -> tuple[float, float]:
    """(lon, lat) at the middle of the grid's bounding box (where its label goes)."""
    b = grid.bbox
    return (b.min_lon + b.max_lon) / 2, (b.min_lat + b.max_lat) / 2
