"""The compiled blueprint: mappings with pre-split paths and resolved transform functions.

Compiling happens once when a blueprint is loaded; ``map_event`` only walks these
immutable structures, so the hot path does no parsing, lookup by name or copying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from amperity_signal.blueprint.codegen import MappingFunction, mapping_function
from amperity_signal.blueprint.errors import BlueprintError
from amperity_signal.blueprint.flatten import snake_case
from amperity_signal.blueprint.paths import CompiledPath, compile_path
from amperity_signal.blueprint.spec import BUILT_IN_TARGETS, HandlerSpec, MappingSpec
from amperity_signal.blueprint.transforms import TRANSFORMS, Transform

HashMode = Literal["plain", "hashed", "both"]
HASHABLE_IDENTIFIERS = ("email", "phone")
"""Targets that ``hash_identifiers`` turns into ``<target>_sha256``."""


@dataclass(frozen=True, slots=True)
class CompiledMapping:
    """A mapping ready to run: its paths split and its transforms resolved."""

    spec: MappingSpec
    target: str
    paths: tuple[CompiledPath, ...]
    transforms: tuple[tuple[str, Transform], ...]
    default: Any


@dataclass(frozen=True, slots=True)
class CompiledHandler:
    """A handler ready to run: the global mappings merged with its own, by target.

    ``map_fields`` is ``mappings`` as one generated function (``codegen``).
    """

    name: str
    spec: HandlerSpec
    amperity_type: str
    own_mappings: tuple[CompiledMapping, ...]
    mappings: tuple[CompiledMapping, ...]
    mapped_property_keys: frozenset[str]
    map_fields: MappingFunction


@dataclass(frozen=True, slots=True)
class Blueprint:
    """An effective blueprint: one vertical preset with an integration's overrides applied.

    Attributes:
        vertical: The preset's name (``retail``, ``travel``, ...).
        version: The blueprint version from ``global.yaml``.
        global_mappings: The mappings every event gets.
        handlers: Handlers by name.
        hash_identifiers: How email and phone are sent (plain, hashed or both).
        declared_targets: Every target any mapping or built-in may write (pass-through keys
            equal to one of these get the ``prop_`` prefix).
        by_event_name: Event name (and its snake_case) to handler.
        by_message_type: Message type to handler.
        map_global_fields: ``global_mappings`` as one generated function (``codegen``),
            for events no handler matches.
        identifier_property_keys: Top-level property keys any mapping reads into email
            or phone (``properties.email``, ...); with ``hashed`` they are never passed
            through, so the plain identifier cannot reach Amperity as ``prop_email``.
    """

    vertical: str
    version: str
    global_mappings: tuple[CompiledMapping, ...]
    handlers: Mapping[str, CompiledHandler]
    hash_identifiers: HashMode
    declared_targets: frozenset[str]
    by_event_name: Mapping[str, CompiledHandler]
    by_message_type: Mapping[str, CompiledHandler]
    map_global_fields: MappingFunction
    identifier_property_keys: frozenset[str]

    def match(self, event: Mapping[str, Any]) -> CompiledHandler | None:
        """Find the handler for an event: by message type first, then by event name."""
        message_type = event.get("type")
        if isinstance(message_type, str) and (handler := self.by_message_type.get(message_type)):
            return handler
        name = event.get("event")
        if not name or not isinstance(name, str):
            return None
        return self.by_event_name.get(name) or self.by_event_name.get(snake_case(name))


def compile_mapping(spec: MappingSpec) -> CompiledMapping:
    """Compile one mapping (its spec was validated, so paths and transforms exist)."""
    paths = [spec.source] if spec.source is not None else []
    return CompiledMapping(
        spec=spec,
        target=spec.target,
        paths=tuple(compile_path(p) for p in [*paths, *spec.fallbacks]),
        transforms=tuple((name, TRANSFORMS[name]) for name in spec.transform_names),
        default=spec.default,
    )


def merge_by_target(
    base: Sequence[CompiledMapping], extra: Sequence[CompiledMapping]
) -> tuple[CompiledMapping, ...]:
    """Return ``base`` with same-target mappings replaced in place by ``extra``, rest appended."""
    replacements = {m.target: m for m in extra}
    merged = [replacements.pop(m.target, m) for m in base]
    merged.extend(m for m in extra if m.target in replacements)
    return tuple(merged)


def _mapped_property_keys(mappings: Sequence[CompiledMapping]) -> frozenset[str]:
    """Top-level property keys a handler's mappings read (left out of include_properties)."""
    keys = set()
    for mapping in mappings:
        for path in mapping.paths:
            if len(path) >= 2 and path[0][0] == "properties":
                keys.add(path[1][0])
    return frozenset(keys)


def compile_handler(
    name: str,
    spec: HandlerSpec,
    global_mappings: Sequence[CompiledMapping],
    mapping_sets: Mapping[str, Sequence[CompiledMapping]],
    origin: str,
) -> CompiledHandler:
    """Compile a handler, expanding its ``use`` sets and merging it over the globals.

    Raises:
        BlueprintError: It uses a mapping set the preset does not define.
    """
    own: tuple[CompiledMapping, ...] = ()
    for set_name in spec.use:
        if set_name not in mapping_sets:
            raise BlueprintError(
                f"{origin}: handler {name!r} uses mapping set {set_name!r}, which is not "
                f"defined; defined sets: {', '.join(sorted(mapping_sets)) or 'none'}"
            )
        own = merge_by_target(own, mapping_sets[set_name])
    own = merge_by_target(own, [compile_mapping(m) for m in spec.mappings])
    mappings = merge_by_target(global_mappings, own)
    return CompiledHandler(
        name=name,
        spec=spec,
        amperity_type=spec.type,
        own_mappings=own,
        mappings=mappings,
        mapped_property_keys=_mapped_property_keys(own),
        map_fields=mapping_function(mappings),
    )


def build_blueprint(
    *,
    vertical: str,
    version: str,
    global_mappings: tuple[CompiledMapping, ...],
    handlers: Mapping[str, CompiledHandler],
    hash_identifiers: HashMode,
    origins: Mapping[str, str],
) -> Blueprint:
    """Assemble a blueprint and its lookup tables, refusing an event claimed twice.

    Args:
        vertical: The preset name.
        version: The blueprint version.
        global_mappings: The effective global mappings.
        handlers: The effective handlers by name.
        hash_identifiers: The integration's hashing choice.
        origins: Handler name -> where it was defined, for error messages.

    Raises:
        BlueprintError: Two handlers claim the same event name or message type.
    """
    by_name: dict[str, CompiledHandler] = {}
    by_type: dict[str, CompiledHandler] = {}
    for handler in handlers.values():
        claims = [(by_type, t, t) for t in handler.spec.message_types]
        claims += [(by_name, n, n) for n in handler.spec.events]
        claims += [(by_name, snake_case(n), n) for n in handler.spec.events]
        for table, key, shown in claims:
            other = table.get(key)
            if other is not None and other is not handler:
                raise BlueprintError(
                    f"{origins[handler.name]}: handler {handler.name!r} claims {shown!r}, "
                    f"already claimed by handler {other.name!r} ({origins[other.name]}); "
                    f"replace {other.name!r} by name or remove {shown!r} from one of them"
                )
            table[key] = handler
    targets = {m.target for m in global_mappings}
    identifier_mappings = [m for m in global_mappings if m.target in HASHABLE_IDENTIFIERS]
    for handler in handlers.values():
        targets.update(m.target for m in handler.own_mappings)
        identifier_mappings += [m for m in handler.own_mappings if m.target in HASHABLE_IDENTIFIERS]
    targets.update(BUILT_IN_TARGETS)
    targets.update(f"{t}_sha256" for t in HASHABLE_IDENTIFIERS)
    return Blueprint(
        vertical=vertical,
        version=version,
        global_mappings=global_mappings,
        handlers=MappingProxyType(dict(handlers)),
        hash_identifiers=hash_identifiers,
        declared_targets=frozenset(targets),
        by_event_name=MappingProxyType(by_name),
        by_message_type=MappingProxyType(by_type),
        map_global_fields=mapping_function(global_mappings),
        identifier_property_keys=_mapped_property_keys(identifier_mappings),
    )
