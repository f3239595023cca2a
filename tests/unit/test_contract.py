"""The message contract (gridflow.contract): one class per message type with its label, one
encoding and one hash, the event→command map, and the views that read their labels from it."""

from __future__ import annotations

import dataclasses

import pytest

from audit import history, summaries
from demo import histories as sample
from gridflow import events as ev
from gridflow.contract import payloads
from gridflow.events import Message, SchemaError, canonical_json, decode_message


def test_every_message_type_is_one_frozen_class_with_a_chinese_label():
    assert len(ev.PAYLOADS) == len(ev.EVENTS) + len(ev.COMMANDS) + len(ev.INTAKES)
    for type_, cls in ev.PAYLOADS.items():
        assert cls.TYPE == type_ and cls.__struct_config__.frozen
        assert cls.LABEL_ZH and all("\u4e00" <= ch <= "\u9fff" for ch in cls.LABEL_ZH), type_
    assert ev.EVENT_TYPES.isdisjoint(ev.COMMAND_TYPES)


def test_a_merged_report_has_one_name_everywhere():
    assert ev.label_zh(ev.REPORT_MERGED) == "合并上报"
    assert history.type_zh(ev.REPORT_MERGED) == "合并上报"
    labels = {cls.LABEL_ZH for cls in ev.EVENTS}
    assert not labels & {"并案", "重复上报合并", "重复上报并案"}


def test_the_event_to_command_map_names_real_commands():
    assert ev.COMMAND_OF_EVENT[ev.TASK_SIGNED] == ev.SIGN_TASK
    assert ev.COMMAND_OF_EVENT[ev.EXTENSION_REFUSED] == ev.DECIDE_EXTENSION
    assert set(ev.COMMAND_OF_EVENT) <= ev.EVENT_TYPES
    assert set(ev.COMMAND_OF_EVENT.values()) <= ev.COMMAND_TYPES
    # decided by no single command: dispatch follows filing, send-back, whistle; a refusal names
    # its command itself
    assert {ev.TASK_DISPATCHED, ev.COMMAND_REFUSED, ev.CASE_CLOSED} & set(ev.COMMAND_OF_EVENT) == set()


def test_one_encoding_and_one_hash_whatever_the_envelope_holds():
    event = sample.eventful_lifecycle("AJH")[3]
    assert event.encode() == canonical_json(event.to_dict())
    # an envelope field of another JSON type than this build writes takes the general path
    odd = dataclasses.replace(event, seq=True)  # type: ignore[arg-type]
    assert odd.encode() == canonical_json(odd.to_dict()) and b'"seq":true' in odd.encode()
    assert odd.hash() != event.hash()
    fields = event.to_dict()
    assert ev.envelope_hash(**fields) == event.hash()


def test_a_message_made_from_a_typed_payload_is_what_decoding_its_bytes_gives():
    body = ev.TaskSigned(task_id="AJ1-T01", department="D-CG", on_time=True,
                         resolve_due="2026-11-04T01:00:00.000000Z")
    m = Message.of(body, id="e1", case_id="AJ1", at="2026-11-02T01:30:00.000000Z",
                   actor="dept:D-CG", causation_id="c1", seq=3, prev_hash="ab" * 32)
    assert m.type == ev.TASK_SIGNED and m.body == body
    # fields a record does not carry stay out of its data (dispatched_at, category_code, ...)
    assert m.data == {"task_id": "AJ1-T01", "department": "D-CG", "on_time": True,
                      "resolve_due": "2026-11-04T01:00:00.000000Z"}
    again = decode_message(m.encode())
    assert again == m and again.body == body and again.hash() == m.hash()


@pytest.mark.parametrize("data, where", [
    ({"department": "D-CG"}, "task_id"),  # a task event without its task
    ({"task_id": "T1", "on_time": "yes"}, "on_time"),
    ({"task_id": 7}, "task_id"),
])
def test_a_payload_that_does_not_match_its_type_is_refused_at_decoding(data, where):
    raw = Message(id="e1", type=ev.TASK_SIGNED, case_id="AJ1", at="2026-11-02T01:30:00Z",
                  actor="dept:D-CG", data=data).encode()
    with pytest.raises(SchemaError, match=where):
        decode_message(raw)
    # the audit reads the envelope as written
    assert decode_message(raw, typed=False).data == data


def test_a_report_carried_by_an_event_is_checked_too():
    raw = Message(id="e1", type=ev.CASE_FILED, case_id="AJ1", at="2026-11-02T01:30:00Z",
                  actor="worker:W1", data={"report": {"report_id": "R1", "lat": "north"}}).encode()
    with pytest.raises(SchemaError, match="lat"):
        decode_message(raw)


def test_an_event_type_this_build_does_not_know_decodes_untyped():
    m = decode_message(Message(id="e1", type="CaseTeleported", case_id="AJ1",
                               at="2026-11-02T01:30:00Z", actor="system",
                               data={"to": "moon"}).encode())
    assert not m.known and m.data == {"to": "moon"}
    assert ev.label_zh("CaseTeleported") == "CaseTeleported"
    with pytest.raises(SchemaError):
        m.body  # noqa: B018


def test_the_audit_summary_names_the_refused_command_by_its_label():
    refused = Message(id="e1", type=ev.COMMAND_REFUSED, case_id="AJ1", at="2026-11-02T01:30:00Z",
                      actor="dept:D-CG", data={"command_type": ev.REQUEST_EXTENSION,
                                               "reason_zh": "已有延期申请待审批"})
    assert summaries.summarize(refused) == "指令被拒绝 (延期申请): 已有延期申请待审批"
    assert payloads.RequestExtension.LABEL_ZH == "延期申请"
