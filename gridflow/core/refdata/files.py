"""Reference data of one county, the files' shapes: one pydantic model per file, what each
field must look like. What the files must say about each other (a grid's village exists, a
department resolves for every grid) is checked by gridflow.core.refdata.load."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from gridflow.core.refdata.model import (
    CATEGORY_RE,
    CLASS_RE,
    COUNTY_RE,
    GRID_RE,
    TOWNSHIP_RE,
    VILLAGE_RE,
)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Text = Annotated[str, AfterValidator(_not_blank)]  # a required text: not blank
Name = Annotated[str, StringConstraints(min_length=1)]  # an item of a list of codes


def code(pattern: Any) -> Any:
    return Annotated[str, StringConstraints(pattern=pattern.pattern)]


class _File(BaseModel):
    # keys the loader does not know are left alone (notes, a county's own extra facts)
    model_config = ConfigDict(extra="ignore", frozen=True)


class PersonEntry(_File):
    name: Text
    title: Text


class TownshipEntry(_File):
    code: code(TOWNSHIP_RE)  # type: ignore[valid-type]
    name: Text
    kind: Literal["街道", "镇", "乡"]
    leaders: list[PersonEntry] = []


class VillageEntry(_File):
    code: code(VILLAGE_RE)  # type: ignore[valid-type]
    name: Text
    kind: Literal["社区", "村"]
    township_code: code(TOWNSHIP_RE)  # type: ignore[valid-type]
    leaders: list[PersonEntry] = []


class CountyFile(_File):
    code: code(COUNTY_RE)  # type: ignore[valid-type]
    name: Text
    province: str = ""
    prefecture: str = ""
    leaders: list[PersonEntry] = []
    townships: list[TownshipEntry]
    villages: list[VillageEntry]


class GridProperties(_File):
    code: code(GRID_RE)  # type: ignore[valid-type]
    name: Text
    village_code: code(VILLAGE_RE)  # type: ignore[valid-type]
    township_code: str | None = None


class GridGeometry(_File):
    type: Text
    coordinates: list[Any]  # rings and positions are checked by the loader (ring rules)


class GridFeature(_File):
    properties: GridProperties
    geometry: GridGeometry


class GridsFile(_File):
    type: Literal["FeatureCollection"]
    features: list[GridFeature]


class WorkerEntry(_File):
    id: Text
    name: Text
    grid_code: code(GRID_RE)  # type: ignore[valid-type]
    status: Literal["active", "suspended"]
    phone: str = ""


class WorkersFile(_File):
    workers: list[WorkerEntry]


class DepartmentEntry(_File):
    code: Text
    name: Text
    short_name: str = ""
    level: Literal["village", "township", "county", "leadership"]
    parent: str | None = None
    area: Text


class DepartmentsFile(_File):
    departments: list[DepartmentEntry]


class SeverityEntry(_File):
    code: int
    name: Text


class CategoryEntry(_File):
    code: code(CATEGORY_RE)  # type: ignore[valid-type]
    name: Text
    department: Text | None = None
    departments: list[Name] | None = None
    multi_department: bool = False
    severities: list[int] | None = None
    default_severity: int | None = None
    enabled: bool = True
    note: str = ""


class ClassEntry(_File):
    code: code(CLASS_RE)  # type: ignore[valid-type]
    kind: Text
    name: Text
    subcategories: list[CategoryEntry]


class CategoriesFile(_File):
    severity_levels: list[SeverityEntry]
    classes: list[ClassEntry]


class RuleEntry(_File):
    category: Text
    area: Text
    departments: list[Name]
    note: str = ""


class RoutingFile(_File):
    rules: list[RuleEntry]


class ServiceEntry(_File):
    service_code: Text
    service_name: Text
    description: str = ""
    group: str | None = None
    category: code(CATEGORY_RE)  # type: ignore[valid-type]
    keywords: list[Name] = []


class Open311File(_File):
    services: list[ServiceEntry]
