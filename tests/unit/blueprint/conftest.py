"""Fixtures for the blueprint engine tests: blueprints and an event builder."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from amperity_signal.blueprint import Blueprint, load_blueprint

EventFactory = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def retail() -> Blueprint:
    """The shipped retail preset without overrides."""
    return load_blueprint("retail")


@pytest.fixture
def make_event() -> EventFactory:
    """Build an event dict the way the servicer does, with sensible identity defaults."""

    def build(
        name: str | None = None, message_type: str = "track", **fields: Any
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "message_id": "msg-1",
            "type": message_type,
            "anonymous_id": "anon_abc123",
            "canonical_id": "anon_abc123",
            "timestamp": datetime(2026, 4, 17, 15, 37, 10, 484000, tzinfo=UTC),
            "properties": {},
            "traits": {},
            "context": {},
        }
        if name is not None:
            event["event"] = name
        event.update(fields)
        return event

    return build
