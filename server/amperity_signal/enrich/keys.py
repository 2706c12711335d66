"""Cache keys: readable kind, opaque digest, never a raw identifier.

Every key is ``amperity_signal:v1:{kind}:{sha256(scope, name, value)}`` where the three
parts are joined by a unit separator before hashing, so neither an email nor a cookie ever
appears in Redis or in a memory dump of the keys. ``v1`` changes when the stored value
shapes change, which retires old entries instead of misreading them.

The scope is the integration id for the identity map, and ``profile_scope`` (integration id,
tenant id and collection id) for everything holding profile ids or attributes: a profile id
means something only in its tenant's collection, and two deployments sharing a Redis with
an integration of the same id (staging and production), or an integration pointed at
another collection, must not answer with each other's profiles.

| kind | name | value | holds |
| --- | --- | --- | --- |
| ``res`` | linking key (``email_sha256``) | value sent | profile id, or a not-found/error marker |
| ``attrs`` | ``profile_id`` | profile id | attributes (``attribute_ttl``) |
| ``good`` | ``profile_id`` | profile id | last good attributes (``attribute_ttl + stale_ttl``) |
| ``pers`` | profile id | sha256 of the sorted context | personalised attributes |
| ``perslast`` | ``profile_id`` | profile id | the last requested context's result (browser) |
| ``ident`` | ``anonymous_id`` | anonymous id | identity-map fields |
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import orjson

from amperity_signal.redis_keys import CACHE_PREFIX


def _builtin_sha256() -> Callable[[bytes], Any]:
    """CPython's own SHA-256 (``_sha256`` in 3.11, ``_sha2`` from 3.12), else hashlib's."""
    for module in ("_sha256", "_sha2"):
        with contextlib.suppress(ImportError):
            found: Callable[[bytes], Any] = importlib.import_module(module).sha256
            return found
    return hashlib.sha256


_sha256: Final = _builtin_sha256()

Kind = Literal["res", "attrs", "good", "pers", "perslast", "ident"]

PREFIX: Final = CACHE_PREFIX  # one table of the service's Redis prefixes: redis_keys
_SEPARATOR: Final = "\x1f"


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data``, lowercase hex: the digest of every key and hashed identifier.

    CPython's own implementation rather than ``hashlib.sha256``: the same digest, but
    OpenSSL's goes through its provider machinery first. An Enrich hit takes ~5 of them,
    and with the CPU caches cold (as under load) each costs ~1 us more through OpenSSL
    (docs/benchmarks.md, sessions 6 and 16).
    """
    digest: str = _sha256(data).hexdigest()
    return digest


def cache_key(kind: Kind, scope: str, name: str, value: str) -> str:
    """The cache key for one entry; see the module docstring for the scheme and scopes."""
    material = _SEPARATOR.join((scope, name, value)).encode()
    return f"{PREFIX}:{kind}:{sha256_hex(material)}"


def rekind(key: str, kind: Kind) -> str:
    """The key of ``kind`` for the scope, name and value of ``key`` (a ``cache_key``).

    The digest covers neither kind nor prefix, so a profile's ``attrs``, ``good`` and
    ``perslast`` keys share it: computed once, it names all three.
    """
    return f"{PREFIX}:{kind}:{key[-64:]}"


def profile_scope(integration_id: str, tenant_id: str, collection_id: str) -> str:
    """The scope of the profile-holding kinds (all but ``ident``); see the module docstring."""
    return _SEPARATOR.join((integration_id, tenant_id, collection_id))


def kind_of(key: str) -> str:
    """The kind segment of a key built by ``cache_key`` (used as a metrics label).

    Other users of the shared cache (the browser's ``consent:{digest}`` keys) get their
    first segment: the label must never take a per-visitor value, or every visitor read
    during an outage would add a metrics series.
    """
    start = len(PREFIX) + 1
    if not key.startswith(PREFIX) or key[start - 1 : start] != ":":
        head, colon, _ = key.partition(":")
        return head if colon else "other"
    end = key.find(":", start)
    return key[start:] if end < 0 else key[start:end]


def context_digest(context: Mapping[str, str]) -> str:
    """SHA-256 of the context parameters, sorted, so equal contexts share a cache entry."""
    return sha256_hex(orjson.dumps(sorted(context.items())))
