"""Reference data of one county, loading: each file read into its model
(gridflow.core.refdata.files), then cross-checked against the others and indexed.

A bad file fails with `RefDataError` naming the file, the line and the JSON path of the
offending value, and the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gridflow.core.configfile import JsonDoc, JsonPath, read_json
from gridflow.core.geo import GridIndex, Polygon, Ring, bbox_of
from gridflow.core.refdata import files as f
from gridflow.core.refdata.model import (
    CATEGORY_KINDS,
    FILES,
    PLACEHOLDERS,
    SAMPLE_COUNTY_DIR,
    Category,
    County,
    Department,
    Grid,
    Open311Service,
    Person,
    RefDataError,
    ReferenceData,
    RoutingRule,
    SeverityLevel,
    Township,
    Village,
    Worker,
    read_only,
)


def _read(directory: Path, name: str) -> JsonDoc:
    return read_json(directory / name, RefDataError, name=name)


def _leaders(entries: list[f.PersonEntry]) -> tuple[Person, ...]:
    return tuple(Person(p.name, p.title) for p in entries)


def _load_county(doc: JsonDoc) -> tuple[County, dict[str, Township], dict[str, Village]]:
    c = doc.validate(f.CountyFile)
    county = County(c.code, c.name, c.province, c.prefecture, _leaders(c.leaders))
    townships: dict[str, Township] = {}
    for i, t in enumerate(c.townships):
        at: JsonPath = ("townships", i)
        if t.code in townships:
            doc.fail(at + ("code",), f"duplicate code {t.code!r}")
        if not t.code.startswith(county.code):
            doc.fail(at + ("code",),
                     f"township code {t.code} does not start with county code {county.code}")
        townships[t.code] = Township(t.code, t.name, t.kind, _leaders(t.leaders))
    villages: dict[str, Village] = {}
    for i, v in enumerate(c.villages):
        at = ("villages", i)
        if v.code in villages:
            doc.fail(at + ("code",), f"duplicate code {v.code!r}")
        if v.township_code not in townships:
            doc.fail(at + ("township_code",), f"unknown township {v.township_code}")
        if not v.code.startswith(v.township_code):
            doc.fail(at + ("code",), f"village code {v.code} does not start with its township "
                     f"code {v.township_code}")
        villages[v.code] = Village(v.code, v.name, v.kind, v.township_code, _leaders(v.leaders))
    for code in townships:
        if not any(v.township_code == code for v in villages.values()):
            doc.fail(("townships",), f"township {code} has no village")
    return county, townships, villages


def _position(doc: JsonDoc, value: Any, path: JsonPath) -> tuple[float, float]:
    ok = (
        isinstance(value, list) and len(value) in (2, 3)
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in value)
    )
    if not ok:
        doc.fail(path, "a position must be [lon, lat] numbers")
    lon, lat = float(value[0]), float(value[1])
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        doc.fail(path, f"position [{lon}, {lat}] is out of range (is it [lon, lat]?)")
    return lon, lat


def _ring(doc: JsonDoc, value: Any, path: JsonPath) -> Ring:
    if not isinstance(value, list) or len(value) < 4:
        doc.fail(path, "a linear ring needs at least 4 positions")
    ring = tuple(_position(doc, p, path + (i,)) for i, p in enumerate(value))
    if ring[0] != ring[-1]:
        doc.fail(path, "a linear ring must be closed (first position == last)")
    if len(set(ring)) < 3:
        doc.fail(path, "a linear ring needs at least 3 distinct positions")
    return ring


def _polygon(doc: JsonDoc, value: Any, path: JsonPath) -> Polygon:
    if not isinstance(value, list) or not value:
        doc.fail(path, "a polygon is a non-empty list of rings")
    return tuple(_ring(doc, r, path + (i,)) for i, r in enumerate(value))


def _geometry(doc: JsonDoc, geometry: f.GridGeometry, path: JsonPath) -> tuple[Polygon, ...]:
    coords = path + ("coordinates",)
    if geometry.type == "Polygon":
        return (_polygon(doc, geometry.coordinates, coords),)
    if geometry.type == "MultiPolygon":
        if not geometry.coordinates:
            doc.fail(coords, "empty MultiPolygon")
        return tuple(_polygon(doc, p, coords + (i,)) for i, p in enumerate(geometry.coordinates))
    doc.fail(path + ("type",),
             f"grid geometry must be Polygon or MultiPolygon, got {geometry.type!r}")


def _load_grids(doc: JsonDoc, villages: dict[str, Village]) -> dict[str, Grid]:
    grids: dict[str, Grid] = {}
    for i, feature in enumerate(doc.validate(f.GridsFile).features):
        p, at = feature.properties, ("features", i, "properties")
        if p.code in grids:
            doc.fail(at + ("code",), f"duplicate code {p.code!r}")
        if p.village_code not in villages:
            doc.fail(at + ("village_code",), f"unknown village {p.village_code}")
        if not p.code.startswith(p.village_code):
            doc.fail(at + ("code",),
                     f"grid code {p.code} does not start with its village code {p.village_code}")
        township = villages[p.village_code].township_code
        if p.township_code is not None and p.township_code != township:
            doc.fail(at + ("township_code",), f"village {p.village_code} belongs to township "
                     f"{township}, not {p.township_code}")
        polygons = _geometry(doc, feature.geometry, ("features", i, "geometry"))
        grids[p.code] = Grid(p.code, p.name, p.village_code, township, polygons,
                             bbox_of(polygons))
    for code in villages:
        if not any(g.village_code == code for g in grids.values()):
            doc.fail(("features",), f"village {code} ({villages[code].name}) has no grid")
    return grids


def _load_workers(doc: JsonDoc, grids: Mapping[str, Grid]) -> dict[str, Worker]:
    for i, raw in enumerate(doc.root.get("workers", []) if isinstance(doc.root, dict) else []):
        if isinstance(raw, dict) and "token" in raw:
            doc.fail(("workers", i, "token"), "credentials do not belong in reference data: "
                     "give people accounts with `gridflow users` (import / add)")
    workers: dict[str, Worker] = {}
    for i, w in enumerate(doc.validate(f.WorkersFile).workers):
        if w.id in workers:
            doc.fail(("workers", i, "id"), f"duplicate worker id {w.id!r}")
        if w.grid_code not in grids:
            doc.fail(("workers", i, "grid_code"), f"unknown grid {w.grid_code}")
        workers[w.id] = Worker(w.id, w.name, w.grid_code, w.status, w.phone)
    return workers


def _load_departments(doc: JsonDoc, areas: set[str]) -> dict[str, Department]:
    depts: dict[str, Department] = {}
    at: dict[str, JsonPath] = {}
    area_len = {"village": 12, "township": 9, "county": 6, "leadership": 6}
    for i, d in enumerate(doc.validate(f.DepartmentsFile).departments):
        if d.code in depts:
            doc.fail(("departments", i, "code"), f"duplicate code {d.code!r}")
        if d.area not in areas or len(d.area) != area_len[d.level]:
            doc.fail(("departments", i, "area"),
                     f"{d.area!r} is not a known {d.level}-level area code")
        depts[d.code] = Department(d.code, d.name, d.short_name, d.level, d.parent, d.area)
        at[d.code] = ("departments", i)
    for code, dept in depts.items():
        if dept.parent is not None and dept.parent not in depts:
            doc.fail(at[code] + ("parent",), f"unknown department {dept.parent!r}")
        seen = {code}
        cur = dept.parent
        while cur is not None:
            if cur in seen:
                doc.fail(at[code] + ("parent",), f"parent chain of {code} loops back to {cur}")
            seen.add(cur)
            cur = depts[cur].parent
    return depts


def _load_categories(
    doc: JsonDoc,
) -> tuple[dict[int, SeverityLevel], dict[str, Category], dict[str, JsonPath]]:
    file = doc.validate(f.CategoriesFile)
    levels: dict[int, SeverityLevel] = {}
    for i, s in enumerate(file.severity_levels):
        if s.code in levels:
            doc.fail(("severity_levels", i, "code"), f"duplicate severity level {s.code}")
        levels[s.code] = SeverityLevel(s.code, s.name)
    if not levels:
        doc.fail(("severity_levels",), "at least one severity level is required")
    cats: dict[str, Category] = {}
    paths: dict[str, JsonPath] = {}
    class_codes: set[str] = set()
    for i, c in enumerate(file.classes):
        if c.code in class_codes:
            doc.fail(("classes", i, "code"), f"duplicate class {c.code!r}")
        class_codes.add(c.code)
        if c.kind != CATEGORY_KINDS[c.code[0]]:
            doc.fail(("classes", i, "kind"),
                     f"class {c.code} must be kind {CATEGORY_KINDS[c.code[0]]!r}")
        for j, entry in enumerate(c.subcategories):
            at: JsonPath = ("classes", i, "subcategories", j)
            cat = _category(doc, at, entry, c, levels)
            if cat.code in cats:
                doc.fail(at + ("code",), f"duplicate code {cat.code!r}")
            cats[cat.code], paths[cat.code] = cat, at
    return levels, cats, paths


def _category(doc: JsonDoc, at: JsonPath, o: f.CategoryEntry, cls: f.ClassEntry,
              levels: Mapping[int, SeverityLevel]) -> Category:
    if not o.code.startswith(cls.code):
        doc.fail(at + ("code",), f"category {o.code} is listed under class {cls.code}")
    if o.multi_department:
        if o.departments is None:
            doc.fail(at + ("departments",), "required field is missing")
        if len(o.departments) < 2:
            doc.fail(at + ("departments",),
                     "a multi_department category lists at least 2 departments")
        if o.department is not None:
            doc.fail(at + ("department",),
                     "use 'departments' (a list) for a multi_department category")
        departments = tuple(o.departments)
    else:
        if o.departments is not None:
            doc.fail(at + ("departments",), "only a multi_department category lists several "
                     "departments; use 'department'")
        if o.department is None:
            doc.fail(at + ("department",), "required field is missing")
        departments = (o.department,)
    severities = tuple(o.severities if o.severities is not None else levels)
    for s in severities:
        if s not in levels:
            doc.fail(at + ("severities",), f"{s!r} is not a severity level ({sorted(levels)})")
    if not severities:
        doc.fail(at + ("severities",), "at least one severity is required")
    default = o.default_severity if o.default_severity is not None else min(severities)
    if default not in severities:
        doc.fail(at + ("default_severity",),
                 f"{default} is not among the allowed severities {list(severities)}")
    return Category(
        code=o.code, name=o.name, kind=cls.kind, class_code=cls.code, class_name=cls.name,
        departments=departments, multi_department=o.multi_department, severities=severities,
        default_severity=default, enabled=o.enabled, note=o.note,
    )


def _load_rules(doc: JsonDoc) -> list[RoutingRule]:
    rules: list[RoutingRule] = []
    seen: dict[tuple[str, str], int] = {}
    for i, r in enumerate(doc.validate(f.RoutingFile).rules):
        rule = RoutingRule(index=i, category=r.category, area=r.area,
                           departments=tuple(r.departments), note=r.note)
        if not rule.departments:
            doc.fail(("rules", i, "departments"), "a rule names at least one department")
        key = (rule.category, rule.area)
        if key in seen:
            doc.fail(("rules", i, "category"),
                     f"rule {seen[key]} already routes {rule.category} in {rule.area}")
        seen[key] = i
        rules.append(rule)
    return rules


def _load_services(doc: JsonDoc, cats: Mapping[str, Category]) -> dict[str, Open311Service]:
    services: dict[str, Open311Service] = {}
    for i, s in enumerate(doc.validate(f.Open311File).services):
        if s.service_code in services:
            doc.fail(("services", i, "service_code"),
                     f"duplicate service code {s.service_code!r}")
        if s.category not in cats:
            doc.fail(("services", i, "category"), f"unknown category {s.category}")
        group = s.group if s.group is not None else cats[s.category].class_name
        services[s.service_code] = Open311Service(s.service_code, s.service_name,
                                                  s.description, group, s.category,
                                                  tuple(s.keywords))
    return services


# --- cross checks ------------------------------------------------------------------


def _check_departments(doc: JsonDoc, path: JsonPath, templates: tuple[str, ...],
                       grids: list[Grid], depts: Mapping[str, Department]) -> None:
    """Every (placeholder-resolved) department must exist for every grid it can apply to."""
    for template in templates:
        if not any(p in template for p in PLACEHOLDERS):
            if template not in depts:
                doc.fail(path, f"unknown department {template!r}")
            continue
        for grid in grids:
            code = template.replace("{village}", grid.village_code).replace(
                "{township}", grid.township_code)
            if code not in depts:
                doc.fail(path, f"department {template!r} resolves to unknown {code!r} "
                         f"for grid {grid.code}")


def _check_rules(doc: JsonDoc, rules: list[RoutingRule], cats: Mapping[str, Category],
                 grids: Mapping[str, Grid], areas: set[str],
                 depts: Mapping[str, Department]) -> None:
    for rule in rules:
        at: JsonPath = ("rules", rule.index)
        covered = [c for c in cats.values() if c.code.startswith(rule.category)]
        if not covered:
            doc.fail(at + ("category",), f"{rule.category!r} matches no category code")
        if rule.area not in areas:
            doc.fail(at + ("area",),
                     f"{rule.area!r} is not a county, township, village or grid code")
        if len(rule.departments) > 1 and any(not c.multi_department for c in covered):
            single = next(c.code for c in covered if not c.multi_department)
            doc.fail(at + ("departments",), f"several departments, but {single} is not a "
                     "multi_department category (a rule for it names exactly one)")
        in_area = [g for g in grids.values() if g.code.startswith(rule.area)]
        _check_departments(doc, at + ("departments",), rule.departments, in_area, depts)


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
    categories = _read(directory, "categories.json")
    levels, cats, cat_paths = _load_categories(categories)
    all_grids = sorted(grids.values(), key=lambda g: g.code)
    for code, cat in cats.items():
        key = "departments" if cat.multi_department else "department"
        _check_departments(categories, cat_paths[code] + (key,), cat.departments, all_grids,
                           depts)
    routing = _read(directory, "routing.json")
    rules = _load_rules(routing)
    _check_rules(routing, rules, cats, grids, areas, depts)
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
        county=county, townships=read_only(townships), villages=read_only(villages),
        grids=read_only(grids), workers=read_only(workers), departments=read_only(depts),
        categories=read_only(cats), severity_levels=MappingProxyType(levels),
        rules=tuple(rules), services=read_only(services), source=str(directory),
        digest=_digest(directory), spatial=GridIndex(grids.values()),
        grids_by_village=read_only({k: tuple(v) for k, v in by_village.items()}),
        villages_by_township=read_only({k: tuple(v) for k, v in by_township.items()}),
        rules_by_area=read_only({k: tuple(v) for k, v in by_area.items()}),
    )
