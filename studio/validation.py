"""Records from outside the process are checked before anything uses them.

An episode file may come from anyone, and the Python API takes whatever a script builds.
Before a record is stored, shown or forked, :func:`check_record` walks it against the
trace dataclasses themselves — their type hints and the limits in each field's
``metadata`` — and reports the first problem as one line that names the field::

    steps[3].index: expected an integer, got text

The same walk takes the JSON form (dicts, frames as base64 PNG) and in-memory records
(dataclass instances, frames as arrays). Free-form JSON fields (``info``, ``extra``,
options) are bounded in depth and size, so a hostile file cannot exhaust memory or the
stack, and floats must be finite (PostgreSQL's JSON refuses NaN where SQLite takes it).

This module knows no record type: ``studio.trace`` declares the limits on its fields.
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np

from studio.errors import StudioError

#: Characters in a name: environment, policy, model id, annotator, actor.
MAX_NAME = 200
#: Characters in one text field of a record (an observation, an output, a prompt message).
MAX_TEXT = 1_000_000
#: Characters in an action a person types.
MAX_ACTION = 1_000
#: Nesting depth and values of one free-form JSON field (info, extra, options, snapshots).
MAX_JSON_DEPTH = 32
MAX_JSON_VALUES = 200_000
#: Characters of environment options as JSON (a web client or the CLI types them).
MAX_OPTIONS_CHARS = 10_000
#: Items in one list of a record: steps of an episode, tokens of an output.
MAX_ITEMS = 100_000
#: Seeds fit every database's integer column (PostgreSQL's INTEGER is 32-bit).
MAX_SEED = 2**31 - 1
#: Frames: base64 characters, and pixels per side once decoded.
MAX_FRAME_CHARS = 32_000_000
MAX_FRAME_SIDE = 4096
#: Record ids: what the store's id columns hold.
ID_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,32}")


def limits(**metadata: Any) -> dict[str, Any]:
    """Field metadata for a record field: ``max_length``, ``minimum``, ``maximum``, ``max_items``,
    ``pattern`` (a compiled regex the whole text must match), ``datetime`` (ISO-8601 text),
    ``negative_infinity`` (a log-probability may be -inf), ``expected`` (what a ``pattern`` wants, for messages)."""
    return metadata


def fail(where: str, problem: str) -> typing.NoReturn:
    raise StudioError(f"{where}: {problem}." if where else f"{problem}.")


def describe(value: Any) -> str:
    """What a value is, for messages (never the value itself: it may be huge or hostile)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_record(cls: type, record: Any, where: str = "") -> None:
    """Raise :class:`StudioError` naming the first field of ``record`` that does not fit ``cls``.

    ``record`` is the JSON form (a dict) or an instance of the dataclass ``cls``.
    """
    instance = isinstance(record, cls)
    if not instance and not isinstance(record, dict):
        fail(where, f"expected an object, got {describe(record)}")
    hints = _hints(cls)
    for spec in fields(cls):
        here = f"{where}.{spec.name}" if where else spec.name
        if instance:
            value = getattr(record, spec.name)
        elif spec.name in record:
            value = record[spec.name]
        elif spec.default is MISSING and spec.default_factory is MISSING:
            fail(here, "is missing")
        else:
            continue
        _check(hints[spec.name], value, here, spec.metadata)


def _check(expected: Any, value: Any, where: str, meta: typing.Mapping[str, Any]) -> None:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(expected) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(expected)):
            return
        _check(options[0], value, where, meta)  # records use X | None only
    elif expected is Any:
        check_json(value, where)
    elif expected is bool:
        if not isinstance(value, (bool, np.bool_)):
            fail(where, f"expected true or false, got {describe(value)}")
    elif expected is int:
        _check_int(value, where, meta)
    elif expected is float:
        _check_float(value, where, meta)
    elif expected is str:
        _check_text(value, where, meta)
    elif origin is list:
        _check_list(typing.get_args(expected)[0], value, where, meta)
    elif origin is dict:
        _check_mapping(typing.get_args(expected)[1], value, where, meta)
    elif expected is np.ndarray:
        _check_frame(value, where)
    elif is_dataclass(expected):
        check_record(expected, value, where)
    else:  # pragma: no cover - a record field of a type this walk does not know
        raise TypeError(f"cannot check {where} of type {expected!r}")


def _check_int(value: Any, where: str, meta: typing.Mapping[str, Any]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        fail(where, f"expected an integer, got {describe(value)}")
    low, high = meta.get("minimum"), meta.get("maximum")
    if (low is not None and value < low) or (high is not None and value > high):
        fail(where, f"expected an integer from {low} to {high}")


def _check_float(value: Any, where: str, meta: typing.Mapping[str, Any]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        fail(where, f"expected a number, got {describe(value)}")
    if not math.isfinite(value) and not (meta.get("negative_infinity") and value == -math.inf):
        fail(where, "expected a finite number")


def _check_text(value: Any, where: str, meta: typing.Mapping[str, Any]) -> None:
    if not isinstance(value, str):
        fail(where, f"expected text, got {describe(value)}")
    longest = meta.get("max_length", MAX_TEXT)
    if len(value) > longest:
        fail(where, f"is longer than {longest:,} characters")
    pattern = meta.get("pattern")
    if pattern is not None and not pattern.fullmatch(value):
        fail(where, meta.get("expected", "expected letters, digits, '_' or '-' (at most 32)"))
    if meta.get("datetime"):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            fail(where, "expected an ISO-8601 date and time")


def _check_list(item: Any, value: Any, where: str, meta: typing.Mapping[str, Any]) -> None:
    if not isinstance(value, list):
        fail(where, f"expected a list, got {describe(value)}")
    most = meta.get("max_items", MAX_ITEMS)
    if len(value) > most:
        fail(where, f"has more than {most:,} items")
    for index, entry in enumerate(value):
        _check(item, entry, f"{where}[{index}]", meta.get("items", {}))


def _check_mapping(item: Any, value: Any, where: str, meta: typing.Mapping[str, Any]) -> None:
    if not isinstance(value, dict):
        fail(where, f"expected an object, got {describe(value)}")
    if item is Any:
        check_json(value, where)
        return
    if len(value) > meta.get("max_items", MAX_ITEMS):
        fail(where, "has too many entries")
    for key, entry in value.items():
        if not isinstance(key, str) or len(key) > MAX_TEXT:
            fail(where, "expected text keys")
        _check(item, entry, f"{where}[{key[:40]!r}]", meta)


def _check_frame(value: Any, where: str) -> None:
    if isinstance(value, np.ndarray):
        if value.ndim != 3 or value.shape[2] != 3 or value.dtype != np.uint8 or max(value.shape[:2]) > MAX_FRAME_SIDE:
            fail(where, f"expected an RGB uint8 image (H, W, 3) of at most {MAX_FRAME_SIDE} pixels a side")
    elif not isinstance(value, str) or len(value) > MAX_FRAME_CHARS:
        fail(where, "expected a base64-encoded PNG image")


def check_json(value: Any, where: str = "", max_depth: int = MAX_JSON_DEPTH, max_values: int = MAX_JSON_VALUES) -> None:
    """Check a free-form JSON value: plain types, finite numbers, bounded depth and size."""
    budget = [max_values]

    def walk(item: Any, here: str, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            fail(where, f"has more than {max_values:,} values")
        if depth > max_depth:
            fail(where, f"is nested more than {max_depth} levels deep")  # the field, not a path of 33 indices
        if item is None or isinstance(item, (bool, int)):
            return
        if isinstance(item, float):
            if not math.isfinite(item):
                fail(here, "expected a finite number")
        elif isinstance(item, str):
            if len(item) > MAX_TEXT:
                fail(here, f"is longer than {MAX_TEXT:,} characters")
        elif isinstance(item, list):
            for index, entry in enumerate(item):
                walk(entry, f"{here}[{index}]", depth + 1)
        elif isinstance(item, dict):
            for key, entry in item.items():
                if not isinstance(key, str):
                    fail(here, "expected text keys")
                walk(entry, f"{here}.{key[:40]}", depth + 1)
        else:
            fail(here, f"expected JSON data, got {describe(item)}")

    walk(value, where, 0)


def parse_json(text: str, what: str) -> Any:
    """``json.loads`` that answers a hostile text (too deep, too long) with one line."""
    import json

    if len(text) > MAX_TEXT:
        fail(what, f"is longer than {MAX_TEXT:,} characters")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(what, f"not valid JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        fail(what, "is nested too deeply")
    check_json(value, what)
    return value


def whole_number(value: Any, what: str, low: int | None = None, high: int | None = None) -> int:
    """A whole number from a widget or an API call (which may send text, NaN or 1e308); one line if not."""
    try:
        number = float(value) if isinstance(value, str) else value
        if (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or not math.isfinite(number)
            or number != int(number)
        ):
            raise ValueError
        result = int(number)
    except (TypeError, ValueError, OverflowError):
        raise StudioError(f"{what} must be a whole number.") from None
    _check_range(result, what, low, high, "a whole number")
    return result


def real_number(value: Any, what: str, low: float | None = None, high: float | None = None) -> float:
    """A finite number from a widget or an API call; one line if not."""
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        raise StudioError(f"{what} must be a number.") from None
    if not math.isfinite(result):
        raise StudioError(f"{what} must be a finite number.")
    _check_range(result, what, low, high, "a number")
    return result


def _check_range(value: float, what: str, low: float | None, high: float | None, kind: str) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"from {_plain(low)} to {_plain(high)}"
            if low is not None and high is not None
            else (f"of at least {_plain(low)}" if low is not None else f"of at most {_plain(high)}")
        )
        raise StudioError(f"{what} must be {kind} {bounds}.")


def _plain(number: float | None) -> str:
    """2147483647, not 2.14748e+09; 0.01, not 0.010000."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def check_text(value: Any, what: str, longest: int = MAX_NAME) -> str:
    """``value`` if it is text of at most ``longest`` characters; one line if not."""
    if not isinstance(value, str):
        raise StudioError(f"{what} must be text.")
    if len(value) > longest:
        raise StudioError(f"{what} has at most {longest:,} characters (got {len(value):,}).")
    return value


def short_text(value: Any, what: str, longest: int = MAX_NAME) -> str:
    """A name-like text from a widget or an API call: text, stripped, at most ``longest`` characters."""
    return "" if value is None else check_text(value, what, longest).strip()
