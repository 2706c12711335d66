"""The gateway's JSON responses are byte for byte Starlette's ``JSONResponse``."""

from __future__ import annotations

import json
import json.encoder
import math
from typing import Any, cast

import pytest
from starlette.responses import JSONResponse
from starlette.types import Message

from amperity_signal.gateway.errors import (
    GatewayJSONResponse,
    json_body,
    json_response,
    send_json,
)
from amperity_signal.gateway.routes_api import EnrichRoute

CONTENTS: list[Any] = [
    {"provider": "amperity", "attributes": {}},
    {"provider": "amperity", "attributes": {"Persona": "Value Hunter", "Ltv": 1250, "x": 0.1}},
    {
        "provider": "amperity",
        "attributes": {"caf\u00e9": '\U0001f600 \u2028 \\ "q"', "n": [1.5, None]},
    },
    {"error": {"code": "BAD", "message": 'caf\u00e9 \u20ac \U0001f600 "quoted" \n'}},
    [1, 2.5, 1e16, -0.0, None, True, False, "\x00"],
    {"nested": {"list": [{"a": [1, {"b": "c"}]}]}},
]


@pytest.mark.parametrize("content", CONTENTS)
def test_bodies_and_headers_equal_starlettes(content: Any) -> None:
    """Body bytes, status and raw headers are those JSONResponse gives for the same call."""
    ours = GatewayJSONResponse(content, status_code=404, headers={"Retry-After": "1"})
    theirs = JSONResponse(content, status_code=404, headers={"Retry-After": "1"})
    assert (ours.body, ours.status_code, ours.raw_headers) == (
        theirs.body,
        theirs.status_code,
        theirs.raw_headers,
    )


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_as_starlette_refuses_them(number: float) -> None:
    """NaN and infinities raise ValueError, never reach the page as invalid JSON."""
    with pytest.raises(ValueError, match="Out of range float values"):
        json_response({"value": number})
    with pytest.raises(ValueError, match="Out of range float values"):
        JSONResponse({"value": number})


async def _sent(app: Any, scope: dict[str, Any]) -> list[Message]:
    """The messages an ASGI app sends for ``scope``."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("content", CONTENTS)
async def test_send_json_sends_what_a_json_response_sends(content: Any) -> None:
    """The enrich route's direct answer: the messages json_response's ASGI call sends."""

    async def ours(scope: Any, receive: Any, send: Any) -> None:
        await send_json(send, content)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    assert await _sent(ours, scope) == await _sent(json_response(content), scope)


def test_the_c_encoder_is_built_once_not_per_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering bodies builds no encoder (JSONEncoder.encode built one per call)."""
    built: list[object] = []
    make = getattr(json.encoder, "c_make_encoder", None)
    assert make is not None, "this interpreter has no C accelerator for json"

    def counting(*args: Any) -> Any:
        built.append(args)
        return make(*args)

    monkeypatch.setattr(json.encoder, "c_make_encoder", counting)
    for content in CONTENTS:
        assert json_body(content) == JSONResponse(content).body
    assert len(built) == len(CONTENTS)  # Starlette's renders, not ours


class _Client:
    """A ``ServiceClient`` answering fixed attributes."""

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes

    async def browser_profile(self, pipeline_key: str, anonymous_id: str) -> dict[str, Any]:
        return self.attributes


@pytest.mark.parametrize("content", [c for c in CONTENTS if "attributes" in c])
async def test_the_enrich_route_answers_what_a_json_response_sends(content: Any) -> None:
    """``GET /v1/enrich`` renders its envelope around the attributes: the same bytes."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/enrich",
        "query_string": b"provider=amperity&anonymous_id=anon-1",
        "headers": [(b"x-pipeline-key", b"pk_web")],
    }
    route = EnrichRoute(cast(Any, _Client(content["attributes"])))
    assert await _sent(route, scope) == await _sent(json_response(content), scope)
