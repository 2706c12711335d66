"""``render_blueprint``: the effective blueprint as readable YAML (``blueprint show``)."""

from __future__ import annotations

from typing import Any

import yaml

from amperity_signal.blueprint.compiled import Blueprint, CompiledMapping
from amperity_signal.blueprint.spec import BUILT_IN_TARGETS


def _mappings(mappings: tuple[CompiledMapping, ...]) -> list[dict[str, Any]]:
    """Mappings as YAML-ready dicts, in payload order."""
    return [m.spec.to_data() for m in mappings]


def blueprint_data(blueprint: Blueprint) -> dict[str, Any]:
    """Return the effective blueprint as plain data (what ``render_blueprint`` dumps).

    Handlers list only their own mappings (mapping sets expanded, overrides applied); every
    handler also gets all global mappings whose targets it does not replace.
    """
    handlers = {}
    for name, handler in blueprint.handlers.items():
        entry: dict[str, Any] = {"type": handler.amperity_type}
        if handler.spec.message_types:
            entry["message_types"] = list(handler.spec.message_types)
        if handler.spec.events:
            entry["events"] = list(handler.spec.events)
        if handler.spec.include_properties:
            entry["include_properties"] = True
        if handler.own_mappings:
            entry["mappings"] = _mappings(handler.own_mappings)
        handlers[name] = entry
    return {
        "version": blueprint.version,
        "vertical": blueprint.vertical,
        "default": "pass_through",
        "hash_identifiers": blueprint.hash_identifiers,
        "built_ins": sorted(BUILT_IN_TARGETS),
        "global": {"mappings": _mappings(blueprint.global_mappings)},
        "handlers": handlers,
    }


def render_blueprint(blueprint: Blueprint) -> str:
    """Render the effective blueprint as YAML, in the same shape as the shipped files."""
    return yaml.safe_dump(blueprint_data(blueprint), sort_keys=False, allow_unicode=True, width=100)
