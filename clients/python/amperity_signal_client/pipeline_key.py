"""The service's rule for a pipeline key, checked when a client is built.

The service and its gateway take a pipeline key of 1-200 printable ASCII characters, no
space (``limits.PIPELINE_KEY`` in the service). Another key matches no integration: every
call would fail ``NotFound``, which says nothing of the stray space or newline a copy
brought along. The Node client refuses the same keys in the same words (the cases of
``clients/testdata/pipeline_keys.json``).
"""

from __future__ import annotations

MAX_PIPELINE_KEY = 200
"""The longest pipeline key the service takes."""

PIPELINE_KEY_RULE = f"1-{MAX_PIPELINE_KEY} printable ASCII characters, with no spaces"
"""The rule in words, as the service's gateway says it."""


def pipeline_key_problem(key: str) -> str | None:
    """Why the service would refuse ``key`` (after the field's name), or None.

    The key is never quoted, it is a secret: the message says its length, and the
    position and kind of its first character outside the rule. An empty key is no key
    (the client then names its integration by id), so it is the caller's to refuse.
    """
    length = len(key)
    if length > MAX_PIPELINE_KEY:
        found = f"is {length} characters long"
    else:
        at = next((i for i, char in enumerate(key) if not "\x21" <= char <= "\x7e"), None)
        if at is None:
            return None
        found = f"holds {_kind(key[at])} at position {at} of its {length} characters"
    return (
        f"{found}; a pipeline key is {PIPELINE_KEY_RULE} (the service and its gateway take "
        "no other): copy the key again from Datafly."
    )


def _kind(char: str) -> str:
    """What an error calls a character a pipeline key cannot hold."""
    if char == " ":
        return "a space"
    if char < " " or char == "\x7f":
        return "a control character"
    return "a non-ASCII character"
