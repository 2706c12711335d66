"""dry_run: per-event payloads, unfired mappings and pass-through events."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from amperity_signal.blueprint import SAMPLES_DIR, Blueprint, dry_run, event_from_datafly_json

EventFactory = Callable[..., dict[str, Any]]


def test_dry_run_lists_unfired_mappings_and_pass_through_events(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """Mappings no event filled and events no handler matched are both reported."""
    events = [
        make_event("purchase", properties={"transaction_id": "T1", "value": 10}),
        make_event("Mystery Event"),
    ]
    report = dry_run(retail, events, "DATAFLY")
    assert [e.result.amperity_type for e in report.entries] == ["purchase", "mystery_event"]
    assert [e.event_name for e in report.passed_through] == ["Mystery Event"]
    assert "utm_source" in report.unfired_global
    assert "cookieid" not in report.unfired_global
    assert "coupon" in report.unfired_by_handler["purchase"]
    assert "order_id" not in report.unfired_by_handler["purchase"]
    assert "view_item" in report.unmatched_handlers
    assert "purchase" not in report.unmatched_handlers


def test_dry_run_render_shows_payloads_and_gaps(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """The rendered report shows each event's type and the unfired mappings."""
    text = dry_run(retail, [make_event("Mystery Event")], "DATAFLY").render()
    assert "#1 Mystery Event -> mystery_event (pass-through)" in text
    assert '"source": "DATAFLY"' in text
    assert "pass-through: #1 Mystery Event" in text
    assert "global mappings that never fired:" in text


def test_dry_run_over_the_shipped_ga4_sample(retail: Blueprint) -> None:
    """The GA4 sample hits every retail handler and passes one custom event through."""
    raw = json.loads((SAMPLES_DIR / "retail_ga4.json").read_text())
    report = dry_run(retail, [event_from_datafly_json(e) for e in raw], "DATAFLY")
    assert report.unmatched_handlers == ()
    assert [e.event_name for e in report.passed_through] == ["Size Guide Opened"]
    assert all(not e.result.warnings for e in report.entries)
