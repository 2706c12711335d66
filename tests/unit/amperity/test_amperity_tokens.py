"""API key expiry: read from the JWT without verifying, warned about 14 days ahead."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from amperity_signal.amperity import expiry_warnings, jwt_expiry
from amperity_signal.config import IntegrationSettings

NOW = datetime(2026, 4, 17, 12, 0, tzinfo=UTC)


def _jwt(claims: Any) -> str:
    def part(value: Any) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def _expiring(delta: timedelta) -> str:
    return _jwt({"tenant": "acme", "exp": int((NOW + delta).timestamp())})


def test_jwt_expiry_reads_the_exp_claim() -> None:
    """The exp claim comes back as an aware UTC datetime."""
    assert jwt_expiry(_expiring(timedelta(days=3))) == NOW + timedelta(days=3)


def test_jwt_expiry_is_none_for_anything_not_a_jwt_with_exp() -> None:
    """Opaque strings, bad base64, non-object payloads and missing or odd exp give None."""
    for token in (
        "not-a-jwt",
        "a.b",
        "a.!!!.c",
        _jwt(["exp"]),
        _jwt({"sub": "x"}),
        _jwt({"exp": "soon"}),
        _jwt({"exp": True}),
        _jwt({"exp": 10**20}),
    ):
        assert jwt_expiry(token) is None, token


def test_expired_and_soon_expiring_keys_are_warned_about_by_field(
    integration: IntegrationSettings,
) -> None:
    """An expired api_key and a profile key expiring in 3 days each get a warning."""
    expired, soon = _expiring(-timedelta(hours=1)), _expiring(timedelta(days=3))
    keys = IntegrationSettings.model_validate(
        integration.model_dump() | {"api_key": expired, "profile_api_key": soon}
    )

    warnings = expiry_warnings(keys, NOW)

    assert len(warnings) == 2
    assert warnings[0].startswith("integration acme-web: api_key expired on 2026-04-17")
    assert "Streaming Ingest Write Access" in warnings[0]
    assert "profile_api_key expires in 3.0 days" in warnings[1]
    assert "Profile Read Access" in warnings[1]
    for warning in warnings:
        assert expired not in warning
        assert soon not in warning


def test_a_key_expiring_within_a_day_is_warned_about_in_hours_or_minutes(
    integration: IntegrationSettings,
) -> None:
    """A key with an hour or minutes left says so, not "expires in 0.0 days"."""
    keys = IntegrationSettings.model_validate(
        integration.model_dump()
        | {
            "api_key": _expiring(timedelta(hours=1, minutes=30)),
            "profile_api_key": _expiring(timedelta(minutes=20)),
        }
    )

    warnings = expiry_warnings(keys, NOW)

    assert "api_key expires in 1.5 hours (on 2026-04-17 13:30 UTC)" in warnings[0]
    assert "profile_api_key expires in 20 minute(s) (on 2026-04-17 12:20 UTC)" in warnings[1]


def test_keys_valid_beyond_14_days_or_opaque_are_not_warned_about(
    integration: IntegrationSettings,
) -> None:
    """A key valid for 30 days and a non-JWT key produce no warning."""
    fine = IntegrationSettings.model_validate(
        integration.model_dump() | {"api_key": _expiring(timedelta(days=30))}
    )
    assert expiry_warnings(fine, NOW) == []
