"""The canonical encoding through orjson (gridflow.contract.envelope._orjson_canonical) and a
record that keeps its own bytes as its encoding (keep_canonical): the very bytes, hashes and
errors of json.dumps's canonical encoding, whatever the values."""

from __future__ import annotations

import enum
import hashlib
import json
import math
import random
import struct
from datetime import UTC, datetime

import orjson
import pytest

from gridflow.contract import envelope as E
from gridflow.events import Message, canonical_envelope, canonical_json, envelope_hash
from sinks.sql import decode_hashed


def reference(obj: object) -> bytes:
    """The canonical encoding by its definition: json.dumps alone."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def test_this_orjson_writes_floats_as_the_fast_path_was_checked_against() -> None:
    assert E._ORJSON_AGREES  # else every value goes through json.dumps (correct, but slow)


def floats(n: int, seed: int) -> list[float]:
    rnd = random.Random(seed)
    out = [1e16, 1e-5, 1e-4, 9.999e-5, 5e-324, -0.0, 0.0, 1e21, 1e22, 1.7976931348623157e308,
           2.0**53 + 1, 0.1 + 0.2]
    while len(out) < n // 2:  # every bit pattern: the whole range, both signs
        f = struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0]
        if math.isfinite(f):
            out.append(f)
    while len(out) < n:  # dense around the boundaries where the two encoders part
        out.append(rnd.random() * 10.0 ** rnd.randint(-9, 20) * rnd.choice((1, -1)))
    for e in range(-323, 308):  # every decade
        out += [float(f"1e{e}"), float(f"-4.5e{e}"), float(f"9.999999999999e{e}")]
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_every_float_is_written_as_json_dumps_writes_it(seed: int) -> None:
    differed = 0
    for f in floats(100_000, seed):
        for value in ([f], {"lat": f, "n": 1}):
            assert canonical_json(value) == reference(value), f
            differed += orjson.dumps(value, option=orjson.OPT_SORT_KEYS) != reference(value)
    assert differed > 1000  # the floats where orjson alone would differ were among them


def test_every_code_point_is_written_as_json_dumps_writes_it() -> None:
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for i in range(0, len(chars), 4096):
        s = "".join(chars[i:i + 4096])
        assert canonical_json({"s": s, s[:7]: [s[:3]]}) == reference({"s": s, s[:7]: [s[:3]]})
    for c in range(0x20):  # control characters, each alone (escaped as \n or \u00XX)
        assert canonical_json([chr(c)]) == reference([chr(c)])


def test_keys_sort_by_code_point_as_json_dumps_sorts_them() -> None:
    rnd = random.Random(7)

    def char() -> str:
        while True:
            c = rnd.randint(1, 0x10FFFF)
            if not 0xD800 <= c <= 0xDFFF:
                return chr(c)

    for _ in range(50):
        obj = {char() + char(): {char(): i, "a": [i]} for i in range(200)}
        assert canonical_json(obj) == reference(obj)


class Colour(enum.IntEnum):
    RED = 1


class Tag(enum.StrEnum):
    A = "甲"


class Text(str):
    pass


@pytest.mark.parametrize("value", [
    [float("nan")], {"x": float("inf")}, [-math.inf],  # orjson: null; json.dumps: NaN, Infinity
    [2**64], [-(2**63) - 1], [2**64 - 1], [-(2**63)],  # beyond and at orjson's integer range
    {1: "a"}, {"k": {2: 3}},  # keys json.dumps turns into strings
    [Colour.RED], {"t": Tag.A}, [Text("x")], {Text("k"): 1},  # subclasses of builtins
    [True, False, None], {"n": None}, [[[[{}]]]], "null", "e-5", [0.00001, "0.00001"],
    {"deep": json.loads("[" * 300 + "]" * 300)},  # deeper than orjson writes
])
def test_values_orjson_does_not_write_as_json_dumps_take_json_dumps(value: object) -> None:
    assert canonical_json(value) == reference(value)


@pytest.mark.parametrize("value", [
    {"routing_rule": None, "n": 1}, [None, [None, {"x": None}]], {"s": "null", "n": None},
    (None, 1.5, "三"), {"t": (None, [0.25, None])},
])
def test_none_is_written_by_orjson_where_no_float_is_nan_or_infinite(value: object) -> None:
    # None is null in both encoders: such a value takes the fast path (a TaskDispatched's
    # "routing_rule": null sent half the worker's events to json.dumps)
    assert E._orjson_canonical(value) == reference(value)


@pytest.mark.parametrize("value", [
    {"n": None, "x": [1, {"y": float("nan")}]}, (None, -math.inf), [None, (1, (math.inf,))],
    {"a": {"b": {"c": [None, 2.0, float("-nan")]}}},
])
def test_a_nan_or_infinity_beside_none_is_written_by_json_dumps(value: object) -> None:
    # orjson writes NaN and infinities as null too; json.dumps as NaN / Infinity
    assert E._orjson_canonical(value) is None
    assert canonical_json(value) == reference(value)
    assert E._non_finite_in(value)


def test_the_walk_finds_only_what_orjson_writes_as_null_and_json_dumps_does_not():
    assert not E._non_finite_in({"a": [None, 0.0, -0.0, 1e308, 5e-324, "nan", {"b": None}]})
    assert E._non_finite_in([[[[[float("inf")]]]]])


@pytest.mark.parametrize("value", [
    ["\ud800"],  # a lone surrogate: json.dumps writes it, UTF-8 refuses it
    [datetime(2026, 1, 1, tzinfo=UTC)],  # not JSON: json.dumps refuses it
    {(1, 2): "tuple key"},
])
def test_errors_are_json_dumps_s_errors(value: object) -> None:
    with pytest.raises(Exception) as ours:
        canonical_json(value)
    with pytest.raises(Exception) as theirs:
        reference(value)
    assert type(ours.value) is type(theirs.value)


def envelope(data: dict[str, object], **changes: object) -> dict[str, object]:
    obj: dict[str, object] = {
        "actor": "grid:G1", "at": "2026-11-02T01:03:00.123456Z", "case_id": "AJ000001",
        "causation_id": "c1", "data": data, "id": "e" * 32, "prev_hash": "f" * 64,
        "schema": 1, "seq": 3, "type": "TaskProgressNoted",
    }
    obj.update(changes)
    return obj


def args(obj: dict[str, object]) -> tuple[object, ...]:
    return tuple(obj[k] for k in ("id", "type", "case_id", "at", "actor", "data", "schema",
                                  "causation_id", "seq", "prev_hash"))


DATA = [
    {"task_id": "T1", "note": "已清理", "lat": 30.25, "ratio": 1e-05},
    {"task_id": "T1", "tiny": 0.00007, "huge": 1e300, "none": None, "nan": float("nan")},
    {"task_id": "T1", "note": "e-mail 0.00001 null", "list": [1, 2.5, "三"]},
    {"task_id": "T1", "note": "平常的一条进展", "count": 2},
]


@pytest.mark.parametrize("data", DATA)
def test_canonical_envelope_is_canonical_json_of_the_ten_fields(data: dict[str, object]) -> None:
    obj = envelope(data)
    assert canonical_envelope(*args(obj)) == reference(obj)  # type: ignore[arg-type]


def records_of(obj: dict[str, object]) -> list[tuple[bytes, bool]]:
    """The record as each encoder might write it, and whether it is the canonical one."""
    canonical = reference(obj)
    out = [(canonical, True),
           (json.dumps(obj, ensure_ascii=False, sort_keys=True).encode(), False),  # spaces
           (json.dumps(obj, separators=(",", ":")).encode(), False),  # unsorted, \\u escapes
           (orjson.dumps(obj), False)]  # unsorted; small floats otherwise
    try:
        sorted_orjson = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return out
    out.append((sorted_orjson, sorted_orjson == canonical))
    return out


@pytest.mark.parametrize("data", DATA)
def test_a_record_hashes_as_its_values_however_it_was_written(data: dict[str, object]) -> None:
    obj = envelope(data)
    want = envelope_hash(*args(obj))  # type: ignore[arg-type]
    for raw, canonical in records_of(obj):
        read = E.loads(raw)
        m = Message(*args(read))  # type: ignore[arg-type]
        kept = E.keep_canonical(m, raw, read)
        if kept:
            assert canonical and raw == reference(obj)
        if any(isinstance(v, float) and math.isnan(v) for v in data.values()):
            continue  # NaN != NaN: the values compare unequal, the hashes still agree below
        assert m.hash() == want, raw
        quick = decode_hashed(raw)
        assert quick is not None and quick[2] == want, raw


def test_a_canonical_record_keeps_its_bytes_and_hashes_them() -> None:
    obj = envelope(DATA[3])
    raw = reference(obj)
    read = E.loads(raw)
    m = Message(*args(read))  # type: ignore[arg-type]
    assert E.keep_canonical(m, raw, read)
    assert m.encode() is raw
    assert m.hash() == hashlib.sha256(raw).hexdigest() == envelope_hash(*args(obj))  # type: ignore[arg-type]


def test_a_time_that_looks_like_a_small_float_only_takes_the_slower_path() -> None:
    obj = envelope(DATA[3], at="2026-11-02T01:03:10.000012Z")  # "0.00001" in its seconds
    raw = reference(obj)
    read = E.loads(raw)
    m = Message(*args(read))  # type: ignore[arg-type]
    assert not E.keep_canonical(m, raw, read)
    assert m.encode() == raw and m.hash() == hashlib.sha256(raw).hexdigest()


NOTE = {"task_id": "T1", "note": "进展", "x": 1}


@pytest.mark.parametrize("raw", [
    # a small float as orjson writes it: json.dumps writes 7e-05; kept, it would hash otherwise
    reference(envelope(NOTE)).replace(b'"x":1}', b'"x":0.00007}'),
    reference(envelope(NOTE)).replace(b'"x":1}', b'"x":1e-7}'),
    # an eleventh key: the hash covers the envelope's ten
    reference({**envelope(NOTE), "zz": 1}),
    # a key twice: the last one is read
    reference(envelope(NOTE)).replace(b'"seq":3', b'"seq":2,"seq":3'),
    # a field missing: read with its default
    reference({k: v for k, v in envelope(NOTE).items() if k != "causation_id"}),
])
def test_records_that_are_not_their_canonical_encoding_are_encoded_again(raw: bytes) -> None:
    read = E.loads(raw)
    m = Message(read["id"], read["type"], read["case_id"], read["at"], read["actor"],
                read.get("data", {}), read.get("schema", 1), read.get("causation_id", ""),
                read.get("seq", 0), read.get("prev_hash", ""))
    assert not E.keep_canonical(m, raw, read)
    assert m.hash() == hashlib.sha256(m.encode()).hexdigest() != hashlib.sha256(raw).hexdigest()
    quick = decode_hashed(raw)
    assert quick is not None and quick[2] == m.hash()
