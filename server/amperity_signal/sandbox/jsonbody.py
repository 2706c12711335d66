"""JSON as Amperity's API reads it: strict, so a bad body is a 400 and never a 500.

Python's ``json`` accepts ``NaN`` and ``Infinity`` (not JSON: Amperity refuses them) and
raises ``RecursionError`` on a body nested a few thousand levels deep (an unhandled error,
a plain-text 500 a client would retry). Both become ``ValueError`` here.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn


def loads(data: bytes | str) -> Any:
    """Parse one JSON text.

    Raises:
        ValueError: The text is not JSON, holds NaN/Infinity, or is nested too deeply.
    """
    try:
        return json.loads(data, parse_constant=_not_json)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def _not_json(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")
