"""Routing: the most specific rule wins, else the category's default department(s)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gridflow.core.refdata import SAMPLE_COUNTY_DIR, ReferenceData, load_reference_data
from gridflow.core.routing import UnknownCategory, route

CHENGGUAN_SOUTH = "421099001002001"  # 城关街道 西街社区南片
TAOYUAN_1 = "421099101202001"  # 青石镇 桃园村一组
SHIMEN_1 = "421099101201001"  # 青石镇 石门村一组
BAIHE_WEST = "421099201202002"  # 白鹤乡 白鹤村西片
BAIHE_MARKET = "421099201202003"  # 白鹤乡 白鹤村集镇


@pytest.fixture(scope="module")
def ref() -> ReferenceData:
    return load_reference_data()


def test_category_default_when_no_rule(ref: ReferenceData) -> None:
    d = route(ref, "P0202", ref.grids[CHENGGUAN_SOUTH])  # 交通标志牌
    assert d.departments == ("county.jiaotong",)
    assert d.source == "category_default" and d.rule_index is None
    assert "交通运输局" in d.reason_zh


def test_township_rule_overrides_default(ref: ReferenceData) -> None:
    d = route(ref, "E0102", ref.grids[TAOYUAN_1])  # 暴露垃圾 in a rural town
    assert d.departments == ("421099101.zhifa",)
    assert d.source == "rule" and d.rule_category == "E01" and d.rule_area == "421099101"
    assert f"#{d.rule_index}" in d.reason


def test_village_rule_beats_township_rule(ref: ReferenceData) -> None:
    assert route(ref, "E0102", SHIMEN_1).departments == ("421099101201.cwh",)
    # the village rule covers only E0102: other E01 problems stay with the township
    assert route(ref, "E0101", SHIMEN_1).departments == ("421099101.zhifa",)


def test_grid_rule_beats_township_rule(ref: ReferenceData) -> None:
    assert route(ref, "E0401", BAIHE_MARKET).departments == ("county.shichang",)
    assert route(ref, "E0401", BAIHE_WEST).departments == ("421099201.zhifa",)
    assert route(ref, "E0401", CHENGGUAN_SOUTH).departments == ("county.shichang",)


def test_placeholders_resolve_to_the_grids_own_village_and_township(ref: ReferenceData) -> None:
    assert route(ref, "E0601", TAOYUAN_1).departments == ("421099101202.cwh",)
    assert route(ref, "E0602", BAIHE_WEST).departments == ("421099201.zongzhi",)
    assert route(ref, "E0601", CHENGGUAN_SOUTH).departments == ("421099001.zongzhi",)


def test_multi_department_category_whistles_all(ref: ReferenceData) -> None:
    d = route(ref, "E0505", CHENGGUAN_SOUTH)  # 火灾
    assert d.multi_department and d.whistled
    assert d.departments == ("county.yingji", "county.gongan", "421099001.zongzhi")
    assert d.lead == "county.yingji"
    rural = route(ref, "E0505", BAIHE_WEST)
    assert rural.source == "rule"
    assert rural.departments == ("county.yingji", "421099201.zongzhi", "421099201202.cwh")


def test_single_department_categories_route_to_one(ref: ReferenceData) -> None:
    for code in ref.categories:
        if not ref.categories[code].multi_department:
            for grid in ref.grids:
                assert len(route(ref, code, grid).departments) == 1


def test_unknown_category(ref: ReferenceData) -> None:
    with pytest.raises(UnknownCategory):
        route(ref, "E9999", CHENGGUAN_SOUTH)


def test_decision_to_dict_is_json(ref: ReferenceData) -> None:
    data = route(ref, "E0102", TAOYUAN_1).to_dict()
    assert json.loads(json.dumps(data))["departments"] == ["421099101.zhifa"]
    assert data["routing_source"] == "rule"


def _with_rules(tmp_path: Path, rules: list[dict[str, object]]) -> ReferenceData:
    target = tmp_path / "county"
    shutil.copytree(SAMPLE_COUNTY_DIR, target)
    (target / "routing.json").write_text(json.dumps({"rules": rules}), encoding="utf-8")
    return load_reference_data(target)


def test_exact_category_beats_class_prefix_in_the_same_area(tmp_path: Path) -> None:
    ref = _with_rules(tmp_path, [
        {"category": "E01", "area": "421099", "departments": ["county.huanjing"]},
        {"category": "E0103", "area": "421099", "departments": ["county.zhujian"]},
        {"category": "E", "area": "421099", "departments": ["county.wangge"]},
    ])
    assert route(ref, "E0103", TAOYUAN_1).departments == ("county.zhujian",)
    assert route(ref, "E0104", TAOYUAN_1).departments == ("county.huanjing",)
    assert route(ref, "E0301", TAOYUAN_1).departments == ("county.wangge",)
    assert route(ref, "P0202", TAOYUAN_1).source == "category_default"


def test_area_specificity_comes_before_category_specificity(tmp_path: Path) -> None:
    ref = _with_rules(tmp_path, [
        {"category": "E0103", "area": "421099", "departments": ["county.zhujian"]},
        {"category": "E01", "area": "421099101202", "departments": ["421099101202.cwh"]},
    ])
    assert route(ref, "E0103", TAOYUAN_1).departments == ("421099101202.cwh",)
    assert route(ref, "E0103", SHIMEN_1).departments == ("county.zhujian",)
