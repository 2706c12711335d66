"""How the gateway's JSON bodies spell the proto's fields, in both directions.

The converter (``convert``) reads each field by the names these tables give; a refusal
of the service, which names proto field paths (``event.context.vendor_ids.ga_client_id``),
is named back by the same tables as the body spelled it
(``context.vendorIds.gaClientId``), so a browser developer is told about the fields they
sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from amperity_signal.casing import camel_to_snake


def _as_sent(key: str) -> str:
    return key


@dataclass(frozen=True)
class JsonField:
    """How the converter reads one proto field from Datafly's JSON.

    The tables below are what the converter reads by, and what a refusal of the service
    is translated back by (``body_field``): one list of names for both directions. (Where
    a field has one name, the proto's, the converter may read it by that name directly:
    ``data.get("timestamp")``.)

    Attributes:
        names: The JSON keys it is read by: the one errors name first, then its alias.
        fields: A sub-message's own fields, by proto name.
        key: For a map or Struct, what a key of the body becomes in the proto; the keys
            below it are the body's own.
    """

    names: tuple[str, ...]
    fields: Mapping[str, JsonField] | None = None
    key: Callable[[str], str] | None = None


def _camel(name: str) -> str:
    """A snake_case proto name as Datafly's JSON spells it (``postal_code`` -> ``postalCode``)."""
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _aliased(name: str) -> JsonField:
    """A field read by its camelCase name, or by its proto name as the alias."""
    camel = _camel(name)
    return JsonField((camel, name) if camel != name else (name,))


def _scalars(*names: str) -> dict[str, JsonField]:
    return {name: _aliased(name) for name in names}


def _message(name: str, fields: Mapping[str, JsonField]) -> JsonField:
    return JsonField(_aliased(name).names, fields)


def _map(name: str, key: Callable[[str], str] = _as_sent) -> JsonField:
    return JsonField(_aliased(name).names, key=key)


# Google Consent Mode spells its signals in snake_case, so that name comes first here.
GOOGLE: dict[str, JsonField] = {
    name: JsonField((name, _camel(name)))
    for name in ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage")
}
CONSENT_FLAGS = _scalars("analytics", "marketing", "functional")
CONSENT: dict[str, JsonField] = {
    **CONSENT_FLAGS,
    "categories": _map("categories"),
    "google": _message("google", GOOGLE),
}
SUBMESSAGES: dict[str, dict[str, JsonField]] = {
    "page": _scalars("url", "path", "referrer", "title", "search"),
    "campaign": _scalars("source", "medium", "name", "term", "content"),
    "geo": _scalars("country", "region", "city", "postal_code"),
    "device": _scalars("type", "os", "browser"),
}
_SESSION = _scalars("id", "number")
# No ``ip``: the converter never reads it from the body (it is the connection's).
CONTEXT: dict[str, JsonField] = {
    **_scalars("user_agent", "locale", "timezone"),
    **{name: _message(name, fields) for name, fields in SUBMESSAGES.items()},
    "session": _message("session", _SESSION),
    # Datafly names them in camelCase (gaClientId); the proto and the blueprint's global
    # mappings in snake_case (context.vendor_ids.ga_client_id).
    "vendor_ids": _map("vendor_ids", camel_to_snake),
    "consent": _message("consent", CONSENT),
}
CONTEXT_TRAITS = "traits"
"""The key of an event's ``context`` holding Segment-style identity: no field of the proto's
``Context``; the converters fold it into the event's ``traits`` (``convert.fold_context_traits``),
so a refusal of a trait it gave is named back under it (``event_field``)."""
EVENT_FIELDS: dict[str, JsonField] = {
    **_scalars(
        "type", "event", "message_id", "anonymous_id", "user_id", "canonical_id", "timestamp"
    ),
    "properties": _map("properties"),
    "traits": _map("traits"),
    "partner_attrs": _map("partner_attrs"),
    "context": _message("context", CONTEXT),
}
"""An ``Event``'s fields as the converter reads them from an event's JSON."""
CONSENT_REQUEST_FIELDS: dict[str, JsonField] = {
    # The route reads anonymousId alone (its messages name it so), no alias.
    "anonymous_id": JsonField(("anonymousId",)),
    "consented_at": _aliased("consented_at"),
    "consent": _message("consent", CONSENT),
}
"""A ``RecordConsentRequest``'s fields as a ``POST /v1/consent`` body spells them."""
SENT_AT = ("sentAt", "sent_at")
"""When the page sent the request, by its own clock: a gateway field of the ``/v1/t``,
``/v1/p``, ``/v1/i`` event and of the ``/v1/batch`` and ``/v1/consent`` bodies, no proto's
(``convert.sent_at_from_json``)."""


# The name Deliver gives the event in the field paths of its refusals.
_DELIVER_ROOT = "event"


def event_field(path: str, data: Any, prefix: str = "") -> str:
    """Deliver's name for a field of the event, as the event's JSON ``data`` spells it.

    ``event.context.page.url`` -> ``context.page.url``; ``event`` itself, the whole event,
    is named as ``event_from_json`` names it (``body``, or ``batch[2]``).

    Args:
        path: The field path of a BadRequest violation of Deliver.
        data: The event as the body sent it.
        prefix: Prepended, as to ``event_from_json``'s field names, e.g. ``batch[2].``.

    Returns:
        The body's path, or ``path`` unchanged when it is no field of the event this
        converter knows (see ``body_field``).
    """
    if path == _DELIVER_ROOT:
        return prefix.rstrip(".") or "body"
    below = path.removeprefix(f"{_DELIVER_ROOT}.")
    named = None if below == path else body_field(below, EVENT_FIELDS, data)
    if named is not None and below.startswith("traits."):
        named = _folded_trait(below.removeprefix("traits."), data) or named
    return path if named is None else prefix + named


def _folded_trait(rest: str, data: Any) -> str | None:
    """``context.traits.<rest>`` when the trait ``rest`` is in came from ``context.traits``.

    The converters fold ``context.traits`` into ``traits`` (the event's own win), so Deliver
    names such a trait ``traits.<key>``; the body sent it under ``context.traits``. None
    when the event's own ``traits`` gave it, or the body has no such key.
    """
    context = data.get("context") if isinstance(data, dict) else None
    identity = context.get(CONTEXT_TRAITS) if isinstance(context, dict) else None
    if not isinstance(identity, dict):
        return None
    own = data.get("traits")
    own = own if isinstance(own, dict) else {}
    for key in identity:
        if not isinstance(key, str) or own.get(key) is not None:
            continue
        if rest == key or rest.startswith((f"{key}.", f"{key}[")):
            return f"context.{CONTEXT_TRAITS}.{rest}"
    return None


def consent_field(path: str, data: Any) -> str:
    """RecordConsent's name for a field, as the ``POST /v1/consent`` body spells it.

    ``consented_at`` -> ``consentedAt``; ``path`` unchanged when it is no field of the
    body (``pipeline_key``).
    """
    return body_field(path, CONSENT_REQUEST_FIELDS, data) or path


def body_field(path: str, fields: Mapping[str, JsonField], data: Any) -> str | None:
    """A proto field path as the JSON ``data`` of that message spells it, else None.

    Each field is named by the key the body used for it, of the names the converter reads
    it by, else by the first of them. Below a Struct or map the path is the body's own keys,
    kept as they are; a ``vendor_ids`` key, which the converter turned into snake_case, is
    named as the body sent it when the body holds such a key. A path through a field the
    tables do not know (not one of the body's, or newer than this gateway) is None: half
    a translation would name a field nobody sent.
    """
    parts = path.split(".")
    named: list[str] = []
    level = data
    for index, part in enumerate(parts):
        spec = fields.get(part)
        if spec is None:
            return None
        given = level if isinstance(level, dict) else {}
        name = next((n for n in spec.names if given.get(n) is not None), spec.names[0])
        named.append(name)
        level = given.get(name)
        if spec.key is not None:
            if index + 1 < len(parts):
                named.append(_body_key(".".join(parts[index + 1 :]), spec.key, level))
            return ".".join(named)
        if spec.fields is None:
            return ".".join(named) if index + 1 == len(parts) else None
        fields = spec.fields
    return ".".join(named)


def _body_key(rest: str, key: Callable[[str], str], given: Any) -> str:
    """A map's key as the body sent it, when the body holds one the converter made it from."""
    if key is _as_sent or not isinstance(given, dict):
        return rest
    sent = [k for k in given if isinstance(k, str)]
    exact = next((k for k in sent if key(k) == rest), None)
    if exact is not None:
        return exact
    # The service cuts a long key short in its paths (to 40 characters): cut the body's alike.
    cut = next((k for k in sent if key(k).startswith(rest)), None)
    return rest if cut is None else cut[: len(rest)]
