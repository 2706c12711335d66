"""Inspector and controls over ASGI: request log, events, stats, reset, tokens, faults."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from amperity_signal.amperity.retry import parse_retry_after
from amperity_signal.sandbox import edge
from amperity_signal.sandbox.edge import ConnectionDropped
from amperity_signal.sandbox.testing import (
    ACME,
    ACME_DROP_STREAM,
    ACME_REJECT_STREAM,
    ACME_STREAM,
    GLOBEX,
    GLOBEX_STREAM,
    InProcessSandbox,
)
from amperity_signal.sandbox.tokens import fingerprint, verify_token
from tests.support import until_held

EVENT = {"source": "DATAFLY", "type": "page", "cookieid": "anon_i"}


async def test_request_log_records_headers_but_never_the_token(sandbox: InProcessSandbox) -> None:
    """The request log keeps method, path, status and headers, with the token fingerprinted."""
    await sandbox.post_event(EVENT)
    records = (await sandbox.client.get("/_sandbox/requests")).json()["requests"]
    assert len(records) == 1
    record = records[0]
    token = sandbox.tokens["acme-ingest"]
    assert (record["method"], record["path"], record["status"]) == (
        "POST",
        f"/prof/events/{ACME_STREAM}",
        202,
    )
    assert record["headers"]["authorization"] == f"Bearer <fp:{fingerprint(token)}>"
    assert record["headers"]["amperity-tenant"] == "acme"
    everything = json.dumps((await sandbox.client.get("/_sandbox/requests")).json())
    assert token not in everything
    assert token.split(".")[2] not in everything


async def test_request_log_filters_by_prefix_tenant_and_limit(sandbox: InProcessSandbox) -> None:
    """path_prefix, tenant and limit narrow the request log."""
    await sandbox.post_event(EVENT)
    await sandbox.post_event(EVENT)
    await sandbox.lookup(customer_id="cust-1001")
    await sandbox.client.post(
        f"/prof/events/{GLOBEX_STREAM}",
        json=EVENT,
        headers=sandbox.headers("globex-ingest", GLOBEX),
    )
    log = "/_sandbox/requests"
    events = (await sandbox.client.get(log, params={"path_prefix": "/prof/events/"})).json()
    assert len(events["requests"]) == 3
    globex = (await sandbox.client.get(log, params={"tenant": GLOBEX})).json()
    assert [r["path"] for r in globex["requests"]] == [f"/prof/events/{GLOBEX_STREAM}"]
    last = (await sandbox.client.get(log, params={"limit": "1"})).json()
    assert [r["tenant"] for r in last["requests"]] == [GLOBEX]


async def test_a_limit_that_is_no_positive_whole_number_is_a_400_naming_it(
    sandbox: InProcessSandbox,
) -> None:
    """``-1``, ``abc``, ``1.5``, ``0``, ``²`` or blank: 400 naming ``limit``, for both logs.

    They silently showed the default 1000 records, as if asked for; a 5000-digit limit
    (everything) is still a 200, never a 500.
    """
    await sandbox.post_event(EVENT)
    for path in ("/_sandbox/requests", "/_sandbox/events"):
        for limit in ("-1", "abc", "1.5", "0", "00", "\u00b2", ""):
            response = await sandbox.client.get(path, params={"limit": limit})
            assert response.status_code == 400, (path, limit)
            message = response.json()["message"]
            assert message.startswith("limit must be a whole number of 1 or more"), message
        response = await sandbox.client.get(path, params={"limit": "9" * 5000})
        assert response.status_code == 200
        assert len(next(iter(response.json().values()))) == 1


async def test_stats_count_by_kind_status_and_tenant(sandbox: InProcessSandbox) -> None:
    """Stats count requests by kind, by status and per tenant."""
    await sandbox.post_event(EVENT)
    await sandbox.post_event(EVENT, key_name="acme-profile")
    await sandbox.lookup(customer_id="cust-1001")
    stats = (await sandbox.client.get("/_sandbox/stats")).json()
    assert stats["total"] == 3
    assert stats["by_kind"] == {"events": 2, "lookup": 1}
    assert stats["by_status"] == {"200": 1, "202": 1, "403": 1}
    assert stats["tenants"]["acme"]["total"] == 3
    assert stats["pending_updates"] == 1


async def test_reset_restores_the_data_files_state(sandbox: InProcessSandbox) -> None:
    """Reset forgets new profiles, requests, events, faults and stats."""
    await sandbox.post_event(EVENT)
    await sandbox.flush()
    await sandbox.client.post("/_sandbox/faults", json={"status": 503})
    assert (await sandbox.lookup(device_cookie="anon_i")).status_code == 503
    await sandbox.client.post("/_sandbox/reset")
    assert (await sandbox.client.get("/_sandbox/faults")).json() == {"faults": []}
    assert (await sandbox.client.get("/_sandbox/events")).json() == {"events": []}
    assert (await sandbox.lookup(device_cookie="anon_i")).status_code == 404
    stats = (await sandbox.client.get("/_sandbox/stats")).json()
    assert stats["total"] == 1


async def test_token_endpoint_mints_valid_and_expired_tokens(sandbox: InProcessSandbox) -> None:
    """POST /_sandbox/tokens mints tokens; a negative ttl gives one that is refused with 401."""
    minted = await sandbox.client.post(
        "/_sandbox/tokens", json={"tenant": "acme", "scopes": ["stream:write"], "ttl_seconds": 60}
    )
    token = minted.json()["token"]
    claims = verify_token(sandbox.state.data.signing_secret, token, sandbox.clock.now)
    assert claims.scopes == {"stream:write"}
    expired = await sandbox.client.post(
        "/_sandbox/tokens", json={"tenant": "acme", "scopes": ["stream:write"], "ttl_seconds": -5}
    )
    headers = {"Amperity-Tenant": "acme", "Authorization": f"Bearer {expired.json()['token']}"}
    response = await sandbox.client.post(f"/prof/events/{ACME_STREAM}", json=EVENT, headers=headers)
    assert response.status_code == 401
    bad = await sandbox.client.post("/_sandbox/tokens", json={"tenant": "acme", "scopes": "x"})
    assert bad.status_code == 400


async def test_a_ttl_no_float_can_hold_is_400_and_such_a_token_is_401(
    sandbox: InProcessSandbox,
) -> None:
    """A ttl_seconds of 10**400 is refused when minting; a token carrying such an exp gets 401."""
    body = b'{"tenant": "acme", "scopes": ["stream:write"], "ttl_seconds": 1' + b"0" * 400 + b"}"
    minted = await sandbox.client.post("/_sandbox/tokens", content=body)
    assert minted.status_code == 400
    assert "ttl_seconds" in minted.json()["message"]
    huge = sandbox.mint(ACME, ["stream:write"], ttl=10**400)
    headers = {"Amperity-Tenant": ACME, "Authorization": f"Bearer {huge}"}
    response = await sandbox.client.post(f"/prof/events/{ACME_STREAM}", json=EVENT, headers=headers)
    assert response.status_code == 401


async def test_status_fault_with_count_and_retry_after(sandbox: InProcessSandbox) -> None:
    """A 503 fault limited to 2 requests answers 503 with Retry-After twice, then clears."""
    added = await sandbox.client.post(
        "/_sandbox/faults", json={"status": 503, "count": 2, "retry_after": 3, "kind": "events"}
    )
    assert added.json()["fault"]["id"] == 1
    statuses = [(await sandbox.post_event(EVENT)) for _ in range(3)]
    assert [r.status_code for r in statuses] == [503, 503, 202]
    assert statuses[0].headers["retry-after"] == "3"
    assert set(statuses[0].json()) == {"status", "message", "request_id", "trace_id"}
    assert (await sandbox.client.get("/_sandbox/faults")).json() == {"faults": []}


@pytest.mark.parametrize(("configured", "sent"), [(0.5, "1"), (2.2, "3"), (4, "4"), (0, "0")])
async def test_a_fractional_retry_after_is_sent_as_whole_seconds_rounded_up(
    sandbox: InProcessSandbox, configured: float, sent: str
) -> None:
    """Retry-After is delta-seconds: 0.5 goes out as "1", never "0.5", and is listed so."""
    fault = {"burst_429": 1, "retry_after": configured}
    added = await sandbox.client.post("/_sandbox/faults", json=fault)
    assert added.json()["fault"]["retry_after"] == int(sent)
    response = await sandbox.post_event(EVENT)
    assert (response.status_code, response.headers["retry-after"]) == (429, sent)
    assert parse_retry_after(response.headers["retry-after"], None, 0.0) == float(sent)


async def test_an_injected_405_carries_allow_with_the_methods_of_the_path(
    sandbox: InProcessSandbox,
) -> None:
    """HTTP requires Allow on every 405: an injected one lists what the path takes."""
    await sandbox.client.post("/_sandbox/faults", json={"status": 405, "count": 3})
    event = await sandbox.post_event(EVENT)
    lookup = await sandbox.lookup(customer_id="cust-1001")
    unknown = await sandbox.client.get("/prof/nothing")
    assert [r.status_code for r in (event, lookup, unknown)] == [405, 405, 405]
    assert event.headers["allow"] == "POST"
    assert lookup.headers["allow"] == "GET, HEAD, POST"
    # A path the sandbox does not serve takes no method: Allow is there, and empty.
    assert unknown.headers["allow"] == ""
    assert set(event.json()) == {"status", "message", "request_id", "trace_id"}


async def test_an_injected_426_carries_upgrade_naming_the_protocols_to_switch_to(
    sandbox: InProcessSandbox,
) -> None:
    """HTTP requires Upgrade on every 426 (RFC 9110, 15.5.22), and Connection: Upgrade with it."""
    await sandbox.client.post("/_sandbox/faults", json={"status": 426, "count": 2})
    event = await sandbox.post_event(EVENT)
    lookup = await sandbox.lookup(customer_id="cust-1001")
    for response in (event, lookup):
        assert response.status_code == 426
        assert response.headers["upgrade"] == "TLS/1.2, HTTP/1.1"
        assert response.headers["connection"].lower() == "upgrade"
        assert set(response.json()) == {"status", "message", "request_id", "trace_id"}
    # Any other injected status has no Upgrade.
    await sandbox.client.post("/_sandbox/faults", json={"status": 503, "count": 1})
    assert "upgrade" not in (await sandbox.post_event(EVENT)).headers


async def test_faults_match_kind_and_tenant(sandbox: InProcessSandbox) -> None:
    """A lookup fault for globex leaves acme lookups and events alone."""
    await sandbox.client.post(
        "/_sandbox/faults", json={"status": 500, "tenant": GLOBEX, "kind": "lookup"}
    )
    assert (await sandbox.lookup(customer_id="cust-1001")).status_code == 200
    assert (await sandbox.post_event(EVENT)).status_code == 202
    response = await sandbox.client.get(
        "/prof/lookup/apc-Gx8bPrf2Q/keychain",
        params={"device_cookie": "globex_anon_01"},
        headers=sandbox.headers("globex-profile", GLOBEX),
    )
    assert response.status_code == 500


async def test_burst_429_answers_the_next_n_requests(sandbox: InProcessSandbox) -> None:
    """burst_429 = 3 throttles exactly the next three requests, and stats count them."""
    await sandbox.client.post("/_sandbox/faults", json={"burst_429": 3})
    statuses = [(await sandbox.post_event(EVENT)).status_code for _ in range(4)]
    assert statuses == [429, 429, 429, 202]
    stats = (await sandbox.client.get("/_sandbox/stats")).json()
    assert stats["throttled"] == 3
    assert stats["tenants"]["acme"]["throttled"] == 3


async def test_partial_rate_fault_is_seeded_and_partial(sandbox: InProcessSandbox) -> None:
    """A 30% fault fires on some but not all of 100 requests."""
    await sandbox.client.post("/_sandbox/faults", json={"status": 502, "rate": 0.3})
    statuses = [(await sandbox.post_event(EVENT)).status_code for _ in range(100)]
    assert 10 < statuses.count(502) < 60
    assert statuses.count(502) + statuses.count(202) == 100


async def test_latency_fault_delays_the_answer(sandbox: InProcessSandbox) -> None:
    """latency_ms delays matching requests."""
    await sandbox.client.post("/_sandbox/faults", json={"latency_ms": 150, "count": 1})
    started = time.perf_counter()
    assert (await sandbox.post_event(EVENT)).status_code == 202
    assert time.perf_counter() - started >= 0.14


async def _held_event(
    sandbox: InProcessSandbox, event: dict[str, str] = EVENT
) -> asyncio.Task[httpx.Response]:
    """POST ``event`` under a one-use hold fault; return once the sandbox holds it."""
    fault = {"hold": True, "kind": "events", "count": 1}
    assert (await sandbox.client.post("/_sandbox/faults", json=fault)).status_code == 200
    held = asyncio.create_task(sandbox.post_event(event))
    await until_held(sandbox.client, held)
    return held


async def test_a_hold_fault_keeps_the_request_until_released(sandbox: InProcessSandbox) -> None:
    """``hold`` keeps a request in flight until ``POST /_sandbox/release``, then it goes on."""
    held = await _held_event(sandbox)
    for _ in range(20):  # other requests are answered meanwhile; the held one waits
        assert (await sandbox.client.get("/_sandbox/stats")).status_code == 200
    assert not held.done()

    released = await sandbox.client.post("/_sandbox/release")

    assert (released.status_code, released.json()) == (200, {"released": 1})
    assert (await asyncio.wait_for(held, 30)).status_code == 202
    [record] = (await sandbox.client.get("/_sandbox/requests")).json()["requests"]
    assert record["status"] == 202
    assert len((await sandbox.client.get("/_sandbox/events")).json()["events"]) == 1


async def test_a_request_is_listed_in_flight_from_its_arrival_until_it_is_journaled(
    sandbox: InProcessSandbox,
) -> None:
    """``GET /_sandbox/in_flight`` names a held event by its message_id; answered, it is gone.

    A test waiting for its calls to be at the sandbox had only a fixed sleep to go by
    (``test_restarts``): the journal has a request only once it is answered.
    """
    held = await _held_event(sandbox, {**EVENT, "message_id": "msg-in-flight"})
    [arrived] = (await sandbox.client.get("/_sandbox/in_flight")).json()["requests"]
    assert (arrived["message_id"], arrived["kind"], arrived["tenant"]) == (
        "msg-in-flight",
        "events",
        ACME,
    )
    assert "status" not in arrived  # nothing is answered yet
    assert arrived["headers"]["authorization"].startswith("Bearer <fp:")
    assert (await sandbox.client.get("/_sandbox/requests")).json()["requests"] == []

    await sandbox.client.post("/_sandbox/release")

    assert (await asyncio.wait_for(held, 30)).status_code == 202
    assert (await sandbox.client.get("/_sandbox/in_flight")).json() == {"requests": []}
    [journaled] = (await sandbox.client.get("/_sandbox/requests")).json()["requests"]
    assert journaled["request_id"] == arrived["request_id"]


async def test_a_request_is_journaled_and_counted_before_its_answer_goes_out(
    sandbox: InProcessSandbox,
) -> None:
    """When the answer's status goes to the server, the journal and stats already have it.

    Until session 27 the sandbox journaled a request once its answer was written out: a
    client that read the journal right after its 202 (a real server answers it before the
    app returns) could find nothing there. A cut body is counted when it is cut.
    """
    at_answer: list[tuple[list[tuple[str | None, int, bool]], int]] = []

    async def watching(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                journal = sandbox.state.requests.items()
                seen = [(r.message_id, r.status, r.body_cut) for r in journal]
                at_answer.append((seen, sandbox.state.stats.to_json()["total"]))
            await send(message)

        await sandbox.app(scope, receive, send_watched)

    headers = sandbox.headers("acme-ingest")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=watching), base_url="http://sandbox"
    ) as client:
        fault = {"cut_body_rate": 1.0, "count": 1, "kind": "events"}
        await sandbox.client.post("/_sandbox/faults", json=fault)
        with pytest.raises(ConnectionDropped):  # the cut, outside a real server
            await client.post(
                f"/prof/events/{ACME_STREAM}",
                json={**EVENT, "message_id": "m-cut"},
                headers=headers,
            )
        answered = await client.post(
            f"/prof/events/{ACME_STREAM}", json={**EVENT, "message_id": "m-1"}, headers=headers
        )

    assert answered.status_code == 202
    assert at_answer == [
        ([("m-cut", 202, False)], 1),
        ([("m-cut", 202, True), ("m-1", 202, False)], 2),
    ]
    stats = (await sandbox.client.get("/_sandbox/stats")).json()
    assert (stats["total"], stats["body_cut"], stats["tenants"][ACME]["body_cut"]) == (2, 1, 1)


async def test_release_with_nothing_held_releases_nothing(sandbox: InProcessSandbox) -> None:
    """Releasing when no request is held is fine: 200, ``released`` 0, nothing else changes."""
    await sandbox.client.post("/_sandbox/faults", json={"status": 503, "count": 1})

    released = await sandbox.client.post("/_sandbox/release")

    assert (released.status_code, released.json()) == (200, {"released": 0})
    assert len((await sandbox.client.get("/_sandbox/faults")).json()["faults"]) == 1
    assert (await sandbox.post_event(EVENT)).status_code == 503


async def test_reset_releases_the_held_requests(sandbox: InProcessSandbox) -> None:
    """A reset removes the hold faults, so it lets the requests they held go on too."""
    held = await _held_event(sandbox)

    await sandbox.client.post("/_sandbox/reset")

    assert (await asyncio.wait_for(held, 30)).status_code == 202


async def test_a_forgotten_hold_lets_the_request_go_at_its_limit(
    sandbox: InProcessSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing releases it: the request goes on after ``HOLD_LIMIT_SECONDS`` (120 s, here less)."""
    monkeypatch.setattr(edge, "HOLD_LIMIT_SECONDS", 0.05)
    await sandbox.client.post("/_sandbox/faults", json={"hold": True, "count": 1})

    answer = await asyncio.wait_for(sandbox.post_event(EVENT), 30)

    assert answer.status_code == 202
    assert (await sandbox.client.post("/_sandbox/release")).json() == {"released": 0}


async def test_a_hold_that_is_not_a_boolean_is_refused_naming_the_field(
    sandbox: InProcessSandbox,
) -> None:
    """``"hold": 1`` is a 400 saying what ``hold`` takes; ``"hold": false`` alone does nothing."""
    wrong = await sandbox.client.post("/_sandbox/faults", json={"hold": 1})
    idle = await sandbox.client.post("/_sandbox/faults", json={"hold": False})

    assert (wrong.status_code, wrong.json()["message"]) == (400, "hold: true or false, not 1")
    assert idle.status_code == 400
    assert "hold" in idle.json()["message"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"status": 503, "rate": NaN}', "rate: a number in 0..1, not NaN"),
        (
            b'{"latency_ms": 1e309}',
            "latency_ms: a number of milliseconds in 0..120000, not a number beyond a "
            "double's range",
        ),
        (
            b'{"status": 503, "count": 1.5}',
            "count: a whole number of requests in 1..1000000000, or null for no limit, not 1.5",
        ),
        (b'{"burst_429": 1e20}', "burst_429: a whole number of requests in 0..1000000, not 1e+20"),
        (b'{"status": "503"}', 'status: a whole number in 400..599, not "503"'),
        (
            b'{"status": 503, "\\udc00": 1}',
            "the body is not JSON the sandbox takes: a key in the object holds a lone surrogate",
        ),
    ],
)
async def test_a_fault_field_refused_is_named_with_what_it_takes_and_what_it_got(
    sandbox: InProcessSandbox, raw: bytes, message: str
) -> None:
    """A NaN, 1e309, 1.5 or 1e20 is a 400 naming its field, not "send a JSON object".

    The body was an object: the parser's refusal of one value was answered as if it were
    not, and "count: >= 1" answered a count of 1.5.
    """
    wrong = await sandbox.client.post(
        "/_sandbox/faults", content=raw, headers={"Content-Type": "application/json"}
    )

    assert wrong.status_code == 400
    assert wrong.json()["message"].startswith(message)
    assert (await sandbox.client.get("/_sandbox/faults")).json()["faults"] == []


async def test_an_unknown_fault_field_is_refused_with_the_field_it_is_a_slip_from(
    sandbox: InProcessSandbox,
) -> None:
    """``latency`` for ``latency_ms``: a 400 naming both, and every field a fault takes."""
    wrong = await sandbox.client.post("/_sandbox/faults", json={"latency": 500, "colour": 1})

    assert wrong.status_code == 400
    message = wrong.json()["message"]
    assert message.startswith(
        "unknown fault fields: ['colour', 'latency'] (did you mean: latency -> latency_ms?); "
        "the fields are status, "
    )
    assert "oversized_body" in message
    assert (await sandbox.client.get("/_sandbox/faults")).json()["faults"] == []


async def test_drop_fault_outside_a_server_raises_connection_dropped(
    sandbox: InProcessSandbox,
) -> None:
    """In process a drop fault surfaces as ConnectionDropped and is logged as dropped."""
    await sandbox.client.post("/_sandbox/faults", json={"drop_rate": 1.0, "count": 1})
    with pytest.raises(ConnectionDropped):
        await sandbox.post_event(EVENT)
    record = (await sandbox.client.get("/_sandbox/requests")).json()["requests"][-1]
    assert (record["status"], record["dropped"]) == (0, True)


async def test_cut_body_fault_outside_a_server_raises_connection_dropped(
    sandbox: InProcessSandbox,
) -> None:
    """In process a cut-body fault surfaces as ConnectionDropped, the 202 logged as cut."""
    await sandbox.client.post("/_sandbox/faults", json={"cut_body_rate": 1.0, "count": 1})
    with pytest.raises(ConnectionDropped):
        await sandbox.post_event(EVENT)
    record = (await sandbox.client.get("/_sandbox/requests")).json()["requests"][-1]
    assert (record["status"], record["body_cut"]) == (202, True)


async def test_each_event_post_is_logged_with_its_message_id_whatever_the_answer(
    sandbox: InProcessSandbox,
) -> None:
    """Accepted, cut, injected 503, dropped: every event POST names its message_id."""
    events = [{**EVENT, "message_id": f"m-{n}"} for n in range(4)]
    await sandbox.post_event(events[0])
    await sandbox.client.post("/_sandbox/faults", json={"cut_body_rate": 1.0, "count": 1})
    with pytest.raises(ConnectionDropped):
        await sandbox.post_event(events[1])
    await sandbox.client.post("/_sandbox/faults", json={"status": 503, "count": 1})
    await sandbox.post_event(events[2])
    await sandbox.client.post("/_sandbox/faults", json={"drop_rate": 1.0, "count": 1})
    with pytest.raises(ConnectionDropped):
        await sandbox.post_event(events[3])

    records = (await sandbox.client.get("/_sandbox/requests")).json()["requests"]
    assert [(r["message_id"], r["status"], r["body_cut"]) for r in records] == [
        ("m-0", 202, False),
        ("m-1", 202, True),
        ("m-2", 503, False),
        ("m-3", 0, False),
    ]
    token = sandbox.headers("acme-ingest")["Authorization"].split(" ", 1)[1]
    assert token not in json.dumps(records)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"source": "DATAFLY"}', None),
        (b'{"message_id": 42}', None),
        (b'[{"message_id": "m-array"}]', None),
        (b"not json", None),
        (b'{"message_id": "' + b"x" * 300 + b'"}', "x" * 200),
    ],
    ids=["absent", "not-a-string", "array", "not-json", "long"],
)
async def test_a_message_id_is_only_a_string_at_the_top_of_an_object_and_kept_short(
    sandbox: InProcessSandbox, body: bytes, expected: str | None
) -> None:
    """No message_id is made up: absent, non-string or unparseable gives null; long is cut."""
    headers = {**sandbox.headers("acme-ingest"), "Content-Type": "application/json"}
    await sandbox.client.post(f"/prof/events/{ACME_STREAM}", content=body, headers=headers)

    record = (await sandbox.client.get("/_sandbox/requests")).json()["requests"][-1]
    assert record["message_id"] == expected


async def test_a_lookup_has_no_message_id(sandbox: InProcessSandbox) -> None:
    """Only event POSTs carry one: a lookup's record says null."""
    await sandbox.lookup(device_cookie="anon_alice_01")

    record = (await sandbox.client.get("/_sandbox/requests")).json()["requests"][-1]
    assert (record["kind"], record["message_id"]) == ("lookup", None)


async def test_accept_status_answers_an_accepted_event_with_an_undocumented_2xx(
    sandbox: InProcessSandbox,
) -> None:
    """accept_status 200: the event is taken and published, answered 200 instead of 202."""
    await sandbox.client.post("/_sandbox/faults", json={"accept_status": 200, "count": 1})

    first = await sandbox.post_event({**EVENT, "message_id": "m-200"})
    second = await sandbox.post_event({**EVENT, "message_id": "m-202"})

    assert (first.status_code, second.status_code) == (200, 202)
    events = (await sandbox.client.get("/_sandbox/events")).json()["events"]
    assert [e["body"]["message_id"] for e in events] == ["m-200", "m-202"]
    records = (await sandbox.client.get("/_sandbox/requests")).json()["requests"]
    assert [r["status"] for r in records] == [200, 202]


async def test_accept_status_leaves_a_drop_streams_204_and_refusals_alone(
    sandbox: InProcessSandbox,
) -> None:
    """Only a 202 is rewritten: a drop stream's 204 and a reject stream's 409 go out as is."""
    await sandbox.client.post("/_sandbox/faults", json={"accept_status": 201})

    dropped = await sandbox.post_event(EVENT, stream=ACME_DROP_STREAM)
    rejected = await sandbox.post_event(EVENT, stream=ACME_REJECT_STREAM)

    assert (dropped.status_code, rejected.status_code) == (204, 409)


@pytest.mark.parametrize(
    "fault",
    [
        {},
        {"status": 200},
        {"status": 503, "rate": 2},
        {"kind": "batch", "status": 503},
        {"bogus": 1},
        {"status": 503, "retry_after": -1},
        {"status": 503, "retry_after": "2"},
        {"cut_body_rate": 1.5},
        {"cut_body_rate": True},
        {"accept_status": 202},
        {"accept_status": 204},
        {"accept_status": 300},
        {"accept_status": 200.0},
    ],
)
async def test_invalid_faults_are_400(sandbox: InProcessSandbox, fault: dict[str, object]) -> None:
    """A fault that does nothing or has a bad field is refused with 400."""
    response = await sandbox.client.post("/_sandbox/faults", json=fault)
    assert response.status_code == 400


async def test_delete_clears_all_faults(sandbox: InProcessSandbox) -> None:
    """DELETE /_sandbox/faults removes every active fault."""
    await sandbox.client.post("/_sandbox/faults", json={"status": 503})
    await sandbox.client.post("/_sandbox/faults", json={"latency_ms": 1})
    assert (await sandbox.client.delete("/_sandbox/faults")).json() == {"cleared": 2}
    assert (await sandbox.post_event(EVENT)).status_code == 202


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
async def test_an_oversized_body_fault_keeps_the_status_and_sends_that_many_bytes(
    sandbox: InProcessSandbox, gzipped: bool
) -> None:
    """oversized_body: the 202 with 3 MiB of spaces instead of its body, gzipped if asked."""
    size = 3 * 1024 * 1024 + 5
    fault = {"oversized_body": size, "oversized_gzip": gzipped, "count": 1, "kind": "events"}
    added = await sandbox.client.post("/_sandbox/faults", json=fault)
    assert added.json()["fault"]["oversized_body"] == size

    response = await sandbox.post_event(EVENT)

    assert response.status_code == 202
    assert response.content == b" " * size  # httpx decodes the gzip here
    sent = int(response.headers["content-length"])
    assert sent < size // 100 if gzipped else sent == size
    assert response.headers.get("content-encoding") == ("gzip" if gzipped else None)
    assert response.headers["content-type"] == "application/json"  # the answer's own, kept
    assert (await sandbox.post_event(EVENT)).json()["status"] == 202  # count 1: used up


async def test_an_oversized_body_fault_leaves_a_bodiless_204_as_it_is(
    sandbox: InProcessSandbox,
) -> None:
    """A 204 may carry no body: it goes out without one, and without a Content-Length."""
    added = await sandbox.client.post("/_sandbox/faults", json={"oversized_body": 4096})
    assert added.status_code == 200

    dropped = await sandbox.post_event(EVENT, stream=ACME_DROP_STREAM)

    assert (dropped.status_code, dropped.content) == (204, b"")
    assert "content-length" not in dropped.headers


@pytest.mark.parametrize(
    ("fault", "named"),
    [
        ({"oversized_body": 0}, "oversized_body: a size in bytes"),
        ({"oversized_body": True}, "oversized_body: a size in bytes"),
        ({"oversized_body": 2**31}, "oversized_body: a size in bytes"),
        ({"oversized_gzip": True}, "oversized_gzip: true or false, with oversized_body"),
        ({"oversized_body": 10, "oversized_gzip": 1}, "oversized_gzip: true or false"),
    ],
)
async def test_an_invalid_oversized_body_fault_is_400_naming_the_field(
    sandbox: InProcessSandbox, fault: dict[str, object], named: str
) -> None:
    """A size out of 1..1 GiB, or gzip without a size, is refused saying what to send."""
    response = await sandbox.client.post("/_sandbox/faults", json=fault)

    assert response.status_code == 400
    assert named in response.json()["message"]
