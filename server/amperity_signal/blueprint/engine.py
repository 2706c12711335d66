"""``map_event``: one event dict in, one flat Amperity payload out.

Pure: no I/O, no global state, nothing of gRPC or HTTP. The payload is built in this
order: ``source``, ``type``, the mappings (global, then the handler's), hashed
identifiers, pass-through properties, and ``consent`` last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from amperity_signal.blueprint.compiled import (
    HASHABLE_IDENTIFIERS,
    Blueprint,
    CompiledHandler,
    CompiledMapping,
)
from amperity_signal.blueprint.consent import build_consent
from amperity_signal.blueprint.errors import TransformError
from amperity_signal.blueprint.flatten import OMITTED, clean_json, flatten_properties, snake_case
from amperity_signal.blueprint.paths import is_empty, resolve_compiled
from amperity_signal.blueprint.transforms import sha256

FALLBACK_TYPE = "event"
"""Pass-through ``type`` of an event with neither a usable name nor a message type."""


@dataclass(frozen=True, slots=True)
class MappedEvent:
    """The result of mapping one event.

    Attributes:
        amperity_type: The payload's ``type``.
        payload: The JSON body for Amperity (``source`` first, then ``type``).
        handler: The handler that matched, or None for pass-through.
        passed_through: True when no handler matched.
        fired: Every payload key written, plus mapping targets (before hashing).
        warnings: Values dropped or transforms that failed, one line each.
    """

    amperity_type: str
    payload: dict[str, Any]
    handler: str | None
    passed_through: bool
    fired: frozenset[str]
    warnings: tuple[str, ...]


def pass_through_type(event: Mapping[str, Any]) -> str:
    """The ``type`` of an unmapped event: its name in snake_case, else its message type."""
    name = event.get("event")
    if isinstance(name, str) and (normalised := snake_case(name)):
        return normalised
    message_type = event.get("type")
    if isinstance(message_type, str) and (normalised := snake_case(message_type)):
        return normalised
    return FALLBACK_TYPE


def interpret_mappings(
    mappings: Sequence[CompiledMapping],
    event: Mapping[str, Any],
    payload: dict[str, Any],
    warnings: list[str],
) -> None:
    """Apply ``mappings`` in order, writing each target that has a value into ``payload``.

    The reference semantics of a mapping, written as a plain loop. ``map_event`` runs the
    same steps generated as one function per handler (``codegen``); tests check that both
    write the same payload and warnings for every preset.
    """
    for mapping in mappings:
        value = _run_mapping(mapping, event, warnings)
        if value is not OMITTED:
            payload[mapping.target] = value


def _run_mapping(mapping: CompiledMapping, event: Mapping[str, Any], warnings: list[str]) -> Any:
    """Read, transform and clean one mapping's value; ``OMITTED`` when there is none."""
    value: Any = None
    for path in mapping.paths:
        value = resolve_compiled(event, path)
        if value is not None and not is_empty(value):
            break
    else:
        if mapping.default is None:
            return OMITTED
        return clean_json(mapping.default, mapping.target, warnings)
    for name, transform in mapping.transforms:
        try:
            value = transform(value)
        except TransformError as exc:
            warnings.append(f"{mapping.target}: transform {name} failed: {exc}; omitted")
            return OMITTED
    return clean_json(value, mapping.target, warnings)


def _hash_identifiers(blueprint: Blueprint, payload: dict[str, Any], warnings: list[str]) -> None:
    """Apply the integration's ``hash_identifiers`` choice to email and phone."""
    if blueprint.hash_identifiers == "plain":
        return
    for target in HASHABLE_IDENTIFIERS:
        value = payload.get(target)
        if value is None:
            continue
        if blueprint.hash_identifiers == "hashed":
            del payload[target]
        try:
            payload[f"{target}_sha256"] = sha256(value)
        except TransformError as exc:
            warnings.append(f"{target}_sha256: cannot hash {target}: {exc}; omitted")


def map_event(blueprint: Blueprint, event: Mapping[str, Any], *, source_value: str) -> MappedEvent:
    """Map one event dict to Amperity's flat payload.

    Args:
        blueprint: The integration's effective blueprint.
        event: The event dict (see ``docs/blueprint.md`` for its keys).
        source_value: The integration's ``source_value``, written as ``source``.

    Returns:
        The payload and what happened while building it. Never raises for odd values:
        they are dropped and reported in ``warnings``.
    """
    handler: CompiledHandler | None = blueprint.match(event)
    amperity_type = handler.amperity_type if handler else pass_through_type(event)
    payload: dict[str, Any] = {"source": source_value, "type": amperity_type}
    warnings: list[str] = []
    if handler is not None:
        handler.map_fields(event, payload, warnings)
    else:
        blueprint.map_global_fields(event, payload, warnings)
    # Only "hashed" removes keys once written (email, phone): remember them as fired.
    written = frozenset(payload) if blueprint.hash_identifiers == "hashed" else frozenset()
    _hash_identifiers(blueprint, payload, warnings)
    properties = event.get("properties")
    if isinstance(properties, Mapping) and (handler is None or handler.spec.include_properties):
        skip: frozenset[str] = handler.mapped_property_keys if handler else frozenset()
        if blueprint.hash_identifiers == "hashed":
            # properties.email feeds email_sha256: passed through it would go out plain.
            skip = skip | blueprint.identifier_property_keys
        flatten_properties(
            properties,
            payload,
            reserved=blueprint.declared_targets,
            skip=skip,
            warnings=warnings,
        )
    consent = build_consent(event)
    if consent is not None:
        payload["consent"] = consent
    return MappedEvent(
        amperity_type=amperity_type,
        payload=payload,
        handler=handler.name if handler else None,
        passed_through=handler is None,
        fired=written.union(payload),
        warnings=tuple(warnings),
    )
