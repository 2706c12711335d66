"""Every Amperity path, header and request shape, in one place.

Amperity marks its Real-time API (everything under ``/prof``) unstable, so a change on
their side must be a one-line fix here. See ``docs/amperity-client.md`` and the API notes.
The hosts (a tenant's default base URL, which hosts are Amperity's) are the one rule of
``amperity_signal.tenant_hosts``, which configuration shares without loading this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote, urlencode

from amperity_signal import __version__
from amperity_signal.redaction import REDACTED

EVENTS = "events"
LOOKUP = "lookup"
PROFILE = "profile"

TENANT_HEADER = "Amperity-Tenant"
AUTHORIZATION_HEADER = "Authorization"
REDACTED_AUTHORIZATION = f"Bearer {REDACTED}"
"""The Authorization value shown (``redacted``): the form ``redaction.scrub`` gives it too."""
JSON_CONTENT_TYPE = "application/json"
USER_AGENT = f"amperity-signal/{__version__}"
"""Sent on every call, so a tenant's logs name the connector (not a generic HTTP library)."""

# The query parameter that asks for enriched attributes; context targets may not reuse it.
ENRICH_PARAM = "enrich"

MAX_PROFILE_QUERY_LENGTH: Final = 4096
"""The longest query, URL-encoded, a profile GET sends (``enrich=true`` and the context).

Far above any page category or cart value, and below the URL limits of the proxies and
CDNs in front of an API (8 KB for nginx's default buffers and CloudFront), which answer a
longer one 414 without Amperity seeing it; httpx itself refuses a query over 64 KB."""


def _segment(value: str) -> str:
    """Quote one path segment so an id can never add or escape a path level."""
    return quote(value, safe="")


def events_path(event_stream_id: str) -> str:
    """The realtime ingest path of a stream: ``/prof/events/{event_stream_id}``."""
    return f"/prof/events/{_segment(event_stream_id)}"


def lookup_path(collection_id: str) -> str:
    """The keychain lookup path of a collection: ``/prof/lookup/{collection_id}/keychain``."""
    return f"/prof/lookup/{_segment(collection_id)}/keychain"


def profile_path(collection_id: str, profile_id: str) -> str:
    """The path of one profile: ``/prof/profiles/{collection_id}/{profile_id}``."""
    return f"/prof/profiles/{_segment(collection_id)}/{_segment(profile_id)}"


def lookup_body(key: str, value: str) -> dict[str, Any]:
    """The keychain lookup body; POSTed so identifiers stay out of URLs and access logs.

    ``enrich`` is true: the matched profile's attributes are cached as the visitor's
    attributes, and they must be the full map a profile GET with ``enrich=true`` returns
    (the spec's "receives the full attribute map"), not a lesser one until the first
    refresh.
    """
    return {"keys": {key: value}, "enrich": True}


def profile_params(context: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Query parameters of a profile GET: ``enrich=true`` plus one per context target.

    Context-sensitive personalisation is our model, not documented by Amperity: the same
    GET with ``enrich=true`` and each context target as a query parameter
    (``?enrich=true&pageCategory=shoes&cartValue=120``). The sandbox implements it.

    Args:
        context: Context target name to value, in the order the mappings list them; none
            may be named ``enrich`` (the configuration refuses such a target at load).

    Returns:
        The parameters, ``enrich`` first.

    Raises:
        ValueError: When a context target is named ``enrich``, which would override it.
    """
    if ENRICH_PARAM in (context or {}):
        raise ValueError(f"a context target may not be named {ENRICH_PARAM!r}")
    return [(ENRICH_PARAM, "true"), *(context or {}).items()]


def query_length(params: list[tuple[str, str]]) -> int:
    """How many characters ``params`` take URL-encoded, as httpx encodes them (``urlencode``)."""
    return len(urlencode(params))


def longest_parameter(params: list[tuple[str, str]]) -> tuple[str, int]:
    """The parameter taking the most of the encoded query, and its ``name=value`` length."""
    lengths = [(name, query_length([(name, value)])) for name, value in params]
    return max(lengths, key=lambda pair: pair[1])


def request_headers(tenant_id: str, token: str, *, json_body: bool) -> dict[str, str]:
    """Headers of every ``/prof`` call (no ``api-version``: that is for ``/api/...`` only).

    ``Host`` and ``Content-Length`` are added by httpx from the URL and the encoded body.

    Args:
        tenant_id: The ``Amperity-Tenant`` header value.
        token: The bearer JWT (Streaming Ingest or Profile API key).
        json_body: Whether the request carries a JSON body.
    """
    headers = {
        TENANT_HEADER: tenant_id,
        AUTHORIZATION_HEADER: f"Bearer {token}",
        "Accept": JSON_CONTENT_TYPE,
        "User-Agent": USER_AGENT,
    }
    if json_body:
        headers["Content-Type"] = JSON_CONTENT_TYPE
    return headers


def redacted(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` safe to show: the Authorization value is never included."""
    return {
        name: REDACTED_AUTHORIZATION if name.lower() == "authorization" else value
        for name, value in headers.items()
    }
