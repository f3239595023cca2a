"""Completeness: a record a consumer group committed past is LOST when nothing of it was handed
on anywhere in the log; at or beyond the committed offset it is in flight; the case processor's
no-ops by design (redeliveries, stale deadline commands, a report filed again, a refusal for a
case that exists) are counted, not flagged. Hand-made records, and the real processor steps."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from audit import completeness as cmp
from audit.completeness import Commits, LogNames
from audit.segments import LogRecord
from demo.histories import HoursPlanner, photo
from gridflow import events as ev
from gridflow import topics
from gridflow.core import geo, intake
from gridflow.core.refdata import load_reference_data
from gridflow.events import Message, canonical_json, derived_id, iso
from processors import steps
from processors.archive import photos_of as archive_photos_of

NAMES = LogNames.of("t")
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
AT = iso(NOW)


class Log:
    """Records per topic and partition, with offsets in order."""

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self._next: dict[tuple[str, int], int] = defaultdict(int)

    def put(self, topic: str, value: bytes | None, partition: int = 0,
            key: bytes | None = None) -> tuple[int, int]:
        offset = self._next[(topic, partition)]
        self._next[(topic, partition)] += 1
        self.records.append(LogRecord(topic, partition, offset, None, key, value))
        return partition, offset

    def ends(self) -> dict[tuple[str, int], int]:
        return dict(self._next)

    def dead(self, topic: str, at: tuple[int, int], raw: bytes | None = b"x") -> None:
        letter = ev.dead_letter(topic, at[0], at[1], raw, "undecodable", NOW)
        self.put(NAMES.dead, canonical_json(letter))


def m(id_: str, type_: str, case_id: str = "", cause: str = "", **data: Any) -> Message:
    return Message(id=id_, type=type_, case_id=case_id, at=AT, actor="system", data=data,
                   causation_id=cause)


def report_msg(rid: str) -> Message:
    return m(f"R-{rid}", ev.REPORT_SUBMITTED, report_id=rid)


def located_msg(rid: str) -> Message:
    return m(f"L-{rid}", ev.REPORT_LOCATED, f"AJ-{rid}", f"R-{rid}", report={"report_id": rid})


def file_msg(rid: str, case: str | None = None, id_: str | None = None,
             cause: str | None = None) -> Message:
    return m(id_ or f"F-{rid}", ev.FILE_REPORT, case or f"AJ-{rid}", cause or f"L-{rid}",
             report={"report_id": rid})


def filed_msg(rid: str, case: str | None = None, cause: str | None = None,
              type_: str = ev.CASE_FILED, photos: list[dict[str, Any]] | None = None) -> Message:
    return m(f"E-{rid}-{type_}", type_, case or f"AJ-{rid}", cause or f"F-{rid}",
             report={"report_id": rid, "photos": photos or []})


def everything_committed(log: Log, archive: bool = False) -> Commits:
    ends = log.ends()
    return Commits(ends, dict(ends) if archive else None, "t-processor",
                   "t-archive")


def run(log: Log, commits: Commits, max_diffs: int = 50) -> cmp.CompletenessReport:
    return cmp.check(log.records, NAMES, commits, max_diffs)


def hop(rep: cmp.CompletenessReport, name: str) -> cmp.HopTally:
    return next(h for h in rep.hops if h.hop == name)


def whole(log: Log, rid: str) -> None:
    """A report that went all the way: located, filed, CaseFiled."""
    log.put(NAMES.reports, report_msg(rid).encode(), key=rid.encode())
    log.put(NAMES.located, located_msg(rid).encode())
    log.put(NAMES.commands, file_msg(rid).encode())
    log.put(NAMES.events, filed_msg(rid).encode())


# --- 1. reports → intake ----------------------------------------------------------------------


def test_a_report_handed_on_by_located_refusal_or_dead_letter_is_not_lost() -> None:
    log = Log()
    whole(log, "r1")
    # refused at intake: a RefuseReport caused by the report, then CaseNotFiled
    log.put(NAMES.reports, report_msg("r2").encode())
    log.put(NAMES.commands, m("X-r2", ev.REFUSE_REPORT, "AJ-r2", "R-r2",
                              report={"report_id": "r2"}).encode())
    log.put(NAMES.events, filed_msg("r2", cause="X-r2", type_=ev.CASE_NOT_FILED).encode())
    # undecodable: only its dead letter names it
    at = log.put(NAMES.reports, b"\xff not json", key=b"r3")
    log.dead(NAMES.reports, at)
    rep = run(log, everything_committed(log))
    assert rep.clean, [x.render() for x in rep.lost] + rep.end_to_end.missing
    h = hop(rep, cmp.INTAKE)
    assert (h.records, h.handed_on, h.dead_lettered, h.lost, h.in_flight) == (3, 2, 1, 0, 0)
    e = rep.end_to_end
    assert e.reports == 3 and e.outcomes[ev.CASE_FILED] == 1
    assert e.outcomes[ev.CASE_NOT_FILED] == 1 and e.dead_lettered == 1


def test_a_report_filed_in_one_step_is_handed_on_by_its_file_report() -> None:
    """Issue 16: keyed by township, a report is filed where it is taken in, so no
    ReportLocated is on the log; its FileReport is caused by the ReportLocated id derived from
    the report's, and a FileReport caused by something else is no evidence."""
    log = Log()
    for rid in ("r1", "r2"):
        log.put(NAMES.reports, report_msg(rid).encode(), key=b"330102001")
    located_id = derived_id("R-r1", ev.REPORT_LOCATED)
    log.put(NAMES.commands, file_msg("r1", cause=located_id).encode())
    log.put(NAMES.events, filed_msg("r1").encode())
    log.put(NAMES.commands, file_msg("r2", cause="L-somebody-else").encode())
    log.put(NAMES.events, filed_msg("r2").encode())
    rep = run(log, everything_committed(log))
    h = hop(rep, cmp.INTAKE)
    assert (h.records, h.handed_on, h.lost) == (2, 1, 1)
    (lost,) = rep.lost
    assert (lost.hop, lost.id) == (cmp.INTAKE, "R-r2")
    assert hop(rep, cmp.FILING).records == 0


def test_a_report_decided_in_one_step_is_handed_on_by_its_cases_events() -> None:
    """Issue 16: with its ticket on the township's partition, a report's case is decided where
    it is taken in, so neither a ReportLocated nor a FileReport is on the log: the events (or a
    refusal of) the FileReport id derived from the report's are its evidence, and so are those
    of a RefuseReport decided in the same step. Events of another command are none."""
    log = Log()
    for rid in ("r1", "r2", "r3", "r4"):
        log.put(NAMES.reports, report_msg(rid).encode(), key=b"330102001")
    file_id = derived_id(derived_id("R-r1", ev.REPORT_LOCATED), ev.FILE_REPORT)
    log.put(NAMES.events, filed_msg("r1", cause=file_id).encode())
    refuse_id = derived_id("R-r2", ev.REFUSE_REPORT)
    log.put(NAMES.events, filed_msg("r2", cause=refuse_id, type_=ev.CASE_NOT_FILED).encode())
    file_id3 = derived_id(derived_id("R-r3", ev.REPORT_LOCATED), ev.FILE_REPORT)
    log.put(NAMES.events, m("E-r3", ev.COMMAND_REFUSED, "AJ-r3", file_id3,
                            command_id=file_id3).encode())
    log.put(NAMES.events, filed_msg("r4", cause="F-somebody-else").encode())
    rep = run(log, everything_committed(log))
    h = hop(rep, cmp.INTAKE)
    assert (h.records, h.handed_on, h.lost) == (4, 3, 1)
    (lost,) = rep.lost
    assert (lost.hop, lost.id) == (cmp.INTAKE, "R-r4")
    e = rep.end_to_end
    assert e.outcomes[ev.CASE_FILED] == 2 and e.outcomes[ev.CASE_NOT_FILED] == 1  # r1, r4; r2
    assert e.refused == 1  # r3: its FileReport refused in that step
    assert hop(rep, cmp.CASES).records == 0 and hop(rep, cmp.FILING).records == 0


def test_a_committed_report_with_nothing_downstream_is_lost() -> None:
    log = Log()
    whole(log, "r1")
    log.put(NAMES.reports, report_msg("r2").encode(), key=b"r2")  # offset 1, nothing after it
    rep = run(log, everything_committed(log))
    assert not rep.clean and rep.total_lost == 1
    (lost,) = rep.lost
    assert (lost.hop, lost.where, lost.id, lost.report_id) == (
        cmp.INTAKE, "t.reports[0]@1", "R-r2", "r2")
    assert lost.committed == 2 and lost.group == "t-processor"
    assert "t.reports[0]@1" in lost.render() and "丢失" in lost.render()
    assert rep.end_to_end.lost == 1 and rep.end_to_end.total_missing == 0


def test_a_report_at_or_beyond_the_committed_offset_is_in_flight() -> None:
    log = Log()
    whole(log, "r1")
    log.put(NAMES.reports, report_msg("r2").encode())
    commits = everything_committed(log)
    commits = Commits({**commits.processor, (NAMES.reports, 0): 1}, None, "t-processor")
    rep = run(log, commits)
    assert rep.clean
    assert hop(rep, cmp.INTAKE).in_flight == 1 and rep.end_to_end.in_flight == 1


def test_no_committed_offsets_at_all_means_everything_is_in_flight() -> None:
    log = Log()
    for rid in ("r1", "r2"):
        log.put(NAMES.reports, report_msg(rid).encode())
    log.put(NAMES.commands, m("C1", ev.SIGN_TASK, "AJ-x", task_id="T1").encode())
    rep = run(log, Commits({}, None, "t-processor"))
    assert rep.clean
    assert hop(rep, cmp.INTAKE).in_flight == 2 and hop(rep, cmp.CASES).in_flight == 1
    assert any("committed no offsets" in n for n in rep.notes)


def test_an_undecodable_report_without_its_dead_letter_is_lost() -> None:
    log = Log()
    log.put(NAMES.reports, b"{broken", key=b"r9")
    rep = run(log, everything_committed(log))
    (lost,) = rep.lost
    assert (lost.kind, lost.id, lost.report_id) == (cmp.UNDECODABLE, "", "r9")


# --- 2. reports-located → filing --------------------------------------------------------------


def test_located_reports_lost_in_flight_and_dead_lettered() -> None:
    log = Log()
    whole(log, "r1")
    log.put(NAMES.reports, report_msg("r2").encode())
    log.put(NAMES.located, located_msg("r2").encode())  # located@1: never filed
    log.put(NAMES.reports, report_msg("r3").encode())
    at = log.put(NAMES.located, located_msg("r3").encode())  # located@2: dead-lettered
    log.dead(NAMES.located, at)
    log.put(NAMES.reports, report_msg("r4").encode())
    log.put(NAMES.located, located_msg("r4").encode())  # located@3: beyond the commit
    commits = everything_committed(log)
    commits = Commits({**commits.processor, (NAMES.located, 0): 3}, None, "t-processor")
    rep = run(log, commits)
    h = hop(rep, cmp.FILING)
    assert (h.records, h.handed_on, h.dead_lettered, h.in_flight, h.lost) == (4, 1, 1, 1, 1)
    assert [(x.hop, x.where, x.report_id) for x in rep.lost] == [
        (cmp.FILING, "t.reports-located[0]@1", "r2")]
    e = rep.end_to_end
    assert (e.lost, e.dead_lettered, e.in_flight, e.outcomes[ev.CASE_FILED]) == (1, 1, 1, 1)


# --- 3. case-commands → case processor --------------------------------------------------------


def test_commands_decided_by_events_refusals_follow_ups_or_dead_letters() -> None:
    log = Log()
    log.put(NAMES.commands, m("C1", ev.SIGN_TASK, "AJ1", task_id="T1").encode())
    log.put(NAMES.events, m("E1", ev.TASK_SIGNED, "AJ1", "C1").encode())
    log.put(NAMES.commands, m("C2", ev.SIGN_TASK, "AJ1", task_id="T1").encode())
    # a refusal naming the command in its data (whatever its causation)
    log.put(NAMES.events, m("E2", ev.COMMAND_REFUSED, "AJ1", "", command_id="C2").encode())
    # a report for a closed case handed on to its own case (a follow-up command)
    log.put(NAMES.commands, file_msg("r5", case="AJ1", id_="C3", cause="L-r5").encode())
    log.put(NAMES.commands, file_msg("r5", case="AJ5", id_="C4", cause="C3").encode())
    log.put(NAMES.events, filed_msg("r5", case="AJ5", cause="C4").encode())
    at = log.put(NAMES.commands, b"not a command")
    log.dead(NAMES.commands, at)
    rep = run(log, everything_committed(log))
    assert rep.clean, [x.render() for x in rep.lost]
    h = hop(rep, cmp.CASES)
    assert (h.records, h.handed_on, h.dead_lettered, h.lost) == (5, 4, 1, 0)


def test_a_committed_command_never_decided_is_lost_and_one_beyond_is_in_flight() -> None:
    log = Log()
    log.put(NAMES.commands, m("C1", ev.SIGN_TASK, "AJ1", task_id="T1").encode())
    log.put(NAMES.commands, m("C2", ev.RESOLVE_TASK, "AJ1", task_id="T1").encode(), partition=1)
    commits = Commits({(NAMES.commands, 0): 1}, None, "t-processor")
    rep = run(log, commits)
    assert [(x.where, x.kind, x.id, x.case_id) for x in rep.lost] == [
        ("t.case-commands[0]@0", ev.SIGN_TASK, "C1", "AJ1")]
    assert hop(rep, cmp.CASES).in_flight == 1


def test_no_ops_by_design_are_counted_not_flagged() -> None:
    log = Log()
    # a redelivery: the same command id again after it was decided
    log.put(NAMES.commands, m("C1", ev.SIGN_TASK, "AJ1", task_id="T1").encode())
    log.put(NAMES.events, m("E1", ev.TASK_SIGNED, "AJ1", "C1").encode())
    log.put(NAMES.commands, m("C1", ev.SIGN_TASK, "AJ1", task_id="T1").encode())
    # stale deadline commands, dropped by the case processor
    for i, t in enumerate((ev.WARN_DEADLINE, ev.BREACH_DEADLINE, ev.ESCALATE_TASK)):
        log.put(NAMES.commands, m(f"D{i}", t, "AJ1", task_id="T1", stage="sign").encode())
    # the same report filed again by another command after it had its outcome
    whole(log, "r1")
    log.put(NAMES.commands, file_msg("r1", id_="F-r1-again", cause="L-r1-other").encode())
    # and a refusal of it, after it was filed
    log.put(NAMES.commands, m("X-r1", ev.REFUSE_REPORT, "AJ-r1", "R-r1-other",
                              report={"report_id": "r1"}).encode())
    rep = run(log, everything_committed(log))
    assert rep.clean, [x.render() for x in rep.lost]
    h = hop(rep, cmp.CASES)
    assert h.by_design == {cmp.REDELIVERY: 1, cmp.DEADLINE: 3, cmp.HAS_OUTCOME: 2}
    assert h.lost == 0 and h.handed_on == 2


def test_a_deadline_command_beyond_the_commit_is_in_flight_not_by_design() -> None:
    log = Log()
    log.put(NAMES.commands, m("D1", ev.WARN_DEADLINE, "AJ1", task_id="T1").encode())
    rep = run(log, Commits({(NAMES.commands, 0): 0}, None, "t-processor"))
    h = hop(rep, cmp.CASES)
    assert h.in_flight == 1 and not h.by_design


def test_an_outcome_only_from_a_later_command_does_not_excuse_a_lost_one() -> None:
    log = Log()
    log.put(NAMES.reports, report_msg("r1").encode())
    log.put(NAMES.located, located_msg("r1").encode())
    log.put(NAMES.commands, file_msg("r1").encode())  # @0: lost
    log.put(NAMES.commands, file_msg("r1", id_="F-r1-b", cause="L-r1-b").encode())  # @1
    log.put(NAMES.events, filed_msg("r1", cause="F-r1-b").encode())
    rep = run(log, everything_committed(log))
    assert [(x.where, x.id) for x in rep.lost] == [("t.case-commands[0]@0", "F-r1")]


def test_a_refusal_for_a_case_that_exists_is_by_design_but_the_report_has_no_outcome() -> None:
    log = Log()
    whole(log, "r1")  # case AJ-r1
    log.put(NAMES.reports, report_msg("r2").encode())
    # r2's RefuseReport lands on case AJ-r1 (a case id taken): decide() ignores it
    log.put(NAMES.commands, m("X-r2", ev.REFUSE_REPORT, "AJ-r1", "R-r2",
                              report={"report_id": "r2"}).encode())
    rep = run(log, everything_committed(log))
    assert hop(rep, cmp.CASES).by_design == {cmp.CASE_EXISTS: 1}
    assert rep.total_lost == 0
    e = rep.end_to_end
    assert e.total_missing == 1 and not rep.clean
    assert "r2" in e.missing[0] and "AJ-r1" in e.missing[0]


# --- 4. photos → archive ------------------------------------------------------------------------


def photo_log(n: int = 3) -> tuple[Log, list[dict[str, Any]]]:
    log = Log()
    photos = [photo(f"reports/r1/{i}.jpg") for i in range(n)]
    log.put(NAMES.events, filed_msg("r1", photos=photos).encode())
    return log, photos


def archived(log: Log, ref: dict[str, Any], status: str, cmd: str) -> None:
    data = {"sha256": ref["sha256"], "source_key": ref["key"], "status": status}
    log.put(NAMES.commands, m(cmd, ev.RECORD_PHOTO_ARCHIVED, "AJ-r1", "x", **data).encode())
    log.put(NAMES.events, m(f"PA-{cmd}", ev.PHOTO_ARCHIVED, "AJ-r1", cmd, **data).encode())


def test_photos_archived_or_corrupt_are_handed_on_and_a_passed_one_without_is_lost() -> None:
    log, photos = photo_log()
    archived(log, photos[0], "archived", "P0")
    archived(log, photos[1], "corrupt", "P1")
    rep = run(log, everything_committed(log))
    h = hop(rep, cmp.PHOTOS)
    assert (h.records, h.handed_on, h.lost) == (3, 2, 1)
    assert h.breakdown == {"archived": 1, "corrupt": 1}
    (lost,) = rep.lost
    assert (lost.hop, lost.where, lost.kind, lost.case_id) == (
        cmp.PHOTOS, "t.case-events[0]@0", "photo", "AJ-r1")
    assert photos[2]["key"] in lost.render()


def test_photos_follow_the_archive_group_when_it_exists() -> None:
    log, photos = photo_log(1)
    ends = log.ends()
    # the processor group (deadline agent) passed the event, the archive group did not: in flight
    rep = run(log, Commits(ends, {}, "t-processor", "t-archive"))
    assert rep.clean and hop(rep, cmp.PHOTOS).in_flight == 1
    assert rep.photo_group == "t-archive"
    # no archive group: the processor group runs the archive, and it passed the event
    rep = run(log, Commits(ends, None, "t-processor", "t-archive"))
    assert rep.total_lost == 1 and rep.photo_group == "t-processor"


def test_a_photo_whose_record_command_was_lost_is_listed_once_under_case_commands() -> None:
    log, photos = photo_log(1)
    ref = photos[0]
    log.put(NAMES.commands, m("P0", ev.RECORD_PHOTO_ARCHIVED, "AJ-r1", "x", sha256=ref["sha256"],
                              source_key=ref["key"], status="archived").encode())
    rep = run(log, everything_committed(log, archive=True))
    assert [(x.hop, x.id) for x in rep.lost] == [(cmp.CASES, "P0")]
    assert hop(rep, cmp.PHOTOS).breakdown == {"command lost (listed under case-commands)": 1}
    # while that command is in flight, so is the photo
    commits = Commits({(NAMES.events, 0): 1}, {(NAMES.events, 0): 1}, "t-processor", "t-archive")
    rep = run(log, commits)
    assert rep.clean and hop(rep, cmp.PHOTOS).in_flight == 1


# --- 5. end to end, and the cap ---------------------------------------------------------------


def test_end_to_end_counts_each_report_by_its_fate() -> None:
    log = Log()
    whole(log, "filed")
    log.put(NAMES.reports, report_msg("merged").encode())
    log.put(NAMES.located, located_msg("merged").encode())
    log.put(NAMES.commands, file_msg("merged", case="AJ-filed").encode())
    log.put(NAMES.events, filed_msg("merged", case="AJ-filed", type_=ev.REPORT_MERGED).encode())
    log.put(NAMES.reports, report_msg("refused").encode())
    log.put(NAMES.located, located_msg("refused").encode())
    log.put(NAMES.commands, file_msg("refused").encode())
    log.put(NAMES.events, m("CR", ev.COMMAND_REFUSED, "AJ-refused", "F-refused",
                            command_id="F-refused").encode())
    log.put(NAMES.reports, report_msg("lost").encode())
    rep = run(log, everything_committed(log))
    e = rep.end_to_end
    assert e.reports == 4
    assert (e.outcomes[ev.CASE_FILED], e.outcomes[ev.REPORT_MERGED], e.refused, e.lost) == (
        1, 1, 1, 1)


def test_lost_records_are_capped_with_a_total() -> None:
    log = Log()
    for i in range(5):
        log.put(NAMES.reports, report_msg(f"r{i}").encode())
    rep = run(log, everything_committed(log), max_diffs=2)
    assert rep.total_lost == 5 and len(rep.lost) == 2 and rep.differences == 5


def test_trimmed_evidence_topics_make_records_unverifiable_not_lost() -> None:
    log = Log()
    log.put(NAMES.reports, report_msg("r1").encode())
    rep = cmp.check(log.records, NAMES, everything_committed(log), trimmed=[NAMES.located])
    assert rep.clean and hop(rep, cmp.INTAKE).unverifiable == 1


# --- the real steps -------------------------------------------------------------------------------


REF = load_reference_data()
GRID = "421099101202001"


class Pipeline:
    """The processors' steps on a Log, every output put on its topic unless its type is in
    `drop` (then nothing of it exists: what a lost commit leaves)."""

    TOPIC_OF = {"reports-located": NAMES.located, "case-commands": NAMES.commands,
                "case-events": NAMES.events, "dead-letters": NAMES.dead}

    def __init__(self, drop: frozenset[str] = frozenset()) -> None:
        self.log = Log()
        self.states: dict[str, Any] = {}
        self.drop = drop

    def emit(self, out: steps.Outputs) -> None:
        for suffix, key, value in out.sends:
            if ev.loads(value).get("type") in self.drop:
                continue
            p, o = self.log.put(self.TOPIC_OF[suffix], value, key=key.encode())
            if suffix == "reports-located":
                filed, _ = steps.filing_step(value, [], NOW, NAMES.located, p, o)
                self.emit(filed)
            elif suffix == "case-commands":
                self.command(value, p, o)
            elif suffix == "case-events":
                self.archive(ev.decode_message(value))

    def command(self, raw: bytes, partition: int, offset: int) -> None:
        case = ev.loads(raw)["case_id"]
        out, state = steps.case_step(raw, self.states.get(case), HoursPlanner(), NOW,
                                     NAMES.commands, case, partition, offset)
        if state is not None:
            self.states[case] = state
        self.emit(out)

    def archive(self, event: Message) -> None:
        """The photo archive's part: a RecordPhotoArchived per photo."""
        for ref in archive_photos_of(event):
            data = {"sha256": ref["sha256"], "source_key": ref["key"], "status": "archived"}
            cmd = steps.command(ev.RECORD_PHOTO_ARCHIVED, event.case_id, event.at, data,
                                cause=f"{event.id}:{ref['sha256']}:{ref['key']}")
            out = steps.Outputs()
            out.send("case-commands", event.case_id, cmd.encode())
            self.emit(out)

    def report(self, rid: str, lat_lon: tuple[float, float] | None = None) -> None:
        lat, lon = lat_lon or geo.representative_point(REF.grids[GRID])
        worker = next(w for w in REF.workers.values() if w.grid_code == GRID and w.active)
        actor = f"worker:{worker.id}"
        msg = Message(id=derived_id("report", rid), type=ev.REPORT_SUBMITTED, case_id="", at=AT,
                      actor=actor, data={
                          "report_id": rid, "reporter": actor, "category_code": "E0102",
                          "description": "路边垃圾堆积, 已三天无人清运", "lat": lat, "lon": lon,
                          "captured_at": AT, "photos": [photo(f"reports/{rid}/0.jpg")]})
        partition, offset = self.log.put(NAMES.reports, msg.encode(), key=rid.encode())
        self.emit(steps.intake_step(msg.encode(), REF, NOW, NAMES.reports, partition, offset))


def test_the_real_steps_leave_nothing_lost_and_a_dropped_output_is_found() -> None:
    pipe = Pipeline()
    pipe.report("r-ok-0001")
    pipe.report("r-outside-01", (10.0, 10.0))  # not in the county: RefuseReport → CaseNotFiled
    rep = run(pipe.log, everything_committed(pipe.log))
    assert rep.clean, [x.render() for x in rep.lost] + rep.end_to_end.missing
    assert rep.end_to_end.outcomes == {ev.CASE_FILED: 1, ev.CASE_NOT_FILED: 1}
    assert hop(rep, cmp.PHOTOS).breakdown == {"archived": 2}  # CaseNotFiled keeps its photo
    assert hop(rep, cmp.CASES).records >= 3

    for dropped, lost_hop, kind in ((ev.REPORT_LOCATED, cmp.INTAKE, ev.REPORT_SUBMITTED),
                                    (ev.FILE_REPORT, cmp.FILING, ev.REPORT_LOCATED),
                                    (ev.CASE_FILED, cmp.CASES, ev.FILE_REPORT),
                                    (ev.RECORD_PHOTO_ARCHIVED, cmp.PHOTOS, "photo")):
        pipe = Pipeline(frozenset({dropped, ev.TASK_DISPATCHED} if dropped == ev.CASE_FILED
                                  else {dropped}))
        pipe.report("r-0000001")
        rep = run(pipe.log, everything_committed(pipe.log))
        assert [(x.hop, x.kind) for x in rep.lost] == [(lost_hop, kind)], dropped
        if lost_hop != cmp.PHOTOS:
            assert rep.lost[0].report_id == "r-0000001"
            assert rep.end_to_end.lost == 1


def test_the_real_one_step_path_leaves_nothing_lost_and_a_dropped_event_is_found() -> None:
    """The case agent's path (processors.app): the report with its ticket, filed and decided
    on its partition, nothing on case-commands but the archive's commands."""

    class OneStep(Pipeline):
        def report(self, rid: str, lat_lon: tuple[float, float] | None = None) -> None:
            lat, lon = lat_lon or geo.representative_point(REF.grids[GRID])
            worker = next(w for w in REF.workers.values() if w.grid_code == GRID and w.active)
            actor = f"worker:{worker.id}"
            msg = Message(id=derived_id("report", rid), type=ev.REPORT_SUBMITTED,
                          case_id=intake.ticket_for(REF, rid, lat, lon, NOW), at=AT,
                          actor=actor, data={
                              "report_id": rid, "reporter": actor, "category_code": "E0102",
                              "description": "路边垃圾堆积, 已三天无人清运", "lat": lat,
                              "lon": lon, "captured_at": AT,
                              "photos": [photo(f"reports/{rid}/0.jpg")]})
            key = intake.report_key(REF, rid, lat, lon)
            p = topics.partition_of(key, topics.CASE_PARTITIONS)
            partition, offset = self.log.put(NAMES.reports, msg.encode(), p, key.encode())
            out = steps.intake_and_file_step(msg.encode(), REF, {}, NOW, NAMES.reports,
                                             partition, offset, topics.CASE_PARTITIONS)
            for case, value in out.take_commands_on(partition, topics.CASE_PARTITIONS):
                res, state = steps.case_step(value, self.states.get(case), HoursPlanner(), NOW,
                                             NAMES.reports, case, partition, offset)
                if state is not None:
                    self.states[case] = state
                self.emit(res)
            self.emit(out)

    pipe = OneStep()
    pipe.report("r-ok-0001")
    pipe.report("r-outside-01", (10.0, 10.0))  # outside: its RefuseReport goes round
    rep = run(pipe.log, everything_committed(pipe.log))
    assert rep.clean, [x.render() for x in rep.lost] + rep.end_to_end.missing
    assert rep.end_to_end.outcomes == {ev.CASE_FILED: 1, ev.CASE_NOT_FILED: 1}
    assert hop(rep, cmp.INTAKE).handed_on == 2
    types = [ev.loads(r.value)["type"] for r in pipe.log.records if r.topic == NAMES.commands]
    assert ev.FILE_REPORT not in types  # decided in the step, never sent round

    pipe = OneStep(frozenset({ev.CASE_FILED, ev.TASK_DISPATCHED}))
    pipe.report("r-0000001")
    rep = run(pipe.log, everything_committed(pipe.log))
    assert [(x.hop, x.kind) for x in rep.lost] == [(cmp.INTAKE, ev.REPORT_SUBMITTED)]
    assert rep.lost[0].report_id == "r-0000001" and rep.end_to_end.lost == 1


def test_group_names_are_the_workers_app_ids() -> None:
    from processors.app import app_id_for

    assert cmp.processor_group("p") == app_id_for("p", True)
    assert cmp.archive_group("p") == app_id_for("p", False)


def test_the_order_records_are_fed_in_does_not_matter() -> None:
    log = Log()
    log.put(NAMES.commands, m("C1", ev.SIGN_TASK, "AJ1", task_id="T1").encode())
    log.put(NAMES.events, m("E1", ev.TASK_SIGNED, "AJ1", "C1").encode())
    log.put(NAMES.commands, m("C1", ev.SIGN_TASK, "AJ1", task_id="T1").encode())
    log.put(NAMES.commands, b"junk")  # undecodable, no dead letter: lost
    whole(log, "r1")
    log.put(NAMES.reports, report_msg("r2").encode())
    commits = everything_committed(log)
    forward = cmp.check(log.records, NAMES, commits)
    backward = cmp.check(reversed(log.records), NAMES, commits)
    assert [(x.where, x.kind) for x in forward.lost] == [
        ("t.reports[0]@1", ev.REPORT_SUBMITTED), ("t.case-commands[0]@2", cmp.UNDECODABLE)]
    assert sorted(x.where for x in backward.lost) == sorted(x.where for x in forward.lost)
    assert hop(backward, cmp.CASES).by_design == hop(forward, cmp.CASES).by_design == {
        cmp.REDELIVERY: 1}


def test_verify_prints_each_hop_and_each_lost_record() -> None:
    from audit.report import completeness_lines

    log = Log()
    whole(log, "r1")
    log.put(NAMES.reports, report_msg("r2").encode())
    log.put(NAMES.reports, report_msg("r3").encode())
    commits = everything_committed(log)
    commits = Commits({**commits.processor, (NAMES.reports, 0): 2}, None, "t-processor")
    text = "\n".join(completeness_lines(run(log, commits)))
    assert "t.reports[0]@1 ReportSubmitted id R-r2 report r2" in text and "丢失" in text
    assert "1 in flight" in text and "尚在处理中" in text
    assert text.count("✗") == 4  # the headline, the intake hop, the lost record, end to end
