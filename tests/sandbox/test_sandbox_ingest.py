"""Event ingest over ASGI: every status of the notes' table, in the documented precedence."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from amperity_signal.sandbox import routes_ingest
from amperity_signal.sandbox.testing import ACME, GLOBEX, GLOBEX_STREAM
from amperity_signal.sandbox.testing import ACME_DROP_STREAM as DROP_STREAM
from amperity_signal.sandbox.testing import ACME_REJECT_STREAM as REJECT_STREAM
from amperity_signal.sandbox.testing import ACME_STREAM as STREAM
from amperity_signal.sandbox.testing import InProcessSandbox as Sandbox

EVENT = {"source": "DATAFLY", "type": "view_item", "cookieid": "anon_x"}


async def _post_raw(
    box: Sandbox, content: bytes, headers: dict[str, str], stream: str = STREAM
) -> httpx.Response:
    return await box.client.post(f"/prof/events/{stream}", content=content, headers=headers)


def _json_headers(box: Sandbox, token: str = "acme-ingest") -> dict[str, str]:
    return {**box.headers(token), "Content-Type": "application/json"}


async def test_active_stream_accepts_with_202(sandbox: Sandbox) -> None:
    """An event on an active stream is accepted with 202."""
    response = await sandbox.post_event(EVENT)
    assert response.status_code == 202


async def test_drop_stream_answers_204_without_body(sandbox: Sandbox) -> None:
    """A stream in drop mode answers 204 with an empty body."""
    response = await sandbox.post_event(EVENT, stream=DROP_STREAM)
    assert response.status_code == 204
    assert response.content == b""


async def test_reject_stream_answers_409(sandbox: Sandbox) -> None:
    """A stream in reject mode answers 409."""
    response = await sandbox.post_event(EVENT, stream=REJECT_STREAM)
    assert response.status_code == 409


async def test_error_body_has_exactly_amperitys_shape(sandbox: Sandbox) -> None:
    """Errors carry exactly status, message, request_id and trace_id."""
    response = await sandbox.post_event(EVENT, stream="esm-nope")
    body = response.json()
    assert set(body) == {"status", "message", "request_id", "trace_id"}
    assert body["status"] == 404
    assert body["request_id"].startswith("req-")
    assert len(body["trace_id"]) == 32


async def test_bad_bodies_answer_400(sandbox: Sandbox) -> None:
    """Missing, malformed, array and NDJSON bodies are 400."""
    headers = _json_headers(sandbox)
    for body in (b"", b"{not json", b"[1, 2]", b'{"a": 1}\n{"b": 2}\n', b'"text"'):
        response = await _post_raw(sandbox, body, headers)
        assert response.status_code == 400, body


async def test_nan_and_bodies_nested_too_deep_to_parse_are_400_not_500(sandbox: Sandbox) -> None:
    """NaN/Infinity are not JSON; a 30,000-deep body is refused, not a crash to retry."""
    headers = _json_headers(sandbox)
    deep = b"[" * 30_000 + b"]" * 30_000  # under the 64 KB limit
    for body in (b'{"source": "DATAFLY", "x": NaN}', b'{"x": -Infinity}', deep):
        response = await _post_raw(sandbox, body, headers)
        assert response.status_code == 400, body[:40]
        assert set(response.json()) == {"status", "message", "request_id", "trace_id"}


async def test_numbers_beyond_a_double_are_400_and_the_inspector_still_answers(
    sandbox: Sandbox,
) -> None:
    """A 1e400 (infinity to Python) or a 5000-digit integer is refused, saying why."""
    headers = _json_headers(sandbox)
    for body, why in (
        (b'{"source": "DATAFLY", "value": 1e400}', "1e400 is beyond the range of a double"),
        (b'{"source": "DATAFLY", "value": ' + b"9" * 5000 + b"}", "more than 4300 digits"),
    ):
        response = await _post_raw(sandbox, body, headers)
        assert response.status_code == 400, body[:40]
        assert why in response.json()["message"]
        assert "set_int_max_str_digits" not in response.json()["message"]
    assert (await sandbox.client.get("/_sandbox/events")).status_code == 200


async def test_a_lone_surrogate_is_400_naming_the_field_and_the_inspector_still_answers(
    sandbox: Sandbox,
) -> None:
    r"""A "\ud800" escape is no Unicode: 400 naming where; a proper pair (an emoji) is 202."""
    headers = _json_headers(sandbox)
    for body, where in (
        (b'{"source": "DATAFLY", "cookieid": "anon_\\ud800"}', "cookieid"),
        (b'{"source": "DATAFLY", "items": [{"brand": "\\udc00"}]}', "items[0].brand"),
        (b'{"source": "DATAFLY", "\\ud800": 1}', "a key in the object"),
    ):
        response = await _post_raw(sandbox, body, headers)
        assert response.status_code == 400, body
        assert f"{where} holds a lone surrogate" in response.json()["message"]
    lookup = await sandbox.client.post(
        "/prof/lookup/apc-vPsQheAm/keychain",
        content=b'{"keys": {"device_cookie": "\\ud800"}}',
        headers=_json_headers(sandbox, "acme-profile"),
    )
    assert lookup.status_code == 400
    assert "keys.device_cookie holds a lone surrogate" in lookup.json()["message"]
    emoji = b'{"source": "DATAFLY", "cookieid": "anon_\\ud83d\\ude00"}'
    assert (await _post_raw(sandbox, emoji, headers)).status_code == 202
    await sandbox.flush()
    events = await sandbox.client.get("/_sandbox/events")
    assert events.status_code == 200
    assert [e["body"]["cookieid"] for e in events.json()["events"]] == ["anon_\U0001f600"]
    assert (await sandbox.lookup(device_cookie="anon_\U0001f600")).status_code == 200


async def test_a_surrogate_in_bytes_or_in_a_utf16_body_is_400_and_the_inspector_still_answers(
    sandbox: Sandbox,
) -> None:
    r"""A lone surrogate arriving any other way than a "\ud800" in UTF-8 is refused too.

    Raw surrogate bytes (``ED A0 80``: no UTF-8) and a ``\ud800`` escape in a UTF-16 body
    (which Python's json reads, with the escape's bytes far apart) were accepted with 202,
    and the stored event then failed every inspector answer with a 500.
    """
    headers = _json_headers(sandbox)
    for body in (
        b'{"source": "DATAFLY", "cookieid": "anon_\xed\xa0\x80"}',
        '{"source": "DATAFLY", "cookieid": "anon_\\ud800"}'.encode("utf-16-le"),
        '{"source": "DATAFLY", "cookieid": "anon_\\udc00"}'.encode("utf-32"),
    ):
        response = await _post_raw(sandbox, body, headers)
        assert response.status_code == 400, body
        assert response.json()["status"] == 400
    lookup = await sandbox.client.post(
        "/prof/lookup/apc-vPsQheAm/keychain",
        content='{"keys": {"device_cookie": "\\ud800"}}'.encode("utf-16"),
        headers=_json_headers(sandbox, "acme-profile"),
    )
    assert lookup.status_code == 400
    events = await sandbox.client.get("/_sandbox/events")
    assert events.status_code == 200
    assert events.json()["events"] == []


async def test_a_sandbox_bug_still_answers_in_amperitys_error_shape(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception is a 500 with Amperity's body, not Starlette's plain text."""

    def broken(body: bytes) -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(routes_ingest, "_parse_event", broken)
    # As a server would: the answer is sent, the exception goes on to the log.
    transport = httpx.ASGITransport(app=sandbox.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        response = await client.post(
            f"/prof/events/{STREAM}", json=EVENT, headers=_json_headers(sandbox)
        )
    assert response.status_code == 500
    assert response.json()["message"] == "the sandbox failed: RuntimeError"


async def test_token_problems_answer_401(sandbox: Sandbox) -> None:
    """Missing, malformed, badly signed and expired tokens are 401, with WWW-Authenticate."""
    good = sandbox.tokens["acme-ingest"]
    expired = sandbox.mint(ACME, ["stream:write"], ttl=-10)
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for authorization in (
        None,
        "Basic abc",
        "Bearer nope",
        f"Bearer {tampered}",
        f"Bearer {expired}",
    ):
        headers = {"Amperity-Tenant": ACME, "Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        response = await _post_raw(sandbox, b"{}", headers)
        assert response.status_code == 401, authorization
        assert response.headers["www-authenticate"] == "Bearer", authorization


async def test_profile_token_on_events_is_403(sandbox: Sandbox) -> None:
    """A Profile API key on the ingest endpoint is 403."""
    response = await sandbox.post_event(EVENT, key_name="acme-profile")
    assert response.status_code == 403


async def test_token_for_another_tenant_is_403(sandbox: Sandbox) -> None:
    """A valid token sent with another tenant's Amperity-Tenant header is 403."""
    headers = {**_json_headers(sandbox, "globex-ingest"), "Amperity-Tenant": ACME}
    response = await _post_raw(sandbox, b"{}", headers)
    assert response.status_code == 403


async def test_unknown_stream_or_tenant_is_404(sandbox: Sandbox) -> None:
    """An unknown stream, another tenant's stream and an unknown tenant are 404."""
    assert (await sandbox.post_event(EVENT, stream="esm-unknown")).status_code == 404
    assert (await sandbox.post_event(EVENT, stream=GLOBEX_STREAM)).status_code == 404
    token = sandbox.mint("initech", ["stream:write"])
    headers = {"Amperity-Tenant": "initech", "Authorization": f"Bearer {token}"}
    response = await sandbox.client.post(f"/prof/events/{STREAM}", json=EVENT, headers=headers)
    assert response.status_code == 404


async def test_chunked_body_without_content_length_is_411(sandbox: Sandbox) -> None:
    """A chunked body (no Content-Length header) is 411."""

    async def chunks() -> AsyncIterator[bytes]:
        yield json.dumps(EVENT).encode()

    response = await sandbox.client.post(
        f"/prof/events/{STREAM}", content=chunks(), headers=_json_headers(sandbox)
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 411


async def test_body_limit_is_65536_bytes(sandbox: Sandbox) -> None:
    """A 65536-byte body is accepted and a 65537-byte body is 413."""
    headers = _json_headers(sandbox)
    for size, status in ((65_536, 202), (65_537, 413)):
        body = _event_of_size(size)
        assert len(body) == size
        assert (await _post_raw(sandbox, body, headers)).status_code == status


async def test_content_type_must_be_json_but_may_carry_parameters(sandbox: Sandbox) -> None:
    """text/plain is 415; application/json; charset=utf-8 is accepted."""
    body = json.dumps(EVENT).encode()
    plain = {**sandbox.headers("acme-ingest"), "Content-Type": "text/plain"}
    charset = {**sandbox.headers("acme-ingest"), "Content-Type": "application/json; charset=utf-8"}
    assert (await _post_raw(sandbox, body, plain)).status_code == 415
    assert (await _post_raw(sandbox, body, charset)).status_code == 202


async def test_precedence_auth_before_routing_and_body(sandbox: Sandbox) -> None:
    """Size beats auth, auth beats an unknown stream, routing beats content type and body."""
    no_auth = {"Amperity-Tenant": ACME, "Content-Type": "text/plain"}
    assert (await _post_raw(sandbox, _event_of_size(70_000), no_auth)).status_code == 413
    assert (await _post_raw(sandbox, b"[", no_auth, "esm-nope")).status_code == 401
    wrong_type = {**sandbox.headers("acme-ingest"), "Content-Type": "text/plain"}
    assert (await _post_raw(sandbox, b"[", wrong_type, "esm-nope")).status_code == 404
    assert (await _post_raw(sandbox, b"[", wrong_type)).status_code == 415
    json_type = _json_headers(sandbox)
    assert (await _post_raw(sandbox, b"[", json_type, REJECT_STREAM)).status_code == 400


async def test_unmatched_source_is_accepted_but_routed_to_unknown(sandbox: Sandbox) -> None:
    """A wrong source is still 202, lands in _unknown and never reaches a profile."""
    event = {"source": "datafly", "type": "purchase", "cookieid": "anon_lost", "value": 10}
    assert (await sandbox.post_event(event)).status_code == 202
    await sandbox.client.post("/_sandbox/flush")
    events = (await sandbox.client.get("/_sandbox/events", params={"stream": STREAM})).json()
    assert events["events"][-1]["routed_to"] == "_unknown"
    assert events["events"][-1]["body"] == event
    assert (await sandbox.lookup(device_cookie="anon_lost")).status_code == 404


async def test_matched_source_is_routed_to_the_stream_target(sandbox: Sandbox) -> None:
    """An event matching the routing expression is routed to the stream's target."""
    await sandbox.post_event(EVENT)
    events = (await sandbox.client.get("/_sandbox/events", params={"stream": STREAM})).json()
    assert [e["routed_to"] for e in events["events"]] == ["DataflyEvent"]


async def test_tenants_are_isolated(sandbox: Sandbox) -> None:
    """Globex's ingest key works on its own stream and is refused for acme."""
    response = await sandbox.client.post(
        f"/prof/events/{GLOBEX_STREAM}",
        json=EVENT,
        headers=sandbox.headers("globex-ingest", GLOBEX),
    )
    assert response.status_code == 202
    assert (await sandbox.post_event(EVENT, key_name="globex-ingest")).status_code == 403


def _event_of_size(size: int) -> bytes:
    skeleton = json.dumps({"source": "DATAFLY", "type": "page", "pad": ""}).encode()
    return skeleton.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(skeleton)) + b'"')


async def test_unknown_paths_and_methods_answer_in_amperitys_error_shape(
    sandbox: Sandbox,
) -> None:
    """A GET on the ingest path is 405 and an unknown path 404, both with the error body."""
    wrong_method = await sandbox.client.get(f"/prof/events/{STREAM}")
    unknown = await sandbox.client.get("/prof/nothing")
    assert (wrong_method.status_code, unknown.status_code) == (405, 404)
    assert set(wrong_method.json()) == {"status", "message", "request_id", "trace_id"}
    assert unknown.json()["status"] == 404


async def test_a_404_or_405_of_the_router_says_what_to_send_instead(sandbox: Sandbox) -> None:
    """Not Starlette's bare "405: Method Not Allowed": the methods taken, the paths served."""
    wrong_method = await sandbox.client.get(f"/prof/events/{STREAM}")
    assert (
        wrong_method.json()["message"]
        == f"GET /prof/events/{STREAM}: this path takes POST, not GET"
    )
    unknown = (await sandbox.client.get("/prof/nothing")).json()["message"]
    assert unknown.startswith("GET /prof/nothing: no such path;")
    assert "/prof/lookup/{collection_id}/keychain" in unknown


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/prof/lookup/apc-vPsQheAm/keychain", "GET, HEAD, POST"),
        ("PUT", "/prof/profiles/apc-vPsQheAm/p-a11ce0000001", "GET, HEAD"),
        ("PUT", "/_sandbox/faults", "DELETE, GET, HEAD, POST"),
        ("GET", "/_sandbox/flush", "POST"),
    ],
)
async def test_a_405_of_the_router_lists_every_method_of_the_path_in_one_order(
    sandbox: Sandbox, method: str, path: str, allowed: str
) -> None:
    """Allow and the message list the path's methods sorted, the same in every process."""
    response = await sandbox.client.request(method, path)
    assert (response.status_code, response.headers["allow"]) == (405, allowed)
    assert response.json()["message"] == f"{method} {path}: this path takes {allowed}, not {method}"


async def test_a_405_names_the_allowed_methods_and_a_trailing_slash_is_404_not_a_redirect(
    sandbox: Sandbox,
) -> None:
    """405 carries Allow; /prof/events/{id}/ is an Amperity-shaped 404, not a 307 elsewhere."""
    wrong_method = await sandbox.client.get(f"/prof/events/{STREAM}")
    assert wrong_method.headers["allow"] == "POST"
    trailing = await sandbox.client.post(
        f"/prof/events/{STREAM}/", json=EVENT, headers=_json_headers(sandbox)
    )
    assert trailing.status_code == 404
    assert set(trailing.json()) == {"status", "message", "request_id", "trace_id"}
    assert "location" not in trailing.headers
