"""/v1/batch in front of the real service, its sandbox for Amperity: what each event is told.

The sandbox's journal counts what reached Amperity, against what the batch answered and
what datafly.js does with each answer (``datafly_source``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from amperity_signal.gateway.settings import DATAFLY_SEND_TIMEOUT, GatewaySettings
from tests.contract.harness import SANDBOX_URL
from tests.support import OutageStore
from tests.unit.enrich.enrich_fakes import FakeClock

from .datafly_source import not_sent_code, retryable_codes, send_timeout_seconds
from .realservice import Stack, real_stack

KEY = {"X-Pipeline-Key": "pk_web"}


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """The real service behind the gateway, its sandbox for Amperity."""
    async with real_stack(OutageStore(), FakeClock()) as running:
        yield running


def inspector(stack: Stack) -> httpx.AsyncClient:
    """A client of the sandbox's controls and journal."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.sandbox), base_url=SANDBOX_URL)


async def journal(stack: Stack) -> list[str]:
    """The message_id of every event the sandbox accepted, in the order it did."""
    async with inspector(stack) as sandbox:
        answer = await sandbox.get("/_sandbox/events", params={"limit": 10_000})
    answer.raise_for_status()
    return [event["body"].get("message_id", "") for event in answer.json()["events"]]


async def set_fault(stack: Stack, **fault: Any) -> None:
    """Replace the sandbox's faults with this one (none when empty); the journal stays."""
    async with inspector(stack) as sandbox:
        (await sandbox.delete("/_sandbox/faults")).raise_for_status()
        if fault:
            (await sandbox.post("/_sandbox/faults", json=fault)).raise_for_status()


def event(message_id: str, **fields: Any) -> dict[str, Any]:
    """A track event of the batch."""
    return {"event": "Product Viewed", "anonymousId": "anon-b", "messageId": message_id, **fields}


@pytest.mark.parametrize("status", [401, 403, 404, 409])
async def test_an_event_amperity_refuses_for_the_integration_is_final(
    stack: Stack, status: int
) -> None:
    """401, 403, a missing (404) or rejecting (409) stream: UPSTREAM_REFUSED, never resent.

    They were UPSTREAM_ERROR, which datafly.js sends again twice: three refused requests
    for each event, to an integration only an operator can mend.
    """
    await set_fault(stack, status=status, kind="events")
    answer = await stack.client.post("/v1/batch", json={"batch": [event("r-1")]}, headers=KEY)
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert (result["ok"], result["code"]) == (False, "UPSTREAM_REFUSED")
    assert result["code"] not in retryable_codes()
    assert await journal(stack) == []


@pytest.mark.parametrize(
    ("route", "content_type"),
    [("/v1/batch", "application/json"), ("/v1/batch?pipeline_key=pk_web", "text/plain")],
    ids=["fetch", "beacon"],
)
async def test_a_value_json_to_protobuf_cannot_carry_fails_its_event_alone(
    stack: Stack, route: str, content_type: str
) -> None:
    """An order id beyond 2^53, a string cut through an emoji: that event fails, named.

    One such value anywhere made the whole batch (and the pagehide beacon) a 400
    INVALID_JSON, and datafly.js dropped every event of it, the good ones too.
    """
    batch = [
        event("good-0"),
        event("unsafe-1", properties={"order_id": 2**53 + 1}),
        event("cut-2", properties={"title": "Gift \ud83c"}),
        event("good-3"),
        event("\udc00", properties={"nested": [{"deep": -(10**400)}]}),
    ]
    body = json.dumps({"batch": batch})  # ASCII: the lone surrogates as \\u escapes
    headers = {"Content-Type": content_type, **({} if "?" in route else KEY)}
    answer = await stack.client.post(route, content=body, headers=headers)

    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [(r["messageId"], r["ok"], r.get("field")) for r in results] == [
        ("good-0", True, None),
        ("unsafe-1", False, "batch[1].properties.order_id"),
        ("cut-2", False, "batch[2].properties.title"),
        ("good-3", True, None),
        ("\\udc00", False, "batch[4].messageId"),
    ]
    assert {r["code"] for r in results if not r["ok"]} == {"INVALID_JSON"}
    assert results[1]["error"] == (
        "batch[1].properties.order_id: integers beyond ±2^53 lose precision; send it as a string."
    )
    assert "INVALID_JSON" not in retryable_codes()
    assert sorted(await journal(stack)) == ["good-0", "good-3"]


@pytest.mark.parametrize(
    "body",
    [b'{"batch": [{"event": "x"}', b'{"batch": [], "sentAt": "\\ud800"}', b"\xff"],
    ids=["cut", "envelope", "not-utf8"],
)
async def test_a_body_that_is_not_json_or_whose_envelope_is_refused_fails_whole(
    stack: Stack, body: bytes
) -> None:
    """Bad syntax, a refused value outside the events, bytes not UTF-8: 400 INVALID_JSON."""
    answer = await stack.client.post(
        "/v1/batch", content=body, headers={**KEY, "Content-Type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "INVALID_JSON"


async def test_a_message_id_repeated_in_a_batch_is_delivered_once_and_answered_alike(
    stack: Stack,
) -> None:
    """The same messageId three times in one batch: one event at Amperity, three answers.

    Each repeat was delivered too: Amperity kept every copy.
    """
    batch = [
        event("dup-1"),
        event("other-2"),
        event("dup-1", properties={"again": True}),
        event("dup-1"),
    ]
    answer = await stack.client.post("/v1/batch", json={"batch": batch}, headers=KEY)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "success": True,
        "results": [{"messageId": m, "ok": True} for m in ("dup-1", "other-2", "dup-1", "dup-1")],
    }
    assert sorted(await journal(stack)) == ["dup-1", "other-2"]


@contextlib.asynccontextmanager
async def slow_amperity(**gateway: float) -> AsyncIterator[Stack]:
    """The stack with these gateway settings, 2 Delivers at once, each event taking 0.5 s."""
    settings: dict[str, Any] = {"batch_concurrency": 2, **gateway}
    async with real_stack(OutageStore(), FakeClock(), gateway=settings) as stack:
        await set_fault(stack, latency_ms=500, kind="events")
        yield stack


async def answers(
    stack: Stack, batch: list[dict[str, Any]], accepts: list[str] | None = None
) -> list[dict[str, Any]]:
    """The results of a /v1/batch of these events, its body's ``accepts`` as given."""
    body = {"batch": batch} if accepts is None else {"batch": batch, "accepts": accepts}
    answer = await stack.client.post("/v1/batch", json=body, headers=KEY)
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


@pytest.mark.parametrize(
    ("accepts", "code"),
    [
        # datafly.js: NOT_SENT, which it sends again without counting an attempt.
        (["NOT_SENT"], "NOT_SENT"),
        # A sender that does not list it (datafly.js before NOT_SENT, another client):
        # DEADLINE_EXCEEDED, which every datafly.js sends again; NOT_SENT it would drop.
        (None, "DEADLINE_EXCEEDED"),
    ],
)
async def test_a_batch_slower_than_its_deadline_is_answered_in_time_and_resent_once(
    accepts: list[str] | None, code: str
) -> None:
    """Amperity slow: events whose turn comes too late are not sent, and are sent again once.

    The gateway delivered every event however long it took (100 events at 8 at once and
    5 s each: ~65 s), datafly.js gave up at 20 s and sent the whole batch again: every
    event delivered twice. Here the batch's deadline is 4 s, each Deliver's 2 s, and
    Amperity takes at least 0.5 s an event, two at a time: the 11th and later events' turn
    comes 2.5 s in or later, with less than a Deliver's 2 s left.
    """
    batch = [event(f"slow-{i}") for i in range(16)]
    async with slow_amperity(batch_deadline=4.0, deliver_timeout=2.0) as stack:
        results = await answers(stack, batch, accepts)
        sent = [r["messageId"] for r in results if r["ok"]]
        again = [batch[i] for i, r in enumerate(results) if not r["ok"]]
        assert sent
        assert again
        assert {r["code"] for r in results if not r["ok"]} == {code}
        # datafly.js sends them again
        assert code == not_sent_code() or code in retryable_codes()
        assert sorted(await journal(stack)) == sorted(sent)  # none of the others went

        await set_fault(stack)
        resent = await stack.client.post("/v1/batch", json={"batch": again}, headers=KEY)
        assert resent.json()["success"] is True
        assert sorted(await journal(stack)) == sorted(e["messageId"] for e in batch)


async def test_with_a_deliver_timeout_past_half_the_deadline_events_start_while_time_is_left() -> (
    None
):
    """deliver_timeout 5 s, batch deadline 2 s: later events start while 1 s is left.

    No event's whole Deliver fits in the batch's deadline; waiting for one that fits
    would have sent only the first two. Those whose turn comes later are not sent, rather
    than started with too little time, which the service fails, perhaps after sending.
    """
    batch = [event(f"long-{i}") for i in range(16)]
    async with slow_amperity(batch_deadline=2.0, deliver_timeout=5.0) as stack:
        results = await answers(stack, batch)
        sent = [r["messageId"] for r in results if r["ok"]]
        not_sent = {r["messageId"] for r in results if r.get("error", "").startswith("Not sent")}
        assert len(sent) > 2
        assert not_sent
        assert {r["code"] for r in results if not r["ok"]} == {"DEADLINE_EXCEEDED"}
        assert not set(await journal(stack)) & not_sent


def test_the_batch_deadline_is_below_the_time_datafly_js_waits_for_an_answer() -> None:
    """datafly.js's SEND_TIMEOUT_MS is the gateway's figure; a deadline at it is refused."""
    assert send_timeout_seconds() == DATAFLY_SEND_TIMEOUT
    assert GatewaySettings().batch_deadline < DATAFLY_SEND_TIMEOUT
    with pytest.raises(ValueError, match=r"batch_deadline must be below datafly\.js's 20 s"):
        GatewaySettings(batch_deadline=DATAFLY_SEND_TIMEOUT)
