"""Pydantic models of the blueprint YAML and of an integration's blueprint overrides.

The same ``MappingSpec`` and ``HandlerSpec`` describe the shipped files
(``global.yaml``, one file per vertical preset) and the overrides an integration embeds
under ``blueprint`` in its configuration, so both are validated by one set of rules.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

from amperity_signal.blueprint.paths import compile_event_path
from amperity_signal.blueprint.transforms import TRANSFORMS

BUILT_IN_TARGETS = frozenset({"source", "type", "consent"})
"""Payload keys the engine always writes itself; no mapping may target them."""

HANDLER_MESSAGE_TYPES = frozenset({"page", "identify", "screen", "group", "alias"})
"""Datafly message types a handler may claim (``track`` events match by name)."""

_TARGET_SHAPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# How a default that JSON cannot carry is named, in the words of TOML.
_SHAPE_NAMES: dict[type, str] = {
    list: "an array",
    dict: "a table",
    datetime: "a date-time",
    date: "a date",
    time: "a time",
}

JsonScalar = str | int | float | bool
HANDLER_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
HandlerName = Annotated[str, StringConstraints(pattern=HANDLER_NAME_PATTERN)]


class _Strict(BaseModel):
    """Base: unknown keys are errors (a typo must not be silently ignored); immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MappingSpec(_Strict):
    """One flat payload field: where its value comes from and how it is transformed.

    Attributes:
        source: Dotted path into the event (``context.page.path``, ``properties.items.0.id``).
        target: The flat payload key written.
        fallbacks: Paths tried in order when ``source`` is empty.
        default: Written as-is when every path is empty.
        transform: A transform name, or a list applied in order.
    """

    source: str | None = None
    target: str
    fallbacks: list[str] = Field(default_factory=list)
    default: JsonScalar | None = None
    transform: str | list[str] | None = None

    @field_validator("default", mode="before")
    @classmethod
    def _default_is_one_json_scalar(cls, default: Any) -> Any:
        """One message for a wrong default, not one per member of the union it may be.

        NaN and infinity (TOML and YAML both have them) are no JSON: such a default would be
        dropped, with a warning, from every event it was written for.
        """
        if default is None or isinstance(default, str | bool | int):
            return default
        if isinstance(default, float) and math.isfinite(default):
            return default
        given = _SHAPE_NAMES.get(type(default), "something else")
        if isinstance(default, float):
            given = "inf or nan, which JSON cannot carry"
        raise ValueError(
            f"must be a string, a number or true or false (the value sent when the event has "
            f'none, e.g. "unknown" or 0), not {given}'
        )

    @field_validator("target")
    @classmethod
    def _target_is_a_flat_key(cls, target: str) -> str:
        if target in BUILT_IN_TARGETS:
            raise ValueError(
                f"target {target!r} is built into the engine and cannot be mapped; "
                f"choose another target name (built-ins: {', '.join(sorted(BUILT_IN_TARGETS))})"
            )
        if not _TARGET_SHAPE.fullmatch(target):
            raise ValueError(f"target {target!r} must be a flat key such as 'page_url'")
        return target

    @field_validator("source")
    @classmethod
    def _source_is_a_path(cls, source: str | None) -> str | None:
        if source is not None:
            compile_event_path(source)
        return source

    @field_validator("fallbacks")
    @classmethod
    def _fallbacks_are_paths(cls, fallbacks: list[str]) -> list[str]:
        for path in fallbacks:
            compile_event_path(path)
        return fallbacks

    @model_validator(mode="after")
    def _transforms_exist_and_something_is_read(self) -> MappingSpec:
        unknown = [name for name in self.transform_names if name not in TRANSFORMS]
        if unknown:
            raise ValueError(
                f"mapping for target {self.target!r}: unknown transform "
                f"{', '.join(repr(n) for n in unknown)}; allowed: {', '.join(TRANSFORMS)}"
            )
        if self.source is None and self.default is None:
            raise ValueError(f"mapping for target {self.target!r} needs a source or a default")
        return self

    @property
    def transform_names(self) -> tuple[str, ...]:
        """The transforms as a tuple, in the order they apply."""
        if self.transform is None:
            return ()
        return (self.transform,) if isinstance(self.transform, str) else tuple(self.transform)

    def to_data(self) -> dict[str, Any]:
        """Return the mapping as YAML-ready data, leaving out unset fields."""
        return self.model_dump(exclude_defaults=True)


class HandlerSpec(_Strict):
    """An event handler: which events it claims and the fields it maps for them.

    Attributes:
        type: The Amperity ``type`` written for matched events.
        events: Event names it matches, aliases included (matched exactly and by snake_case).
        message_types: Datafly message types it matches whatever the name (e.g. ``page``).
        use: Names of the preset's ``mapping_sets`` included before ``mappings``.
        mappings: Handler mappings; a target here replaces the global mapping of that name.
        include_properties: Also pass the properties no mapping reads through, flattened.
    """

    type: str = Field(min_length=1)
    events: list[str] = Field(default_factory=list)
    message_types: list[str] = Field(default_factory=list)
    use: list[str] = Field(default_factory=list)
    mappings: list[MappingSpec] = Field(default_factory=list)
    # Strict: lax mode read "yes", "no", "off" or 1 as booleans; TOML and
    # YAML have true and false, and anything else is a mistake to name.
    include_properties: StrictBool = False

    @field_validator("message_types")
    @classmethod
    def _known_message_types(cls, message_types: list[str]) -> list[str]:
        unknown = sorted(set(message_types) - HANDLER_MESSAGE_TYPES)
        if unknown:
            raise ValueError(
                f"unknown message type(s) {unknown}; allowed: {sorted(HANDLER_MESSAGE_TYPES)} "
                "(track events are matched by their event name under 'events')"
            )
        return message_types

    @model_validator(mode="after")
    def _claims_something(self) -> HandlerSpec:
        if not self.events and not self.message_types:
            raise ValueError("a handler needs 'events' or 'message_types' to match anything")
        return self


class GlobalSection(_Strict):
    """The ``global:`` section of ``global.yaml``."""

    mappings: list[MappingSpec]


class GlobalFile(_Strict):
    """``global.yaml``: the blueprint version, its default and the shared mappings."""

    version: str
    default: Literal["pass_through"] = "pass_through"
    global_: GlobalSection = Field(alias="global")
    handlers: dict[HandlerName, HandlerSpec] = Field(default_factory=dict)


class PresetFile(_Strict):
    """One vertical preset file (``retail.yaml``, ...): its mapping sets and handlers."""

    vertical: str
    description: str = ""
    mapping_sets: dict[str, list[MappingSpec]] = Field(default_factory=dict)
    handlers: dict[HandlerName, HandlerSpec]


class BlueprintOverrides(_Strict):
    """What one integration changes in its vertical preset (``blueprint`` in its config).

    Attributes:
        global_mappings: Replace the global mapping with the same target, or add one.
        handlers: Add a handler, or replace the preset's handler of the same name.
        hash_identifiers: ``plain`` sends email/phone, ``hashed`` sends only
            ``email_sha256``/``phone_sha256``, ``both`` sends both.
    """

    global_mappings: list[MappingSpec] = Field(default_factory=list)
    handlers: dict[HandlerName, HandlerSpec] = Field(default_factory=dict)
    hash_identifiers: Literal["plain", "hashed", "both"] = "plain"
