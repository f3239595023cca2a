"""Reference data of one county (divisions, grids, workers, departments, categories, routing).

Loads the JSON/GeoJSON configuration into frozen dataclasses and cross-checks it; a bad
file fails with `RefDataError` naming the file, the line, the JSON path and the reason.
"""

from __future__ import annotations

import hashlib
import json
import json.decoder
import json.scanner
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from gridflow.core.geo import BBox, GridIndex, Polygon, Ring, bbox_of

SAMPLE_COUNTY_DIR = Path(__file__).resolve().parent.parent / "refdata" / "sample_county"

FILES = (
    "county.json", "grids.geojson", "workers.json", "departments.json",
    "categories.json", "routing.json", "open311.json",
)

COUNTY_RE = re.compile(r"^\d{6}$")
TOWNSHIP_RE = re.compile(r"^\d{9}$")
VILLAGE_RE = re.compile(r"^\d{12}$")
GRID_RE = re.compile(r"^\d{15}$")
CLASS_RE = re.compile(r"^[EP]\d{2}$")
CATEGORY_RE = re.compile(r"^[EP]\d{4}$")
PLACEHOLDERS = ("{village}", "{township}")

TOWNSHIP_KINDS = frozenset({"街道", "镇", "乡"})
VILLAGE_KINDS = frozenset({"社区", "村"})
WORKER_STATUSES = frozenset({"active", "suspended"})
DEPARTMENT_LEVELS = ("village", "township", "county", "leadership")
CATEGORY_KINDS = {"E": "event", "P": "part"}


class RefDataError(ValueError):
    """A reference-data file that cannot be used: where (file, line, JSON path) and why."""

    def __init__(self, file: str, line: int | None, path: str, reason: str) -> None:
        self.file, self.line, self.path, self.reason = file, line, path, reason
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {path}: {reason}")


# --- the model -------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    name: str
    title: str


@dataclass(frozen=True)
class County:
    code: str  # 6-digit administrative division code
    name: str
    province: str
    prefecture: str
    leaders: tuple[Person, ...]


@dataclass(frozen=True)
class Township:
    code: str  # 9 digits: county + 3
    name: str
    kind: str  # 街道 | 镇 | 乡
    leaders: tuple[Person, ...]


@dataclass(frozen=True)
class Village:
    code: str  # 12 digits: township + 3
    name: str
    kind: str  # 社区 | 村
    township_code: str
    leaders: tuple[Person, ...]


@dataclass(frozen=True)
class Grid:
    code: str  # 15 digits: village + 3 (GB/T 30428 unit grid code)
    name: str
    village_code: str
    township_code: str
    polygons: tuple[Polygon, ...]  # each: exterior ring then holes, (lon, lat) positions
    bbox: BBox

    @property
    def county_code(self) -> str:
        return self.code[:6]


@dataclass(frozen=True)
class Worker:
    id: str
    name: str
    grid_code: str
    status: str  # active | suspended
    phone: str = ""

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class Department:
    code: str
    name: str
    short_name: str
    level: str  # village | township | county | leadership
    parent: str | None
    area_code: str  # the county, township or village code it serves


@dataclass(frozen=True)
class SeverityLevel:
    code: int
    name: str


@dataclass(frozen=True)
class Category:
    code: str  # e.g. E0101: kind letter + class 2 digits + small class 2 digits
    name: str
    kind: str  # event | part
    class_code: str  # e.g. E01
    class_name: str
    departments: tuple[str, ...]  # default responsible department(s); may hold placeholders
    multi_department: bool
    severities: tuple[int, ...]
    default_severity: int
    enabled: bool = True
    note: str = ""

    @property
    def department(self) -> str:
        """The default responsible department (template; see `ReferenceData.resolve`)."""
        return self.departments[0]


@dataclass(frozen=True)
class RoutingRule:
    index: int  # position in routing.json, for the audit trail
    category: str  # exact category code or a prefix (class "E01", kind "E")
    area: str  # county, township, village or grid code
    departments: tuple[str, ...]
    note: str = ""

    def matches(self, category_code: str, grid_code: str) -> bool:
        return category_code.startswith(self.category) and grid_code.startswith(self.area)

    @property
    def specificity(self) -> tuple[int, int]:
        """Area first (grid > village > township > county), then category (exact > prefix)."""
        return len(self.area), len(self.category)


@dataclass(frozen=True)
class Open311Service:
    service_code: str
    service_name: str
    description: str
    group: str
    category_code: str
    keywords: tuple[str, ...] = ()


def _ro(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(d)


@dataclass(frozen=True, eq=False)
class ReferenceData:
    """One county's reference data, indexed for lookups. Read-only after loading."""

    county: County
    townships: Mapping[str, Township]
    villages: Mapping[str, Village]
    grids: Mapping[str, Grid]
    workers: Mapping[str, Worker]
    departments: Mapping[str, Department]
    categories: Mapping[str, Category]
    severity_levels: Mapping[int, SeverityLevel]
    rules: tuple[RoutingRule, ...]
    services: Mapping[str, Open311Service]
    source: str  # directory loaded from
    digest: str  # sha256 over all files: which reference data a decision used
    spatial: GridIndex = field(repr=False)
    grids_by_village: Mapping[str, tuple[str, ...]] = field(repr=False)
    villages_by_township: Mapping[str, tuple[str, ...]] = field(repr=False)
    rules_by_area: Mapping[str, tuple[RoutingRule, ...]] = field(repr=False)


    def category_for_service(self, service_code: str) -> Category | None:
        service = self.services.get(service_code)
        return self.categories.get(service.category_code) if service else None

    def resolve(self, department: str, grid: Grid) -> str:
        """Fill a department template's {village} / {township} placeholder for a grid."""
        return department.replace("{village}", grid.village_code).replace(
            "{township}", grid.township_code
        )

    def resolve_all(self, departments: tuple[str, ...], grid: Grid) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.resolve(d, grid) for d in departments))

    def area_name(self, code: str) -> str:
        """Chinese name of a county / township / village / grid code ('' when unknown)."""
        for table in (self.grids, self.villages, self.townships):
            if code in table:
                return table[code].name
        return self.county.name if code == self.county.code else ""


# --- JSON with positions -----------------------------------------------------------


_JSONObject: Callable[..., tuple[Any, int]] = json.decoder.JSONObject  # type: ignore[attr-defined]
_JSONArray: Callable[..., tuple[Any, int]] = json.decoder.JSONArray  # type: ignore[attr-defined]


class _DuplicateKey(Exception):
    pass


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _Doc:
    """A parsed JSON file that remembers where each object and array starts."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text
        self._pos: dict[int, int] = {}
        decoder = json.JSONDecoder(object_pairs_hook=_pairs_hook)
        decoder.parse_object = self._parse_object  # type: ignore[attr-defined]
        decoder.parse_array = self._parse_array  # type: ignore[attr-defined]
        decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
        try:
            self.root = decoder.decode(text)
        except json.JSONDecodeError as exc:
            raise RefDataError(name, exc.lineno, "$", f"not valid JSON: {exc.msg} (column {exc.colno})") from exc

    def _parse_object(self, s_and_end: tuple[str, int], *args: Any) -> tuple[Any, int]:
        s, end = s_and_end
        try:
            obj, new_end = _JSONObject(s_and_end, *args)
        except _DuplicateKey as exc:
            raise RefDataError(self.name, self._line(end - 1), "$", f"duplicate key {exc.args[0]!r}") from None
        self._pos[id(obj)] = end - 1
        return obj, new_end

    def _parse_array(self, s_and_end: tuple[str, int], scan_once: Callable[..., Any]) -> tuple[Any, int]:
        arr, new_end = _JSONArray(s_and_end, scan_once)
        self._pos[id(arr)] = s_and_end[1] - 1
        return arr, new_end

    def _line(self, pos: int) -> int:
        return self.text.count("\n", 0, pos) + 1

    def line_of(self, obj: Any) -> int | None:
        pos = self._pos.get(id(obj))
        return None if pos is None else self._line(pos)

    def fail(self, path: str, reason: str, obj: Any = None) -> NoReturn:
        raise RefDataError(self.name, self.line_of(obj), path, reason)


_MISSING = object()


class _Obj:
    """A JSON object at a path, with typed field getters that fail with file, line and path."""

    def __init__(self, doc: _Doc, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            doc.fail(path, f"expected an object, got {_kind(value)}", value)
        self.doc, self.value, self.path = doc, value, path

    def fail(self, key: str | None, reason: str) -> NoReturn:
        self.doc.fail(self.sub(key) if key else self.path, reason, self.value)

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        value = self.value.get(key, _MISSING)
        if value is _MISSING or (value is None and default is None):
            if default is _MISSING:
                self.fail(key, "required field is missing")
            return default
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            self.fail(key, f"expected {_type_names(kind)}, got {_kind(value)}")
        return value

    def opt_text(self, key: str) -> str | None:
        value: str | None = self.get(key, str, None)
        return value

    def text(self, key: str, default: Any = _MISSING, pattern: re.Pattern[str] | None = None) -> str:
        value: str = self.get(key, str, default)
        if pattern is not None and not pattern.match(value):
            self.fail(key, f"{value!r} does not match {pattern.pattern}")
        if default is _MISSING and not value.strip():
            self.fail(key, "must not be empty")
        return value

    def objects(self, key: str) -> list[_Obj]:
        items = self.get(key, list)
        return [_Obj(self.doc, item, f"{self.sub(key)}[{i}]") for i, item in enumerate(items)]

    def strings(self, key: str, default: Any = _MISSING) -> tuple[str, ...]:
        items = self.get(key, list, default)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item:
                self.doc.fail(f"{self.sub(key)}[{i}]", "expected a non-empty string", self.value)
        return tuple(items)


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_names(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
             list: "a list", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in _tuple(kind))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


# --- file loaders --------------------------------------------------------------------


def _read(directory: Path, name: str) -> _Doc:
    path = directory / name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RefDataError(name, None, "$", f"file not found in {directory}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RefDataError(name, line, "$", "not UTF-8 text") from exc
    return _Doc(name, text)


def _leaders(obj: _Obj) -> tuple[Person, ...]:
    if "leaders" not in obj.value:
        return ()
    return tuple(Person(o.text("name"), o.text("title")) for o in obj.objects("leaders"))


def _unique(seen: dict[str, Any], code: str, obj: _Obj, key: str = "code") -> None:
    if code in seen:
        obj.fail(key, f"duplicate code {code!r}")


def _load_county(doc: _Doc) -> tuple[County, dict[str, Township], dict[str, Village]]:
    root = _Obj(doc, doc.root, "$")
    county = County(
        code=root.text("code", pattern=COUNTY_RE), name=root.text("name"),
        province=root.text("province", ""), prefecture=root.text("prefecture", ""),
        leaders=_leaders(root),
    )
    townships: dict[str, Township] = {}
    for o in root.objects("townships"):
        code = o.text("code", pattern=TOWNSHIP_RE)
        _unique(townships, code, o)
        if not code.startswith(county.code):
            o.fail("code", f"township code {code} does not start with county code {county.code}")
        kind = o.text("kind")
        if kind not in TOWNSHIP_KINDS:
            o.fail("kind", f"{kind!r} is not one of {sorted(TOWNSHIP_KINDS)}")
        townships[code] = Township(code, o.text("name"), kind, _leaders(o))
    villages: dict[str, Village] = {}
    for o in root.objects("villages"):
        code = o.text("code", pattern=VILLAGE_RE)
        _unique(villages, code, o)
        township = o.text("township_code", pattern=TOWNSHIP_RE)
        if township not in townships:
            o.fail("township_code", f"unknown township {township}")
        if not code.startswith(township):
            o.fail("code", f"village code {code} does not start with its township code {township}")
        kind = o.text("kind")
        if kind not in VILLAGE_KINDS:
            o.fail("kind", f"{kind!r} is not one of {sorted(VILLAGE_KINDS)}")
        villages[code] = Village(code, o.text("name"), kind, township, _leaders(o))
    for code in townships:
        if not any(v.township_code == code for v in villages.values()):
            root.fail("townships", f"township {code} has no village")
    return county, townships, villages


def _position(doc: _Doc, value: Any, path: str, owner: Any) -> tuple[float, float]:
    ok = (
        isinstance(value, list) and len(value) in (2, 3)
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in value)
    )
    if not ok:
        doc.fail(path, "a position must be [lon, lat] numbers", owner)
    lon, lat = float(value[0]), float(value[1])
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        doc.fail(path, f"position [{lon}, {lat}] is out of range (is it [lon, lat]?)", owner)
    return lon, lat


def _ring(doc: _Doc, value: Any, path: str) -> Ring:
    if not isinstance(value, list) or len(value) < 4:
        doc.fail(path, "a linear ring needs at least 4 positions", value)
    ring = tuple(_position(doc, p, f"{path}[{i}]", value) for i, p in enumerate(value))
    if ring[0] != ring[-1]:
        doc.fail(path, "a linear ring must be closed (first position == last)", value)
    if len(set(ring)) < 3:
        doc.fail(path, "a linear ring needs at least 3 distinct positions", value)
    return ring


def _polygon(doc: _Doc, value: Any, path: str) -> Polygon:
    if not isinstance(value, list) or not value:
        doc.fail(path, "a polygon is a non-empty list of rings", value)
    return tuple(_ring(doc, r, f"{path}[{i}]") for i, r in enumerate(value))


def _geometry(o: _Obj) -> tuple[Polygon, ...]:
    geom = _Obj(o.doc, o.get("geometry", dict), o.sub("geometry"))
    kind = geom.text("type")
    coords = geom.get("coordinates", list)
    path = geom.sub("coordinates")
    if kind == "Polygon":
        return (_polygon(o.doc, coords, path),)
    if kind == "MultiPolygon":
        if not coords:
            geom.fail("coordinates", "empty MultiPolygon")
        return tuple(_polygon(o.doc, p, f"{path}[{i}]") for i, p in enumerate(coords))
    geom.fail("type", f"grid geometry must be Polygon or MultiPolygon, got {kind!r}")


def _load_grids(doc: _Doc, villages: dict[str, Village]) -> dict[str, Grid]:
    root = _Obj(doc, doc.root, "$")
    if root.text("type") != "FeatureCollection":
        root.fail("type", "expected a GeoJSON FeatureCollection")
    grids: dict[str, Grid] = {}
    for f in root.objects("features"):
        props = _Obj(doc, f.get("properties", dict), f.sub("properties"))
        code = props.text("code", pattern=GRID_RE)
        _unique(grids, code, props)
        village = props.text("village_code", pattern=VILLAGE_RE)
        if village not in villages:
            props.fail("village_code", f"unknown village {village}")
        if not code.startswith(village):
            props.fail("code", f"grid code {code} does not start with its village code {village}")
        township = props.text("township_code", villages[village].township_code)
        if township != villages[village].township_code:
            props.fail("township_code", f"village {village} belongs to township "
                       f"{villages[village].township_code}, not {township}")
        polygons = _geometry(f)
        grids[code] = Grid(code, props.text("name"), village, township, polygons, bbox_of(polygons))
    for code in villages:
        if not any(g.village_code == code for g in grids.values()):
            root.fail("features", f"village {code} ({villages[code].name}) has no grid")
    return grids


def _load_workers(doc: _Doc, grids: Mapping[str, Grid]) -> dict[str, Worker]:
    root = _Obj(doc, doc.root, "$")
    workers: dict[str, Worker] = {}
    for o in root.objects("workers"):
        wid = o.text("id")
        if wid in workers:
            o.fail("id", f"duplicate worker id {wid!r}")
        if "token" in o.value:
            o.fail("token", "credentials do not belong in reference data: give people accounts "
                   "with `gridflow users` (import / add)")
        grid = o.text("grid_code", pattern=GRID_RE)
        if grid not in grids:
            o.fail("grid_code", f"unknown grid {grid}")
        status = o.text("status")
        if status not in WORKER_STATUSES:
            o.fail("status", f"{status!r} is not one of {sorted(WORKER_STATUSES)}")
        workers[wid] = Worker(wid, o.text("name"), grid, status, o.text("phone", ""))
    return workers


def _load_departments(doc: _Doc, areas: set[str]) -> dict[str, Department]:
    root = _Obj(doc, doc.root, "$")
    depts: dict[str, Department] = {}
    objs: dict[str, _Obj] = {}
    area_len = {"village": 12, "township": 9, "county": 6, "leadership": 6}
    for o in root.objects("departments"):
        code = o.text("code")
        _unique(depts, code, o)
        level = o.text("level")
        if level not in DEPARTMENT_LEVELS:
            o.fail("level", f"{level!r} is not one of {list(DEPARTMENT_LEVELS)}")
        area = o.text("area")
        if area not in areas or len(area) != area_len[level]:
            o.fail("area", f"{area!r} is not a known {level}-level area code")
        parent = o.opt_text("parent")
        depts[code] = Department(code, o.text("name"), o.text("short_name", ""), level, parent, area)
        objs[code] = o
    for code, dept in depts.items():
        if dept.parent is not None and dept.parent not in depts:
            objs[code].fail("parent", f"unknown department {dept.parent!r}")
        seen = {code}
        cur = dept.parent
        while cur is not None:
            if cur in seen:
                objs[code].fail("parent", f"parent chain of {code} loops back to {cur}")
            seen.add(cur)
            cur = depts[cur].parent
    return depts


def _load_categories(doc: _Doc) -> tuple[dict[int, SeverityLevel], dict[str, Category], dict[str, _Obj]]:
    root = _Obj(doc, doc.root, "$")
    levels: dict[int, SeverityLevel] = {}
    for o in root.objects("severity_levels"):
        code = o.get("code", int)
        if code in levels:
            o.fail("code", f"duplicate severity level {code}")
        levels[code] = SeverityLevel(code, o.text("name"))
    if not levels:
        root.fail("severity_levels", "at least one severity level is required")
    cats: dict[str, Category] = {}
    objs: dict[str, _Obj] = {}
    class_codes: set[str] = set()
    for c in root.objects("classes"):
        class_code = c.text("code", pattern=CLASS_RE)
        if class_code in class_codes:
            c.fail("code", f"duplicate class {class_code!r}")
        class_codes.add(class_code)
        kind = c.text("kind")
        if kind != CATEGORY_KINDS[class_code[0]]:
            c.fail("kind", f"class {class_code} must be kind {CATEGORY_KINDS[class_code[0]]!r}")
        class_name = c.text("name")
        for o in c.objects("subcategories"):
            cat = _category(o, class_code, class_name, kind, levels)
            _unique(cats, cat.code, o)
            cats[cat.code] = cat
            objs[cat.code] = o
    return levels, cats, objs


def _category(o: _Obj, class_code: str, class_name: str, kind: str,
              levels: Mapping[int, SeverityLevel]) -> Category:
    code = o.text("code", pattern=CATEGORY_RE)
    if not code.startswith(class_code):
        o.fail("code", f"category {code} is listed under class {class_code}")
    multi = o.get("multi_department", bool, False)
    if multi:
        departments = o.strings("departments")
        if len(departments) < 2:
            o.fail("departments", "a multi_department category lists at least 2 departments")
        if "department" in o.value:
            o.fail("department", "use 'departments' (a list) for a multi_department category")
    else:
        if "departments" in o.value:
            o.fail("departments", "only a multi_department category lists several departments; "
                   "use 'department'")
        departments = (o.text("department"),)
    severities = tuple(o.get("severities", list, list(levels)))
    for s in severities:
        if not isinstance(s, int) or isinstance(s, bool) or s not in levels:
            o.fail("severities", f"{s!r} is not a severity level ({sorted(levels)})")
    if not severities:
        o.fail("severities", "at least one severity is required")
    default = o.get("default_severity", int, min(severities))
    if default not in severities:
        o.fail("default_severity", f"{default} is not among the allowed severities {list(severities)}")
    return Category(
        code=code, name=o.text("name"), kind=kind, class_code=class_code, class_name=class_name,
        departments=departments, multi_department=multi, severities=severities,
        default_severity=default, enabled=o.get("enabled", bool, True), note=o.text("note", ""),
    )


def _load_rules(doc: _Doc) -> tuple[list[RoutingRule], list[_Obj]]:
    root = _Obj(doc, doc.root, "$")
    rules: list[RoutingRule] = []
    objs = root.objects("rules")
    seen: dict[tuple[str, str], int] = {}
    for i, o in enumerate(objs):
        rule = RoutingRule(
            index=i, category=o.text("category"), area=o.text("area"),
            departments=o.strings("departments"), note=o.text("note", ""),
        )
        if not rule.departments:
            o.fail("departments", "a rule names at least one department")
        key = (rule.category, rule.area)
        if key in seen:
            o.fail("category", f"rule {seen[key]} already routes {rule.category} in {rule.area}")
        seen[key] = i
        rules.append(rule)
    return rules, objs


def _load_services(doc: _Doc, cats: Mapping[str, Category]) -> dict[str, Open311Service]:
    root = _Obj(doc, doc.root, "$")
    services: dict[str, Open311Service] = {}
    for o in root.objects("services"):
        code = o.text("service_code")
        if code in services:
            o.fail("service_code", f"duplicate service code {code!r}")
        cat = o.text("category", pattern=CATEGORY_RE)
        if cat not in cats:
            o.fail("category", f"unknown category {cat}")
        services[code] = Open311Service(
            code, o.text("service_name"), o.text("description", ""),
            o.text("group", cats[cat].class_name), cat, o.strings("keywords", []),
        )
    return services


# --- cross checks ------------------------------------------------------------------


def _check_departments(
    templates: tuple[str, ...], grids: list[Grid], depts: Mapping[str, Department],
    obj: _Obj, key: str,
) -> None:
    """Every (placeholder-resolved) department must exist for every grid it can apply to."""
    for template in templates:
        if not any(p in template for p in PLACEHOLDERS):
            if template not in depts:
                obj.fail(key, f"unknown department {template!r}")
            continue
        for grid in grids:
            code = template.replace("{village}", grid.village_code).replace(
                "{township}", grid.township_code)
            if code not in depts:
                obj.fail(key, f"department {template!r} resolves to unknown {code!r} "
                         f"for grid {grid.code}")


def _check_rules(rules: list[RoutingRule], objs: list[_Obj], cats: Mapping[str, Category],
                 grids: Mapping[str, Grid], areas: set[str],
                 depts: Mapping[str, Department]) -> None:
    for rule, o in zip(rules, objs, strict=True):
        covered = [c for c in cats.values() if c.code.startswith(rule.category)]
        if not covered:
            o.fail("category", f"{rule.category!r} matches no category code")
        if rule.area not in areas:
            o.fail("area", f"{rule.area!r} is not a county, township, village or grid code")
        if len(rule.departments) > 1 and any(not c.multi_department for c in covered):
            single = next(c.code for c in covered if not c.multi_department)
            o.fail("departments", f"several departments, but {single} is not a multi_department "
                   "category (a rule for it names exactly one)")
        in_area = [g for g in grids.values() if g.code.startswith(rule.area)]
        _check_departments(rule.departments, in_area, depts, o, "departments")


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        path = directory / name
        h.update(name.encode() + b"\0")
        h.update(path.read_bytes() if path.exists() else b"")
        h.update(b"\0")
    return h.hexdigest()


def load_reference_data(path: str | Path | None = None) -> ReferenceData:
    """Load and cross-check a county's reference data (default: the packaged sample county)."""
    directory = Path(path) if path is not None else SAMPLE_COUNTY_DIR
    county, townships, villages = _load_county(_read(directory, "county.json"))
    grids = _load_grids(_read(directory, "grids.geojson"), villages)
    workers = _load_workers(_read(directory, "workers.json"), grids)
    areas = {county.code, *townships, *villages, *grids}
    depts = _load_departments(_read(directory, "departments.json"), areas - set(grids))
    levels, cats, cat_objs = _load_categories(_read(directory, "categories.json"))
    all_grids = sorted(grids.values(), key=lambda g: g.code)
    for code, cat in cats.items():
        key = "departments" if cat.multi_department else "department"
        _check_departments(cat.departments, all_grids, depts, cat_objs[code], key)
    rules, rule_objs = _load_rules(_read(directory, "routing.json"))
    _check_rules(rules, rule_objs, cats, grids, areas, depts)
    services = (
        _load_services(_read(directory, "open311.json"), cats)
        if (directory / "open311.json").exists() else {}
    )
    return _assemble(directory, county, townships, villages, grids, workers, depts, levels, cats,
                     rules, services)


def _assemble(directory: Path, county: County, townships: dict[str, Township],
              villages: dict[str, Village], grids: dict[str, Grid], workers: dict[str, Worker],
              depts: dict[str, Department], levels: dict[int, SeverityLevel],
              cats: dict[str, Category], rules: list[RoutingRule],
              services: dict[str, Open311Service]) -> ReferenceData:
    by_village: dict[str, list[str]] = {}
    for g in sorted(grids):
        by_village.setdefault(grids[g].village_code, []).append(g)
    by_township: dict[str, list[str]] = {}
    for v in sorted(villages):
        by_township.setdefault(villages[v].township_code, []).append(v)
    by_area: dict[str, list[RoutingRule]] = {}
    for rule in rules:
        by_area.setdefault(rule.area, []).append(rule)
    return ReferenceData(
        county=county, townships=_ro(townships), villages=_ro(villages), grids=_ro(grids),
        workers=_ro(workers), departments=_ro(depts), categories=_ro(cats),
        severity_levels=MappingProxyType(levels), rules=tuple(rules), services=_ro(services),
        source=str(directory), digest=_digest(directory), spatial=GridIndex(grids.values()),
        grids_by_village=_ro({k: tuple(v) for k, v in by_village.items()}),
        villages_by_township=_ro({k: tuple(v) for k, v in by_township.items()}),
        rules_by_area=_ro({k: tuple(v) for k, v in by_area.items()}),
    )
