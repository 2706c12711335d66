r"""JSON as Amperity's API reads it: strict, so a bad body is a 400 and never a 500.

Python's ``json`` accepts ``NaN`` and ``Infinity`` (not JSON: Amperity refuses them), reads
``1e400`` as infinity (which no JSON answer can carry: the inspector's events became a
500), and raises ``RecursionError`` on a body nested a few thousand levels deep (an
unhandled error, a plain-text 500 a client would retry). It also turns ``"\ud800"`` into
a string holding a lone surrogate, which is no Unicode text: kept, it made every later
answer that shows it (the inspector's events, a profile's links) fail to encode, a 500.
So do surrogate bytes in a body (``ED A0 80``, which is no UTF-8: Python's json decodes
bytes with ``surrogatepass``) and a ``\ud800`` escape in a UTF-16 or UTF-32 body (whose
bytes the escape search did not find). All of these become ``ValueError`` here.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from amperity_signal.sandbox.errors import RefusalError

# A \uD800-\uDFFF escape: the only way a surrogate gets into a string parsed from text
# decoded strictly.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_MAX_DIGITS = sys.get_int_max_str_digits()


def loads(data: bytes | str, *, non_finite: bool = False) -> Any:
    """Parse one JSON text.

    Args:
        data: The text, or its bytes (UTF-8, -16 or -32).
        non_finite: Read NaN, Infinity and numbers beyond a double's range as the floats
            ``nan`` and ``inf`` instead of refusing them, for a caller that checks the
            range of every value itself and so can name the field that holds one.

    Raises:
        ValueError: The text is not JSON, holds NaN/Infinity, a number beyond a double's
            range (unless ``non_finite``) or of over 4300 digits, or a lone surrogate, or is
            nested too deeply.
    """
    # Decoded as json.loads decodes bytes (UTF-8, -16 or -32 by their first bytes), but
    # strictly: its surrogatepass would let surrogate bytes through as lone surrogates.
    text = data.decode(json.detect_encoding(data)) if isinstance(data, bytes) else data
    constant: Callable[[str], Any] = float if non_finite else _not_json
    number: Callable[[str], Any] = float if non_finite else _finite_float
    try:
        value = json.loads(text, parse_constant=constant, parse_float=number)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except ValueError as error:
        if "integer string conversion" in str(error):  # Python's own limit, and its own hint
            raise ValueError(f"a number has more than {_MAX_DIGITS} digits") from None
        raise
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(value)
    return value


def require_json_media_type(content_type: str) -> None:
    """Refuse a JSON body sent under another ``Content-Type`` (parameters allowed).

    Raises:
        RefusalError: 415, as Amperity answers it.
    """
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise RefusalError(415, "send Content-Type: application/json")


def _refuse_lone_surrogates(value: Any) -> None:
    """Raises ValueError naming the first string (or key) that holds a lone surrogate."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            _check_text(path or "value", item)
        elif isinstance(item, list):
            pending.extend((f"{path}[{index}]", child) for index, child in enumerate(item))
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                _check_text(f"a key in {path or 'the object'}", key)
                pending.append((child_path, child))


def _check_text(where: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{where} holds a lone surrogate (\\ud800-\\udfff): send valid Unicode"
        ) from None


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is beyond the range of a double")
    return number


def _not_json(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")
