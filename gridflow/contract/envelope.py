"""The envelope every message travels in, its one canonical encoding and its one hash.

Every message is a JSON object with an envelope (id, type, case, time, actor) and a `data`
payload whose typed form is a class of gridflow.contract.payloads (`Message.body`). Encoding
is canonical (sorted keys, no spaces, UTF-8): `canonical_envelope` writes it and
`envelope_hash` hashes it, for the processors, the sinks, the fast replay and the audit alike.
A decoded message keeps the payload exactly as it was written (`data`), so an event hashes
the same whatever this build's classes know of it. `decode_message` raises `SchemaError`
with a human-readable reason (envelope or payload); callers turn that into a dead letter,
never a crash.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from gridflow.contract.payloads import PAYLOADS, Payload, SchemaError, decode_payload

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    """Wall clock, for adapters only: the core takes `now` as an argument."""
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_ts(value: Any, field_name: str = "timestamp") -> datetime:
    if not isinstance(value, str):
        raise SchemaError(f"{field_name} must be an ISO 8601 string, got {type(value).__name__}")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SchemaError(f"{field_name} is not ISO 8601: {value!r}") from exc
    if ts.tzinfo is None:
        raise SchemaError(f"{field_name} must carry a UTC offset: {value!r}")
    return ts.astimezone(UTC)


def canonical_json(obj: Any) -> bytes:
    """`json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))` as UTF-8:
    the same bytes or the same exception, written by orjson where that gives the very same
    (`_orjson_canonical`)."""
    out = _orjson_canonical(obj)
    if out is not None:
        return out
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


# --- the canonical encoding through orjson, where it is the very same --------------------------
#
# orjson writes every value JSON can hold as the canonical encoder (json.dumps with sorted
# keys, ensure_ascii=False, no spaces) writes it: every code point escaped or not alike, keys
# sorted alike (by code point, which UTF-8's byte order keeps), integers alike. It differs in
# - floats of magnitude below 1e-4 (but 0.0): json.dumps writes 1e-05, orjson 0.00001 or 1e-5;
#   every float orjson writes otherwise than json.dumps holds "e-" or "0.0000" and a digit
#   1-9 in orjson's output (_floats_may_differ; tests/unit/test_canonical_fast.py checks
#   floats across the whole range);
# - NaN and ±Infinity: json.dumps writes NaN / Infinity, orjson null;
# - what orjson refuses to write (integers beyond 64 bits, lone surrogates, keys that are not
#   str, nesting deeper than 255) or, with these options, hands back instead of writing
#   (subclasses of str / int / float / dict / list, datetimes, dataclasses): json.dumps writes
#   or refuses those by its own rules;
# - a uuid.UUID and an Enum member that is neither a str nor an int, which orjson writes (as its
#   string, as its value) and json.dumps refuses. No payload holds one (their data is built by
#   msgspec.to_builtins or read from JSON), and what orjson writes reads back as a str or the
#   value, which encodes to the same bytes again: a hash made from it stays the hash.
# So an output of orjson without such a float, and without "null" or with "null" but no NaN or
# infinity in the value (None is null in both; `_non_finite_in`), is json.dumps's, byte for
# byte; anything else is written by json.dumps (a string holding "e-" or "0.0000d" only costs
# the slower path).
_orjson_dumps = orjson.dumps
_CANONICAL_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
                      | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)


def _orjson_canonical(obj: Any) -> bytes | None:
    """canonical_json(obj) through orjson, or None where orjson's could differ from it."""
    if not _ORJSON_AGREES:
        return None
    try:
        out = _orjson_dumps(obj, option=_CANONICAL_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: what it does not write (json.dumps decides)
        return None
    if _floats_may_differ(out) or (_NULL(out) is not None and _non_finite_in(obj)):
        return None
    return out


def _non_finite_in(obj: Any) -> bool:
    """Whether `obj` holds a NaN or an infinity, which orjson writes as null (None is null in
    both encoders). Only what orjson wrote is looked at: exact dicts, lists and floats (it
    hands subclasses back, and _orjson_canonical then never gets here). A float x is finite
    exactly when x - x == 0.0 (NaN - NaN and inf - inf are NaN)."""
    stack = [obj]
    pop, push_all = stack.pop, stack.extend
    while stack:
        value = pop()
        kind = type_of(value)
        if kind is dict:
            push_all(value.values())
        elif kind is list or kind is tuple:
            push_all(value)
        elif kind is float and value - value != 0.0:
            return True
    return False


# A float orjson may write otherwise than json.dumps: with a negative exponent (1e-5), or as
# 0.0000d… (orjson writes [1e-5, 1e-4) so; json.dumps 1e-05). A timestamp's seconds
# ("00.000000Z", in every event) do not match the second. One literal per pattern: re finds a
# literal several times as fast as `in` does here, and an alternation many times slower.
_NEGATIVE_EXPONENT = re.compile(rb"e-").search
_BELOW_1E_4 = re.compile(rb"0\.0000[1-9]").search
_NULL = re.compile(rb"null").search


def _floats_may_differ(out: bytes) -> bool:
    """Whether orjson's output `out` may hold a float that json.dumps writes otherwise (a string
    that looks like one only costs the slower path)."""
    return _NEGATIVE_EXPONENT(out) is not None or _BELOW_1E_4(out) is not None


def _orjson_writes_floats_as_checked() -> bool:
    """Whether this orjson writes floats as the one the rule above was checked against (3.11.7
    and later: "1e+16", where earlier versions wrote "1e16"). If not, every value is written by
    json.dumps: slower, never different."""
    samples = [1e16, -1.2e30, 1.5e300, 1e21, 1e22, 9007199254740993.0, 123456.789, 0.1, 1 / 3,
               2.5, -0.0, 0.0001, 0.00011, 1e-5, 5e-324, 1e-7, 2.0**-1074, 1.7976931348623157e308]
    for f in samples:
        out = _orjson_dumps([f])
        if out != _CANONICAL([f]).encode() and not _floats_may_differ(out):
            return False
    return True


# canonical_json's encoder, built once (json.dumps with options builds one per call)
_CANONICAL = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode
_json_str = json.encoder.encode_basestring  # how that encoder writes a str (ensure_ascii=False)
_sha256 = hashlib.sha256


def canonical_envelope(id: str, type: str, case_id: str, at: str, actor: str,  # noqa: A002
                       data: Any, schema: Any, causation_id: str, seq: Any,
                       prev_hash: str) -> bytes:
    """The canonical bytes of a message: `canonical_json` of its ten envelope fields.

    orjson writes them where that gives the very bytes (`_orjson_canonical`). Otherwise the
    envelope (ten keys in sorted order) is written here and only `data` goes through the
    canonical encoder, which gives the very bytes of canonical_json(the whole dict) when every
    envelope field has its JSON type (str, and int for schema and seq); otherwise (a field of
    another type, from a record this build did not write) the whole dict is encoded.
    """
    if (type_of(id) is str and type_of(type) is str and type_of(case_id) is str
            and type_of(at) is str and type_of(actor) is str and type_of(causation_id) is str
            and type_of(prev_hash) is str and type_of(schema) is int and type_of(seq) is int):
        out = _orjson_canonical({
            "actor": actor, "at": at, "case_id": case_id, "causation_id": causation_id,
            "data": data, "id": id, "prev_hash": prev_hash, "schema": schema, "seq": seq,
            "type": type,
        })
        if out is not None:
            return out
        return "".join((
            '{"actor":', _json_str(actor), ',"at":', _json_str(at),
            ',"case_id":', _json_str(case_id), ',"causation_id":', _json_str(causation_id),
            ',"data":', _CANONICAL(data), ',"id":', _json_str(id),
            ',"prev_hash":', _json_str(prev_hash), ',"schema":', int.__repr__(schema),
            ',"seq":', int.__repr__(seq), ',"type":', _json_str(type), "}",
        )).encode()
    return canonical_json({
        "actor": actor, "at": at, "case_id": case_id, "causation_id": causation_id,
        "data": data, "id": id, "prev_hash": prev_hash, "schema": schema, "seq": seq,
        "type": type,
    })


_ORJSON_AGREES = _orjson_writes_floats_as_checked()

_ENVELOPE_KEYS = frozenset(("actor", "at", "case_id", "causation_id", "data", "id", "prev_hash",
                            "schema", "seq", "type"))


def keep_canonical(m: Message, raw: bytes, obj: dict[str, Any]) -> bool:
    """Let `m`, decoded from `raw` (`obj` = loads(raw)), keep `raw` as its encoding when `raw`
    is its canonical encoding already: its hash is then SHA-256 of the record's own bytes, with
    no encoding of it again (5 µs per event in the sinks and the replay). That is so when `obj`
    holds exactly the envelope's ten keys (canonical_envelope of their values is then
    canonical_json(obj), whatever their types) and orjson writes `obj` back as `raw` with no
    float it could write otherwise than the canonical encoder (`_floats_may_differ`; NaN and
    Infinity cannot compare equal: orjson writes them as null, which reads back as None).
    Returns whether it did."""
    if (not _ORJSON_AGREES or obj.keys() != _ENVELOPE_KEYS or _floats_may_differ(raw)
            or m.__dict__.get("_encoded") is not None):
        return False
    try:
        if _orjson_dumps(obj, option=orjson.OPT_SORT_KEYS) != raw:
            return False
    except TypeError:  # orjson.JSONEncodeError: e.g. a lone surrogate, an integer beyond 64 bits
        return False
    object.__setattr__(m, "_encoded", raw)
    return True


def envelope_hash(id: str, type: str, case_id: str, at: str, actor: str,  # noqa: A002
                  data: Any, schema: Any, causation_id: str, seq: Any, prev_hash: str) -> str:
    """THE hash of an event: SHA-256 of its canonical bytes, as hex. Each case event's
    prev_hash is this hash of the case's previous event."""
    return _sha256(canonical_envelope(id, type, case_id, at, actor, data, schema, causation_id,
                                      seq, prev_hash)).hexdigest()


type_of = type  # the builtin, under a name the envelope's field `type` does not shadow


# --- decoding: json.loads's results, through orjson where that gives the very same ----------

_json_loads = json.loads
_orjson_loads = orjson.loads
_OrjsonError = orjson.JSONDecodeError
# One pass over the bytes finds what orjson reads otherwise than json.loads although it reads
# it: each byte -> b"1" for an ASCII digit, b"2" for "[" or "{", b"0" for anything else.
# - orjson reads an integer outside [-2**63, 2**64 - 1] as a float, json.loads as an int. Every
#   integer of 18 digits or fewer is inside, so bytes without a run of 19 digits anywhere (in
#   strings too) have none; a hex id rarely has such a run, and then json.loads reads it.
# - json.loads raises RecursionError where a document's nesting and the caller's stack together
#   pass the recursion limit (1000 by default); orjson nests 1024 deep at any stack. A document
#   nests no deeper than half its length, nor than its count of "[" and "{": above _MAX_DEPTH
#   json.loads reads it (the two can then differ only for a caller already that many frames
#   from the limit, where json.loads fails on documents of any depth near it).
_CLASSES = bytes(0x31 if 0x30 <= b <= 0x39 else 0x32 if b in b"[{" else 0x30 for b in range(256))
_LONG_DIGITS = b"1" * 19
_MAX_DEPTH = 256


def loads(raw: bytes | str) -> Any:
    """`json.loads(raw)`, faster: the same value (types, dict key order, the last of duplicate
    keys, floats to the bit) or the same exception. orjson reads what it reads exactly as json
    does; what it refuses (NaN / Infinity, floats beyond the double range, lone surrogates,
    invalid UTF-8, a BOM, UTF-16/32, and all invalid JSON) is read, or refused with json's own
    error, by json.loads. Integers beyond 64 bits (orjson: floats) and deep nesting (see
    _CLASSES) go to json.loads before orjson sees them. Input other than bytes or str
    (bytearray, memoryview, ...) goes to json.loads as it is. Tests: tests/unit/test_json_loads.py.
    """
    if type(raw) is bytes:
        b = raw
    elif type(raw) is str:
        try:
            b = raw.encode()
        except UnicodeEncodeError:  # lone surrogates: orjson refuses them, json reads them
            return _json_loads(raw)
    else:
        return _json_loads(raw)
    classes = b.translate(_CLASSES)
    if _LONG_DIGITS in classes or (len(b) > 2 * _MAX_DEPTH and classes.count(b"2") > _MAX_DEPTH):
        return _json_loads(raw)
    try:
        return _orjson_loads(b)
    except _OrjsonError:
        return _json_loads(raw)


def derived_id(*parts: str) -> str:
    """A deterministic id from its causes: retried work yields the same id."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PhotoRef:
    """Claim-check: where an uploaded photo lies, and what it must hash to."""

    bucket: str
    key: str
    size: int
    sha256: str
    content_type: str
    role: str = "before"  # before (report) | after (resolution)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhotoRef:
        try:
            ref = cls(
                bucket=str(d["bucket"]), key=str(d["key"]), size=int(d["size"]),
                sha256=str(d["sha256"]), content_type=str(d["content_type"]),
                role=str(d.get("role", "before")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"bad photo reference: {exc!r}") from exc
        if len(ref.sha256) != 64:
            raise SchemaError("photo sha256 must be 64 hex characters")
        return ref


_NO_DATA: Any = object()  # Message's `data` not given: a new empty dict


@dataclass(frozen=True, init=False)
class Message:
    """Envelope shared by intake messages, commands and case events.

    seq and prev_hash are set on case events only: seq numbers a case's events
    1, 2, 3, ... and prev_hash is the hash of the case's previous event, which
    makes each case's history a tamper-evident chain.
    """

    id: str
    type: str
    case_id: str
    at: str  # event time, ISO 8601 UTC
    actor: str
    data: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION
    causation_id: str = ""
    seq: int = 0
    prev_hash: str = ""

    def __init__(self, id: str, type: str, case_id: str, at: str,  # noqa: A002
                 actor: str, data: dict[str, Any] = _NO_DATA, schema: int = SCHEMA_VERSION,
                 causation_id: str = "", seq: int = 0, prev_hash: str = "") -> None:
        # The dataclass's own __init__ with its fields stored straight into the instance's
        # dict: a frozen dataclass's sets each field through object.__setattr__, three times
        # as slow (every record decoded and every event made builds one). Still frozen: an
        # assignment raises FrozenInstanceError.
        d = self.__dict__
        d["id"] = id
        d["type"] = type
        d["case_id"] = case_id
        d["at"] = at
        d["actor"] = actor
        d["data"] = {} if data is _NO_DATA else data
        d["schema"] = schema
        d["causation_id"] = causation_id
        d["seq"] = seq
        d["prev_hash"] = prev_hash

    @classmethod
    def of(cls, body: Payload, *, id: str, case_id: str, at: str, actor: str,  # noqa: A002
           causation_id: str = "", seq: int = 0, prev_hash: str = "") -> Message:
        """A message carrying `body`: its type is the body's, its data the body's JSON form.
        Its `body` is read back from that data when asked for, as a decoded message's is (so a
        payload built with a part of another type than its class says shows at once)."""
        return cls(id=id, type=body.TYPE, case_id=case_id, at=at, actor=actor,
                   data=body.to_data(), causation_id=causation_id, seq=seq,
                   prev_hash=prev_hash)

    @property
    def body(self) -> Payload:
        """The typed payload (a class of gridflow.contract.payloads); SchemaError when the data
        does not match its type's schema or the type is not one this build knows."""
        body = self.__dict__.get("_body")
        if body is None:
            body = decode_payload(self.type, self.data)
            object.__setattr__(self, "_body", body)
        return body

    @property
    def known(self) -> bool:
        """Whether this build has a payload class for the message's type."""
        return self.type in PAYLOADS

    @property
    def at_dt(self) -> datetime:
        """`at` as an aware UTC datetime (SchemaError if it is not ISO 8601 with an offset).
        Memoised, as `encode` and `hash` are (a message is never changed after it is made)."""
        at = self.__dict__.get("_at_dt")
        if at is None:
            at = parse_ts(self.at, "at")
            object.__setattr__(self, "_at_dt", at)
        return at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> bytes:
        # canonical_json(self.to_dict()) without asdict's deep copy of data. Memoised: an event
        # is encoded for its hash when it is made and again when it is sent (a message is never
        # changed after it is made; `replace` makes a new one).
        encoded = self.__dict__.get("_encoded")
        if encoded is None:
            encoded = canonical_envelope(self.id, self.type, self.case_id, self.at, self.actor,
                                         self.data, self.schema, self.causation_id, self.seq,
                                         self.prev_hash)
            object.__setattr__(self, "_encoded", encoded)
        return encoded

    def hash(self) -> str:
        """`envelope_hash` of this message (its canonical content, prev_hash included).
        Memoised: the sinks and the worker ask for it more than once."""
        digest = self.__dict__.get("_hash")
        if digest is None:
            digest = _sha256(self.encode()).hexdigest()
            object.__setattr__(self, "_hash", digest)
        return digest


def decode_message(raw: bytes | str | dict[str, Any], allowed_types: frozenset[str] | None = None,
                   *, typed: bool = True) -> Message:
    """Decode and check an envelope and, for a type this build knows, its payload (the typed
    body is built once, here). Raises SchemaError with the reason. A type it does not know
    decodes with its data as written (`known` is False): the sink keeps it in the ledger.
    `typed=False` checks the envelope only: the audit reads the log as it was written (a
    payload this build would refuse is still part of a case's chain and history)."""
    if isinstance(raw, dict):
        obj: Any = raw
    elif raw is None:  # a record with no value (a tombstone): nothing to decode
        raise SchemaError("the record has no value")
    else:
        try:
            obj = loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SchemaError(f"not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise SchemaError(f"message must be a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise SchemaError(f"unsupported schema version {schema!r} (this build reads {SCHEMA_VERSION})")
    for name in ("id", "type", "at", "actor"):
        if not isinstance(obj.get(name), str) or not obj.get(name):
            raise SchemaError(f"envelope field {name!r} is missing or not a non-empty string")
    if not isinstance(obj.get("case_id", ""), str):
        raise SchemaError("envelope field 'case_id' must be a string")
    if not isinstance(obj.get("data", {}), dict):
        raise SchemaError("envelope field 'data' must be an object")
    if allowed_types is not None and obj["type"] not in allowed_types:
        raise SchemaError(f"unknown message type {obj['type']!r}")
    parse_ts(obj["at"], "at")
    try:
        seq = int(obj.get("seq", 0))
    except (TypeError, ValueError) as exc:
        raise SchemaError("envelope field 'seq' must be an integer") from exc
    m = Message(
        id=obj["id"], type=obj["type"], case_id=obj.get("case_id", ""), at=obj["at"],
        actor=obj["actor"], data=obj.get("data", {}), schema=schema,
        causation_id=str(obj.get("causation_id", "")), seq=seq,
        prev_hash=str(obj.get("prev_hash", "")),
    )
    if typed and m.type in PAYLOADS:
        m.body  # noqa: B018 - validates the payload at the edge (raises SchemaError)
    return m


def dead_letter(source_topic: str, partition: int | None, offset: int | None, raw: bytes | None,
                reason: str, at: datetime) -> dict[str, Any]:
    """A dead-letter record: the original bytes (as text if UTF-8, else hex) and why."""
    raw = raw or b""
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = raw.hex(), "hex"
    return {
        "id": derived_id("dlq", source_topic, str(partition), str(offset), hashlib.sha256(raw).hexdigest()),
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "reason": reason,
        "original": text,
        "original_encoding": encoding,
        "at": iso(at),
    }
