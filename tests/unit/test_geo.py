"""Geometry: a point is located in the grid that contains it, holes and edges included."""

from __future__ import annotations

import math
import random

import pytest

from gridflow.core import geo
from gridflow.core.refdata import ReferenceData, load_reference_data

SQUARE = [[(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0), (0.0, 0.0)]]
WITH_HOLE = [
    [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0), (0.0, 0.0)],
    [(4.0, 4.0), (4.0, 6.0), (6.0, 6.0), (6.0, 4.0), (4.0, 4.0)],
]

MARKET = "421099201202003"  # 白鹤村集镇网格: an enclave in a hole of 白鹤村西片网格
AROUND_MARKET = "421099201202002"


@pytest.fixture(scope="module")
def ref() -> ReferenceData:
    return load_reference_data()


def test_point_in_square() -> None:
    assert geo.point_in_polygon(5, 5, SQUARE)
    assert not geo.point_in_polygon(11, 5, SQUARE)
    assert not geo.point_in_polygon(5, -0.1, SQUARE)


def test_hole_is_outside() -> None:
    assert geo.point_in_polygon(2, 2, WITH_HOLE)
    assert not geo.point_in_polygon(5, 5, WITH_HOLE)  # (lat 5, lon 5) is in the hole


def test_shared_edge_belongs_to_exactly_one_side() -> None:
    left = [[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]]
    right = [[(1.0, 0.0), (2.0, 0.0), (2.0, 1.0), (1.0, 1.0), (1.0, 0.0)]]
    for lat in (0.1, 0.5, 0.9):
        hits = [geo.point_in_polygon(lat, 1.0, p) for p in (left, right)]
        assert sum(hits) == 1


def test_each_grid_locates_its_own_points(ref: ReferenceData) -> None:
    rng = random.Random(7)
    for code, grid in ref.grids.items():
        for _ in range(5):
            lat, lon = geo.random_point_in(grid, rng)
            located = geo.locate(ref, lat, lon)
            assert located is not None and located.code == code


def test_enclave_in_a_hole(ref: ReferenceData) -> None:
    market = ref.grids[MARKET]
    lat, lon = geo.representative_point(market)
    assert geo.locate(ref, lat, lon) is market
    assert not geo.grid_contains(ref.grids[AROUND_MARKET], lat, lon)
    # just outside the enclave's bounding box, still inside the surrounding grid
    b = market.bbox
    outside = geo.locate(ref, (b.min_lat + b.max_lat) / 2, b.max_lon + 0.002)
    assert outside is not None and outside.code == AROUND_MARKET


def test_outside_the_county(ref: ReferenceData) -> None:
    assert geo.locate(ref, 39.9042, 116.4074) is None  # Beijing
    assert geo.locate(ref, 0.0, 0.0) is None
    assert geo.locate(ref, math.nan, 110.0) is None
    b = ref.spatial.bbox
    assert geo.locate(ref, b.min_lat - 0.001, b.min_lon - 0.001) is None


def test_haversine() -> None:
    assert geo.haversine_m(32.2, 110.0, 32.2, 110.0) == 0.0
    one_degree = geo.haversine_m(32.0, 110.0, 33.0, 110.0)
    assert one_degree == pytest.approx(111_195, rel=1e-3)
    beijing_shanghai = geo.haversine_m(39.9042, 116.4074, 31.2304, 121.4737)
    assert beijing_shanghai == pytest.approx(1_067_000, rel=0.01)
    a = geo.haversine_m(32.2, 110.0, 32.2005, 110.0004)
    assert a == pytest.approx(geo.haversine_m(32.2005, 110.0004, 32.2, 110.0))
    assert 60 < a < 70


def test_random_points_are_deterministic(ref: ReferenceData) -> None:
    grid = ref.grids[MARKET]
    assert geo.random_point_in(grid, random.Random(3)) == geo.random_point_in(grid, random.Random(3))


def test_thousands_of_lookups_agree_with_a_scan_of_every_grid(ref: ReferenceData) -> None:
    # how fast is measured where it matters, not here: `gridflow bench` (intake locates every report)
    rng = random.Random(1)
    b = ref.spatial.bbox
    points = [(rng.uniform(b.min_lat, b.max_lat), rng.uniform(b.min_lon, b.max_lon))
              for _ in range(5000)]
    found = [geo.locate(ref, lat, lon) for lat, lon in points]
    assert sum(1 for g in found if g is not None) > 4000
    for (lat, lon), grid in zip(points, found, strict=True):
        scanned = [g for g in sorted(ref.grids.values(), key=lambda g: g.code)
                   if geo.grid_contains(g, lat, lon)]
        assert grid is (scanned[0] if scanned else None), (lat, lon)
