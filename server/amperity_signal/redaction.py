"""Redaction of Live Events records: one ``scrub`` for the service and the gateway alike.

The service scrubs each record as it sends it to a watcher (``WatchDeliveries``), and the
gateway, which may run as its own process against any service, scrubs what it reads from
that stream again before a byte reaches the ``/live`` page. Both pass the configured
secrets through ``logs.scrub_forms`` once, at start, so each secret goes as written or
base64-encoded.

Values are replaced with ``[REDACTED]``, as in the logs and Amperity's error messages; an
``Authorization`` header keeps its scheme (``Bearer [REDACTED]``), the very value the
Deliver response's ``vendor_request`` shows for the same call (``endpoints.redacted``).
Until session 26 the record said ``[redacted]`` there, a second form of the one header.
"""

from __future__ import annotations

from typing import Any

REDACTED = "[REDACTED]"
SENSITIVE_KEYS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api_key"}
)
"""Keys (any case) whose values are credentials by name, whatever they hold."""

_AUTHORIZATION_KEYS = frozenset({"authorization", "proxy-authorization"})
_SCHEMES = {scheme.lower(): scheme for scheme in ("Basic", "Bearer", "Digest", "Negotiate")}
"""The schemes an Authorization value keeps, as written here: never a word of the credential."""


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """A copy of a JSON value with sensitive keys' values and every secret replaced.

    Args:
        value: A JSON value (dicts, lists, strings, numbers, booleans, None).
        secrets: The texts to replace, longest first (``logs.scrub_forms``).
    """
    if isinstance(value, dict):
        return {
            scrub(k, secrets): _redacted(k.lower(), v)
            if k.lower() in SENSITIVE_KEYS
            else scrub(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value


def _redacted(key: str, value: Any) -> str:
    """What a sensitive key's value becomes: ``[REDACTED]``, after its scheme if it has one.

    Only a known scheme is kept, so the first word of a credential without one is never
    shown; an already redacted ``Bearer [REDACTED]`` stays as it is.
    """
    if key in _AUTHORIZATION_KEYS and isinstance(value, str):
        scheme = _SCHEMES.get(value.partition(" ")[0].lower())
        if scheme is not None:
            return f"{scheme} {REDACTED}"
    return REDACTED
