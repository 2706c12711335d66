"""Redaction of Live Events records: one ``scrub`` for the service and the gateway alike.

The service scrubs each record as it sends it to a watcher (``WatchDeliveries``), and the
gateway, which may run as its own process against any service, scrubs what it reads from
that stream again before a byte reaches the ``/live`` page. Both pass the configured
secrets through ``logs.scrub_forms`` once, at start, so each secret goes as written or
base64-encoded.
"""

from __future__ import annotations

from typing import Any

REDACTED = "[redacted]"
SENSITIVE_KEYS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api_key"}
)
"""Keys (any case) whose values are credentials by name, whatever they hold."""


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """A copy of a JSON value with sensitive keys' values and every secret replaced.

    Args:
        value: A JSON value (dicts, lists, strings, numbers, booleans, None).
        secrets: The texts to replace, longest first (``logs.scrub_forms``).
    """
    if isinstance(value, dict):
        return {
            scrub(k, secrets): REDACTED if k.lower() in SENSITIVE_KEYS else scrub(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value
