"""The one config loader (gridflow.core.configfile): JSON into pydantic models, refusals naming
the file, the line and the JSON path of the offending value."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from gridflow.core.calendar import CalendarError, WorkingCalendar
from gridflow.core.configfile import ConfigError, JsonDoc, doc_of, json_path, read_json
from gridflow.core.sla import PolicyError, SlaPolicy

TEXT = """{
  "name": "青山县",
  "rules": [
    {"area": "421099", "departments": ["a"]},
    {
      "area": 421099101,
      "departments": ["b", "c"]
    }
  ],
  "empty": {}
}"""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    area: str
    departments: list[str]


class File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    rules: list[Rule]
    empty: dict[str, str] = {}
    mode: Literal["a", "b"] = "a"


def test_json_paths_read_like_the_documents():
    assert json_path(()) == "$"
    assert json_path(("rules", 1, "departments", 0)) == "$.rules[1].departments[0]"


def test_the_line_of_a_value_and_of_a_missing_one():
    doc = JsonDoc("x.json", TEXT)
    assert doc.line_of(("name",)) == 2
    assert doc.line_of(("rules", 1)) == 5
    assert doc.line_of(("rules", 1, "area")) == 6
    assert doc.line_of(("rules", 1, "departments", 1)) == 7
    assert doc.line_of(("rules", 1, "nowhere")) == 5  # the enclosing object
    assert doc.line_of(("empty",)) == 10


def test_a_value_of_the_wrong_type_names_file_line_path_and_reason():
    with pytest.raises(ConfigError) as err:
        JsonDoc("x.json", TEXT).validate(File)
    e = err.value
    assert (e.file, e.line, e.path) == ("x.json", 6, "$.rules[1].area")
    assert e.reason == "expected a string, got an integer"
    assert str(e) == "x.json:6: $.rules[1].area: expected a string, got an integer"


def test_unknown_missing_and_not_allowed_values():
    text = '{\n "name": "x",\n "rules": [],\n "colour": 1\n}'
    with pytest.raises(ConfigError) as err:
        JsonDoc("y.json", text).validate(File)
    assert (err.value.line, err.value.path) == (4, "$.colour")
    assert "unknown keys are refused" in err.value.reason
    with pytest.raises(ConfigError) as err:
        JsonDoc("y.json", '{\n "rules": []\n}').validate(File)
    assert (err.value.line, err.value.path, err.value.reason) == (1, "$.name",
                                                                  "required field is missing")
    with pytest.raises(ConfigError, match=r"y.json:1: \$.mode: 'c' is not one of 'a' or 'b'"):
        JsonDoc("y.json", '{"name": "x", "rules": [], "mode": "c"}').validate(File)


def test_a_key_written_twice_is_refused_at_its_second_line():
    with pytest.raises(ConfigError) as err:
        JsonDoc("z.json", '{\n "a": {"k": 1,\n  "k": 2}\n}')
    assert (err.value.line, err.value.path) == (3, "$.a.k")
    assert "duplicate key 'k'" in err.value.reason


def test_syntax_errors_encoding_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match=r"^s.json:3: not valid JSON"):
        JsonDoc("s.json", '{\n "a": 1\n "b": 2}')
    (tmp_path / "latin.json").write_bytes(b'{\n"a": "\xe9"}')
    with pytest.raises(ConfigError, match=r"latin.json:2: not UTF-8 text"):
        read_json(tmp_path / "latin.json")
    with pytest.raises(ConfigError, match="none.json: cannot read"):
        read_json(tmp_path / "none.json")


def test_data_given_in_code_is_checked_the_same_way_without_lines():
    with pytest.raises(ConfigError) as err:
        doc_of({"name": "x", "rules": [{"area": 1, "departments": []}]}, "<dict>").validate(File)
    assert (err.value.line, err.value.path) == (None, "$.rules[0].area")
    assert str(err.value) == "<dict>: $.rules[0].area: expected a string, got an integer"


def test_the_calendar_and_the_policy_files_say_where(tmp_path):
    cal = tmp_path / "calendar_2026.json"
    cal.write_text('{\n  "timezone": "Asia/Shanghai",\n  "working_hours": "08:30-17:30"\n}',
                   encoding="utf-8")
    with pytest.raises(CalendarError, match=r"calendar_2026.json:3: \$.working_hours: expected "
                                            r"a list, got a string"):
        WorkingCalendar.load(cal)
    policy = tmp_path / "sla.json"
    policy.write_text('{\n  "default": {},\n  "rules": [\n    {"match": "E01", "sgin": {}}\n'
                      '  ],\n  "resolve_clock_starts": 7\n}', encoding="utf-8")
    with pytest.raises(PolicyError, match=r"sla.json:6: \$.resolve_clock_starts: expected a "
                                          r"string, got an integer"):
        SlaPolicy.load(policy)


def test_a_calendar_rule_broken_deep_in_a_file_names_the_date_s_line_and_path(tmp_path):
    cal = tmp_path / "calendar_2026.json"
    cal.write_text("""{
  "timezone": "Asia/Shanghai",
  "working_hours": [["08:30", "12:00"], ["14:00", "17:30"]],
  "years": {"2026": {"holidays": [
    {"name": "国庆节",
     "off": ["2026-10-01", "2026-10-02"],
     "makeup_workdays": [
       "2026-10-12"
     ]}
  ]}}
}""", encoding="utf-8")
    with pytest.raises(CalendarError) as err:
        WorkingCalendar.load(cal)
    assert str(err.value) == (
        f"{cal}:8: $.years.2026.holidays[0].makeup_workdays[0]: 国庆节: make-up working day "
        "2026-10-12 is not a weekend day")

