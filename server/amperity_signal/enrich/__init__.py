"""Profile enrichment: resolve visitors against Amperity and attach their attributes.

Typical wiring (once, in ``build_server``)::

    cache = build_cache(settings.cache, metrics)
    enricher = Enricher(settings.cache, client_for=clients.get, cache=cache, metrics=metrics)
    result = await enricher.enrich(integration, event, deadline=deadline)
    event = result.event  # partner_attrs.amperity attached

See ``docs/enrich.md`` for the resolution order, the cache key scheme and the TTLs.
"""

from amperity_signal.enrich.cache import CacheBackend, Jitter, build_cache
from amperity_signal.enrich.codec import JsonCache
from amperity_signal.enrich.enricher import Enricher
from amperity_signal.enrich.identity import IdentityMap
from amperity_signal.enrich.ports import CacheStore, ProfileClient, ProfileLike
from amperity_signal.enrich.result import EnrichResult
from amperity_signal.enrich.stores import MemoryStore, RedisStore

__all__ = [
    "CacheBackend",
    "CacheStore",
    "EnrichResult",
    "Enricher",
    "IdentityMap",
    "Jitter",
    "JsonCache",
    "MemoryStore",
    "ProfileClient",
    "ProfileLike",
    "RedisStore",
    "build_cache",
]
