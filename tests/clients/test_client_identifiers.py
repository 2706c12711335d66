"""A string argument or event field of another type is refused naming it, and never converted.

protobuf's own refusal (``TypeError: 1.0 has type float, but expected one of: bytes,
str``) names no field; converting would change the id (``str(1.0)`` is ``"1.0"`` here,
``"1"`` in the Node client). Both clients refuse in the same words.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from amperity_signal_client import AmperityClient, AsyncAmperityClient, event_from_json
from amperity_signal_client.events import EventFieldError

from .fakes import Failure, RunningService

# A watch the old code made with bytes (protobuf takes UTF-8 bytes for a string) fails at
# once instead of waiting for a record that never comes.
WATCH_REFUSED = Failure(grpc.StatusCode.NOT_FOUND, "no such integration", "INTEGRATION_NOT_FOUND")

NOT_STRINGS = [
    pytest.param(value, type_name, id=type_name)
    for value, type_name in [
        (1, "int"),
        (1.0, "float"),
        (b"anon-1", "bytes"),
        (True, "bool"),
        (["a"], "list"),
    ]
]


async def _first_record(records: Any) -> None:
    """Iterate ``records`` up to its first record, so the call starts."""
    async for _ in records:
        return


CALLS: dict[str, tuple[str, str, Callable[[AsyncAmperityClient, Any], Awaitable[Any]]]] = {
    "browser_profile": ("anonymous_id", '"anon-1"', lambda c, v: c.browser_profile(v)),
    "record_consent": ("anonymous_id", '"anon-1"', lambda c, v: c.record_consent(v, {})),
    "watch_deliveries": (
        "integration_id",
        '"acme-web"',
        lambda c, v: _first_record(c.watch_deliveries(integration_id=v, reconnect=False)),
    ),
}
SYNC_CALLS: dict[str, Callable[[AmperityClient, Any], Any]] = {
    "browser_profile": lambda c, v: c.browser_profile(v),
    "record_consent": lambda c, v: c.record_consent(v, {}),
    "watch_deliveries": lambda c, v: next(c.watch_deliveries(integration_id=v, reconnect=False)),
}


@pytest.mark.parametrize(("value", "type_name"), NOT_STRINGS)
@pytest.mark.parametrize("call", sorted(CALLS))
async def test_a_non_string_argument_is_a_type_error_naming_it_and_what_to_pass(  # noqa: PLR0917 - fixtures and parameters
    running: RunningService,
    client: AsyncAmperityClient,
    sync_client: AmperityClient,
    call: str,
    value: object,
    type_name: str,
) -> None:
    """anonymous_id, integration_id: the name, the type, an example; no call is made."""
    field, example, async_call = CALLS[call]
    running.service.watch_failures = [WATCH_REFUSED, WATCH_REFUSED]
    message = f"^{field} must be a string, .*, not {type_name}: pass it as text, e.g. {example}\\.$"

    with pytest.raises(TypeError, match=message):
        await async_call(client, value)
    with pytest.raises(TypeError, match=message):
        await asyncio.to_thread(SYNC_CALLS[call], sync_client, value)

    assert running.service.calls == []


async def test_browser_profile_of_none_names_anonymous_id(client: AsyncAmperityClient) -> None:
    """None is no visitor: not protobuf's "None has type NoneType", which names no field."""
    with pytest.raises(TypeError, match=r"^anonymous_id must be a string, .*, not None: "):
        await client.browser_profile(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("client_class", [AsyncAmperityClient, AmperityClient])
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"target": 50051, "integration_id": "shop"}, r"^target must be a string, .*, not int: "),
        ({"target": None, "integration_id": "shop"}, r"^target must be a string, .*, not None: "),
        ({"integration_id": 7}, r'^integration_id must be a string, .*, not int: .*"acme-web"'),
        ({"integration_id": b"shop"}, r"^integration_id must be a string, .*, not bytes: "),
        ({"pipeline_key": b"pk_s3cret"}, r"^pipeline_key must be a string, .*, not bytes: "),
        ({"pipeline_key": 12345}, r"^pipeline_key must be a string, .*, not int: "),
    ],
)
def test_a_non_string_identity_is_refused_when_the_client_is_built(
    client_class: type[AsyncAmperityClient | AmperityClient],
    arguments: dict[str, Any],
    message: str,
) -> None:
    """Every request would carry it; the pipeline key is named by type, never quoted."""
    settings = {"target": "127.0.0.1:1", **arguments}
    with pytest.raises(TypeError, match=message) as raised:
        client_class(**settings)

    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    ("event", "field", "type_name"),
    [
        ({"anonymousId": 1.0}, "anonymousId", "float"),
        ({"anonymousId": b"anon-1"}, "anonymousId", "bytes"),
        ({"userId": 42}, "userId", "int"),
        ({"event": ["Product Viewed"]}, "event", "list"),
        ({"messageId": 7}, "messageId", "int"),
        ({"canonical_id": True}, "canonicalId", "bool"),
        ({"context": {"ip": 127}}, "context.ip", "int"),
        ({"context": {"page": {"url": 1}}}, "context.page.url", "int"),
        ({"context": {"vendorIds": {"fbp": 1.5}}}, "context.vendorIds.fbp", "float"),
    ],
)
def test_a_non_string_event_field_is_refused_naming_it_never_converted(
    event: dict[str, Any], field: str, type_name: str
) -> None:
    """The Node client's words: the path, the type, and to send a JSON string."""
    with pytest.raises(EventFieldError) as raised:
        event_from_json({"type": "track", **event})

    assert raised.value.field == field
    assert str(raised.value) == (
        f"{field} must be a string, not {type_name}: send it as a JSON string."
    )


def test_a_session_id_is_a_string_or_a_whole_number_as_in_the_node_client() -> None:
    """7 is "7" in both clients; 1.5, true or a number past 2**53 - 1 is refused."""
    assert event_from_json({"context": {"session": {"id": 7}}}).context.session.id == "7"
    refused = {
        1.5: "must be a string or a whole number, not float: send it as a JSON string.",
        True: "must be a string or a whole number, not bool: send it as a JSON string.",
        2**53: "is a whole number too large to be exact in JavaScript (over 2**53 - 1): "
        "send it as a JSON string.",
    }
    for session_id, problem in refused.items():
        with pytest.raises(EventFieldError) as raised:
            event_from_json({"context": {"session": {"id": session_id}}})
        assert str(raised.value) == f"context.session.id {problem}"


def test_a_whole_float_session_id_is_its_digits_as_in_the_node_client() -> None:
    """JSON has one kind of number: 1.0 is "1", as Node (which cannot tell) sends it.

    Until session 25 this client refused it, and the gateway too, while Node sent "1".
    """
    for session_id, digits in ((1.0, "1"), (-0.0, "0"), (float(2**53 - 1), str(2**53 - 1))):
        event = event_from_json({"context": {"session": {"id": session_id}}})
        assert event.context.session.id == digits
    with pytest.raises(EventFieldError, match=r"^context\.session\.id is a whole number too"):
        event_from_json({"context": {"session": {"id": 1e16}}})


def test_a_session_number_past_2_53_is_refused_as_in_the_node_client() -> None:
    """2**53 - 1 at most, in the Node client's words; this client took up to int64's."""
    number = event_from_json({"context": {"session": {"number": 2**53 - 1}}})
    assert number.context.session.number == 2**53 - 1
    for too_large in (2**53, 2**63 - 1, 1e16):
        with pytest.raises(EventFieldError) as raised:
            event_from_json({"context": {"session": {"number": too_large}}})
        assert str(raised.value) == "context.session.number is too large (at most 2**53 - 1)."
