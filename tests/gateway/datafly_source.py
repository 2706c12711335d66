"""What the gateway must agree with in datafly.js's source (clients/browser/src/datafly.mjs)."""

from __future__ import annotations

import re
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "clients" / "browser" / "src" / "datafly.mjs"


def _source() -> str:
    return MODULE.read_text()


def retryable_codes() -> set[str]:
    """The batch result codes datafly.js sends an event again for (``RETRYABLE_CODES``)."""
    found = re.search(r"const RETRYABLE_CODES = new Set\(\[([^\]]*)\]\)", _source())
    assert found is not None, "datafly.mjs no longer defines RETRYABLE_CODES"
    return set(re.findall(r"'([A-Z_]+)'", found.group(1)))


def send_timeout_seconds() -> float:
    """How long datafly.js waits for a /v1/batch answer before sending it again."""
    found = re.search(r"const SEND_TIMEOUT_MS = (\d+);", _source())
    assert found is not None, "datafly.mjs no longer defines SEND_TIMEOUT_MS"
    return int(found.group(1)) / 1000


def not_sent_code() -> str:
    """The result code datafly.js sends again without counting an attempt (``NOT_SENT``)."""
    found = re.search(r"const NOT_SENT = '([A-Z_]+)';", _source())
    assert found is not None, "datafly.mjs no longer defines NOT_SENT"
    return found.group(1)
