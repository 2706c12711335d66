"""A dry run's event: one Datafly JSON event taken the way a real one goes, or its refusal.

``blueprint test --events FILE`` should refuse what the service would refuse, in the same
words, so each event goes through the real code rather than a copy of its checks:

1. the gateway's body size (``gateway/jsonbody.body_too_large``: the event alone in a
   ``/v1/batch`` body, as the browser client sends it, is at most ``[gateway]
   max_batch_body_bytes``, or else, where a config lets the single-event routes take more,
   the event alone is at most ``[gateway] max_body_bytes``: ``single_route_only``), its
   JSON checks (``gateway/jsonbody.check_value``: finite numbers, integers within ±2^53,
   valid Unicode, nesting) and its conversion to the proto ``Event``
   (``gateway/convert.event_from_json``: the type of every known field, consent's shape,
   an identifier, a messageId and the receive time filled in when missing);
2. Deliver's validation and conversion to the engine's dict
   (``service/validation.checked_event_dict``: the 2000-2100 timestamp range, string
   lengths, depth, key and value counts, the message size, event type rules).

Two departures, so that an event exported from Datafly Signal dry-runs as Signal delivers
it over gRPC: ``partnerAttrs`` (the gateway refuses it, as Signal attaches it server-side)
is checked as the gateway checks any JSON object and carried over; and ``context.ip``
(the gateway takes the connection's instead) is taken as the client's address.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from amperity_signal.blueprint.datafly_json import folded_traits
from amperity_signal.errors import FieldViolation, InvalidEvent
from amperity_signal.gateway.convert import RequestFacts, event_from_json
from amperity_signal.gateway.errors import GatewayError
from amperity_signal.gateway.fieldnames import event_field
from amperity_signal.gateway.jsonbody import body_too_large, check_value
from amperity_signal.gateway.settings import GatewaySettings
from amperity_signal.service.validation import DEFAULT_MAX_BYTES, checked_event_dict

# The type an event without one gets: what the gateway's batch route gives it.
DEFAULT_TYPE = "track"
_PARTNER_ATTRS = ("partnerAttrs", "partner_attrs")
# The largest body the gateway takes on the route a file's events go by, /v1/batch.
DEFAULT_MAX_BODY_BYTES = GatewaySettings.max_batch_body_bytes
# The largest body of the single-event routes, /v1/t, /v1/p and /v1/i.
DEFAULT_MAX_SINGLE_BODY_BYTES = GatewaySettings.max_body_bytes
# What a /v1/batch body of one event adds to the event's own JSON: {"batch":[...]}.
_BATCH_OF_ONE = len('{"batch":[]}')
# The name Deliver's validation gives the event in its field names.
_SERVICE_PREFIX = "event"


def deliverable_event(
    item: Any,
    index: int,
    now: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    *,
    max_single_body_bytes: int | None = None,
) -> dict[str, Any]:
    """The engine's event dict Deliver would map for ``item``, the ``index``-th of a file.

    Args:
        item: One decoded JSON event, as Datafly sends it (camelCase).
        index: Its position in the file, which prefixes every field name (``events[2].``).
        now: The receive time, for an event without a timestamp.
        max_bytes: The largest event Deliver takes (``[server] max_message_bytes``).
        max_body_bytes: The largest ``/v1/batch`` body the gateway takes (``[gateway]
            max_batch_body_bytes``); an event too large for one of its own is refused
            (``events[index]``, the gateway's 413 message), unless it fits the body of a
            single-event route (``single_route_only`` says so).
        max_single_body_bytes: The largest ``/v1/t``, ``/v1/p`` or ``/v1/i`` body the
            gateway takes (``[gateway] max_body_bytes``); None counts the ``/v1/batch``
            body alone, which by default is the larger limit.

    Raises:
        InvalidEvent: What the gateway or Deliver would refuse, each violation naming
            ``events[index].<field>`` as the file spelled it (Deliver's refusals named
            back as the gateway names a batch item's: ``gateway/fieldnames.event_field``)
            and saying why in their words.
    """
    where = f"events[{index}]"
    try:
        # The gateway reads the body's size first.
        _check_body_size(item, max_body_bytes, max_single_body_bytes)
        check_value(item, where)
        data = dict(item) if isinstance(item, dict) else item
        partner_attrs = _pop_partner_attrs(data, where)
        event = event_from_json(data, _facts(data, now), prefix=f"{where}.")
    except GatewayError as error:
        raise InvalidEvent([_violation(error, where)]) from None
    if partner_attrs is not None:
        event.partner_attrs.update(partner_attrs)
    try:
        # As Deliver: the gateway has filled message_id and timestamp already.
        mapped = checked_event_dict(
            event, max_bytes=max_bytes, message_id=event.message_id or str(uuid.uuid4())
        )
    except InvalidEvent as error:
        raise InvalidEvent(
            [
                FieldViolation(_as_sent(v.field, item, where), v.description)
                for v in error.violations
            ]
        ) from None
    return _in_file_order(mapped, item, partner_attrs)


def _as_sent(field: str, item: dict[str, Any], where: str) -> str:
    """Deliver's name for a field of the file's event, as the gateway names a batch item's.

    ``event.anonymous_id`` -> ``events[0].anonymousId`` (or ``anonymous_id``, as the file
    spelled it). A field the gateway's table does not know (``context.ip``, which a dry run
    takes from the file) keeps Deliver's path below the event.
    """
    named = event_field(field, item, f"{where}.")
    return where + field.removeprefix(_SERVICE_PREFIX) if named == field else named


def _in_file_order(
    mapped: dict[str, Any], item: dict[str, Any], partner_attrs: dict[str, Any] | None
) -> dict[str, Any]:
    """``mapped`` with the keys of its Structs and maps in the order the file gives them.

    A proto Struct or map hands its keys back in an order of its own, which differs from
    one process to the next: without this, two dry runs of one file would print their
    payloads differently and a diff of them would show changes nobody made.
    """
    context = item.get("context")
    traits = item.get("traits")
    identity = context.get("traits") if isinstance(context, dict) else None
    if isinstance(identity, dict) and (traits is None or isinstance(traits, dict)):
        # The gateway folded context.traits into traits: the event's own keys first.
        traits = folded_traits(traits, identity)
    for name, given in (
        ("properties", item.get("properties")),
        ("traits", traits),
        ("partner_attrs", partner_attrs),
    ):
        if name in mapped:
            mapped[name] = _ordered_like(mapped[name], given)
    consent = context.get("consent") if isinstance(context, dict) else None
    categories = consent.get("categories") if isinstance(consent, dict) else None
    mapped_consent = mapped.get("context", {}).get("consent", {})
    if "categories" in mapped_consent:
        mapped_consent["categories"] = _ordered_like(mapped_consent["categories"], categories)
    return mapped


def _ordered_like(value: Any, given: Any) -> Any:
    """``value`` with each dict's keys in ``given``'s order (the rest after them, sorted)."""
    if isinstance(value, dict):
        order = list(given) if isinstance(given, dict) else []
        keys = [k for k in order if k in value] + sorted(k for k in value if k not in order)
        return {k: _ordered_like(value[k], given.get(k) if order else None) for k in keys}
    if isinstance(value, list):
        others = given if isinstance(given, list) and len(given) == len(value) else []
        return [_ordered_like(v, others[i] if others else None) for i, v in enumerate(value)]
    return value


def single_route_only(
    item: Any,
    index: int,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_single_body_bytes: int = DEFAULT_MAX_SINGLE_BODY_BYTES,
) -> str | None:
    """What to tell of an event the single-event routes take but a batch of its own does not.

    Only a config whose ``[gateway] max_body_bytes`` is near or above its
    ``max_batch_body_bytes`` has such events: the gateway answers 413 to the ``/v1/batch``
    body datafly.js sends, yet ``/v1/t``, ``/v1/p`` and ``/v1/i`` deliver the event, so
    ``deliverable_event`` maps it. None for every other event.

    Args:
        item: One decoded JSON event, as ``deliverable_event`` takes it.
        index: Its position in the file.
        max_body_bytes: The largest ``/v1/batch`` body, as for ``deliverable_event``.
        max_single_body_bytes: The largest single-event body, as for ``deliverable_event``.

    Returns:
        One line naming the event and both settings, or None.
    """
    size = _body_size(item)
    if size is None or size + _BATCH_OF_ONE <= max_body_bytes or size > max_single_body_bytes:
        return None
    return (
        f"events[{index}]: fits a /v1/t, /v1/p or /v1/i body ([gateway] max_body_bytes = "
        f"{max_single_body_bytes}) but not a /v1/batch body of its own ([gateway] "
        f"max_batch_body_bytes = {max_body_bytes}): the gateway answers 413 to it from "
        "datafly.js, which sends every event in a batch; mapped as those routes deliver it."
    )


def _check_body_size(item: Any, batch_limit: int, single_limit: int | None) -> None:
    """Refuse an event too large for any body of its own, as the gateway does.

    By default the largest body the gateway takes is a ``/v1/batch`` one (``/v1/t``,
    ``/v1/p`` and ``/v1/i`` take 32 KiB), so an event refused here reaches Deliver by no
    route; one that fits only a single-event route's body is taken (``single_route_only``).

    Raises:
        GatewayError: 413, the gateway's own for the ``/v1/batch`` body.
    """
    size = _body_size(item)
    if size is None or size + _BATCH_OF_ONE <= batch_limit:
        return
    if single_limit is None or size > single_limit:
        raise body_too_large(batch_limit)


def _body_size(item: Any) -> int | None:
    """The bytes of the smallest body that carries the event alone, as a page sends it.

    That is ``JSON.stringify``'s: no spaces, in UTF-8, a lone surrogate as its
    six-character escape; a ``/v1/batch`` body of it is ``_BATCH_OF_ONE`` bytes more.
    ``partnerAttrs`` is left out: Signal attaches them server-side, a page never sends them.
    None for an event nested too deeply to write, whose nesting ``check_value`` refuses.
    """
    sent = (
        {k: v for k, v in item.items() if k not in _PARTNER_ATTRS}
        if isinstance(item, dict)
        else item
    )
    try:
        body = json.dumps(sent, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        return None
    return len(body.encode("utf-8", "backslashreplace"))


def _pop_partner_attrs(data: Any, where: str) -> dict[str, Any] | None:
    """Take ``partnerAttrs`` out of an event, which must then be a JSON object if given."""
    if not isinstance(data, dict):
        return None  # event_from_json refuses a non-object in its words
    given = [(name, data.pop(name)) for name in _PARTNER_ATTRS if name in data]
    sent, value = next(((n, v) for n, v in given if v is not None), ("", None))
    if value is not None and not isinstance(value, dict):
        # Named as the file spelled it, as the gateway's checks name a field.
        raise GatewayError(400, "INVALID_EVENT", "must be a JSON object.", field=f"{where}.{sent}")
    return value


def _facts(data: Any, now: datetime) -> RequestFacts:
    """The request a file's event stands for: no headers or cookie, sent from ``context.ip``."""
    context = data.get("context") if isinstance(data, dict) else None
    ip = context.get("ip") if isinstance(context, dict) else None
    return RequestFacts(
        default_type=DEFAULT_TYPE,
        ip=ip if isinstance(ip, str) else "",
        user_agent=None,  # the event's own context.userAgent is used
        cookie_anonymous_id=None,
        now=now,
        new_message_id=lambda: str(uuid.uuid4()),
    )


def _violation(error: GatewayError, where: str) -> FieldViolation:
    """The gateway's 400 as a violation: its field, and its message without the field."""
    field = error.field or where
    return FieldViolation(field, error.message.removeprefix(f"{field}: "))
