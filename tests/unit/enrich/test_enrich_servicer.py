"""The Enrich servicer: the event dict it hands enrichment, and the response it answers."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

from amperity_signal.config import IntegrationSettings
from amperity_signal.enrich import Enricher
from amperity_signal.service.registry import Integration, Registry
from amperity_signal.service.servicer import AmperityServicer
from datafly.amperity.v1 import amperity_service_pb2 as pb

from .enrich_fakes import FakeProfileClient, integration

ALICE_EMAIL = "alice@example.com"
# The servicer context methods Enrich calls on a call that succeeds.
CONTEXT = mock.Mock(**{"time_remaining.return_value": 10.0, "invocation_metadata.return_value": ()})


def _servicer(settings: IntegrationSettings, enricher: Enricher) -> AmperityServicer:
    # Enrich reads only the integration's settings: no blueprint or client is needed.
    found = Integration(settings=settings, blueprint=mock.Mock(), client=mock.Mock())
    return AmperityServicer(
        registry=Registry([found]),
        delivery=mock.Mock(),
        enricher=enricher,
        browser=mock.Mock(),
        live=mock.Mock(),
    )


def _event() -> pb.Event:
    sent = pb.Event(message_id="m-1", type="page", anonymous_id="anon_abc123")
    sent.properties.update({"category": "shoes"})
    sent.traits.update({"email": ALICE_EMAIL})
    sent.context.page.path = "/shoes"
    sent.context.ip = "203.0.113.7"
    return sent


def _mapped(*sources: str) -> IntegrationSettings:
    return integration(
        personalisation_enabled=True,
        personalisation_context_mappings=[
            {"source": source, "target": f"p{n}"} for n, source in enumerate(sources)
        ],
    )


@pytest.mark.parametrize(
    ("sources", "reads"),
    [
        (("properties.category",), False),
        (("properties.context", "traits.context.page"), False),
        (("properties.category", "context.page.path"), True),
        (("context",), True),
        ((), False),
    ],
)
def test_enrichment_reads_the_context_only_through_a_mapping_of_it(
    sources: tuple[str, ...], reads: bool
) -> None:
    """A mapping whose path starts at ``context`` is the only reader of an event's context."""
    found = Integration(settings=_mapped(*sources), blueprint=mock.Mock(), client=mock.Mock())
    assert found.enrichment_reads_context is reads


@pytest.mark.parametrize(
    ("sources", "seen"),
    [
        (("properties.category",), None),
        (("context.page.path",), {"page": {"path": "/shoes"}, "ip": "203.0.113.7"}),
    ],
)
async def test_enrich_converts_the_context_only_for_a_mapping_that_reads_it(
    make_enricher: Any,
    client: FakeProfileClient,
    sources: tuple[str, ...],
    seen: dict[str, Any] | None,
) -> None:
    """The response carries the whole event either way; enrichment sees what it reads."""
    enricher = make_enricher()
    given: list[dict[str, Any]] = []
    enrich = enricher.enrich

    async def spied(settings: IntegrationSettings, event: dict[str, Any], **kw: Any) -> Any:
        given.append(event)
        return await enrich(settings, event, **kw)

    enricher.enrich = spied
    settings = _mapped(*sources)
    request = pb.EnrichRequest(integration_id=settings.id, event=_event())
    response = await _servicer(settings, enricher).Enrich(request, CONTEXT)

    assert given[0].get("context") == seen
    assert response.resolved
    expected = pb.Event()
    expected.CopyFrom(request.event)
    expected.partner_attrs.fields["amperity"].struct_value.CopyFrom(response.attributes)
    expected.partner_attrs.fields["amperity_personalized"].struct_value.CopyFrom(
        response.personalized_attributes
    )
    assert response.event == expected
    if seen is not None:
        assert client.personalised_gets[-1][1] == {"p0": "/shoes"}
