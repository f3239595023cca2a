"""Log segments: byte-exact round trip, deterministic bytes, manifests that chain, and every
tampering with a segment or a gap between segments named."""

from __future__ import annotations

import pytest

from audit import segments as seg
from audit.segments import LogRecord


def records(first: int, n: int, topic: str = "p.case-events") -> list[LogRecord]:
    out = []
    for i in range(first, first + n):
        value = f'{{"id":"e{i}","note":"垃圾清运"}}'.encode() if i % 7 else b"\xff\x00binary"
        out.append(LogRecord(topic, 2, i, 1_700_000_000_000 + i, f"AJ{i % 3}".encode(), value))
    out.append(LogRecord(topic, 2, first + n, None, None, None))  # a tombstone
    return out


def test_round_trip_is_byte_exact_and_encoding_deterministic() -> None:
    recs = records(10, 20)
    data = seg.encode_segment(recs)
    assert seg.encode_segment(recs) == data
    assert seg.decode_segment(data, "p.case-events", 2) == recs


def manifests(*spans: tuple[int, int]) -> list[tuple[dict, str]]:
    out: list[tuple[dict, str]] = []
    prev_sha, start = "", 0
    for first, n in spans:
        recs = records(first, n - 1)
        data = seg.encode_segment(recs)
        m = seg.build_manifest("p.case-events", 2, start, recs, data, prev_sha,
                               "2026-11-16T01:00:00.000000Z")
        sha = seg.sha256(seg.encode_manifest(m))
        out.append((m, sha))
        prev_sha, start = sha, m["next_offset"]
    return out


def test_manifests_continue_each_other_from_offset_zero() -> None:
    chain = manifests((0, 10), (10, 10), (20, 5))
    assert seg.check_chain(chain) == []
    m = chain[1][0]
    assert (m["start_offset"], m["first_offset"], m["last_offset"], m["next_offset"],
            m["count"]) == (10, 10, 19, 20, 10)
    assert m["segment_key"] == ("log-segments/p.case-events/2/"
                                "00000000000000000010-00000000000000000019.jsonl.gz")


def test_a_gap_a_missing_first_segment_and_a_broken_link_are_named() -> None:
    chain = manifests((0, 10), (10, 10), (20, 5))
    assert any("gap" in p or "expected" in p for p in seg.check_chain([chain[0], chain[2]]))
    assert any("starts at offset 10, expected 0" in p for p in seg.check_chain(chain[1:]))
    forged = (dict(chain[1][0], prev_manifest_sha256="0" * 64), chain[1][1])
    assert any("previous manifest" in p for p in seg.check_chain([chain[0], forged, chain[2]]))


def test_a_segment_that_does_not_match_its_manifest_is_refused() -> None:
    recs = records(0, 9)
    data = seg.encode_segment(recs)
    m = seg.build_manifest("p.case-events", 2, 0, recs, data, "", "t")
    assert seg.verify_segment(m, data) == recs
    other = seg.encode_segment(recs[:-1])
    with pytest.raises(seg.SegmentError, match="do not match"):
        seg.verify_segment(m, other)
    with pytest.raises(seg.SegmentError, match="gzip"):
        seg.verify_segment(dict(m, sha256=seg.sha256(b"junk"), size=4), b"junk")


def test_an_empty_segment_is_refused() -> None:
    with pytest.raises(seg.SegmentError):
        seg.build_manifest("t", 0, 0, [], b"", "", "t")
