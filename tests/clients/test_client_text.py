r"""Strings a proto string field cannot hold are refused naming the argument, before any call.

A lone UTF-16 surrogate (what a JSON ``"\ud800"`` escape alone parses to) is no text:
protobuf refuses it with a ``UnicodeEncodeError`` that names no field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from amperity_signal_client import AmperityClient, AsyncAmperityClient

from .fakes import RunningService

SURROGATE_AT_5 = (
    r" holds '\\ud800' at position 5, half of a UTF-16 surrogate pair, which is not text"
)


async def _first_record(records: Any) -> None:
    """Iterate ``records`` up to its first record, so the call starts."""
    async for _ in records:
        return


CALLS: dict[str, tuple[str, Callable[[AsyncAmperityClient], Awaitable[Any]]]] = {
    "browser_profile": ("anonymous_id", lambda c: c.browser_profile("anon-\ud800")),
    "record_consent": ("anonymous_id", lambda c: c.record_consent("anon-\ud800", {})),
    "watch_deliveries": (
        "integration_id",
        lambda c: _first_record(c.watch_deliveries(integration_id="shop-\ud800", reconnect=False)),
    ),
    "deliver": ("anonymousId", lambda c: c.deliver({"type": "page", "anonymousId": "anon-\ud800"})),
}
SYNC_CALLS: dict[str, Callable[[AmperityClient], Any]] = {
    "browser_profile": lambda c: c.browser_profile("anon-\ud800"),
    "record_consent": lambda c: c.record_consent("anon-\ud800", {}),
    "watch_deliveries": lambda c: next(
        c.watch_deliveries(integration_id="shop-\ud800", reconnect=False)
    ),
    "deliver": lambda c: c.deliver({"type": "page", "anonymousId": "anon-\ud800"}),
}


@pytest.mark.parametrize("call", sorted(CALLS))
async def test_a_lone_surrogate_in_an_argument_is_a_value_error_naming_it_and_no_call(
    running: RunningService, client: AsyncAmperityClient, sync_client: AmperityClient, call: str
) -> None:
    """browser_profile, record_consent, watch_deliveries, deliver: the field, where, no call."""
    field, async_call = CALLS[call]

    with pytest.raises(ValueError, match=f"^{field}{SURROGATE_AT_5}") as raised:
        await async_call(client)
    with pytest.raises(ValueError, match=f"^{field}{SURROGATE_AT_5}"):
        await asyncio.to_thread(SYNC_CALLS[call], sync_client)

    assert not isinstance(raised.value, UnicodeError)
    assert running.service.calls == []


@pytest.mark.parametrize("client_class", [AsyncAmperityClient, AmperityClient])
async def test_an_integration_id_with_a_lone_surrogate_is_refused_when_the_client_is_built(
    client_class: type[AsyncAmperityClient | AmperityClient],
) -> None:
    """Every request would carry it: the constructor names it, not protobuf on each call."""
    with pytest.raises(ValueError, match=f"^integration_id{SURROGATE_AT_5}"):
        client_class("127.0.0.1:1", integration_id="shop-\ud800")
