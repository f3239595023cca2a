"""Reference data of one county (divisions, grids, workers, departments, categories, routing,
Open311 services), in three jobs: the model (`model`), the files' shapes (`files`, pydantic)
and loading with its cross-checks (`load`). A bad file fails with `RefDataError` naming the
file, the line and the JSON path of the offending value, and the reason."""

from gridflow.core.refdata.load import load_reference_data
from gridflow.core.refdata.model import (
    CATEGORY_KINDS,
    CATEGORY_RE,
    CLASS_RE,
    COUNTY_RE,
    DEPARTMENT_LEVELS,
    FILES,
    GRID_RE,
    PLACEHOLDERS,
    SAMPLE_COUNTY_DIR,
    TOWNSHIP_KINDS,
    TOWNSHIP_RE,
    VILLAGE_KINDS,
    VILLAGE_RE,
    WORKER_STATUSES,
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
)

__all__ = [
    "CATEGORY_KINDS", "CATEGORY_RE", "CLASS_RE", "COUNTY_RE", "DEPARTMENT_LEVELS", "FILES",
    "GRID_RE", "PLACEHOLDERS", "SAMPLE_COUNTY_DIR", "TOWNSHIP_KINDS", "TOWNSHIP_RE",
    "VILLAGE_KINDS", "VILLAGE_RE", "WORKER_STATUSES", "Category", "County", "Department", "Grid",
    "Open311Service", "Person", "RefDataError", "ReferenceData", "RoutingRule", "SeverityLevel",
    "Township", "Village", "Worker", "load_reference_data",
]
