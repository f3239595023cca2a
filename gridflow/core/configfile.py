"""Configuration files read one way: JSON, parsed into pydantic models, every refusal naming
the file, the line and the JSON path of the offending value, and why.

Pure but for `read_json` (which reads one file). Lines come from a small position pass over
the text, run only when something is refused: it records where each value starts, by JSON path.
A key written twice in one object is refused (the first value would be lost silently).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

JsonPath = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file that cannot be used: where (file, line, JSON path) and why."""

    def __init__(self, file: str, line: int | None, path: str, reason: str) -> None:
        self.file, self.line, self.path, self.reason = file, line, path, reason
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {path}: {reason}" if path else f"{where}: {reason}")


def json_path(path: JsonPath) -> str:
    """("rules", 1, "departments") → $.rules[1].departments"""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


class JsonDoc:
    """A parsed JSON file that can say on which line the value at a JSON path starts."""

    def __init__(self, name: str, text: str, error: type[ConfigError] = ConfigError) -> None:
        self.name, self.text, self.error_type = name, text, error
        self._starts: dict[JsonPath, int] | None = None
        duplicates: list[str] = []
        try:
            self.root: Any = json.loads(text, object_pairs_hook=_pairs(duplicates))
        except json.JSONDecodeError as exc:
            raise error(name, exc.lineno, "", f"not valid JSON: {exc.msg} "
                                              f"(line {exc.lineno}, column {exc.colno})") from exc
        if duplicates:
            _, repeated = _scan(text)
            path, offset = repeated[0]
            raise error(name, self._line(offset), json_path(path),
                        f"duplicate key {path[-1]!r}: {path[-1]!r} appears twice in one object "
                        "(the first value would be lost)")

    def line_of(self, path: JsonPath) -> int | None:
        """The line where the value at `path` starts; for a value that is not there (a missing
        key), the line of the nearest enclosing value that is."""
        if self._starts is None:
            self._starts, _ = _scan(self.text)
        for end in range(len(path), -1, -1):
            offset = self._starts.get(tuple(path[:end]))
            if offset is not None:
                return self._line(offset)
        return None

    def error(self, path: JsonPath, reason: str) -> ConfigError:
        return self.error_type(self.name, self.line_of(path), json_path(path), reason)

    def fail(self, path: JsonPath, reason: str) -> NoReturn:
        raise self.error(path, reason)

    def at(self, path: JsonPath) -> Any:
        value = self.root
        for step in path:
            value = value[step]
        return value

    def validate(self, model: type[M], path: JsonPath = (), context: Any = None) -> M:
        """The value at `path` as a `model` (strict: no type is coerced into another); the
        first thing refused raises this document's error at the offending value."""
        try:
            return model.model_validate(self.at(path), strict=True, context=context)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise self.error(path + _loc(first["loc"]), reason(first)) from None

    def _line(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1


def read_json(file: str | Path, error: type[ConfigError] = ConfigError,
              name: str | None = None) -> JsonDoc:
    """Read and parse a JSON file; errors name it `name` (default: the path as given)."""
    path = Path(file)
    shown = name if name is not None else str(file)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(shown, None, "", f"cannot read: file not found in {path.parent}") from None
    except OSError as exc:
        raise error(shown, None, "", f"cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(shown, raw[: exc.start].count(b"\n") + 1, "", "not UTF-8 text") from exc
    return JsonDoc(shown, text, error)


def doc_of(value: Mapping[str, Any], name: str, error: type[ConfigError] = ConfigError) -> JsonDoc:
    """An already-parsed value (a dict given in code) as a document without lines."""
    doc = JsonDoc.__new__(JsonDoc)
    doc.name, doc.text, doc.error_type, doc.root, doc._starts = name, "", error, value, {}
    return doc


# --- what pydantic refused, in the words of the other refusals -------------------------------


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "float_type": "a number",
    "bool_type": "true/false", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
}


def reason(error: Mapping[str, Any]) -> str:
    """One pydantic error as a reason for people."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {kind_of(value)}"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "not a known key (unknown keys are refused: a misspelt one would do nothing)"
    if kind == "string_pattern_mismatch":
        return f"{value!r} does not match {ctx.get('pattern')}"
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx.get('expected')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return str(error.get("msg", kind))


def _loc(loc: tuple[Any, ...]) -> JsonPath:
    return tuple(p for p in loc if isinstance(p, int | str))


# --- the position pass --------------------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(r"[^,\]}\s]+")


def _pairs(duplicates: list[str]) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out
    return hook


def _scan(text: str) -> tuple[dict[JsonPath, int], list[tuple[JsonPath, int]]]:
    """Where each value of a valid JSON text starts (offset by JSON path), and the keys written
    twice in one object (path and offset of the second)."""
    starts: dict[JsonPath, int] = {}
    repeated: list[tuple[JsonPath, int]] = []

    def skip(i: int) -> int:
        return _WS.match(text, i).end()  # type: ignore[union-attr]

    def value(i: int, path: JsonPath) -> int:
        i = skip(i)
        starts[path] = i
        c = text[i]
        if c == "{":
            i, seen = skip(i + 1), set()
            if text[i] == "}":
                return i + 1
            while True:
                i = skip(i)
                m = _STRING.match(text, i)
                assert m is not None
                key = json.loads(m.group())
                if key in seen:
                    repeated.append((path + (key,), i))
                seen.add(key)
                i = skip(m.end()) + 1  # past ':'
                i = skip(value(i, path + (key,)))
                if text[i] == "}":
                    return i + 1
                i += 1  # ','
        if c == "[":
            i, index = skip(i + 1), 0
            if text[i] == "]":
                return i + 1
            while True:
                i = skip(value(i, path + (index,)))
                index += 1
                if text[i] == "]":
                    return i + 1
                i += 1
        m = _STRING.match(text, i) if c == '"' else _SCALAR.match(text, i)
        assert m is not None
        return m.end()

    value(0, ())
    return starts, repeated
