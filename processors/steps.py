"""The processors' steps as plain functions: bytes in, messages out, no Kafka.

Each faust agent in processors/app.py decodes nothing itself: it hands the
record to one of these steps and sends what comes back. Steps never raise for
bad input: an undecodable or invalid record becomes a dead letter.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gridflow import events as ev
from gridflow import topics
from gridflow.core import dedupe, eviction, intake
from gridflow.core.case import CaseState, DeadlinePlanner, decide, new_case
from gridflow.core.refdata import ReferenceData
from gridflow.events import Message, SchemaError, decode_message, derived_id, iso


@dataclass
class Outputs:
    """What a step asks its agent to send: (topic suffix, key, value bytes) triples."""

    sends: list[tuple[str, str, bytes]] = field(default_factory=list)
    # The case events decided in this step, as objects (their bytes are among `sends`): what
    # the case processor files stage clocks from (processors.deadlines.ClockFollower).
    events: list[Message] = field(default_factory=list)
    # The messages a step made and sent (`send_message`), by the identity of their bytes in
    # `sends`: a command decided at once on this partition is handed on as the object it was
    # made as, not decoded again from its bytes (take_local_commands). Each entry holds its
    # bytes too, so no other object can take their identity while the entry is here.
    made: dict[int, tuple[bytes, Message]] = field(default_factory=dict)

    def send(self, topic_suffix: str, key: str, value: bytes) -> None:
        self.sends.append((topic_suffix, key, value))

    def send_message(self, topic_suffix: str, key: str, message: Message) -> None:
        value = message.encode()
        self.sends.append((topic_suffix, key, value))
        self.made[id(value)] = (value, message)

    def take_local_commands(self, partition: int, partitions: int,
                            ) -> list[tuple[str, bytes, Message | None]]:
        """Remove and return the case commands whose case id lands on `partition` (of
        `partitions`): the agent that holds that partition's cases decides them at once,
        in the order they were asked, instead of sending them round through case-commands.
        Each with the message it was made as (None for bytes sent as bytes)."""
        here: list[tuple[str, bytes, Message | None]] = []
        rest: list[tuple[str, str, bytes]] = []
        made = self.made
        for send in self.sends:
            if send[0] == "case-commands" and topics.partition_of(send[1], partitions) == partition:
                entry = made.get(id(send[2]))
                here.append((send[1], send[2], None if entry is None else entry[1]))
            else:
                rest.append(send)
        self.sends = rest
        return here

    def take_commands_on(self, partition: int, partitions: int) -> list[tuple[str, bytes]]:
        """take_local_commands without the messages: (case id, bytes) each."""
        return [(key, value) for key, value, _ in self.take_local_commands(partition, partitions)]

    def dead(self, source_topic: str, partition: int | None, offset: int | None, raw: bytes | None,
             reason: str, now: datetime) -> None:
        record = ev.dead_letter(source_topic, partition, offset, raw, reason, now)
        self.send("dead-letters", source_topic, ev.canonical_json(record))


def command(type_: str, case_id: str, at: datetime | str, data: dict[str, Any], cause: str,
            actor: str = "system") -> Message:
    at_s = at if isinstance(at, str) else iso(at)
    return Message(id=derived_id(cause, type_), type=type_, case_id=case_id, at=at_s, actor=actor,
                   data=data, causation_id=cause)


# --- intake (立案): validate and locate ---------------------------------------

DEDUPE_RADIUS_M = 50.0
DEDUPE_WINDOW = timedelta(hours=24)


def intake_step(raw: bytes, ref: ReferenceData, now: datetime, source: str,
                partition: int | None = None, offset: int | None = None) -> Outputs:
    """ReportSubmitted → ReportLocated (keyed by township), a refusal, or a dead letter."""
    out, located, township = _intake(raw, ref, now, source, partition, offset)
    if located is not None:
        out.send("reports-located", township, located[0].encode())
    return out


def intake_and_file_step(raw: bytes, ref: ReferenceData, table: MutableMapping[str, Any],
                         now: datetime, source: str, partition: int | None, offset: int | None,
                         partitions: int, radius_m: float = DEDUPE_RADIUS_M,
                         window: timedelta = DEDUPE_WINDOW) -> Outputs:
    """ReportSubmitted → FileReport in one step (issue 16), when the record is on the partition
    its township's key goes to (the API keys reports by township: intake.report_key): then this
    partition holds the township's recent cases in `table`, and the report is validated,
    located, checked for a near-duplicate and filed here, exactly as `intake_step` and
    `filing_step_keyed` would have done it one hop apart (same ReportLocated id, same
    FileReport). A record keyed otherwise (a log written before, a producer that keys by
    report id) goes on to `<p>.reports-located` as before."""
    out, located, township = _intake(raw, ref, now, source, partition, offset)
    if located is None:
        return out
    if partition is None or topics.partition_of(township, partitions) != partition:
        out.send("reports-located", township, located[0].encode())
        return out
    _file_keyed(located, table, township, out, radius_m, window)
    return out


def _intake(raw: bytes, ref: ReferenceData, now: datetime, source: str, partition: int | None,
            offset: int | None) -> tuple[Outputs, _Located | None, str]:
    """Validate and locate: a refusal or a dead letter in the outputs, or the ReportLocated
    (as the filing step reads it) and its township."""
    out = Outputs()
    try:
        msg = decode_message(raw, frozenset({ev.REPORT_SUBMITTED}))
        report = intake.validate_report(msg.data, now=msg.at_dt)
    except SchemaError as exc:
        out.dead(source, partition, offset, raw, f"undecodable: {exc}", now)
        return out, None, ""
    except intake.ReportInvalid as exc:
        out.dead(source, partition, offset, raw, f"invalid report: {exc.field}: {exc.reason_en}", now)
        return out, None, ""
    if msg.case_id and not intake.CASE_ID_RE.match(msg.case_id):
        out.dead(source, partition, offset, raw, f"invalid report: case_id: not a ticket number "
                 f"(AJ<yyyymmdd>-<8 base32>): {msg.case_id[:40]!r}", now)
        return out, None, ""
    # The ticket the API answered travels with the report (intake.ticket_for); a report written
    # before that has none, and gets the id it always got.
    filing = intake.file_report(ref, report, now=msg.at_dt, case_id=msg.case_id)
    case_id = filing.case_id
    if not filing.filed:
        cmd = command(ev.REFUSE_REPORT, case_id, msg.at, {
            "report": msg.data, "code": filing.reason_code,
            "reason_zh": filing.reason_zh, "reason_en": filing.reason_en,
        }, cause=msg.id, actor=msg.actor)
        out.send_message("case-commands", case_id, cmd)
        return out, None, ""
    if report.lat is None or report.lon is None:  # a filed report was located: never here
        out.dead(source, partition, offset, raw, "the report has no position (lat, lon)", now)
        return out, None, ""
    data = {"report": msg.data, **filing.to_dict()}
    located = Message(
        id=derived_id(msg.id, ev.REPORT_LOCATED), type=ev.REPORT_LOCATED, case_id=case_id,
        at=msg.at, actor=msg.actor, causation_id=msg.id, data=data,
    )
    return out, (located, data, filing.category_code, report.lat, report.lon), \
        filing.township_code


# --- filing: near-duplicate detection per township, then FileReport -------------

def filing_step(raw: bytes, candidates: list[dict[str, Any]], now: datetime, source: str,
                partition: int | None = None, offset: int | None = None,
                radius_m: float = DEDUPE_RADIUS_M, window: timedelta = DEDUPE_WINDOW,
                ) -> tuple[Outputs, list[dict[str, Any]]]:
    """ReportLocated → FileReport for a new case or for the open case it duplicates.

    `candidates` are this township's recent cases (JSON dicts); the updated list
    is returned for the agent to store.
    """
    out = Outputs()
    located = _decode_located(raw, out, source, partition, offset, now)
    if located is None:
        return out, candidates
    return out, _file(located, candidates, out, radius_m, window)


def filing_key(township: str, category: str) -> str:
    """Key of the recent-cases table: only a report of the same category can be a duplicate,
    so each township's recent cases are kept per category (small values, small changelog)."""
    return f"{township}|{category}"


def filing_step_keyed(raw: bytes, table: MutableMapping[str, Any], township: str, now: datetime,
                      source: str, partition: int | None = None, offset: int | None = None,
                      radius_m: float = DEDUPE_RADIUS_M, window: timedelta = DEDUPE_WINDOW,
                      ) -> Outputs:
    """`filing_step` over a table of recent cases keyed by `filing_key`: reads and writes only
    the entry of the report's own category."""
    out = Outputs()
    located = _decode_located(raw, out, source, partition, offset, now)
    if located is None:
        return out
    _file_keyed(located, table, township, out, radius_m, window)
    return out


_Located = tuple[Message, dict[str, Any], str, float, float]


def _file_keyed(located: _Located, table: MutableMapping[str, Any], township: str,
                out: Outputs, radius_m: float, window: timedelta) -> None:
    """File against the table entry of the report's township and category; write it back only
    when it changed (one changelog record at most)."""
    key = filing_key(township, located[2])
    before = table.get(key) or []
    live = _file(located, before, out, radius_m, window)
    if live != before:
        table[key] = live


def _decode_located(raw: bytes, out: Outputs, source: str, partition: int | None,
                    offset: int | None, now: datetime) -> _Located | None:
    try:
        msg = decode_message(raw, frozenset({ev.REPORT_LOCATED}))
        located = msg.body
        if not isinstance(located, ev.ReportLocated):
            raise SchemaError(f"not a ReportLocated: {msg.type}")
        report = ev.report_of(located.report)
        if report.lat is None or report.lon is None:
            raise SchemaError("the report has no position (lat, lon)")
        data, lat, lon, category = msg.data, report.lat, report.lon, located.category_code
    except SchemaError as exc:
        out.dead(source, partition, offset, raw, f"undecodable located report: {exc!r}", now)
        return None
    return msg, data, category, lat, lon


def _file(located: _Located, candidates: list[dict[str, Any]], out: Outputs, radius_m: float,
          window: timedelta) -> list[dict[str, Any]]:
    msg, data, category, lat, lon = located
    at = msg.at_dt
    live = dedupe.prune(candidates, at, window)
    match = dedupe.find_match(live, {"category_code": category, "lat": lat, "lon": lon}, at,
                              radius_m, window)
    case_id = match.case_id if match else msg.case_id
    file_data = {**data}
    if match:
        file_data["distance_m"] = round(match.distance_m, 1)
        file_data["own_case_id"] = msg.case_id  # where it goes if the match is closed by now
    else:
        live = [*live, {"case_id": case_id, "category_code": category, "lat": lat, "lon": lon,
                        "filed_at": msg.at}]
    cmd = command(ev.FILE_REPORT, case_id, msg.at, file_data, cause=msg.id, actor=msg.actor)
    out.send_message("case-commands", case_id, cmd)
    return live


# --- cases: decide commands against current state --------------------------------

def case_step(raw: bytes, state: dict[str, Any] | None, planner: DeadlinePlanner, now: datetime,
              source: str, key: str = "", partition: int | None = None, offset: int | None = None,
              made: Message | None = None, in_order: bool = True,
              ) -> tuple[Outputs, dict[str, Any] | None]:
    """A command → the case's new events (sent to case-events) and its new state. `made`: the
    command as the step that made it holds it (`raw` is its encoding), not decoded again.
    `in_order=False`: made in this step from another topic's record, not read from
    case-commands (gridflow.core.case.decide)."""
    out = Outputs()
    try:
        if made is None:
            cmd = decode_message(raw, ev.COMMAND_TYPES)
        else:  # checked as decode_message checks it (the typed body is then built once)
            cmd = made
            if cmd.type in ev.PAYLOADS:
                cmd.body  # noqa: B018
        if not cmd.case_id:
            raise SchemaError("command has no case_id")
    except SchemaError as exc:
        out.dead(source, partition, offset, raw, f"undecodable command: {exc}", now)
        return out, state
    current = CaseState.from_dict(state) if state else new_case(cmd.case_id)
    try:
        decision = decide(current, cmd, planner, in_order=in_order)
    except (KeyError, TypeError, ValueError) as exc:  # a malformed payload of a known command
        out.dead(source, partition, offset, raw, f"malformed {cmd.type}: {exc!r}", now)
        return out, state
    for waited, reason in decision.malformed:  # a waiting command reached, not decidable
        out.dead(source, partition, offset, waited, reason, now)
    for follow_up in decision.commands:
        out.send("case-commands", follow_up.case_id, follow_up.encode())
    for event in decision.events:
        out.send("case-events", cmd.case_id, event.encode())
    out.events = decision.events
    return out, decision.state.to_dict()


def evicted_case_step(raw: bytes, stub: dict[str, Any], now: datetime, source: str,
                      partition: int | None = None, offset: int | None = None,
                      ) -> tuple[Outputs, dict[str, Any] | None]:
    """A command for a case evicted from the case table (gridflow.core.eviction): refused with
    code case_evicted as the next link of the case's chain (a near-duplicate report is filed
    as its own case instead, as for any closed case). Returns the stub to keep, or None when
    it is unchanged."""
    out = Outputs()
    try:
        cmd = decode_message(raw, ev.COMMAND_TYPES)
    except SchemaError as exc:
        out.dead(source, partition, offset, raw, f"undecodable command: {exc}", now)
        return out, None
    own = str(cmd.data.get("own_case_id", "")) if cmd.type == ev.FILE_REPORT else ""
    if own and own != cmd.case_id:
        data = {k: v for k, v in cmd.data.items() if k not in ("distance_m", "own_case_id")}
        refile = Message(id=derived_id(cmd.id, "refile"), type=ev.FILE_REPORT, case_id=own,
                         at=cmd.at, actor=cmd.actor, data=data, causation_id=cmd.id)
        out.send("case-commands", own, refile.encode())
        return out, None
    decision = eviction.refuse_evicted(stub, cmd)
    for event in decision.events:
        out.send("case-events", cmd.case_id, event.encode())
    out.events = decision.events
    return out, (eviction.stub_of(decision.state.to_dict(), stub) if decision.events else None)


def decode_json(raw: bytes) -> Any:
    return ev.loads(raw)  # json.loads(raw), through orjson where that gives the same
