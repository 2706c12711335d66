"""Visitor identifiers: where each linking-key source comes from, and how it is sent.

| source | read from (``SOURCE_PATHS``) | remembered by the identity map |
| --- | --- | --- |
| ``canonical_id`` | ``canonical_id``, else ``anonymous_id`` | no |
| ``anonymous_id`` | ``anonymous_id`` | no |
| ``user_id`` | ``user_id``, else ``traits.user_id`` | yes |
| ``email`` | ``traits.email``, else ``properties.email`` | yes |
| ``phone`` | ``traits.phone``, else ``properties.phone`` (as the blueprint's ``e164``) | yes |

The paths, in order, are the global blueprint's identity mappings' (``source``, then
``fallbacks``; ``blueprints/global.yaml``): an event is resolved by the identifiers it is
delivered with. ``tests/unit/enrich/test_enrich_identifiers.py`` holds the two together.

Hashing: ``sha256`` is trim, lowercase, SHA-256, lowercase hex (the spec's rule);
``sha256_upper`` is trim, UPPER, SHA-256, UPPER hex (Amperity's own examples). A value that
already is a 64-hex digest is sent as it is (only its case follows the scheme).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from amperity_signal.blueprint.paths import is_empty
from amperity_signal.config import LinkingKey
from amperity_signal.enrich.keys import sha256_hex
from amperity_signal.phone import normalise_phone

LEARNABLE_SOURCES: Final = frozenset({"user_id", "email", "phone"})
"""Sources the identity map remembers per anonymous id (the browser never sends them)."""

SourcePath = tuple[str, str | None]
"""A path of the event dict: a top-level field, and a key below it (or None)."""

SOURCE_PATHS: Final[Mapping[str, tuple[SourcePath, ...]]] = MappingProxyType(
    {
        "canonical_id": (("canonical_id", None), ("anonymous_id", None)),
        "anonymous_id": (("anonymous_id", None),),
        "user_id": (("user_id", None), ("traits", "user_id")),
        "email": (("traits", "email"), ("properties", "email")),
        "phone": (("traits", "phone"), ("properties", "phone")),
    }
)
"""Where each linking-key source is read, in order: the first path that is not empty (the
blueprint's ``is_empty``) is the source's value, as the global mappings of the same
targets pick it. Every source a ``LinkingKey`` may name is here."""

_DIGEST: Final = re.compile(r"[0-9A-Fa-f]{64}")


class Candidate(NamedTuple):
    """One linking key lookup Signal may make: the key name and the value to send.

    A NamedTuple: a few are built per request, and a tuple is the cheapest to build.
    """

    key: str
    value: str


def prepare(source: str, scheme: str | None, raw: str) -> str | None:
    """The value sent to Amperity for a source value under a hash scheme.

    Args:
        source: The linking key source (``email``, ``phone``, ...).
        scheme: ``sha256``, ``sha256_upper`` or None (sent as it is, trimmed).
        raw: The value as found on the event.

    Returns:
        The trimmed value, its E.164 form for phones, or its digest; None for a phone
        that is not a phone number (no lookup is made with it).

    Examples:
        >>> prepare("email", "sha256", " Alice@Example.COM ")[:12]
        'ff8d9819fc0e'
    """
    value = raw.strip()
    if source == "phone" and not _DIGEST.fullmatch(value):
        phone = normalise_phone(value)
        if phone is None:
            return None
        value = phone
    if scheme is None:
        return value
    upper = scheme == "sha256_upper"
    if _DIGEST.fullmatch(value):
        return value.upper() if upper else value.lower()
    normalised = value.upper() if upper else value.lower()
    digest = sha256_hex(normalised.encode())
    return digest.upper() if upper else digest


def slot(source: str, scheme: str | None) -> str:
    """The identity-map field holding a source value prepared for a scheme (``email:sha256``)."""
    return source if scheme is None else f"{source}:{scheme}"


def _text(value: Any) -> str | None:
    """A source value as text, or None when it is empty or not a scalar id.

    ``traits`` is a protobuf Struct, whose numbers are floats: ``traits.phone`` written as
    a number arrives as ``447700900123.0``. An integral float is read without its ``.0``,
    as the blueprint's ``e164`` transform reads it, so the lookup and the event's
    ``phone`` agree.
    """
    if isinstance(value, float) and not isinstance(value, bool):
        return str(int(value)) if math.isfinite(value) and value.is_integer() else None
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text or None


def source_value(event: Mapping[str, Any], source: str) -> str | None:
    """The raw value of a linking-key source on an event, or None when it is empty.

    Read from the first of ``SOURCE_PATHS[source]`` that is not empty, as the blueprint
    picks the value it sends: an event delivered with a ``properties.email`` is resolved
    by it. A value that is no scalar id (``_text``) is None, without reading further.
    """
    for field, key in SOURCE_PATHS[source]:
        value = event.get(field)
        if key is not None and value is not None:
            # Event dicts hold plain dicts; the ABC check is for other mappings alone.
            value = value.get(key) if type(value) is dict or isinstance(value, Mapping) else None
        if value is None:
            continue
        # A string, the usual id, is told empty and made text here: the per-event path.
        if type(value) is str:
            if value:
                return value.strip() or None
        elif not is_empty(value):
            return _text(value)
    return None


def visitor_id(event: Mapping[str, Any]) -> str | None:
    """The id the identity map files a visitor under: ``anonymous_id``, else ``canonical_id``."""
    return _text(event.get("anonymous_id")) or _text(event.get("canonical_id"))


def learnable(linking_keys: Sequence[LinkingKey], event: Mapping[str, Any]) -> dict[str, str]:
    """The identity-map fields an event teaches, prepared for each configured scheme.

    Only the forms the integration's linking keys send are kept, so a hashed-only
    configuration never stores a raw email.
    """
    found: dict[str, str] = {}
    for lk in linking_keys:
        if lk.source not in LEARNABLE_SOURCES:
            continue
        raw = source_value(event, lk.source)
        value = None if raw is None else prepare(lk.source, lk.hash, raw)
        if value is not None:
            found[slot(lk.source, lk.hash)] = value
    return found


class EventIdentifiers(NamedTuple):
    """What one event tells about its visitor, each linking key's source read once.

    Attributes:
        visitor: ``visitor_id(event)``, the id the identity map files the visitor under.
        learned: ``learnable(linking_keys, event)``, the identity-map fields it teaches.
        lacking: Whether a source the identity map remembers is missing on the event, so
            the map is worth reading.
        prepared: Per linking key, in order: the value the event gives it, prepared for
            its scheme; ``""`` when the event's value cannot be sent (a phone that is no
            number), None when the event has none (the identity map may have one).
    """

    visitor: str | None
    learned: dict[str, str]
    lacking: bool
    prepared: tuple[str | None, ...]


def read_identifiers(
    linking_keys: Sequence[LinkingKey], event: Mapping[str, Any]
) -> EventIdentifiers:
    """Everything enrichment reads from an event's identifiers, in one pass.

    ``learnable``, the identity-map check and ``candidates`` each read every source again
    (and an Enrich hit made all three): this reads each linking key's source once, and
    ``event_candidates`` completes the lookups with what the identity map remembers.
    """
    learned: dict[str, str] = {}
    lacking = False
    prepared: list[str | None] = []
    for lk in linking_keys:
        source = lk.source
        raw = source_value(event, source)
        if raw is None:
            lacking = lacking or source in LEARNABLE_SOURCES
            prepared.append(None)
            continue
        value = prepare(source, lk.hash, raw)
        prepared.append(value or "")
        if value is not None and source in LEARNABLE_SOURCES:
            learned[slot(source, lk.hash)] = value
    return EventIdentifiers(visitor_id(event), learned, lacking, tuple(prepared))


def event_candidates(
    linking_keys: Sequence[LinkingKey],
    prepared: Sequence[str | None],
    remembered: Mapping[str, str],
) -> tuple[Candidate, ...]:
    """The lookups to try, in linking-key order, skipping sources empty on the visitor.

    Args:
        linking_keys: The integration's linking keys, in order.
        prepared: ``read_identifiers(linking_keys, event).prepared``.
        remembered: Identity-map fields for the visitor (see ``learnable``), which fill in
            the sources the event lacks.

    Returns:
        One candidate per linking key with a value, on the event or remembered.
    """
    found: list[Candidate] = []
    for lk, ready in zip(linking_keys, prepared, strict=True):
        value = ready
        if value is None and remembered and lk.source in LEARNABLE_SOURCES:
            value = remembered.get(slot(lk.source, lk.hash))
        if value:
            candidate = Candidate(lk.key, value)
            if candidate not in found:
                found.append(candidate)
    return tuple(found)


def candidates(
    linking_keys: Sequence[LinkingKey],
    event: Mapping[str, Any],
    remembered: Mapping[str, str],
) -> tuple[Candidate, ...]:
    """The lookups to try for an event (``event_candidates`` of ``read_identifiers``)."""
    prepared = read_identifiers(linking_keys, event).prepared
    return event_candidates(linking_keys, prepared, remembered)


def page_candidates(
    linking_keys: Sequence[LinkingKey], anonymous_id: str, remembered: Mapping[str, str]
) -> tuple[Candidate, ...]:
    """``candidates`` for a page's visitor, who carries nothing but its anonymous id.

    The same lookups as ``candidates(linking_keys, {"anonymous_id": anonymous_id,
    "canonical_id": anonymous_id}, remembered)`` (a test compares the two for every source
    and scheme), without reading an event: every ``/v1/enrich`` runs it, and reading a
    made-up event cost more than the rest of the work.
    """
    visitor = anonymous_id.strip()
    found: list[Candidate] = []
    for lk in linking_keys:
        source = lk.source
        if source in LEARNABLE_SOURCES:  # never on the page: only the identity map has them
            value = remembered.get(slot(source, lk.hash)) if remembered else None
        else:  # canonical_id and anonymous_id: both are the page's anonymous id
            value = prepare(source, lk.hash, visitor) if visitor else None
        if value:
            candidate = Candidate(lk.key, value)
            if candidate not in found:
                found.append(candidate)
    return tuple(found)


def remembers_any(linking_keys: Sequence[LinkingKey]) -> bool:
    """Whether a linking key reads a source the identity map remembers (see the table above)."""
    for lk in linking_keys:  # noqa: SIM110 - per page request; any() adds a generator
        if lk.source in LEARNABLE_SOURCES:
            return True
    return False
