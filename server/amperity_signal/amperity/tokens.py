"""Expiry of Amperity API keys, read from the JWT payload without verifying it.

Amperity's keys are JWTs; their ``exp`` claim tells when event delivery or enrichment
will start failing with 401. Warnings name the integration and the field, never a token.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta

from amperity_signal.config import IntegrationSettings

EXPIRY_WARNING_WINDOW = timedelta(days=14)
_KEY_FIELDS = ("api_key", "profile_api_key")
_FIXES = {
    "api_key": "Streaming Ingest Write Access",
    "profile_api_key": "Profile Read Access",
}


def jwt_expiry(token: str) -> datetime | None:
    """The ``exp`` claim of a JWT as an aware UTC datetime, without verifying the signature.

    Args:
        token: A ``header.payload.signature`` token.

    Returns:
        The expiry, or None when the token is not JWT-shaped or has no numeric ``exp``.
    """
    parts = token.strip().split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        return datetime.fromtimestamp(exp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def expiry_warnings(integration: IntegrationSettings, now: datetime) -> list[str]:
    """Warnings for keys that are expired or expire within 14 days.

    Args:
        integration: The integration whose ``api_key`` and ``profile_api_key`` to check.
        now: The current time (aware).

    Returns:
        One message per key concerned, naming the integration id and the field.
    """
    warnings = []
    for field in _KEY_FIELDS:
        secret = getattr(integration, field)
        if secret is None:
            continue
        expires = jwt_expiry(secret.get_secret_value())
        if expires is None:
            continue
        fix = (
            f"regenerate it under Settings > Security > API Keys with {_FIXES[field]} "
            f"and update {field}."
        )
        when = expires.strftime("%Y-%m-%d %H:%M UTC")
        if expires <= now:
            warnings.append(f"integration {integration.id}: {field} expired on {when}; {fix}")
        elif expires - now <= EXPIRY_WARNING_WINDOW:
            warnings.append(
                f"integration {integration.id}: {field} expires in "
                f"{_time_left(expires - now)} (on {when}); {fix}"
            )
    return warnings


def _time_left(left: timedelta) -> str:
    """``3.0 days``, or hours or minutes under a day (a key for an hour is not "0.0 days")."""
    seconds = left.total_seconds()
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 3_600:
        return f"{seconds / 3_600:.1f} hours"
    return f"{max(1, round(seconds / 60))} minute(s)"
