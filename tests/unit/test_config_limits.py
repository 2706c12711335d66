"""Configuration ceilings: a value past one is refused at load, naming the range and why.

Each ceiling sits below the point where the value stops the service or breaks every call:
a gRPC channel argument over a C int stops ``serve`` with a traceback.
"""

from __future__ import annotations

from typing import Any

import pytest

from amperity_signal.config import settings_from_dict
from amperity_signal.errors import ConfigError
from amperity_signal.gateway.app import _channel
from amperity_signal.gateway.settings import GatewaySettings
from amperity_signal.limits import (
    INT32_MAX,
    MAX_GATEWAY_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_LIVE_REPLAY,
    MAX_MESSAGE_BYTES,
    MAX_TTL_SECONDS,
    MAX_WAIT_SECONDS,
)
from amperity_signal.service.app import build_server
from tests.support import integration_dict, mint_keys, settings_for
from tests.unit.cli_support import integration


def problems_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(raw, {})
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("value", [536_870_912, 600_000_000, INT32_MAX, 99_999_999_999])
def test_a_message_size_grpc_cannot_take_is_refused_naming_the_range_and_why(value: int) -> None:
    """4 x max_message_bytes is gRPC's receive limit, a C int: past it ``serve`` crashed."""
    (problem,) = problems_of(
        {"server": {"max_message_bytes": value}, "integrations": [integration()]}
    )
    assert problem.startswith(
        f"server.max_message_bytes: must be at most {MAX_MESSAGE_BYTES}; the allowed range is "
        f"65536 to {MAX_MESSAGE_BYTES}. Fix: set a value within that range (256 MiB at most: "
        "gRPC's own receive limit is 4 times this, and gRPC takes it as a 32-bit integer"
    ), problem
    assert problem.endswith("or remove the line to use the default (1048576).")


@pytest.mark.parametrize(
    ("field", "ceiling", "why"),
    [
        ("max_body_bytes", MAX_GATEWAY_BODY_BYTES, "32-bit integer"),
        ("max_batch_body_bytes", MAX_GATEWAY_BODY_BYTES, "32-bit integer"),
        ("max_header_bytes", MAX_HEADER_BYTES, "request head"),
        ("live_replay", MAX_LIVE_REPLAY, "?replay="),
    ],
)
def test_a_gateway_limit_past_its_ceiling_is_refused_naming_the_range(
    field: str, ceiling: int, why: str
) -> None:
    """The gateway's channel limit (4 x batch body) and WatchDeliveries' replay are int32."""
    raw = {"gateway": {field: INT32_MAX + 1}, "integrations": [integration()]}
    (problem,) = problems_of(raw)
    assert problem.startswith(f"gateway.{field}: must be at most {ceiling}; the allowed range")
    assert why in problem and "remove the line to use the default (" in problem


TTLS = [
    f"{name}_ttl"
    for name in (
        "resolution",
        "attribute",
        "personalized",
        "not_found",
        "error",
        "identity",
        "stale",
    )
]
WAITS = [
    ("server", "grace_period"),
    ("cache", "breaker_cooldown"),
    ("gateway", "rpc_timeout"),
    ("gateway", "deliver_timeout"),
    ("gateway", "request_read_timeout"),
    ("integrations", "request_timeout"),
]


def with_value(table: str, field: str, value: float) -> tuple[dict[str, Any], str]:
    """A configuration setting ``field`` of ``table`` to ``value``, and where it is."""
    if table == "integrations":
        return {"integrations": [integration(**{field: value})]}, f"integrations[0].{field}"
    return {table: {field: value}, "integrations": [integration()]}, f"{table}.{field}"


@pytest.mark.parametrize("field", TTLS)
@pytest.mark.parametrize("value", [1e300, MAX_TTL_SECONDS + 1])
def test_a_ttl_past_ten_years_is_refused_naming_the_range_and_why(field: str, value: float) -> None:
    """``attribute_ttl = 1e300`` passed, then Redis refused every cache write."""
    raw, location = with_value("cache", field, value)
    (problem,) = problems_of(raw)
    assert problem.startswith(f"{location}: must be at most {MAX_TTL_SECONDS}; the allowed range")
    assert "10 years at most" in problem and "Redis refuses" in problem, problem
    assert "remove the line to use the default (" in problem


@pytest.mark.parametrize(("table", "field"), WAITS)
def test_a_wait_past_an_hour_is_refused_naming_the_range(table: str, field: str) -> None:
    """A grace, deadline, timeout or cooldown longer than an hour is refused at load."""
    raw, location = with_value(table, field, 1e300)
    (problem,) = problems_of(raw)
    assert problem.startswith(f"{location}: must be at most {MAX_WAIT_SECONDS}; the allowed range")
    assert "60 minutes at most" in problem, problem


@pytest.mark.parametrize("field", ["rpc_timeout", "deliver_timeout"])
def test_a_grpc_deadline_past_an_hour_is_told_it_would_fail_every_call(field: str) -> None:
    """A gRPC deadline past ~1e10 s wraps around: every call ends DEADLINE_EXCEEDED at once."""
    (problem,) = problems_of({"gateway": {field: 1e10}, "integrations": [integration()]})
    assert "fails every call at once" in problem


def test_every_ttl_and_wait_takes_its_ceiling() -> None:
    """The ceilings themselves load: the bounds are inclusive."""
    cache: dict[str, Any] = dict.fromkeys(TTLS, MAX_TTL_SECONDS)
    cache["breaker_cooldown"] = MAX_WAIT_SECONDS
    settings = settings_from_dict(
        {
            "server": {"grace_period": MAX_WAIT_SECONDS},
            "cache": cache,
            "gateway": {field: MAX_WAIT_SECONDS for table, field in WAITS if table == "gateway"},
            "integrations": [integration(request_timeout=MAX_WAIT_SECONDS)],
        },
        {},
    )
    assert settings.cache.attribute_ttl == MAX_TTL_SECONDS
    assert settings.gateway.deliver_timeout == MAX_WAIT_SECONDS


def test_a_bound_of_one_side_is_told_without_a_range() -> None:
    """A field with a floor only says the floor, as before: no range to name."""
    (problem,) = problems_of({"cache": {"max_bytes": 65_536}, "integrations": [integration()]})
    assert problem == (
        "cache.max_bytes: must be at least 1048576. Fix: set a value within that limit, or "
        "remove the line to use the default (268435456)."
    )


async def test_the_ceilings_build_a_service_and_a_gateway_channel() -> None:
    """At the ceilings gRPC takes every derived limit: the ceilings themselves are safe."""
    settings = settings_for(
        integration_dict("http://sandbox.test", mint_keys(ttl=365 * 86400)),
        server={
            "grpc_address": "127.0.0.1:0",
            "http_address": "127.0.0.1:0",
            "max_message_bytes": MAX_MESSAGE_BYTES,
        },
        gateway={"max_batch_body_bytes": MAX_GATEWAY_BODY_BYTES},
    )
    service = build_server(settings, bind=False)
    try:
        channel = _channel("127.0.0.1:1", GatewaySettings.from_settings(settings))()
        await channel.close()
    finally:
        await service.registry.aclose()
        await service.cache.close()
