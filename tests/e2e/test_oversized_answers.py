"""Answers whose body is over the client's 1 MiB cap, between real processes.

The sandbox's ``oversized_body`` fault sends an answer's status and headers with a body of
the given size instead of its own, gzip-encoded with ``oversized_gzip``. The service never
reads (or decodes) past 1 MiB: a 202 event is delivered once all the same, and a 200
lookup whose body decodes past the cap is no profile, not retried.
"""

from __future__ import annotations

import pytest

from tests.e2e.enrich_support import deliver, enrich, event, serve
from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e

ALICE = {"traits": {"email": "alice@example.com"}}
MIB = 1024 * 1024


async def test_a_lookup_answered_with_a_gzip_bomb_is_no_profile_and_not_retried(
    stack: Stack,
) -> None:
    """16 MiB of gzipped spaces (16 KB sent): no profile; the log says the decoding stopped."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox)
    fault = {"oversized_body": 16 * MIB, "oversized_gzip": True, "kind": "lookup", "count": 1}
    await sandbox.fault(**fault)

    response = await enrich(service, event("anon_bomb", **ALICE))

    assert not response.resolved
    failed = [w for w in response.warnings if w.startswith("partner resolve failed")]
    assert failed, response.warnings
    assert "AMPERITY_BAD_RESPONSE (HTTP 200: its body is too large to be a profile (" in failed[0]
    assert "Content-Encoding decodes past the 1,048,576-byte cap" in failed[0]
    lookups = await sandbox.requests(path_prefix="/prof/lookup/")
    assert [r["status"] for r in lookups] == [200]  # the same answer would come again
    logs = stack.logs()
    assert "Amperity answered 200 to the lookup request with a body too large to read" in logs
    assert "'gzip' Content-Encoding decodes past the 1,048,576-byte cap" in logs


async def test_a_202_with_an_oversized_body_is_delivered_once(stack: Stack) -> None:
    """A 202 with 8 MiB of body is Amperity's acceptance: Deliver succeeds, sent once."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox)
    await sandbox.fault(oversized_body=8 * MIB, kind="events", count=1)
    sent = event("anon_big_202")

    await deliver(service, sent)

    # The service has its answer from the headers alone; the sandbox journals the request
    # once it has written the 8 MiB after them (to a closed connection), a moment later.
    posts = await sandbox.journaled(path_prefix="/prof/events/")
    assert [(r["status"], r["message_id"]) for r in posts] == [(202, sent.message_id)]
    assert "Content-Length 8,388,608 bytes, over the 1,048,576-byte cap" in stack.logs()
