"""Reference data of one county (divisions, grids, workers, departments, categories, routing,
Open311 services), in three jobs: the model (`model`), the files' shapes (`files`, pydantic)
and loading with its cross-checks (`load`). A bad file fails with `RefDataError` naming the
file, the line and the JSON path of the offending value, and the reason.

Here: what the rest of gridflow uses; every other name is in `model`.
"""

from gridflow.core.refdata.load import load_reference_data
from gridflow.core.refdata.model import (
    SAMPLE_COUNTY_DIR,
    Grid,
    RefDataError,
    ReferenceData,
    RoutingRule,
    Worker,
)

__all__ = ["SAMPLE_COUNTY_DIR", "Grid", "RefDataError", "ReferenceData", "RoutingRule", "Worker",
           "load_reference_data"]
