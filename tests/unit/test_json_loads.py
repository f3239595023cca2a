"""gridflow.events.loads: exactly json.loads's value (types, key order, floats to the bit) or
exactly json.loads's exception (type and message), over hand-picked and generated inputs."""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import orjson
import pytest

from demo import histories as sample
from gridflow import events as ev
from gridflow.contract import envelope


def shape(v: Any) -> tuple[Any, ...]:
    """A value with every type spelled out, flat (no recursion, for deep documents): dict key
    order, bool vs int, floats by their bits (so -0.0 != 0.0 and nan == nan)."""
    out: list[Any] = []
    todo = [v]
    while todo:
        x = todo.pop()
        if type(x) is dict:
            out.append(("dict", len(x)))
            for k, y in reversed(list(x.items())):
                todo += [y, ("key", type(k).__name__, k)]
        elif type(x) is list:
            out.append(("list", len(x)))
            todo += reversed(x)
        elif type(x) is float:
            out.append(("float", struct.pack("<d", x)))
        else:
            out.append((type(x).__name__, x))
    return tuple(out)


def outcome(fn: Any, raw: Any) -> tuple[Any, ...]:
    try:
        v = fn(raw)
    except RecursionError:
        return ("raises", "RecursionError")
    except Exception as exc:  # noqa: BLE001 - the exception is the result compared
        return ("raises", type(exc), str(exc), getattr(exc, "pos", None))
    return ("value", shape(v))


def same(raw: Any) -> None:
    want, got = outcome(json.loads, raw), outcome(ev.loads, raw)
    assert got == want, raw


HAND_PICKED: list[bytes] = [
    # documents as they travel
    *(e.encode() for e in sample.eventful_lifecycle("AJH")),
    b'{"a":1,"a":2}', b'{"a":1,"b":0,"a":2}', b'{"a":{"x":1},"a":[1],"b":2,"a":null}',
    b'{"\xe4\xb8\xad\xe6\x96\x87":"\xf0\x9f\x98\x80\xe2\x82\xac","\xc3\xa9":"\\u4e2d\\ud83d\\ude00"}',
    b'"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\u001f\\u007f\\u2028\\uffff\\ufeff"', b'"\x7f\xe2\x80\xa8"',
    b'"\\uD83D\\uDE00"', b'"\\ud83d\\ude00"',
    # numbers
    b"0", b"-0", b"-0.0", b"0.0", b"-0e0", b"-0E-0", b"0e5", b"1E5", b"1e+5", b"1.5e-5", b"1e-7",
    b"1e16", b"1e22", b"1e23", b"5e-324", b"4.9406564584124654e-324", b"2.4703282292062327e-324",
    b"2.4703282292062328e-324", b"1e-400", b"2.2250738585072011e-308", b"2.2250738585072012e-308",
    b"1.7976931348623157e308", b"1.7976931348623158e308", b"1.7976931348623159e308", b"1e400",
    b"-1e400", b"1e99999999999999999999", b"1e0000000000000000000000005",
    b"0.1000000000000000055511151231257827021181583404541015625", b"9007199254740993",
    b"9007199254740993.0", b"0.30000000000000004441", b"123456789012345678901234567890e-10",
    b"12345678901234567890.5", b"1" + b"0" * 308 + b".0", b"1" + b"0" * 309 + b".0",
    *(str(n).encode() for n in (
        2**53, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**65, -(2**63), -(2**63) - 1, -(2**64),
        10**18, 10**19, -(10**18), -(10**19), 10**30, 10**400,
    )),
    b'{"n":18446744073709551616}', b"[-9223372036854775809]", b'{"n":1234567890123456789}',
    b'{"id":"8f3a1234567890123456789abc","n":18446744073709551616}',
    # json reads, orjson refuses
    b"NaN", b"Infinity", b"-Infinity", b"[NaN,Infinity,-Infinity]", b'{"x":NaN}',
    b'"\\ud800"', b'"\\udfff"', b'"\\udc00\\ud800"', b'"\\ud800\\u0041"', b'"\\ud800x"',
    b'{"\\ud800":1}', b'"\xed\xa0\x80"', b'"\xed\xb0\x80\xed\xa0\x80"',
    b"\xef\xbb\xbf{}", b"\xef\xbb\xbf1", b"1\x00", b"\x001", b"1\x00\x00\x00", b"\xff\xfe1\x00",
    b"\xfe\xff\x001", '{"a":"中"}'.encode("utf-16"), '{"a":"中"}'.encode("utf-16-le"),
    '{"a":"中"}'.encode("utf-16-be"), '{"a":"中"}'.encode("utf-32"), "[1]".encode("utf-32-le"),
    # whitespace
    b" 1 ", b"\t\n\r 1\r\n\t", b"\x0c1", b"1\x0c", b"\xc2\xa01", b"1\xc2\xa0", b"\x0b1",
    b'{ "a" : [ 1 , 2 ] }', b'\n{\n "a":\t1\n}\n',
    # invalid in both: the same error
    b"", b" ", b"{", b"[", b"[1,]", b'{"a":1,}', b"[1 2]", b"'a'", b'"\\x"', b'"\\u12"',
    b'"\\u12g4"', b"01", b"1.", b".5", b"+1", b"1.e5", b"1e", b"-", b"--1", b"nul", b"tru",
    b"[1]]", b"{}{}", b'{"a"}', b'{"a":}', b'{1:2}', b'"a\x00"', b'"a\nb"', b'"a\tb"',
    b'"\x1f"', b'"\xff"', b'"\xc0\xaf"', b'"\xe0\x80\x80"', b'"\xf4\x90\x80\x80"', b"\x80",
    b'{"a":"x"', b'{"a":1', b'{"a":1,"b":[1,2', b"[1]x", b"1 x", b"true false", b"[1, /* */ 2]",
]


@pytest.mark.parametrize("raw", HAND_PICKED, ids=range(len(HAND_PICKED)))
def test_hand_picked_bytes_and_text(raw: bytes):
    same(raw)
    try:
        text = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return
    same(text)


def _rfloat(rng: random.Random) -> str:
    k = rng.random()
    if k < 0.3:
        return repr(struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0])
    if k < 0.6:
        m = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25))).lstrip("0") or "0"
        f = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
        return f"{rng.choice(['', '-'])}{m}.{f}e{rng.choice(['', '+', '-'])}{rng.randint(0, 340)}"
    if k < 0.8:
        return repr(rng.uniform(-1e6, 1e6))
    return f"{rng.randint(1, 9)}e{rng.randint(-330, 315)}"


def _rint(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return str(rng.choice([2**63, 2**64, 2**64 - 1, 2**63 - 1, -(2**63), -(2**63) - 1, 0]))
    e = rng.choice([1, 5, 18, 19, 20, 21, 30, 63, 64, 65, 100])
    return str(rng.randint(-(2**e), 2**e))


_ESCAPES = ["\\n", "\\t", '\\"', "\\\\", "\\/", "\\b", "\\f", "\\r", "\\u0000", "\\u001f",
            "\\u00e9", "\\u4e2d", "\\ud83d\\ude00", "\\ud800", "\\udfff", "\\udc00\\ud800",
            "\\ud800x", "\\uD83D\\uDE00", "\\uffff", "\\ufeff"]


def _rstr(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(0, 10)):
        k = rng.random()
        if k < 0.3:
            out.append(chr(rng.randint(0x20, 0x7E)).replace("\\", "\\\\").replace('"', '\\"'))
        elif k < 0.5:
            out.append(chr(rng.choice([rng.randint(0x4E00, 0x9FFF), rng.randint(0x1F300, 0x1FAFF),
                                       rng.randint(0x80, 0x7FF), rng.randint(0xE000, 0xFFFF),
                                       rng.randint(0x10000, 0x10FFFF)])))
        elif k < 0.7:
            out.append(rng.choice(_ESCAPES))
        elif k < 0.8:
            out.append(f"\\u{rng.randint(0, 0xFFFF):04x}")
        elif k < 0.85:
            out.append(chr(rng.randint(0, 0x1F)))  # a raw control character: invalid in both
        else:
            out.append(rng.choice(["\x7f", "\u2028", "\u00a0", "\ufeff", "€", "\ud800"]))
    return '"' + "".join(out) + '"'


def _rdoc(rng: random.Random, depth: int = 0) -> str:
    k = rng.random()
    if depth > 4 or k < 0.5:
        return rng.choice([_rfloat, _rint, _rstr, lambda r: r.choice(
            ["true", "false", "null", "NaN", "Infinity", "-Infinity"])])(rng)
    ws = lambda: rng.choice(["", "", " ", "\n", "\t", "\r", " \r\n "])  # noqa: E731
    if k < 0.75:
        return "[" + ",".join(ws() + _rdoc(rng, depth + 1) + ws()
                              for _ in range(rng.randint(0, 5))) + "]"
    keys = [_rstr(rng) for _ in range(rng.randint(0, 5))]
    if keys and rng.random() < 0.3:
        keys.append(rng.choice(keys))  # a duplicate key
    return "{" + ",".join(f"{ws()}{key}{ws()}:{ws()}{_rdoc(rng, depth + 1)}{ws()}"
                          for key in keys) + "}"


_NOISE = [b",", b'"', b"\\", b"[", b"]", b"{", b"}", b":", b"-", b".", b"e", b"0", b"9",
          b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\x00", b"\xff", b"\xc0\x80", b" ", b"\x0c", b"\xa0"]


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        op, i = rng.random(), rng.randint(0, len(b))
        if op < 0.3 and b:
            del b[min(i, len(b) - 1)]
        elif op < 0.5:
            b[i:i] = bytes([rng.randint(0, 255)])
        elif op < 0.8:
            b[i:i] = rng.choice(_NOISE)
        else:
            del b[i:]
    return bytes(b)


def test_generated_documents_and_their_mutations():
    rng = random.Random(20261123)
    through_orjson = 0
    for _ in range(4000):
        text = _rdoc(rng)
        raw = text.encode("utf-8", "surrogatepass")
        broken = _mutate(rng, raw)
        for one in (raw, text, broken):
            same(one)
        try:
            same(broken.decode("utf-8"))
        except UnicodeDecodeError:
            pass
        try:
            orjson.loads(raw)
            through_orjson += 1
        except orjson.JSONDecodeError:
            pass
    assert through_orjson > 1000  # the generator does reach orjson's side


def test_floats_to_the_bit():
    rng = random.Random(5)
    for _ in range(20000):
        s = _rfloat(rng)
        for doc in (s, f"[{s}]", f'{{"x":{s}}}'):
            same(doc.encode())


def test_events_as_the_sink_reads_them():
    """Every sample event, and each with odd values in data, re-encoded every way."""
    odd: list[Any] = ["é中文😀", "\u2028", "\x00\x1f\"\\/", 1.5, 1e16, 1e-7, 5e-324, -0.0,
                      1.7976931348623157e308, 2**63, 2**64, -(2**63) - 1, 10**30, True, None,
                      [], {}, {"z": 1, "a": [2, {"y": "x", "b": 3.25}]}, "\ud800x"]
    for e in sample.eventful_lifecycle("AJE"):
        d = e.to_dict()
        for value in odd:
            d["data"]["odd"] = value
            for ascii_, keys in ((True, True), (False, False), (False, True)):
                same(json.dumps(d, ensure_ascii=ascii_, sort_keys=keys)
                     .encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("depth", [1, 100, 255, 256, 257, 300, 600, 1020, 1024, 1025, 3000])
def test_nesting(depth: int):
    for raw in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        same(raw)
        same(raw.encode())


def test_what_orjson_reads_and_what_json_reads():
    """The usual event goes through orjson; a 19-digit run, deep nesting, or other input types
    go to json.loads before orjson sees them."""
    called: list[Any] = []

    def spy(raw: Any) -> Any:
        called.append(raw)
        return orjson.loads(raw)

    event = sample.eventful_lifecycle("AJO")[0].encode()
    original = envelope._orjson_loads
    envelope._orjson_loads = spy
    try:
        assert ev.loads(event) == json.loads(event) and called == [event]
        assert ev.loads(event.decode()) == json.loads(event) and len(called) == 2
        for routed in (b"[18446744073709551616]", b'"1234567890123456789"',
                       b"[" * 300 + b"]" * 300, bytearray(b"[1]"), memoryview(b"[1]")):
            same(routed)
        assert len(called) == 2
    finally:
        envelope._orjson_loads = original


def test_decode_message_and_dead_letter_reasons_unchanged():
    from sinks.sql import _decode_dead_letter

    for raw in (b"", b"{", b"\xff", b'{"a":NaN', b'"\xed\xa0\x80', b"[1,]", b"\xef\xbb\xbf{"):
        try:
            json.loads(raw)
        except ValueError as exc:
            want = f"not valid JSON: {exc}"
        with pytest.raises(ev.SchemaError) as got:
            ev.decode_message(raw)
        assert str(got.value) == want
        with pytest.raises(ev.SchemaError) as got:
            _decode_dead_letter(raw)
        assert str(got.value) == want
    m = sample.eventful_lifecycle("AJD")[0]
    assert ev.decode_message(m.encode()) == m
