"""Near-duplicates: the same problem reported twice nearby, soon after, joins the open case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gridflow.core import dedupe
from gridflow.core.dedupe import OpenCase

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
LAT, LON = 32.2, 110.05
M = 1 / 111_195  # one metre of latitude, in degrees


def case(case_id: str, category: str = "E0102", north_m: float = 0.0,
         age: timedelta = timedelta(hours=1)) -> OpenCase:
    return OpenCase(case_id, category, LAT + north_m * M, LON, NOW - age)


def report(category: str = "E0102") -> dict[str, object]:
    return {"category_code": category, "lat": LAT, "lon": LON}


def test_same_category_nearby_and_recent_is_a_duplicate() -> None:
    assert dedupe.find_duplicate([case("AJ-1", north_m=20)], report(), NOW) == "AJ-1"


def test_other_category_is_not_a_duplicate() -> None:
    assert dedupe.find_duplicate([case("AJ-1", "E0101", north_m=5)], report(), NOW) is None


def test_too_far_is_not_a_duplicate() -> None:
    assert dedupe.find_duplicate([case("AJ-1", north_m=60)], report(), NOW, radius_m=50) is None
    assert dedupe.find_duplicate([case("AJ-1", north_m=60)], report(), NOW, radius_m=100) == "AJ-1"


def test_too_old_is_not_a_duplicate() -> None:
    old = case("AJ-1", age=timedelta(hours=30))
    assert dedupe.find_duplicate([old], report(), NOW, window=timedelta(hours=24)) is None
    assert dedupe.find_duplicate([old], report(), NOW, window=timedelta(hours=48)) == "AJ-1"


def test_nearest_wins_then_earliest_then_lowest_id() -> None:
    candidates = [case("AJ-far", north_m=30), case("AJ-near", north_m=10)]
    assert dedupe.find_duplicate(candidates, report(), NOW) == "AJ-near"
    same_place = [case("AJ-late", age=timedelta(hours=1)), case("AJ-early", age=timedelta(hours=5))]
    assert dedupe.find_duplicate(same_place, report(), NOW) == "AJ-early"
    assert dedupe.find_duplicate(list(reversed(same_place)), report(), NOW) == "AJ-early"
    twins = [case("AJ-b"), case("AJ-a")]
    assert dedupe.find_duplicate(twins, report(), NOW) == "AJ-a"


def test_match_reports_the_distance() -> None:
    match = dedupe.find_match([case("AJ-1", north_m=20)], report(), NOW)
    assert match is not None
    assert abs(match.distance_m - 20) < 0.1


def test_prune_drops_old_candidates_and_keeps_order() -> None:
    cands = [case("a", age=timedelta(hours=2)), case("b", age=timedelta(days=3)),
             case("c", age=timedelta(minutes=5))]
    assert [c.case_id for c in dedupe.prune(cands, NOW, timedelta(hours=24))] == ["a", "c"]


def test_plain_dicts_with_iso_times_work_too() -> None:
    stored = [case("AJ-1", north_m=10).to_dict(), case("AJ-2", age=timedelta(days=2)).to_dict()]
    assert isinstance(stored[0]["filed_at"], str)
    live = dedupe.prune(stored, NOW, timedelta(hours=24))
    assert live == [stored[0]]
    assert dedupe.find_duplicate(live, report(), NOW) == "AJ-1"


def test_an_intake_report_object_works_as_the_report() -> None:
    class Located:
        category_code = "E0102"
        lat = LAT
        lon = LON

    assert dedupe.find_duplicate([case("AJ-1")], Located(), NOW) == "AJ-1"


def test_no_candidates() -> None:
    assert dedupe.find_duplicate([], report(), NOW) is None
