"""One phone normaliser for the payload's ``phone`` and the ``phone`` linking-key lookups.

The blueprint's ``e164`` transform and the Profile API lookups must send the same number
in the same form, or a visitor identified by phone is hashed one way in the events
Amperity stores and another way in the lookups that should find them.
"""

from __future__ import annotations

import re
from typing import Final

_EXTENSION: Final = re.compile(r"\s*(?:ext\.?|extension|x|#)\s*\d{1,6}\s*$", re.IGNORECASE)
_NOISE: Final = re.compile(r"[\s\-().\/]")
_SHAPE: Final = re.compile(r"\+?\d{4,15}")


def normalise_phone(value: str) -> str | None:
    """The number's E.164-style form, or None when it is not a phone number.

    Spaces, dashes, dots, slashes and parentheses are dropped, a trailing extension
    (``ext 9``, ``x12``, ``#3``) is not part of the number, and a leading ``00``
    international prefix becomes ``+``. No country code is inferred: a national number
    keeps its digits without a ``+``.

    Examples:
        >>> normalise_phone("+44 7700 900123 ext 9")
        '+447700900123'
        >>> normalise_phone("0044 (7700) 900-123")
        '+447700900123'
        >>> normalise_phone("07700 900123")
        '07700900123'
        >>> normalise_phone("call me") is None
        True
    """
    text = _NOISE.sub("", _EXTENSION.sub("", value))
    if text.startswith("00"):
        text = "+" + text[2:]
    return text if _SHAPE.fullmatch(text) else None
