"""Answers whose body the sandbox cuts after the status line, between real processes.

The sandbox's ``cut_body_rate`` fault sends the status line and headers, then half the
body, then hangs up. A cut 202 event answer is Amperity's acceptance: Deliver succeeds
with a warning and the event is not sent again. A cut 200 lookup cannot be read, so it
is retried and enrichment still resolves the profile.
"""

from __future__ import annotations

import pytest

from tests.e2e.enrich_support import deliver, enrich, event, serve
from tests.e2e.stack import Stack
from tests.support import ALICE_PROFILE

pytestmark = pytest.mark.e2e

ALICE = {"traits": {"email": "alice@example.com"}}


async def test_a_202_whose_body_is_cut_is_delivered_once_with_a_warning(stack: Stack) -> None:
    """Deliver answers OK with the cut-body warning; the sandbox holds the event once."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox)
    await sandbox.fault(cut_body_rate=1.0, kind="events", count=1)
    sent = event("anon_cut_202")

    response = await deliver(service, sent)

    cut = [w for w in response.warnings if "then its response body was cut off" in w]
    assert cut, response.warnings
    assert cut[0].startswith("Amperity answered 202")
    posts = await sandbox.requests(path_prefix="/prof/events/")
    assert [(r["status"], r["body_cut"], r["message_id"]) for r in posts] == [
        (202, True, sent.message_id)
    ]
    received = [e for e in await sandbox.events() if e["body"].get("message_id") == sent.message_id]
    assert len(received) == 1
    assert "Amperity answered 202 to the events request, then its body was cut off" in (
        stack.logs()
    )


async def test_a_lookup_whose_200_body_is_cut_once_is_retried_and_enrichment_resolves(
    stack: Stack,
) -> None:
    """One cut 200 lookup, then a whole one: alice is resolved with her attributes."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox)
    await sandbox.fault(cut_body_rate=1.0, kind="lookup", count=1)

    response = await enrich(service, event("anon_cut_200", **ALICE))

    assert response.resolved
    assert response.amperity_id == ALICE_PROFILE
    lookups = await sandbox.requests(path_prefix="/prof/lookup/")
    assert [(r["status"], r["body_cut"]) for r in lookups] == [(200, True), (200, False)]
    assert "Amperity answered 200 to the lookup request, then its body was cut off" in (
        stack.logs()
    )
