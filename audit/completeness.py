"""Completeness (完整性): every record the pipeline counts as done was handed on somewhere.

The hash chains and the read-model comparison check the log against itself and against the
database; neither notices a record that a stream processor consumed, committed and then
dropped — the log simply never shows its consequences. This check follows each hop by the ids
that already travel on the log:

1. `<p>.reports` → intake: a ReportSubmitted R is handed on by a ReportLocated or a RefuseReport
   command whose causation_id is R's id, by a FileReport caused by the ReportLocated id derived
   from R's (a report filed in one step, keyed by township), by case events, a refusal or a
   command caused by the FileReport or RefuseReport id derived from R's (a report whose case
   was decided in that same step, its ticket on the township's partition), or a dead letter
   naming R's topic/partition/offset;
2. `<p>.reports-located` → filing: a ReportLocated L by a FileReport caused by L, or a dead letter;
3. `<p>.case-commands` → case processor: a command C by any case event or command caused by C,
   a CommandRefused naming C (data.command_id), or a dead letter. Decided without a trace by
   design (gridflow.core.case.decide) and counted, not flagged: a command id seen earlier on the
   topic (redelivery), a deadline command (WarnDeadline, BreachDeadline, EscalateTask: stale ones
   are dropped, and a supervisor's escalation to a level the task has reached already), a
   FileReport / RefuseReport whose report already has its outcome in that case from an earlier
   command, and a RefuseReport for a case that exists already (then the report has no outcome:
   the end-to-end check lists it);
4. photos: each photo reference of a case event (processors.archive.photos_of, as the archive
   agent reads it) has a PhotoArchived (archived, corrupt or missing) with its sha256 and key;
5. end to end: every report id on the reports topic has an outcome (CaseFiled, ReportMerged,
   CaseNotFiled), a refusal or a dead letter — or is lost or in flight at one of the hops above.

A record without its evidence is LOST only when the consumer group of its hop has committed an
offset past it (the pipeline considers it done); at or beyond the committed offset it is in
flight and only counted. The evidence is looked for in the whole log, so a record that is late,
not absent, is never reported.

Pure core (`Completeness`: feed records, then `result(commits)`), memory-conscious: it keeps ids
and small tuples per record, never whole records. The thin reader (`read_commits`, `rest_plans`)
reads the committed offsets and plans the topics; audit.verify drives it.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gridflow import events as ev
from gridflow import topics

# Hops (stable codes; tests and scripts match on them).
INTAKE = "intake"  # reports → intake
FILING = "filing"  # reports-located → filing
CASES = "cases"  # case-commands → case processor
PHOTOS = "photos"  # case events' photos → photo archive

HOP_LABELS = {
    INTAKE: "上报受理 / reports → intake",
    FILING: "立案分拨 / reports-located → filing",
    CASES: "案件处理 / case-commands → case processor",
    PHOTOS: "照片归档 / photos → archive",
}
HOP_EVIDENCE = {
    INTAKE: "reports-located, case-commands (RefuseReport, or FileReport when filed in one "
            "step), case-events (when its case was decided in that step) or the dead letters",
    FILING: "case-commands (FileReport) or the dead letters",
    CASES: "case-events, case-commands or the dead letters",
    PHOTOS: "case-events (PhotoArchived) or case-commands (RecordPhotoArchived)",
}

# Why a record was decided with no trace, by design (counted, not flagged).
REDELIVERY = "redelivery"
DEADLINE = "deadline"
HAS_OUTCOME = "report_has_outcome"
CASE_EXISTS = "case_exists"
BY_DESIGN_TEXT = {
    REDELIVERY: "redelivery(ies) of a command id seen earlier / 重复投递",
    DEADLINE: "deadline command(s) decided without an event (stale ones are dropped by design, "
              "not checked) / 过期的时限指令按设计丢弃",
    HAS_OUTCOME: "report(s) filed or refused again whose report already has its outcome "
                 "/ 报告已有处理结果",
    CASE_EXISTS: "RefuseReport(s) for a case that exists already (ignored by the case processor) "
                 "/ 案件已存在, 不予立案指令被忽略",
}

DEADLINE_COMMANDS = frozenset({ev.WARN_DEADLINE, ev.BREACH_DEADLINE, ev.ESCALATE_TASK})
OUTCOME_EVENTS = frozenset({ev.CASE_FILED, ev.REPORT_MERGED, ev.CASE_NOT_FILED})
REPORT_COMMANDS = frozenset({ev.FILE_REPORT, ev.REFUSE_REPORT})
UNDECODABLE = "undecodable"


def processor_group(prefix: str) -> str:
    """The pipeline's consumer group (processors.app.app_id_for(prefix, True))."""
    return f"{prefix}-processor"


def archive_group(prefix: str) -> str:
    """A worker that runs only the photo archive (processors.app.app_id_for(prefix, False))."""
    return f"{prefix}-archive"


@dataclass(frozen=True)
class LogNames:
    reports: str
    located: str
    commands: str
    events: str
    dead: str

    @classmethod
    def of(cls, prefix: str) -> LogNames:
        return cls(topics.REPORTS.name(prefix), topics.REPORTS_LOCATED.name(prefix),
                   topics.CASE_COMMANDS.name(prefix), topics.CASE_EVENTS.name(prefix),
                   topics.DEAD_LETTERS.name(prefix))


Offsets = Mapping[tuple[str, int], int]  # (topic, partition) -> committed (next) offset


@dataclass(frozen=True)
class Commits:
    """What the consumer groups have committed. A partition without a commit counts as 0:
    everything in it is in flight."""

    processor: Offsets = field(default_factory=dict)
    archive: Offsets | None = None  # None: there is no archive group
    processor_group: str = ""
    archive_group: str = ""

    @property
    def photos(self) -> Offsets:
        """The photo archive's offsets: its own group's when that group exists."""
        return self.archive if self.archive is not None else self.processor

    @property
    def photo_group(self) -> str:
        return self.archive_group if self.archive is not None else self.processor_group


@dataclass(frozen=True)
class Lost:
    hop: str
    topic: str
    partition: int
    offset: int
    kind: str  # the record's type, "photo", or "undecodable"
    id: str  # message / command / event id ("" if undecodable)
    report_id: str
    case_id: str
    group: str  # the consumer group of the hop
    committed: int  # its committed offset on that partition
    detail: str = ""  # English, more about this one

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def render(self, hop: bool = True) -> str:
        ids = " ".join(x for x in (
            f"id {self.id}" if self.id else "",
            f"report {self.report_id}" if self.report_id else "",
            f"case {self.case_id}" if self.case_id else "") if x)
        return ((f"{HOP_LABELS.get(self.hop, self.hop)}: " if hop else "")
                + f"{self.where} {self.kind} {ids}"
                + (f" ({self.detail})" if self.detail else "")
                + f": group {self.group or '?'} committed offset {self.committed}, past it, but "
                f"nothing of it is on {HOP_EVIDENCE.get(self.hop, 'the log')} / "
                "消费组已越过该记录, 下游却没有任何记录: 丢失")


@dataclass
class HopTally:
    hop: str
    topic: str
    group: str
    records: int = 0
    handed_on: int = 0  # its evidence is on the log
    dead_lettered: int = 0
    by_design: Counter[str] = field(default_factory=Counter)  # decided without a trace
    in_flight: int = 0  # at or beyond the committed offset, no evidence yet
    lost: int = 0
    unverifiable: int = 0  # no evidence, but the topics that would hold it are trimmed
    breakdown: Counter[str] = field(default_factory=Counter)  # e.g. photo statuses


@dataclass
class EndToEnd:
    reports: int = 0  # distinct report ids on the reports topic
    outcomes: Counter[str] = field(default_factory=Counter)  # outcome event type -> reports
    refused: int = 0  # their FileReport / RefuseReport was refused (CommandRefused)
    dead_lettered: int = 0
    lost: int = 0  # a record of theirs is lost at a hop (listed there)
    in_flight: int = 0
    unverifiable: int = 0
    missing: list[str] = field(default_factory=list)  # no outcome, nothing lost or in flight
    total_missing: int = 0


@dataclass
class CompletenessReport:
    checked: bool = False
    processor_group: str = ""
    photo_group: str = ""
    hops: list[HopTally] = field(default_factory=list)
    lost: list[Lost] = field(default_factory=list)  # at most max_diffs
    total_lost: int = 0
    end_to_end: EndToEnd = field(default_factory=EndToEnd)
    notes: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return self.total_lost + self.end_to_end.total_missing

    @property
    def clean(self) -> bool:
        return self.differences == 0


# --- the pure core -----------------------------------------------------------------------------

_Pos = tuple[int, int]  # (partition, offset)


def _obj(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        obj = ev.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _s(obj: Any, name: str) -> str:
    value = obj.get(name) if isinstance(obj, dict) else None
    return sys.intern(value) if isinstance(value, str) else ""


def _report_id(data: Any) -> str:
    """data.report.report_id (ReportLocated, FileReport, RefuseReport, the outcome events)."""
    return _s(data.get("report") if isinstance(data, dict) else None, "report_id")


class Completeness:
    """Feed the records of the five topics (any order, each once); then `result(commits)`."""

    def __init__(self, names: LogNames) -> None:
        from processors.archive import photos_of  # the archive agent's own reading

        self.names = names
        self._photos_of = photos_of
        # reports and reports-located: (partition, offset, message id, report id)
        self._reports: list[tuple[int, int, str, str]] = []
        self._located: list[tuple[int, int, str, str]] = []
        self._located_causes: set[str] = set()
        # case-commands: (partition, offset, command id, type, case id, report id)
        self._commands: list[tuple[int, int, str, str, str, str]] = []
        self._command_at: dict[str, _Pos] = {}  # first position of each command id
        self._command_causes: set[str] = set()
        self._file_causes: set[str] = set()
        self._refuse_causes: set[str] = set()
        self._photo_commands: dict[tuple[str, str], str] = {}  # (sha256, key) -> command id
        # case-events
        self._event_causes: set[str] = set()
        self._refused: set[str] = set()  # CommandRefused data.command_id
        self._outcomes: dict[tuple[str, str], list[str]] = {}  # (case, report) -> causes
        self._report_outcome: dict[str, str] = {}  # report id -> its first outcome's type
        self._opened: dict[str, str] = {}  # case -> cause of its CaseFiled / CaseNotFiled
        # photo references: (partition, offset, event id, type, case, sha256, key)
        self._photos: list[tuple[int, int, str, str, str, str, str]] = []
        self._archived: dict[tuple[str, str], str] = {}  # (sha256, key) -> best status
        # dead letters: (source topic, partition, offset)
        self._dead: set[tuple[str, int, int]] = set()

    def feed(self, records: Iterable[Any]) -> None:
        """Records with .topic, .partition, .offset, .key, .value (LogRecord)."""
        n = self.names
        for r in records:
            if r.topic == n.reports:
                self._feed_report(r)
            elif r.topic == n.located:
                self._feed_located(r)
            elif r.topic == n.commands:
                self._feed_command(r)
            elif r.topic == n.events:
                self._feed_event(r)
            elif r.topic == n.dead:
                self._feed_dead(r)

    def _feed_report(self, r: Any) -> None:
        obj = _obj(r.value)
        mid = _s(obj, "id") if obj is not None and obj.get("type") == ev.REPORT_SUBMITTED else ""
        rid = _s(obj.get("data"), "report_id") if obj is not None else ""
        if not rid and r.key:  # keyed by report id, or by township (then a township code)
            rid = sys.intern(bytes(r.key).decode("utf-8", "replace"))
        self._reports.append((r.partition, r.offset, mid, rid))

    def _feed_located(self, r: Any) -> None:
        obj = _obj(r.value)
        mid, rid = "", ""
        if obj is not None and obj.get("type") == ev.REPORT_LOCATED:
            mid, rid = _s(obj, "id"), _report_id(obj.get("data"))
            cause = _s(obj, "causation_id")
            if cause:
                self._located_causes.add(cause)
        self._located.append((r.partition, r.offset, mid, rid))

    def _feed_command(self, r: Any) -> None:
        obj = _obj(r.value)
        if obj is None:
            self._commands.append((r.partition, r.offset, "", UNDECODABLE, "", ""))
            return
        cid, typ, case = _s(obj, "id"), _s(obj, "type") or UNDECODABLE, _s(obj, "case_id")
        data = obj.get("data")
        cause = _s(obj, "causation_id")
        if cause:
            self._command_causes.add(cause)
            if typ == ev.FILE_REPORT:
                self._file_causes.add(cause)
            elif typ == ev.REFUSE_REPORT:
                self._refuse_causes.add(cause)
        rid = _report_id(data) if typ in REPORT_COMMANDS else ""
        if cid:
            at = self._command_at.get(cid)
            if at is None or (r.partition, r.offset) < at:  # its first occurrence
                self._command_at[cid] = (r.partition, r.offset)
            if typ == ev.RECORD_PHOTO_ARCHIVED and isinstance(data, dict):
                self._photo_commands.setdefault((_s(data, "sha256"), _s(data, "source_key")), cid)
        self._commands.append((r.partition, r.offset, cid, typ, case, rid))

    def _feed_event(self, r: Any) -> None:
        obj = _obj(r.value)
        if obj is None:
            return
        typ, case, cause = _s(obj, "type"), _s(obj, "case_id"), _s(obj, "causation_id")
        data = obj.get("data")
        if cause:
            self._event_causes.add(cause)
        if typ == ev.COMMAND_REFUSED:
            refused = _s(data, "command_id")
            if refused:
                self._refused.add(refused)
        elif typ in OUTCOME_EVENTS:
            rid = _report_id(data)
            self._outcomes.setdefault((case, rid), []).append(cause)
            self._report_outcome.setdefault(rid, typ)
            if typ != ev.REPORT_MERGED:
                self._opened.setdefault(case, cause)
        elif typ == ev.PHOTO_ARCHIVED and isinstance(data, dict):
            key = (_s(data, "sha256"), _s(data, "source_key"))
            status = _s(data, "status") or "archived"
            if _STATUS_RANK.get(status, 0) > _STATUS_RANK.get(self._archived.get(key, ""), -1):
                self._archived[key] = status
        # Photo references exactly as the archive agent finds them (processors.app): only in
        # records that mention a sha256, of events it can decode.
        if r.value is not None and b'"sha256"' in r.value and typ != ev.PHOTO_ARCHIVED:
            try:
                event = ev.decode_message(obj, ev.EVENT_TYPES)
            except ev.SchemaError:
                return
            for ref in self._photos_of(event):
                self._photos.append((r.partition, r.offset, sys.intern(event.id), typ, case,
                                     _s(ref, "sha256"), _s(ref, "key")))

    def _feed_dead(self, r: Any) -> None:
        obj = _obj(r.value)
        if obj is None:
            return
        topic, partition, offset = obj.get("source_topic"), obj.get("partition"), obj.get("offset")
        if isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int):
            self._dead.add((topic, partition, offset))

    # --- evaluation ---------------------------------------------------------------------------

    def _report_hop(self, ctx: _Eval, hop: HopTally, proc: Offsets,
                    rows: Iterable[tuple[int, int, str, str]], causes: Container[str],
                    kind: str, unverifiable: bool) -> None:
        """A report hop's records: handed on (a message caused by it is on the next topic),
        dead-lettered, or else undecided (in flight, unverifiable or lost)."""
        for p, o, mid, rid in rows:
            hop.records += 1
            if mid and mid in causes:
                hop.handed_on += 1
            elif (hop.topic, p, o) in self._dead:
                ctx.dead(hop, rid)
            else:
                ctx.undecided(hop, proc, p, o, kind if mid else UNDECODABLE, mid, rid, "",
                              unverifiable)

    def result(self, commits: Commits, max_diffs: int = 50,
               trimmed: Iterable[str] = ()) -> CompletenessReport:
        """Classify every record. `trimmed`: topics Kafka no longer holds from offset 0 (records
        whose evidence would lie there are counted as unverifiable, not lost)."""
        n = self.names
        cut = set(trimmed)
        rep = CompletenessReport(checked=True, processor_group=commits.processor_group,
                                 photo_group=commits.photo_group)
        ctx = _Eval(rep, max_diffs)
        proc = commits.processor

        # 1. reports → intake; a report filed in the same step (issue 16: keyed by township,
        # processors.steps.intake_and_file_step) has no ReportLocated on the log: its
        # FileReport is caused by the ReportLocated id derived from it.
        # A report whose case was decided in that same step (its case on the report's
        # partition: intake.ticket_for) has no command on the log either: its FileReport's or
        # RefuseReport's derived id caused case events (or a refusal, or a refiling command).
        decided = (self._event_causes, self._command_causes, self._refused)
        one_hop: set[str] = set()
        for _, _, mid, rid in self._reports:
            if not mid:
                continue
            located = ev.derived_id(mid, ev.REPORT_LOCATED)
            file_cmd, refuse_cmd = (ev.derived_id(located, ev.FILE_REPORT),
                                    ev.derived_id(mid, ev.REFUSE_REPORT))
            if located in self._file_causes or any(
                    file_cmd in ids or refuse_cmd in ids for ids in decided):
                one_hop.add(mid)
            if file_cmd in self._refused or refuse_cmd in self._refused:
                ctx.refused_reports.add(rid)
        self._report_hop(ctx, ctx.hop(INTAKE, n.reports, commits.processor_group), proc,
                         self._reports, self._located_causes | self._refuse_causes | one_hop,
                         ev.REPORT_SUBMITTED, bool(cut & {n.located, n.commands}))

        # 2. reports-located → filing
        self._report_hop(ctx, ctx.hop(FILING, n.located, commits.processor_group), proc,
                         self._located, self._file_causes, ev.REPORT_LOCATED,
                         n.commands in cut)

        # 3. case-commands → case processor
        hop = ctx.hop(CASES, n.commands, commits.processor_group)
        photo_commands = set(self._photo_commands.values())
        status_of: dict[str, str] = {}  # of photo commands, for the photos hop
        for p, o, cid, typ, case, rid in self._commands:
            hop.records += 1
            if cid and self._command_at.get(cid) != (p, o):
                hop.by_design[REDELIVERY] += 1
                continue
            if cid and typ in REPORT_COMMANDS and cid in self._refused:
                ctx.refused_reports.add(rid)
            if cid and (cid in self._event_causes or cid in self._command_causes
                        or cid in self._refused):
                hop.handed_on += 1
                status = "handed_on"
            elif (n.commands, p, o) in self._dead:
                ctx.dead(hop, rid if typ in REPORT_COMMANDS else "")
                status = "dead"
            elif o >= proc.get((n.commands, p), 0):
                ctx.in_flight(hop, rid)
                status = "in_flight"
            elif typ in DEADLINE_COMMANDS:
                hop.by_design[DEADLINE] += 1
                status = "by_design"
            elif typ in REPORT_COMMANDS and self._earlier(self._outcomes.get((case, rid)), p, o):
                hop.by_design[HAS_OUTCOME] += 1
                status = "by_design"
            elif typ == ev.REFUSE_REPORT and case in self._opened and self._earlier(
                    [self._opened[case]], p, o):
                hop.by_design[CASE_EXISTS] += 1
                ctx.why_no_outcome.setdefault(
                    rid, f"its RefuseReport {n.commands}[{p}]@{o} was ignored: case {case} "
                         "exists already / 案件编号已被占用, 不予立案指令被忽略")
                status = "by_design"
            else:
                status = ctx.undecided(hop, proc, p, o, typ, cid, rid, case, n.commands in cut)
            if cid in photo_commands:
                status_of[cid] = status

        # 4. photos → archive
        hop = ctx.hop(PHOTOS, n.events, commits.photo_group)
        for p, o, eid, typ, case, sha, key in self._photos:
            hop.records += 1
            recorded = self._archived.get((sha, key))
            cid = self._photo_commands.get((sha, key), "")
            if recorded is not None:
                hop.handed_on += 1
                hop.breakdown[recorded] += 1
            elif cid:  # the archive did its part; the case processor has the command
                outcome = status_of.get(cid, "in_flight")
                if outcome == "in_flight":
                    hop.in_flight += 1
                elif outcome == "lost":
                    hop.breakdown["command lost (listed under case-commands)"] += 1
                elif outcome == "unverifiable":
                    hop.unverifiable += 1
                else:  # refused, dead-lettered
                    hop.breakdown[f"command {outcome.replace('_', ' ')}, not archived"] += 1
            else:
                ctx.undecided(hop, commits.photos, p, o, "photo", eid, "", case, False,
                              detail=f"{typ} photo {key or '?'} sha256 {sha[:16]}…")

        # 5. end to end
        e2e = rep.end_to_end
        for rid in dict.fromkeys(rid for _, _, _, rid in self._reports):
            e2e.reports += 1
            fate = self._report_outcome.get(rid)
            if fate is not None:
                e2e.outcomes[fate] += 1
            elif rid in ctx.refused_reports:
                e2e.refused += 1
            elif rid in ctx.dead_reports:
                e2e.dead_lettered += 1
            elif rid in ctx.lost_reports:
                e2e.lost += 1
            elif rid in ctx.in_flight_reports:
                e2e.in_flight += 1
            elif rid in ctx.unverifiable_reports:
                e2e.unverifiable += 1
            else:
                e2e.total_missing += 1
                if len(e2e.missing) < max_diffs:
                    why = ctx.why_no_outcome.get(
                        rid, "each of its records was handed on, yet no CaseFiled, ReportMerged "
                             "or CaseNotFiled names it")
                    e2e.missing.append(f"report {rid or '?'}: no outcome / 无处理结果 — {why}")

        if not proc:
            rep.notes.append(f"consumer group {commits.processor_group or '?'} has committed no "
                             "offsets: every record is in flight / 消费组无已提交位点, 均视为处理中")
        return rep

    def _earlier(self, causes: list[str] | None, partition: int, offset: int) -> bool:
        """Whether one of `causes` (command ids) was decided before the command at
        (partition, offset): it comes first on the same partition, or it is not on case-commands
        at all / elsewhere (then order cannot be told, and its outcome stands anyway)."""
        for cause in causes or ():
            at = self._command_at.get(cause)
            if at is None or at[0] != partition or at[1] < offset:
                return True
        return False


_STATUS_RANK = {"missing": 0, "corrupt": 1, "archived": 2}


class _Eval:
    """Book-keeping of one evaluation: tallies, the capped list of losses, reports by fate."""

    def __init__(self, rep: CompletenessReport, max_diffs: int) -> None:
        self.rep, self.max_diffs = rep, max_diffs
        self.lost_reports: set[str] = set()
        self.in_flight_reports: set[str] = set()
        self.dead_reports: set[str] = set()
        self.refused_reports: set[str] = set()
        self.unverifiable_reports: set[str] = set()
        self.why_no_outcome: dict[str, str] = {}

    def hop(self, name: str, topic: str, group: str) -> HopTally:
        tally = HopTally(name, topic, group)
        self.rep.hops.append(tally)
        return tally

    def dead(self, hop: HopTally, rid: str) -> None:
        hop.dead_lettered += 1
        if rid:
            self.dead_reports.add(rid)

    def in_flight(self, hop: HopTally, rid: str) -> None:
        hop.in_flight += 1
        if rid:
            self.in_flight_reports.add(rid)

    def undecided(self, hop: HopTally, offsets: Offsets, partition: int, offset: int, kind: str,
                  id_: str, rid: str, case: str, unverifiable: bool, detail: str = "") -> str:
        """A record without evidence: in flight, unverifiable or lost. Returns which."""
        committed = offsets.get((hop.topic, partition), 0)
        if offset >= committed:
            self.in_flight(hop, rid)
            return "in_flight"
        if unverifiable:
            hop.unverifiable += 1
            if rid:
                self.unverifiable_reports.add(rid)
            return "unverifiable"
        hop.lost += 1
        self.rep.total_lost += 1
        if rid:
            self.lost_reports.add(rid)
        if len(self.rep.lost) < self.max_diffs:
            self.rep.lost.append(Lost(hop.hop, hop.topic, partition, offset, kind, id_, rid, case,
                                      hop.group, committed, detail))
        return "lost"


def check(records: Iterable[Any], names: LogNames, commits: Commits, max_diffs: int = 50,
          trimmed: Iterable[str] = ()) -> CompletenessReport:
    """The whole check over records of the five topics."""
    c = Completeness(names)
    c.feed(records)
    return c.result(commits, max_diffs, trimmed)


# --- the thin reader -----------------------------------------------------------------------------


def read_commits(bootstrap: str, prefix: str, timeout_s: float = 30.0) -> Commits:
    """The committed offsets of the pipeline's group and, if it exists, the archive's group.

    Read BEFORE the log's end offsets: whatever a group had committed then, the pipeline had
    written (and flushed) its consequences before, so they are within the log as planned."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    from audit.logsource import LogUnavailable
    from gridflow.kafka_groups import committed_offsets, group_exists

    proc, arch = processor_group(prefix), archive_group(prefix)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gridflow-verify",
                                 request_timeout_ms=int(timeout_s * 1000))
        try:
            archive: Offsets | None = committed_offsets(admin, arch)
            if not archive and not group_exists(admin, arch):
                archive = None
            return Commits(committed_offsets(admin, proc), archive, proc, arch)
        finally:
            admin.close()
    except KafkaError as exc:
        raise LogUnavailable(f"reading the committed offsets of {proc} / {arch} failed "
                             f"({type(exc).__name__}: {exc}) / 无法读取消费组已提交位点") from exc


def rest_plans(kc: Any, names: LogNames, read: list[Any]) -> tuple[list[Any], set[str],
                                                                   list[str]]:
    """What the check needs beyond `read` (plans of case-events and dead-letters already read up
    to their stop): those partitions from their stop to their end, and the three intake topics
    whole. Returns (plans, trimmed topics, notes). A trimmed intake topic is read from where
    Kafka still holds it."""
    from audit import logsource

    rest = [replace(p, start=p.stop, stop=p.kafka_end) for p in read if p.kafka_end > p.stop]
    trimmed: set[str] = set()
    notes: list[str] = []
    for p in logsource.plan(kc, [names.reports, names.located, names.commands],
                            allow_trimmed=True):
        if p.kafka_start > 0:
            trimmed.add(p.topic)
            notes.append(f"{p.topic}[{p.partition}]: Kafka keeps offsets from {p.kafka_start} on "
                         "only; the records before are not checked / 早期记录已删除, 不参与检查")
        rest.append(p)
    return rest, trimmed, notes
