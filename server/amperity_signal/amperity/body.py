"""Encoding an event body for Amperity: one strict-JSON object of at most 64 KB.

orjson writes NaN and Infinity as ``null``, which would silently change the event, so
non-finite numbers are refused here with the path of the field instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from amperity_signal.errors import FieldViolation, InvalidEvent

MAX_BODY_BYTES = 65_536
_REPORTED_FIELDS = 3
# Beyond the largest, a field under this share of the excess is not named: dropping it
# changes next to nothing (a 38-byte message_id on a body thousands of bytes over).
_MIN_SHARE_OF_EXCESS = 0.1


def _default(value: Any) -> Any:
    """Let orjson encode any Mapping (it only knows dict); refuse everything else."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"type {type(value).__name__} is not JSON serialisable")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _problems(value: Any, path: str) -> Iterator[FieldViolation]:
    """Yield a violation for every non-finite number and non-string key under ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        yield FieldViolation(
            path or "payload",
            f"{value} is not valid JSON; map it to a number or leave the field out.",
        )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                yield FieldViolation(
                    _join(path, repr(key)), "JSON object keys must be strings; rename the key."
                )
                continue
            yield from _problems(item, _join(path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _problems(item, f"{path}[{index}]")


def _size(value: Any) -> int:
    return len(orjson.dumps(value, default=_default))


def _children(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        return [(_join(path, str(key)), item) for key, item in value.items()]
    if isinstance(value, list | tuple):
        return [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    return []


def _heaviest_path(path: str, value: Any, size: int) -> tuple[str, int]:
    """Descend while one child holds most of the bytes, so the report names the culprit."""
    children = [(child, _size(item), item) for child, item in _children(value, path)]
    if not children:
        return path, size
    child, child_size, item = max(children, key=lambda entry: entry[1])
    if child_size * 2 < size:
        return path, size
    return _heaviest_path(child, item, child_size)


def _too_large(payload: Mapping[str, Any], total: int) -> InvalidEvent:
    """Name the fields that matter: the largest, until dropping them brings the body under.

    At least one and at most ``_REPORTED_FIELDS``; beyond the largest, none under
    ``_MIN_SHARE_OF_EXCESS`` of the excess. When the fields named are not enough, the
    payload itself is named too (an event mapping too many fields).
    """
    excess = total - MAX_BODY_BYTES
    comma = 1 if len(payload) > 1 else 0
    fields = sorted(
        ((str(key), _size(value), value) for key, value in payload.items()),
        key=lambda entry: entry[1],
        reverse=True,
    )
    violations: list[FieldViolation] = []
    saved = 0  # what dropping the fields named so far saves: keys, colons, values, commas
    for key, size, value in fields[:_REPORTED_FIELDS]:
        if violations and (saved >= excess or size < excess * _MIN_SHARE_OF_EXCESS):
            break
        path, path_size = _heaviest_path(key, value, size)
        violations.append(
            FieldViolation(
                path,
                f"{path_size:,} bytes of a {total:,}-byte body, {excess:,} bytes over: Amperity "
                f"accepts at most {MAX_BODY_BYTES:,} bytes per event; shorten or drop this "
                "field in the blueprint mapping.",
            )
        )
        saved += _size(key) + 1 + size + comma
    if violations and saved < excess:
        violations.append(
            FieldViolation(
                "payload",
                f"the body is {total:,} bytes, {excess:,} over the {MAX_BODY_BYTES:,} "
                "Amperity accepts per event, and dropping the fields named is not enough: "
                "map fewer fields in the blueprint mapping.",
            )
        )
    return InvalidEvent(violations or [FieldViolation("payload", f"{total:,} bytes")])


def encode_event(payload: Mapping[str, Any]) -> bytes:
    """Encode one event as strict JSON and check Amperity's size limit, before any request.

    Args:
        payload: The event body: exactly one JSON object.

    Returns:
        The UTF-8 JSON bytes to send.

    Raises:
        InvalidEvent: When the payload is not an object, holds NaN/Infinity or non-string
            keys, cannot be encoded, or is over 65,536 bytes (naming the biggest fields).
    """
    if not isinstance(payload, Mapping):
        raise InvalidEvent(
            [FieldViolation("payload", "must be one JSON object; arrays are not accepted.")]
        )
    try:
        body = orjson.dumps(payload, default=_default)
    except orjson.JSONEncodeError as exc:
        problems = list(_problems(payload, ""))  # non-string keys, named by path
        raise InvalidEvent(
            problems
            or [FieldViolation("payload", f"cannot be encoded as JSON ({exc}); fix the mapping.")]
        ) from None
    # orjson writes NaN and Infinity as null: only a body with a null can hide one, so
    # the walk that names them runs for those bodies alone (mapped payloads drop nulls).
    if b"null" in body:
        problems = list(_problems(payload, ""))
        if problems:
            raise InvalidEvent(problems)
    if len(body) > MAX_BODY_BYTES:
        raise _too_large(payload, len(body))
    return body


def encode_json(value: Mapping[str, Any]) -> bytes:
    """Encode a request body we build ourselves (lookups), strict JSON."""
    return orjson.dumps(value, default=_default)
