"""Reference data: the sample county loads, is consistent, and bad files say where and why."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gridflow.core import geo
from gridflow.core.refdata import (
    SAMPLE_COUNTY_DIR,
    RefDataError,
    ReferenceData,
    load_reference_data,
)


@pytest.fixture(scope="module")
def ref() -> ReferenceData:
    return load_reference_data()


@pytest.fixture
def county_dir(tmp_path: Path) -> Path:
    target = tmp_path / "county"
    shutil.copytree(SAMPLE_COUNTY_DIR, target)
    return target


def edit_json(directory: Path, name: str, change: Callable[[Any], None]) -> str:
    """Rewrite a JSON file after `change`; return its new text."""
    path = directory / name
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    text = json.dumps(data, ensure_ascii=False, indent=2)
    path.write_text(text, encoding="utf-8")
    return text


def line_of(text: str, needle: str) -> int:
    lines = text.splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


# --- the sample county ------------------------------------------------------------


def test_sample_county_shape(ref: ReferenceData) -> None:
    assert ref.county.code == "421099"
    assert ref.county.name == "青山县"
    assert len(ref.townships) == 3
    for code, township in ref.townships.items():
        villages = ref.villages_by_township[code]
        assert 2 <= len(villages) <= 3, township.name
        for v in villages:
            assert 2 <= len(ref.grids_by_village[v]) <= 3, ref.villages[v].name
    assert {t.kind for t in ref.townships.values()} == {"街道", "镇", "乡"}


def test_grid_codes_are_15_digit_unit_grid_codes(ref: ReferenceData) -> None:
    for code, grid in ref.grids.items():
        assert len(code) == 15 and code.isdigit()
        assert code.startswith(grid.village_code)
        assert grid.village_code.startswith(grid.township_code)
        assert grid.township_code.startswith(ref.county.code)
        assert grid.county_code == ref.county.code


def test_every_grid_has_an_active_worker_and_one_is_suspended(ref: ReferenceData) -> None:
    active = {w.grid_code for w in ref.workers.values() if w.active}
    assert active == set(ref.grids)
    assert any(w.status == "suspended" for w in ref.workers.values())


def test_reference_data_holds_no_credentials(ref: ReferenceData, tmp_path: Path) -> None:
    for name in ("workers.json", "staff.json"):
        assert '"token"' not in (Path(ref.source) / name).read_text(encoding="utf-8")
    county = tmp_path / "county"
    shutil.copytree(ref.source, county)
    doc = json.loads((county / "workers.json").read_text(encoding="utf-8"))
    doc["workers"][0]["token"] = "0123456789abcdef0123"
    (county / "workers.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(RefDataError, match="token.*gridflow users"):
        load_reference_data(county)


def test_departments_form_a_ladder_to_leadership(ref: ReferenceData) -> None:
    short_names = {d.short_name for d in ref.departments.values() if d.level == "county"}
    for name in ("城管局", "生态环境局", "住建局", "交通运输局", "水利局", "应急管理局",
                 "市场监管局", "自然资源局", "公安局", "信访局"):
        assert name in short_names
    for village in ref.villages:
        assert f"{village}.cwh" in ref.departments
    for dept in ref.departments.values():
        chain = [dept.level]
        cur = dept
        while cur.parent is not None:
            cur = ref.departments[cur.parent]
            chain.append(cur.level)
        assert chain[-1] == "leadership", dept.code


def test_categories_catalogue(ref: ReferenceData) -> None:
    classes = {c.class_name for c in ref.categories.values()}
    for name in ("市容环境", "宣传广告", "施工管理", "街面秩序", "突发事件", "矛盾纠纷", "河道污染",
                 "安全隐患", "公用设施", "道路交通", "园林绿化", "其他"):
        assert name in classes
    fire = next(c for c in ref.categories.values() if c.name == "火灾")
    assert fire.multi_department and len(fire.departments) >= 2
    assert fire.default_severity == 3
    assert ref.categories["E0101"].kind == "event"
    assert ref.categories["P0203"].kind == "part"
    assert not ref.categories["E0204"].enabled
    assert ref.severity_levels[1].name == "一般"


def test_open311_services_map_to_categories(ref: ReferenceData) -> None:
    category = ref.category_for_service("manhole-cover")
    assert category is not None and category.code == "P0102"
    assert ref.category_for_service("no-such-service") is None


def test_grids_tile_without_overlap(ref: ReferenceData) -> None:
    rng = random.Random(42)
    b = ref.spatial.bbox
    for _ in range(3000):
        lat, lon = rng.uniform(b.min_lat, b.max_lat), rng.uniform(b.min_lon, b.max_lon)
        assert len(ref.spatial.locate_all(lat, lon)) <= 1, (lat, lon)


def test_digest_identifies_the_content(ref: ReferenceData, county_dir: Path) -> None:
    assert load_reference_data(county_dir).digest == ref.digest
    edit_json(county_dir, "workers.json", lambda d: d["workers"][0].update(phone="13900000000"))
    assert load_reference_data(county_dir).digest != ref.digest


def test_mappings_are_read_only(ref: ReferenceData) -> None:
    with pytest.raises(TypeError):
        ref.grids["x"] = ref.grids[next(iter(ref.grids))]  # type: ignore[index]


# --- malformed files name file, line, path and reason ---------------------------------------


def test_syntax_error_names_file_and_line(county_dir: Path) -> None:
    path = county_dir / "categories.json"
    lines = path.read_text(encoding="utf-8").splitlines()
    target = next(i for i, line in enumerate(lines) if '"code": "E0102"' in line)
    lines[target] = lines[target].rstrip(",")  # drop a comma: invalid JSON on the next line
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(RefDataError) as err:
        load_reference_data(county_dir)
    assert err.value.file == "categories.json"
    assert err.value.line == target + 2
    assert f"categories.json:{target + 2}" in str(err.value)
    assert "not valid JSON" in str(err.value)


def test_unknown_department_in_category_names_the_value_line_and_path(county_dir: Path) -> None:
    text = edit_json(county_dir, "categories.json",
                     lambda d: d["classes"][0]["subcategories"][1].update(department="county.nope"))
    with pytest.raises(RefDataError) as err:
        load_reference_data(county_dir)
    e = err.value
    assert e.file == "categories.json"
    assert e.path == "$.classes[0].subcategories[1].department"
    assert e.line == line_of(text, '"department": "county.nope"')  # the offending value's line
    assert "county.nope" in e.reason


def test_grid_of_unknown_village(county_dir: Path) -> None:
    def change(d: Any) -> None:
        d["features"][4]["properties"]["village_code"] = "421099101299"
    edit_json(county_dir, "grids.geojson", change)
    with pytest.raises(RefDataError) as err:
        load_reference_data(county_dir)
    assert err.value.file == "grids.geojson"
    assert err.value.path == "$.features[4].properties.village_code"
    assert "unknown village 421099101299" in err.value.reason
    assert err.value.line is not None


@pytest.mark.parametrize("bad_code, reason", [
    ("42109910120100", "does not match"),  # 14 digits
    ("421099101202001", "does not start with its village code"),  # another village's prefix
])
def test_grid_code_format_and_prefix(county_dir: Path, bad_code: str, reason: str) -> None:
    edit_json(county_dir, "grids.geojson",
              lambda d: d["features"][0]["properties"].update(code=bad_code))
    with pytest.raises(RefDataError, match=reason):
        load_reference_data(county_dir)


def test_open_ring_is_refused(county_dir: Path) -> None:
    edit_json(county_dir, "grids.geojson",
              lambda d: d["features"][2]["geometry"]["coordinates"][0].pop())
    with pytest.raises(RefDataError) as err:
        load_reference_data(county_dir)
    assert err.value.path == "$.features[2].geometry.coordinates[0]"
    assert "closed" in err.value.reason


def test_worker_of_unknown_grid(county_dir: Path) -> None:
    text = edit_json(county_dir, "workers.json",
                     lambda d: d["workers"][3].update(grid_code="421099101201009"))
    with pytest.raises(RefDataError) as err:
        load_reference_data(county_dir)
    assert err.value.file == "workers.json"
    assert err.value.path == "$.workers[3].grid_code"
    assert err.value.line == line_of(text, '"grid_code": "421099101201009"')


def test_rule_with_unknown_department(county_dir: Path) -> None:
    edit_json(county_dir, "routing.json",
              lambda d: d["rules"][1].update(departments=["county.nowhere"]))
    with pytest.raises(RefDataError) as err:
        load_reference_data(county_dir)
    assert (err.value.file, err.value.path) == ("routing.json", "$.rules[1].departments")


def test_rule_area_must_exist(county_dir: Path) -> None:
    edit_json(county_dir, "routing.json", lambda d: d["rules"][0].update(area="421099999"))
    with pytest.raises(RefDataError, match="not a county, township, village or grid code"):
        load_reference_data(county_dir)


def test_rule_with_several_departments_for_a_single_department_category(county_dir: Path) -> None:
    edit_json(county_dir, "routing.json", lambda d: d["rules"][0].update(
        departments=["421099101.zhifa", "county.chengguan"]))
    with pytest.raises(RefDataError, match="not a multi_department category"):
        load_reference_data(county_dir)


def test_placeholder_must_resolve_for_every_grid(county_dir: Path) -> None:
    edit_json(county_dir, "departments.json", lambda d: d.update(
        departments=[x for x in d["departments"] if x["code"] != "421099201203.cwh"]))
    with pytest.raises(RefDataError) as err:
        load_reference_data(county_dir)
    assert err.value.file == "categories.json"
    assert "421099201203.cwh" in err.value.reason


def test_category_code_must_sit_under_its_class(county_dir: Path) -> None:
    edit_json(county_dir, "categories.json",
              lambda d: d["classes"][1]["subcategories"][0].update(code="E0901"))
    with pytest.raises(RefDataError, match="listed under class E02"):
        load_reference_data(county_dir)


def test_default_severity_must_be_allowed(county_dir: Path) -> None:
    edit_json(county_dir, "categories.json",
              lambda d: d["classes"][1]["subcategories"][0].update(default_severity=3))
    with pytest.raises(RefDataError) as err:
        load_reference_data(county_dir)
    assert err.value.path.endswith("subcategories[0].default_severity")


def test_wrong_type_is_named(county_dir: Path) -> None:
    edit_json(county_dir, "county.json", lambda d: d["townships"][1].update(name=7))
    with pytest.raises(RefDataError) as err:
        load_reference_data(county_dir)
    assert err.value.path == "$.townships[1].name"
    assert "expected a string, got an integer" in err.value.reason


def test_duplicate_key_is_refused(county_dir: Path) -> None:
    path = county_dir / "workers.json"
    text = path.read_text(encoding="utf-8")
    text = text.replace('"id": "GW0002",', '"id": "GW0002",\n      "id": "GW9999",', 1)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RefDataError) as err:
        load_reference_data(county_dir)
    assert "duplicate key 'id'" in str(err.value)
    assert err.value.line == line_of(text, '"id": "GW9999"')  # the key written again
    assert err.value.path == "$.workers[1].id"


def test_parent_loop_is_refused(county_dir: Path) -> None:
    def change(d: Any) -> None:
        for dept in d["departments"]:
            if dept["code"] == "county.duchashi":
                dept["parent"] = "county.chengguan"
    edit_json(county_dir, "departments.json", change)
    with pytest.raises(RefDataError, match="loops back"):
        load_reference_data(county_dir)


def test_missing_file(county_dir: Path) -> None:
    (county_dir / "routing.json").unlink()
    with pytest.raises(RefDataError) as err:
        load_reference_data(county_dir)
    assert err.value.file == "routing.json"
    assert "not found" in err.value.reason


def test_representative_points_lie_in_their_own_grid(ref: ReferenceData) -> None:
    for code, grid in ref.grids.items():
        lat, lon = geo.representative_point(grid)
        located = geo.locate(ref, lat, lon)
        assert located is not None and located.code == code
