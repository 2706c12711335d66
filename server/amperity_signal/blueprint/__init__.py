"""The blueprint engine: a Datafly event dict in, Amperity's flat payload out.

Pure functions over dicts (no gRPC, no HTTP). Mappings and vertical presets are data, in
``amperity_signal/blueprints/*.yaml``; see ``docs/blueprint.md``.

Typical use::

    blueprint = load_blueprint("retail", integration.blueprint)  # once, at start
    mapped = map_event(blueprint, event, source_value=integration.source_value)
    post(mapped.payload)
"""

from amperity_signal.blueprint.compiled import Blueprint
from amperity_signal.blueprint.datafly_json import event_from_datafly_json
from amperity_signal.blueprint.dryrun import DryRunEntry, DryRunReport, dry_run
from amperity_signal.blueprint.engine import MappedEvent, map_event
from amperity_signal.blueprint.errors import BlueprintError
from amperity_signal.blueprint.loader import BLUEPRINTS_DIR, VERTICALS, load_blueprint
from amperity_signal.blueprint.paths import resolve_path
from amperity_signal.blueprint.render import render_blueprint
from amperity_signal.blueprint.spec import BlueprintOverrides, HandlerSpec, MappingSpec
from amperity_signal.blueprint.transforms import TRANSFORMS

SAMPLES_DIR = BLUEPRINTS_DIR / "samples"
"""Sample Datafly JSON event files (``retail_ga4.json``, ``retail_segment.json``)."""

__all__ = [
    "BLUEPRINTS_DIR",
    "SAMPLES_DIR",
    "TRANSFORMS",
    "VERTICALS",
    "Blueprint",
    "BlueprintError",
    "BlueprintOverrides",
    "DryRunEntry",
    "DryRunReport",
    "HandlerSpec",
    "MappedEvent",
    "MappingSpec",
    "dry_run",
    "event_from_datafly_json",
    "load_blueprint",
    "map_event",
    "render_blueprint",
    "resolve_path",
]
