"""The gateway's JSON responses are byte for byte Starlette's ``JSONResponse``."""

from __future__ import annotations

import json
import json.encoder
import math
from typing import Any

import pytest
from starlette.responses import JSONResponse
from starlette.types import Message

from amperity_signal.gateway.errors import (
    GatewayJSONResponse,
    json_body,
    json_response,
    send_json,
)

CONTENTS: list[Any] = [
    {"provider": "amperity", "attributes": {}},
    {"provider": "amperity", "attributes": {"Persona": "Value Hunter", "Ltv": 1250, "x": 0.1}},
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


@pytest.mark.parametrize("content", CONTENTS)
async def test_send_json_sends_what_a_json_response_sends(content: Any) -> None:
    """The enrich route's direct answer: the messages json_response's ASGI call sends."""
    theirs: list[Message] = []
    ours: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send_theirs(message: Message) -> None:
        theirs.append(message)

    async def send_ours(message: Message) -> None:
        ours.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    await json_response(content)(scope, receive, send_theirs)
    await send_json(send_ours, content)
    assert ours == theirs


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
