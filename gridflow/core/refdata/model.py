"""Reference data of one county, the model: divisions, grids, workers, departments, categories,
routing rules and Open311 services as frozen dataclasses, and `ReferenceData`, their indexed
whole. Read-only after loading (gridflow.core.refdata.load)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gridflow.core.configfile import ConfigError
from gridflow.core.geo import BBox, GridIndex, Polygon

SAMPLE_COUNTY_DIR = Path(__file__).resolve().parent.parent.parent / "refdata" / "sample_county"

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


class RefDataError(ConfigError):
    """A reference-data file that cannot be used: where (file, line, JSON path) and why."""


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


def read_only(d: dict[Any, Any]) -> Mapping[Any, Any]:
    """A read-only view of a loaded table."""
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


