"""Routing: which department(s) handle a category of problem in a grid.

Pure and total for known categories: the most specific routing rule wins (area first:
grid > village > township > county, then category: exact code > class prefix), else the
category's default department(s). The decision says which rule matched, for the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass

from gridflow.core.refdata import Grid, ReferenceData, RoutingRule

AREA_LEVELS = {6: "county", 9: "township", 12: "village", 15: "grid"}
AREA_LEVELS_ZH = {6: "县", 9: "乡镇(街道)", 12: "村(社区)", 15: "网格"}


class UnknownCategory(KeyError):
    """The category code is not in the reference data's catalogue."""


@dataclass(frozen=True)
class RouteDecision:
    category_code: str
    grid_code: str
    departments: tuple[str, ...]  # resolved codes; one unless the category is multi_department
    multi_department: bool
    source: str  # "rule" | "category_default"
    rule_index: int | None  # position in routing.json when source == "rule"
    rule_category: str | None
    rule_area: str | None
    reason: str  # English, for logs and the audit trail
    reason_zh: str

    @property
    def lead(self) -> str:
        """The lead (主办) department: the first listed."""
        return self.departments[0]

    @property
    def whistled(self) -> bool:
        """Several departments are called at once (吹哨报到)."""
        return len(self.departments) > 1

    def to_dict(self) -> dict[str, object]:
        return {
            "departments": list(self.departments), "lead_department": self.lead,
            "multi_department": self.multi_department, "routing_source": self.source,
            "routing_rule": self.rule_index, "routing_reason": self.reason,
            "routing_reason_zh": self.reason_zh,
        }


def matching_rule(ref: ReferenceData, category_code: str, grid_code: str) -> RoutingRule | None:
    """The most specific rule for this category in this grid, or None."""
    best: RoutingRule | None = None
    for length in (15, 12, 9, 6):
        for rule in ref.rules_by_area.get(grid_code[:length], ()):
            if category_code.startswith(rule.category) and (
                best is None or rule.specificity > best.specificity
            ):
                best = rule
        if best is not None:
            return best
    return None


def route(ref: ReferenceData, category_code: str, grid: Grid | str) -> RouteDecision:
    """Departments responsible for `category_code` in `grid`. Raises UnknownCategory."""
    category = ref.categories.get(category_code)
    if category is None:
        raise UnknownCategory(category_code)
    if isinstance(grid, str):
        grid = ref.grids[grid]
    rule = matching_rule(ref, category_code, grid.code)
    if rule is not None:
        departments = ref.resolve_all(rule.departments, grid)
        level = len(rule.area)
        area_name = ref.area_name(rule.area)
        return RouteDecision(
            category_code=category_code, grid_code=grid.code, departments=departments,
            multi_department=category.multi_department, source="rule", rule_index=rule.index,
            rule_category=rule.category, rule_area=rule.area,
            reason=(f"routing rule #{rule.index} ({rule.category} in {AREA_LEVELS[level]} "
                    f"{rule.area}) -> {', '.join(departments)}"),
            reason_zh=(f"按分派规则第{rule.index}条({rule.category} @ {AREA_LEVELS_ZH[level]}"
                       f"{area_name})派遣: {_names(ref, departments)}"),
        )
    departments = ref.resolve_all(category.departments, grid)
    return RouteDecision(
        category_code=category_code, grid_code=grid.code, departments=departments,
        multi_department=category.multi_department, source="category_default", rule_index=None,
        rule_category=None, rule_area=None,
        reason=f"default department(s) of category {category_code} -> {', '.join(departments)}",
        reason_zh=f"按「{category.name}」默认责任部门派遣: {_names(ref, departments)}",
    )


def _names(ref: ReferenceData, codes: tuple[str, ...]) -> str:
    return "、".join(ref.departments[c].name if c in ref.departments else c for c in codes)
