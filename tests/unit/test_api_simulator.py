"""The traffic simulator's plan: deterministic per seed, the advertised mix, valid reports."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from demo.simulator import MIX, Outcome, Plan, Summary, pick_kind
from gridflow.core import photos
from gridflow.core.geo import haversine_m, locate
from gridflow.core.intake import validate_report
from gridflow.core.refdata import load_reference_data

REF = load_reference_data()
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def plan(seed: int, n: int) -> list:  # type: ignore[type-arg]
    p = Plan(REF, seed, lambda: NOW)
    return [p.next(i) for i in range(n)]


def test_the_same_seed_plans_the_same_traffic() -> None:
    a, b = plan(7, 30), plan(7, 30)
    assert [(x.kind, x.report, x.form, x.photos) for x in a] == [
        (x.kind, x.report, x.form, x.photos) for x in b
    ]
    assert [x.report for x in plan(8, 30)] != [x.report for x in a]


def test_the_mix() -> None:
    assert pick_kind(0.0) == "retry" and pick_kind(0.999) == "report"
    kinds = Counter(x.kind for x in plan(1, 200))
    assert set(kinds) == {"report", *MIX}
    assert kinds["report"] > kinds["resident"] > kinds["bad_photo"]


def test_planned_reports_are_valid_and_located_with_real_photos() -> None:
    for p in plan(3, 40):
        if p.kind == "resident":
            assert p.form and p.form["service_code"] in REF.services
            assert locate(REF, float(p.form["lat"]), float(p.form["long"])) is not None
            continue
        assert p.worker is not None and p.worker.active and p.report is not None
        data = {
            **p.report,
            "reporter": f"worker:{p.worker.id}",
            "photos": [
                {
                    "bucket": "b",
                    "key": "k",
                    "size": 1,
                    "sha256": "0" * 64,
                    "content_type": "image/jpeg",
                }
            ],
        }
        validate_report(data, NOW)
        if p.kind == "bad_photo":
            assert p.photos and photos.sniff(p.photos[0]) is None
        else:
            info = photos.inspect_photo(p.photos[0])
            assert info.gps_lat is not None and abs(info.gps_lat - p.report["lat"]) < 1e-4


def test_retries_repeat_and_near_duplicates_are_metres_away() -> None:
    planned = plan(5, 120)
    by_index = {p.index: p for p in planned}
    retries = [p for p in planned if p.kind == "retry"]
    dups = [p for p in planned if p.kind == "near_duplicate"]
    assert retries and dups
    for r in retries:
        original = by_index[r.retry_of]  # type: ignore[index]
        assert (r.report, r.photos, r.worker) == (original.report, original.photos, original.worker)
    for d in dups:
        near = min(
            haversine_m(d.report["lat"], d.report["lon"], o.report["lat"], o.report["lon"])
            for o in planned
            if o.index < d.index
            and o.report
            and o.kind != "resident"
            and o.report["category_code"] == d.report["category_code"]
        )
        assert near < 40


def test_the_summary() -> None:
    s = Summary(wall_s=2.0)
    for status, ms in [(202, 10), (202, 20), (200, 30), (415, 5), (503, 40), (0, 50)]:
        s.add(Outcome("report", status, ms / 1000, "x" if status >= 400 or not status else ""))
    assert s.counts() == {
        "sent": 6,
        "accepted": 2,
        "duplicates_by_retry": 1,
        "refused": 1,
        "failed": 2,
    }
    assert s.latency_ms(0.5) == 20 and s.latency_ms(0.99) == 40
    text = s.render()
    assert "p50 20 ms" in text and "415 x × 1" in text
