"""Advice on configurations that load but will likely not do what their owner wants.

None of these is an error: each is a legitimate setup for someone (an integration that
never exposes attributes to pages, say). ``check-config`` prints them as warnings and
``serve`` logs them once at start, in the words of the spec's troubleshooting table.
"""

from __future__ import annotations

from amperity_signal.amperity.ratelimit import process_share, shares_together
from amperity_signal.config import IntegrationSettings, Settings
from amperity_signal.config_values import quoted

_ALLOWLIST_ADVICE = (
    'add attribute names as CSV (e.g. "Persona,LifetimeTier"). Anything not in the list is '
    "stripped server-side before reaching the browser."
)


def summary(integration: IntegrationSettings) -> str:
    """What the integration will do, in one line: where events go, what enriches them.

    ``check-config`` prints it under "config OK", so an integration that is ingest-only by
    omission (the troubleshooting table's "Profile API creds missing") says so before the
    first event rather than in every event's missing ``partner_attrs.amperity``.
    """
    parts = [
        f"{integration.id}: delivers events (vertical {integration.vertical}) to stream "
        f"{integration.event_stream_id}"
    ]
    missing = integration.enrichment_missing
    if not missing:
        keys = ", ".join(entry.key for entry in integration.linking_keys)
        parts.append(f"enriches them through the linking keys {keys}")
        allowlist = integration.browser_attribute_allowlist
        parts.append(
            f"pages may see {', '.join(allowlist)}" if allowlist else "pages see no attribute"
        )
        if integration.personalisation_enabled and integration.personalisation_context_mappings:
            targets = ", ".join(m.target for m in integration.personalisation_context_mappings)
            parts.append(f"personalised by {targets}")
    elif len(missing) < 3:
        parts.append(f"enrichment is off until {', '.join(missing)} is set (see the warning)")
    else:
        parts.append(
            "ingest only: with no Profile API settings (profile_api_key, "
            "profile_collection_id, linking_keys) no event gets partner_attrs.amperity"
        )
    return "; ".join(parts)


def setup_warnings(integration: IntegrationSettings) -> list[str]:
    """What to change, one sentence each, for an integration's likely setup mistakes."""
    name = f"integration {integration.id}"
    warnings: list[str] = []
    missing = integration.enrichment_missing
    if integration.enrichment_half_configured:
        verb = "is" if len(missing) == 1 else "are"
        warnings.append(
            f"{name}: {', '.join(missing)} {verb} not set, so profile enrichment is off and "
            "partner_attrs.amperity never appears (each event's Live Events record says "
            f"'partner resolve failed'); set {'it' if len(missing) == 1 else 'them'} to "
            "enrich events."
        )
    if integration.profile_enabled and not integration.browser_attribute_allowlist:
        warnings.append(
            f"{name}: browser_attribute_allowlist is empty, so window.datafly.profile.amperity "
            "stays empty (empty = nothing exposed); if pages should see profile attributes, "
            + _ALLOWLIST_ADVICE
        )
    if integration.browser_attribute_allowlist and len(missing) == 3:
        warnings.append(
            f"{name}: browser_attribute_allowlist is set but profile enrichment is not "
            "(profile_api_key, profile_collection_id and linking_keys), so "
            "window.datafly.profile.amperity stays empty; set them to expose attributes."
        )
    warnings += _personalisation_warnings(name, integration)
    warnings += _plain_values_for_hashed_keys(name, integration)
    value = integration.source_value
    if value != value.strip():
        warnings.append(
            f"{name}: source_value {quoted(value)} has spaces around it, so events are accepted "
            "(202) but routed to _unknown unless your stream's routing expression has them "
            "too; check your stream's routing expression in Amperity and match exactly "
            "(case-sensitive)."
        )
    return warnings


def rate_limit_warnings(settings: Settings, integration: IntegrationSettings) -> list[str]:
    """Fewer requests a second than worker processes keeping the limit apart (no Redis).

    Each worker then keeps one request per ``workers / limit`` seconds (``process_share``):
    the tenant's rate holds over that window, but the workers cannot tell when the others
    send, so as many requests as workers can reach Amperity in the same second.
    """
    limit, workers = integration.rate_limit_per_second, settings.server.workers
    if settings.cache.backend == "redis" or limit >= workers:
        return []
    share = process_share(limit, workers)
    return [
        f"integration {integration.id}: rate_limit_per_second = {limit} is less than the "
        f"{workers} worker processes ([server] workers or serve --workers), which share no "
        f"limit without Redis: each keeps {share.describe()}, so Amperity gets "
        f'{shares_together(limit, workers)}. Set [cache] backend = "redis" to share one '
        f"limit across the workers, or run at most {limit} worker{'s' if limit > 1 else ''}."
    ]


def _personalisation_warnings(name: str, integration: IntegrationSettings) -> list[str]:
    """The spec enables personalisation in two steps; either one alone changes nothing."""
    mappings = integration.personalisation_context_mappings
    if mappings and not integration.personalisation_enabled:
        return [
            f"{name}: personalisation_context_mappings is set but personalisation_enabled is "
            "false, so no context is sent and partner_attrs.amperity_personalized never "
            "appears; set it to true to enable context-sensitive personalisation."
        ]
    if integration.personalisation_enabled and not mappings:
        return [
            f"{name}: personalisation_enabled is true but personalisation_context_mappings is "
            "empty, so there is no context to send and nothing is personalised; add the "
            'context values to forward, e.g. [{"source": "properties.category", '
            '"target": "pageCategory"}].'
        ]
    return []


def _plain_values_for_hashed_keys(name: str, integration: IntegrationSettings) -> list[str]:
    """A key named for digests (``email_sha256``) with no ``hash`` is sent the plain value.

    Amperity compares the value with the stored digests, so every lookup answers 404 (the
    troubleshooting table's "always 404" row). A key may hold plain values under any name,
    so this is advice, not an error.
    """
    return [
        f"{name}: linking_keys[{index}] sends the plain {entry.source} to key "
        f"{entry.key!r}, whose name says it holds SHA-256 digests, so its lookups would "
        f'always 404; set "hash": "sha256" (or "sha256_upper" for upper-case hex) if it does.'
        for index, entry in enumerate(integration.linking_keys)
        if entry.hash is None and "sha256" in entry.key.lower()
    ]
