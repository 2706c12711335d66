"""Reading a JSON request body safely: size, content type, strict JSON, sane values.

Everything refused here becomes a 4xx JSON error, never a 500: oversized bodies (413),
other media types and compressed bodies (415), malformed or non-UTF-8 JSON,
``NaN``/``Infinity``, numbers a double cannot hold exactly, lone surrogates and absurd
nesting (400; in a batch, for the event holding one only: ``read_unchecked_json``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request

from amperity_signal.gateway.errors import GatewayError

# text/plain is what navigator.sendBeacon may send cross-origin without a preflight.
_JSON_MEDIA_TYPES = frozenset({"application/json", "text/plain"})
# A body is read as sent: a gzip body was refused as "not UTF-8", and one labelled gzip but
# sent plain was delivered. No browser API compresses a request body by itself.
_UNENCODED = frozenset({"", "identity"})
_MAX_SAFE_INTEGER = 2**53
MAX_DEPTH = 32


def body_too_large(limit: int) -> GatewayError:
    """The 413 of a body larger than ``limit`` bytes (``blueprint test`` says it too)."""
    return GatewayError(
        413, "BODY_TOO_LARGE", f"The request body is larger than {limit} bytes; send less."
    )


def _bad_json(message: str, field: str | None = None) -> GatewayError:
    return GatewayError(400, "INVALID_JSON", message, field=field)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; send a finite number or null")


# Any integer written with more characters is beyond ±2^53 (16 digits), so refused anyway;
# it is parsed as a stand-in beyond ±2^53 that ``check_value`` refuses by its field.
# Converting one of over 4,300 digits raised Python's own ValueError inside json.loads: its
# 400 named no field and told the caller to call sys.set_int_max_str_digits().
_MAX_INTEGER_CHARACTERS = 20
_UNSAFE_INTEGER = _MAX_SAFE_INTEGER + 1


def _parse_int(text: str) -> Any:
    return _UNSAFE_INTEGER if len(text) > _MAX_INTEGER_CHARACTERS else int(text)


async def read_json(request: Request, limit: int) -> Any:
    """The request body parsed as strict JSON, every value checked (``check_value``).

    Args:
        request: The incoming request.
        limit: The largest body accepted, in bytes.

    Raises:
        GatewayError: 413, 415 or 400 as described in the module docstring.
    """
    data = await read_unchecked_json(request, limit)
    check_value(data, "")
    return data


async def read_unchecked_json(request: Request, limit: int) -> Any:
    """The request body parsed as JSON, its values not checked yet.

    For ``/v1/batch``, which checks each event's values on its own (``check_value``), so
    that one event's value refuses that event, not the others with it. A stand-in beyond
    ±2^53 takes the place of an integer too long to convert, for ``check_value`` to refuse.

    Raises:
        GatewayError: 413, 415, or 400 for a body that is not JSON at all.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _JSON_MEDIA_TYPES:
        raise GatewayError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the body as application/json (or text/plain from navigator.sendBeacon).",
        )
    encoding = request.headers.get("content-encoding", "")
    if not {token.strip().lower() for token in encoding.split(",")} <= _UNENCODED:
        # RFC 9110 15.5.16: an unsupported content coding is a 415 saying what is taken.
        raise GatewayError(
            415,
            "UNSUPPORTED_CONTENT_ENCODING",
            f"The gateway reads bodies uncompressed; send this one without Content-Encoding "
            f"({encoding[:40]}).",
            headers={"Accept-Encoding": "identity"},
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except UnicodeDecodeError:
        raise _bad_json("The body is not UTF-8; encode JSON as UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise _bad_json(f"The body is not valid JSON ({exc.msg} at char {exc.pos}).") from None
    except RecursionError:  # nested past Python's own limit, far past check_value's
        raise _bad_json(f"The JSON is nested deeper than {MAX_DEPTH} levels.") from None
    except ValueError as exc:
        raise _bad_json(f"The body is not acceptable JSON ({exc}).") from None
    return data


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_value(value: Any, path: str, depth: int = 0) -> None:
    """Refuse JSON values protobuf cannot carry faithfully.

    Raises:
        GatewayError: 400 ``INVALID_JSON`` naming the field.
    """
    if depth > MAX_DEPTH:
        raise _bad_json(f"The JSON is nested deeper than {MAX_DEPTH} levels.", path or None)
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            raise _bad_json(
                f"{path or 'value'}: integers beyond ±2^53 lose precision; send it as a string.",
                path or None,
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _bad_json(f"{path or 'value'}: numbers must be finite.", path or None)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_value(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                # Named escaped: the raw key cannot be written in the UTF-8 error body (the
                # 400 itself failed, a 500 with a traceback).
                child = _join(path, key.encode("utf-8", "backslashreplace").decode("utf-8"))
                raise _bad_json(
                    f"{child}: the key holds a lone surrogate; send valid Unicode.", child
                ) from None
            check_value(item, _join(path, key), depth + 1)


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad_json(
            f"{path or 'value'}: the string holds a lone surrogate; send valid Unicode.",
            path or None,
        ) from None
