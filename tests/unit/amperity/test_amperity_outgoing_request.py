"""``outgoing_request`` builds the same ``httpx.Request`` httpx builds from a dict and bytes.

The caller pre-encodes each call's headers once; these pin that what goes to the
transport (method, URL, header bytes in order, body, timeout extension) is unchanged.
"""

from __future__ import annotations

import httpx
import pytest

from amperity_signal import tenant_hosts
from amperity_signal.amperity import endpoints
from amperity_signal.amperity.caller import (
    VendorRequest,
    call_headers,
    limiter_key,
    outgoing_request,
)
from amperity_signal.amperity.responses import unknown_host
from amperity_signal.config import IntegrationSettings

EVENT_HEADERS = endpoints.request_headers("acme", "e.y.j", json_body=True)
PROFILE_HEADERS = endpoints.request_headers("acme", "p.r.o", json_body=False)
CASES = [
    ("POST", "https://acme.amperity.com/prof/events/es-1", EVENT_HEADERS, b'{"type":"track"}'),
    ("POST", "http://127.0.0.1:8123/prof/lookup/apc-1/keychain", EVENT_HEADERS, b'{"k":1}'),
    ("POST", "http://127.0.0.1:8123/prof/events/es-1", EVENT_HEADERS, b""),
    ("POST", "http://127.0.0.1:8123/prof/events/es-1", EVENT_HEADERS, None),
    ("GET", "https://acme.amperity.com:8443/prof/profiles/apc-1/p-1", PROFILE_HEADERS, None),
]


@pytest.mark.parametrize(("method", "url", "headers", "content"), CASES)
def test_outgoing_request_matches_what_httpx_builds_from_the_same_call(
    method: str, url: str, headers: dict[str, str], content: bytes | None
) -> None:
    """Same method, URL, header bytes and order, body and timeouts as httpx.Request(...)."""
    parsed = httpx.URL(url, params=[("enrich", "true")] if method == "GET" else None)
    request = VendorRequest(
        endpoint="events",
        method=method,
        url=parsed,
        headers=call_headers(headers),
        content=content,
        final_statuses=frozenset(),
    )
    expected = httpx.Request(
        method,
        parsed,
        headers=headers,
        content=content,
        extensions={"timeout": httpx.Timeout(2.5).as_dict()},
    )

    built = outgoing_request(request, 2.5)

    assert (built.method, built.url) == (expected.method, expected.url)
    assert built.headers.raw == expected.headers.raw
    assert built.content == expected.content
    assert built.extensions == expected.extensions


def test_call_headers_show_no_token_and_refuse_what_httpx_refuses() -> None:
    """The shown copy is redacted, the repr holds no token, non-ASCII fails as in httpx."""
    headers = call_headers(EVENT_HEADERS)

    assert dict(headers.shown)["Authorization"] == endpoints.REDACTED_AUTHORIZATION
    assert "e.y.j" not in repr(headers)
    with pytest.raises(UnicodeEncodeError):
        call_headers({**EVENT_HEADERS, "Amperity-Tenant": "acmé"})
    with pytest.raises(UnicodeEncodeError):
        httpx.Request("POST", "http://a.test/", headers={"Amperity-Tenant": "acmé"})


@pytest.mark.parametrize(
    ("base_url", "key"),
    [
        (None, "acme-tenant"),
        ("https://app.amperity.com", "acme-tenant"),
        ("https://app-aws-apse2.amperity.com/", "acme-tenant"),
        ("http://127.0.0.1:8900", "acme-tenant@http://127.0.0.1:8900"),
        ("https://notamperity.com", "acme-tenant@https://notamperity.com"),
    ],
)
def test_one_rate_limit_per_tenant_whichever_amperity_host_reaches_it(
    integration: IntegrationSettings, base_url: str | None, key: str
) -> None:
    """Amperity's limit is per tenant: its subdomain and app.amperity.com share one key.

    A sandbox or proxy is a tenant space of its own.
    """
    assert limiter_key(integration.model_copy(update={"api_base_url": base_url})) == key


def test_the_tenant_host_rule_is_written_once(
    integration: IntegrationSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Amperity's domain, changed in tenant_hosts alone, moves the base URL, key and advice."""
    monkeypatch.setattr(tenant_hosts, "AMPERITY_DOMAIN", "amperity.example")
    proxied = integration.model_copy(update={"api_base_url": "https://proxy.corp.example"})
    old_host = integration.model_copy(update={"api_base_url": "https://app.amperity.com"})

    assert integration.base_url == "https://acme.amperity.example"
    assert limiter_key(integration) == "acme-tenant"
    assert limiter_key(old_host) == "acme-tenant@https://app.amperity.com"
    advice = unknown_host(proxied, "events", "proxy.corp.example")
    assert advice.metadata["base_url_without_override"] == "https://acme.amperity.example"
