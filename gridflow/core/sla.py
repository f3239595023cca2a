"""Deadline policy (时限): per-category and per-severity stage clocks, warnings, escalation.

Pure configuration plus arithmetic on a `WorkingCalendar`; the same inputs always give the same
deadlines, so a replay reproduces every decision. Load errors name the file and the reason.

Stages and their clocks
-----------------------
* ``sign`` (签收): N working hours (or days) from dispatch.
* ``resolve`` (办结): from **dispatch** by default (``"resolve_clock_starts": "dispatch"``), as
  数字城管 处置时限 are counted from 派遣, so a late sign-for does not buy the department time;
  ``"sign"`` counts from signing instead. `SlaPolicy.clock_start` applies the choice.
* ``verify`` (核查): from resolution.

Rule lookup (most specific wins)
--------------------------------
Rules are keyed by an exact category code (``E0102``) or a prefix of one (class ``E01``, kind
``E``); a code matches a key it starts with. Candidates are tried from the most specific
(exact, then the longest prefix) to the policy ``default``; the first one that defines the
stage wins, and within it a ``severity`` override for the task's severity beats its base
value. So a category rule is never overridden by the default's severity table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from gridflow.core.calendar import WorkingCalendar
from gridflow.core.configfile import ConfigError, JsonDoc, JsonPath, doc_of, read_json

REFDATA_DIR = Path(__file__).resolve().parent.parent / "refdata"

SIGN, RESOLVE, VERIFY = "sign", "resolve", "verify"
STAGES: tuple[str, ...] = (SIGN, RESOLVE, VERIFY)
STAGE_NAMES_ZH = {SIGN: "签收", RESOLVE: "办结", VERIFY: "核查"}
DEFAULT_WARN_FRACTIONS: tuple[float, ...] = (0.5, 0.8)
DEFAULT_RULE = "default"

PolicySource = str | Path | Mapping[str, Any]
T = TypeVar("T")


class PolicyError(ValueError):
    """A policy or escalation file that cannot be loaded; names the file and the reason."""


@dataclass(frozen=True)
class StageLimit:
    """How long a stage may take: `amount` working hours or working days."""

    amount: float
    unit: str  # "hours" | "days"

    def due(self, start: datetime, calendar: WorkingCalendar) -> datetime:
        if self.unit == "hours":
            return calendar.add_working_hours(start, self.amount)
        return calendar.add_working_days(start, self.amount)

    def to_dict(self) -> dict[str, float]:
        return {self.unit: self.amount}


@dataclass(frozen=True)
class StageDeadline:
    """One stage's clock: due instant and warning instants (超时预警), all UTC."""

    stage: str
    start: datetime
    due_at: datetime
    warn_at: tuple[datetime, ...]  # at `warn_fractions` of the WORKING time from start to due
    warn_fractions: tuple[float, ...] = DEFAULT_WARN_FRACTIONS
    rule: str = DEFAULT_RULE  # the rule key that set the limit, for the audit trail
    limit: StageLimit | None = None  # None when due_at was given, not computed


@dataclass(frozen=True)
class Level:
    """One rung of the escalation ladder (督办层级)."""

    code: str  # grid | village | township | county_department | county_leadership
    name: str  # 网格 | 村(社区) | 乡镇(街道) | 县直部门 | 县领导
    escalate_after_hours: float | None  # working hours at this level before the next; None = top
    notify: tuple[str, ...] = ()


@dataclass(frozen=True)
class LimitExceeded:
    """A request beyond a policy limit: a code, and the reason in Chinese and English."""

    code: str
    zh: str
    en: str


@dataclass(frozen=True)
class ExtensionLimit:
    """延期: how many extensions a task may get and how many working days in all."""

    max_count: int
    max_days_each: float
    max_days_total: float

    def refusal(self, granted_count: int, granted_days: float, requested_days: float) -> str | None:
        """Why a request exceeds the limit (English), or None when it is within it."""
        found = self.check(granted_count, granted_days, requested_days)
        return None if found is None else found.en

    def check(
        self, granted_count: int, granted_days: float, requested_days: float
    ) -> LimitExceeded | None:
        """Why a request exceeds the limit (code, Chinese, English), or None within it."""
        if requested_days <= 0:
            return LimitExceeded(
                "extension_days", "延期天数须为正数",
                "an extension must be a positive number of working days",
            )
        if granted_count >= self.max_count:
            return LimitExceeded(
                "extension_count",
                f"每项任务最多延期{self.max_count}次, 已延期{granted_count}次",
                f"at most {self.max_count} extension(s) per task",
            )
        if requested_days > self.max_days_each:
            return LimitExceeded(
                "extension_too_long",
                f"每次延期不得超过{self.max_days_each:g}个工作日",
                f"at most {self.max_days_each:g} working days per extension",
            )
        if granted_days + requested_days > self.max_days_total:
            return LimitExceeded(
                "extension_total",
                f"累计延期不得超过{self.max_days_total:g}个工作日"
                f"(已延期{granted_days:g}个工作日)",
                f"at most {self.max_days_total:g} working days of extension in all",
            )
        return None


@dataclass(frozen=True)
class _Rule:
    key: str
    name: str
    limits: Mapping[str, StageLimit]
    severity: Mapping[int, Mapping[str, StageLimit]]
    warn_fractions: tuple[float, ...] | None


@dataclass(frozen=True)
class SlaPolicy:
    """A loaded deadline policy; build with `SlaPolicy.load` or `load_bundled_policy`."""

    default: _Rule
    rules: Mapping[str, _Rule]
    warn_fractions: tuple[float, ...]
    resolve_clock_starts: str  # "dispatch" | "sign"
    send_back_restarts_clock: bool
    extension_limit: ExtensionLimit
    escalation_ladder: tuple[Level, ...]
    start_levels: Mapping[str, int]  # department level -> ladder index where escalation starts
    severity_names: Mapping[int, str]
    source: str = ""

    @classmethod
    def load(cls, source: PolicySource, escalation: PolicySource | None = None) -> SlaPolicy:
        """Load a policy; the ladder comes from `escalation`, else the policy's "escalation"
        entry (an inline object, or a file name relative to the policy file's directory)."""
        raw, origin, base_dir, doc = _read(source, "policy")
        try:
            return _build_policy(raw, origin, base_dir, escalation)
        except PolicyError:
            raise
        except _At as exc:  # file:line: $.path: reason
            raise PolicyError(str(doc.error(exc.path, str(exc)))) from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"{origin}: {exc}") from exc

    # --- deadlines -------------------------------------------------------------

    def limit_for(self, category_code: str, severity: int, stage: str) -> tuple[StageLimit, str]:
        """The stage limit for a category and severity, and the key of the rule that set it."""
        _check_stage(stage)
        for rule in self._candidates(category_code):
            by_severity = rule.severity.get(int(severity), {})
            if stage in by_severity:
                return by_severity[stage], rule.key
            if stage in rule.limits:
                return rule.limits[stage], rule.key
        raise PolicyError(f"no limit for stage {stage!r}")  # unreachable: default has all

    def warn_fractions_for(self, category_code: str) -> tuple[float, ...]:
        for rule in self._candidates(category_code):
            if rule.warn_fractions is not None:
                return rule.warn_fractions
        return self.warn_fractions

    def stage_deadline(
        self,
        category_code: str,
        severity: int,
        stage: str,
        start: datetime,
        calendar: WorkingCalendar,
    ) -> StageDeadline:
        """The due instant of a stage started at `start`, and its warning instants."""
        limit, rule = self.limit_for(category_code, severity, stage)
        due = limit.due(start, calendar)
        fractions = self.warn_fractions_for(category_code)
        return StageDeadline(
            stage=stage,
            start=start.astimezone(UTC),
            due_at=due,
            warn_at=warn_instants(start, due, fractions, calendar),
            warn_fractions=fractions,
            rule=rule,
            limit=limit,
        )

    def deadline_until(
        self,
        category_code: str,
        stage: str,
        start: datetime,
        due_at: datetime,
        calendar: WorkingCalendar,
    ) -> StageDeadline:
        """A stage whose due instant is already decided (carried by an event, or extended)."""
        _check_stage(stage)
        fractions = self.warn_fractions_for(category_code)
        return StageDeadline(
            stage=stage,
            start=start.astimezone(UTC),
            due_at=due_at.astimezone(UTC),
            warn_at=warn_instants(start, due_at, fractions, calendar),
            warn_fractions=fractions,
            rule="given",
            limit=None,
        )

    def clock_start(
        self,
        stage: str,
        *,
        dispatched_at: datetime,
        signed_at: datetime | None = None,
        resolved_at: datetime | None = None,
    ) -> datetime | None:
        """Where a stage's clock starts under this policy; None until that instant exists."""
        _check_stage(stage)
        if stage == SIGN:
            return dispatched_at
        if stage == RESOLVE:
            return dispatched_at if self.resolve_clock_starts == "dispatch" else signed_at
        return resolved_at

    # --- escalation ---------------------------------------------------------------

    def level_index(self, code: str) -> int:
        for i, level in enumerate(self.escalation_ladder):
            if level.code == code:
                return i
        raise KeyError(f"no escalation level {code!r}")

    def start_level(self, department_level: str) -> int:
        """The ladder index a breach is first reported at, for a department's level."""
        return self.start_levels.get(department_level, 0)

    def next_escalation_at(
        self, breached_at: datetime, level_index: int, calendar: WorkingCalendar
    ) -> datetime | None:
        """When a task at `level_index` since `breached_at` goes up one level; None at the top.

        `breached_at` is when the task reached this level without progress: the breach, the
        previous escalation, or the last progress note (which restarts this wait).
        """
        if not 0 <= level_index < len(self.escalation_ladder):
            raise ValueError(f"level index {level_index} is not on the ladder")
        hours = self.escalation_ladder[level_index].escalate_after_hours
        if hours is None or level_index == len(self.escalation_ladder) - 1:
            return None
        return calendar.add_working_hours(breached_at, hours)

    def _candidates(self, category_code: str) -> list[_Rule]:
        """The rules that apply to a category, most specific first (memoised: the policy is
        immutable, and this runs several times for every task planned)."""
        cache = self.__dict__.setdefault("_candidates_cache", {})
        found = cache.get(category_code)
        if found is None:
            found = cache[category_code] = self._candidates_uncached(category_code)
        return found

    def _candidates_uncached(self, category_code: str) -> list[_Rule]:
        exact = self.rules.get(category_code)
        prefixes = sorted(
            (
                r
                for k, r in self.rules.items()
                if k != category_code and category_code.startswith(k)
            ),
            key=lambda r: len(r.key),
            reverse=True,
        )
        return [*([exact] if exact else []), *prefixes, self.default]


class SlaPlanner:
    """The case aggregate's planner (a `PolicyPlanner`): this policy over this calendar."""

    def __init__(self, policy: SlaPolicy, calendar: WorkingCalendar) -> None:
        self.policy = policy
        self.calendar = calendar

    def due(self, category_code: str, severity: int, stage: str, start: datetime) -> datetime:
        """`stage_deadline(...).due_at`, without working out the warning instants."""
        limit, _ = self.policy.limit_for(category_code, severity, stage)
        return limit.due(start, self.calendar)

    def add_working_days(self, start: datetime, days: float) -> datetime:
        return self.calendar.add_working_days(start, days)

    # The policy facts the aggregate applies besides deadlines (case.PolicyPlanner).
    @property
    def extension_limit(self) -> ExtensionLimit:
        return self.policy.extension_limit

    @property
    def send_back_restarts_clock(self) -> bool:
        return self.policy.send_back_restarts_clock


def warn_instants(
    start: datetime, due: datetime, fractions: Sequence[float], calendar: WorkingCalendar
) -> tuple[datetime, ...]:
    """Instants at each fraction of the working time between start and due."""
    span = calendar.working_time_between(start, due)
    if span <= timedelta(0):
        return ()
    return tuple(calendar.add_working_time(start, span * f) for f in fractions)


def load_bundled_policy() -> SlaPolicy:
    """gridflow/refdata/sla_policy.json with its escalation.json."""
    return SlaPolicy.load(REFDATA_DIR / "sla_policy.json")


# --- parsing -----------------------------------------------------------------------

_POLICY_KEYS = {
    "source",
    "note",
    "severity_names",
    "warn_fractions",
    "resolve_clock_starts",
    "send_back",
    "extension",
    "default",
    "rules",
    "escalation",
}
_RULE_KEYS = {"match", "name", "note", "severity", "warn_fractions", *STAGES}


class _PolicyFile(BaseModel):
    """sla_policy.json's shape (what each rule and limit must be is checked below)."""

    model_config = ConfigDict(extra="forbid")

    source: Any = None
    note: Any = None
    severity_names: dict[str, str] = {}
    warn_fractions: Any = None
    resolve_clock_starts: str = "dispatch"
    send_back: Any = None
    extension: Any = None
    default: dict[str, Any]
    rules: list[Any] = []
    escalation: str | dict[str, Any] | None = None


class _LevelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    name: str
    escalate_after_hours: Any = None
    notify: list[str] = []
    note: Any = None


class _EscalationFile(BaseModel):
    """escalation.json's shape."""

    model_config = ConfigDict(extra="forbid")

    source: Any = None
    note: Any = None
    levels: list[_LevelEntry]
    start_level_by_department_level: dict[str, str] = {}


class _At(ValueError):
    """A value of a policy or ladder refused, with the JSON path where it stands."""

    def __init__(self, path: JsonPath, reason: str) -> None:
        super().__init__(reason)
        self.path = path


def _at(path: JsonPath, parse: Callable[..., T], *args: Any) -> T:
    """`parse(*args)`, a refusal placed at `path` (unless it names a deeper place itself)."""
    try:
        return parse(*args)
    except _At:
        raise
    except ValueError as exc:
        raise _At(path, str(exc)) from exc


def _read(source: PolicySource, what: str) -> tuple[Mapping[str, Any], str, Path, JsonDoc]:
    if isinstance(source, Mapping):
        return source, f"<{what} dict>", REFDATA_DIR, doc_of(source, f"<{what} dict>")
    path = Path(source)
    try:
        doc = read_json(path)
        doc.validate(_EscalationFile if what == "escalation" else _PolicyFile)
    except ConfigError as exc:  # the file, the line, the JSON path and why
        raise PolicyError(str(exc)) from exc
    return doc.root, str(path), path.parent, doc


def _build_policy(
    raw: Mapping[str, Any], origin: str, base_dir: Path, escalation: PolicySource | None
) -> SlaPolicy:
    _no_unknown(raw, _POLICY_KEYS, "policy")
    default = _parse_rule(DEFAULT_RULE, raw["default"] if "default" in raw else None,
                          ("default",))
    missing = [s for s in STAGES if s not in default.limits]
    if missing:
        raise _At(("default",), f"'default' must set every stage; missing {missing}")
    rules: dict[str, _Rule] = {}
    for i, item in enumerate(_list(raw.get("rules", []), "rules")):
        key = item.get("match") if isinstance(item, Mapping) else None
        if not isinstance(key, str) or not key:
            raise _At(("rules", i), f"each rule needs a non-empty 'match' code, got {item!r}")
        if key in rules:
            raise _At(("rules", i, "match"), f"rule {key!r} is defined twice")
        rules[key] = _parse_rule(key, item, ("rules", i))
    starts = str(raw.get("resolve_clock_starts", "dispatch"))
    if starts not in {"dispatch", "sign"}:
        raise _At(("resolve_clock_starts",),
                  f"resolve_clock_starts must be 'dispatch' or 'sign', got {starts!r}")
    ladder, start_levels = _load_ladder(raw, origin, base_dir, escalation)
    return SlaPolicy(
        default=default,
        rules=rules,
        warn_fractions=_at(("warn_fractions",), _fractions,
                           raw.get("warn_fractions", list(DEFAULT_WARN_FRACTIONS)), "policy"),
        resolve_clock_starts=starts,
        send_back_restarts_clock=_at(("send_back",), _send_back, raw.get("send_back", {})),
        extension_limit=_at(("extension",), _extension, raw.get("extension", {})),
        escalation_ladder=ladder,
        start_levels=start_levels,
        severity_names={int(k): str(v) for k, v in dict(raw.get("severity_names", {})).items()},
        source=origin,
    )


def _parse_rule(key: str, raw: Any, at: JsonPath) -> _Rule:
    if not isinstance(raw, Mapping):
        raise _At(at, f"rule {key!r} must be an object")
    _at(at, _no_unknown, raw, _RULE_KEYS, f"rule {key!r}")
    severity: dict[int, dict[str, StageLimit]] = {}
    for sev, limits in dict(raw.get("severity", {})).items():
        where, here = f"rule {key!r} severity {sev!r}", at + ("severity", sev)
        if not isinstance(limits, Mapping):
            raise _At(here, f"{where} must be an object of stage limits")
        _at(here, _no_unknown, limits, set(STAGES), where)
        severity[_at(here, _severity_key, sev, where)] = {
            s: _at(here + (s,), _limit, v, f"{where} {s}") for s, v in limits.items()
        }
    fractions = raw.get("warn_fractions")
    return _Rule(
        key=key,
        name=str(raw.get("name", "")),
        limits={s: _at(at + (s,), _limit, raw[s], f"rule {key!r} {s}")
                for s in STAGES if s in raw},
        severity=severity,
        warn_fractions=None if fractions is None else _at(
            at + ("warn_fractions",), _fractions, fractions, f"rule {key!r}"),
    )


def _limit(raw: Any, where: str) -> StageLimit:
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in {"hours", "days"}:
        raise ValueError(f'{where}: a limit is {{"hours": n}} or {{"days": n}}, got {raw!r}')
    unit, amount = next(iter(raw.items()))
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
        raise ValueError(f"{where}: {unit} must be a positive number, got {amount!r}")
    return StageLimit(float(amount), unit)


def _severity_key(raw: Any, where: str) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{where}: severity keys are integers like "2"') from exc


def _fractions(raw: Any, where: str) -> tuple[float, ...]:
    values = _list(raw, f"{where} warn_fractions")
    if not all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1 for f in values
    ):
        raise ValueError(f"{where}: warn_fractions must lie strictly between 0 and 1, got {raw!r}")
    if list(values) != sorted(set(values)):
        raise ValueError(f"{where}: warn_fractions must be increasing without repeats, got {raw!r}")
    return tuple(float(f) for f in values)


def _send_back(raw: Any) -> bool:
    if not isinstance(raw, Mapping):
        raise ValueError("'send_back' must be an object like {\"restart_clock\": true}")
    _no_unknown(raw, {"restart_clock", "note"}, "send_back")
    value = raw.get("restart_clock", True)
    if not isinstance(value, bool):
        raise ValueError("send_back.restart_clock must be true or false")
    return value


def _extension(raw: Any) -> ExtensionLimit:
    if not isinstance(raw, Mapping):
        raise ValueError("'extension' must be an object")
    _no_unknown(raw, {"max_count", "max_days_each", "max_days_total", "note"}, "extension")
    limit = ExtensionLimit(
        max_count=int(raw.get("max_count", 1)),
        max_days_each=float(raw.get("max_days_each", 10)),
        max_days_total=float(raw.get("max_days_total", 10)),
    )
    if limit.max_count < 0 or limit.max_days_each <= 0 or limit.max_days_total <= 0:
        raise ValueError(f"extension limits must be positive, got {dict(raw)!r}")
    return limit


def _load_ladder(
    raw: Mapping[str, Any], origin: str, base_dir: Path, escalation: PolicySource | None
) -> tuple[tuple[Level, ...], dict[str, int]]:
    if escalation is None:
        ref = raw.get("escalation")
        if ref is None:
            raise ValueError('no escalation ladder: set "escalation" or pass one to load()')
        escalation = ref if isinstance(ref, Mapping) else base_dir / str(ref)
    esc_raw, esc_origin, _, esc_doc = _read(escalation, "escalation")
    try:
        return _parse_ladder(esc_raw)
    except _At as exc:  # file:line: $.path: reason
        raise PolicyError(str(esc_doc.error(exc.path, str(exc)))) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyError(f"{esc_origin}: {exc}") from exc


def _parse_ladder(raw: Mapping[str, Any]) -> tuple[tuple[Level, ...], dict[str, int]]:
    _no_unknown(raw, {"source", "note", "levels", "start_level_by_department_level"}, "escalation")
    levels: list[Level] = []
    for i, item in enumerate(_list(raw.get("levels"), "levels")):
        if not isinstance(item, Mapping):
            raise _At(("levels", i), f"each level must be an object, got {item!r}")
        _at(("levels", i), _no_unknown, item,
            {"code", "name", "escalate_after_hours", "notify", "note"}, "level")
        after = item.get("escalate_after_hours")
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, (int, float)) or after < 0
        ):
            raise _At(("levels", i, "escalate_after_hours"),
                      f"level {item.get('code')!r}: escalate_after_hours must be >= 0")
        levels.append(
            Level(
                code=str(item["code"]),
                name=str(item["name"]),
                escalate_after_hours=None if after is None else float(after),
                notify=tuple(str(n) for n in item.get("notify", [])),
            )
        )
    if not levels:
        raise _At(("levels",), "the escalation ladder needs at least one level")
    codes = [lv.code for lv in levels]
    if len(set(codes)) != len(codes):
        raise ValueError(f"duplicate level codes in {codes}")
    missing = [lv.code for lv in levels[:-1] if lv.escalate_after_hours is None]
    if missing:
        raise ValueError(f"levels {missing} need escalate_after_hours (only the top may omit it)")
    starts: dict[str, int] = {}
    for dept_level, code in dict(raw.get("start_level_by_department_level", {})).items():
        if code not in codes:
            raise _At(("start_level_by_department_level", dept_level),
                      f"start level {code!r} for {dept_level!r} is not a ladder level")
        starts[str(dept_level)] = codes.index(code)
    return tuple(levels), starts


def _list(raw: Any, where: str) -> list[Any]:
    if not isinstance(raw, list):
        raise ValueError(f"'{where}' must be a list, got {raw!r}")
    return raw


def _no_unknown(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
