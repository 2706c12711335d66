"""Datafly's camelCase JSON keys to the proto's and the blueprint's snake_case."""

from __future__ import annotations

import re

# A word starts at an upper-case letter after a lower-case letter or digit (postal|Code), or
# at the last capital of a run followed by a lower-case letter (HTTP|Server): an acronym
# stays one word (GCLID -> gclid, userID -> user_id).
_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def camel_to_snake(name: str) -> str:
    """One camelCase key in snake_case (``gaClientId`` -> ``ga_client_id``).

    A snake_case key is returned unchanged, so converting twice changes nothing.
    """
    return name if name.islower() else _WORD_START.sub("_", name).lower()
