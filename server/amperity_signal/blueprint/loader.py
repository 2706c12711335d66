"""Reading the blueprint YAML files and compiling a vertical preset with overrides.

Parsed files are cached per path (``functools.cache`` over immutable, validated models),
so loading the same vertical for many integrations reads and validates each file once;
compiling with an integration's overrides is cheap and happens per call.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from amperity_signal.blueprint.compiled import (
    Blueprint,
    CompiledHandler,
    CompiledMapping,
    build_blueprint,
    compile_handler,
    compile_mapping,
    merge_by_target,
)
from amperity_signal.blueprint.errors import BlueprintError
from amperity_signal.blueprint.spec import BlueprintOverrides, GlobalFile, HandlerSpec, PresetFile

BLUEPRINTS_DIR = Path(__file__).resolve().parent.parent / "blueprints"
"""Where the shipped ``global.yaml`` and preset files live."""

VERTICALS: tuple[str, ...] = (
    "retail",
    "travel",
    "finance",
    "b2b_saas",
    "media",
    "gaming",
    "publishing",
)
"""The vertical presets the blueprint ships, one ``<vertical>.yaml`` each.

The one list: the configuration check of ``[[integrations]] vertical`` imports it."""

GLOBAL_FILE = "global.yaml"
_Model = TypeVar("_Model", bound=BaseModel)


def _describe(error: ValidationError, origin: str) -> str:
    """Render every validation problem as ``origin: location: message`` lines."""
    lines = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against docs/blueprint.md"
        elif problem["type"] == "bool_type":
            name = next((p for p in reversed(problem["loc"]) if isinstance(p, str)), "flag")
            message = f"must be true or false, without quotes, e.g. {name}: true"
        lines.append(f"{origin}: {location}: {message}")
    return "\n".join(lines)


def _parse(path: Path, model: type[_Model]) -> _Model:
    """Read, parse and validate one YAML file, turning every failure into BlueprintError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BlueprintError(
            f"{path}: cannot read the blueprint file ({exc.strerror}); "
            "check the path or reinstall the package"
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BlueprintError(f"{path.name}: invalid YAML{where}: {exc}") from exc
    if not isinstance(data, dict):
        raise BlueprintError(f"{path.name}: expected a mapping at the top level of the file")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BlueprintError(_describe(exc, path.name)) from exc


@functools.cache
def _read_global(path: Path) -> GlobalFile:
    """Parse ``global.yaml`` once per path."""
    return _parse(path, GlobalFile)


@functools.cache
def _read_preset(path: Path) -> PresetFile:
    """Parse one preset file once per path."""
    preset = _parse(path, PresetFile)
    if preset.vertical != path.stem:
        raise BlueprintError(
            f"{path.name}: 'vertical' is {preset.vertical!r} but the file is named for "
            f"{path.stem!r}; make them the same"
        )
    return preset


def load_blueprint(
    vertical: str,
    overrides: BlueprintOverrides | None = None,
    *,
    directory: Path | None = None,
) -> Blueprint:
    """Load a vertical preset, merge it with ``global.yaml`` and an integration's overrides.

    Args:
        vertical: One of :data:`VERTICALS` (or a file stem in ``directory``).
        overrides: The integration's ``blueprint`` section, if any.
        directory: Where to read the YAML from (defaults to the shipped files).

    Returns:
        The compiled, immutable blueprint.

    Raises:
        BlueprintError: Unknown vertical, unreadable or invalid YAML, or overrides that do
            not fit the preset; the message names the file, the field and the fix.
    """
    folder = directory or BLUEPRINTS_DIR
    preset_path = folder / f"{vertical}.yaml"
    if directory is None and vertical not in VERTICALS:
        raise BlueprintError(
            f"unknown vertical {vertical!r}; choose one of: {', '.join(VERTICALS)}"
        )
    shared = _read_global(folder / GLOBAL_FILE)
    preset = _read_preset(preset_path)
    overrides = overrides or BlueprintOverrides()

    global_mappings: tuple[CompiledMapping, ...] = merge_by_target(
        [compile_mapping(m) for m in shared.global_.mappings],
        [compile_mapping(m) for m in overrides.global_mappings],
    )
    mapping_sets = {
        name: tuple(compile_mapping(m) for m in specs)
        for name, specs in preset.mapping_sets.items()
    }
    specs: dict[str, tuple[HandlerSpec, str]] = {}
    for origin, handlers in (
        (GLOBAL_FILE, shared.handlers),
        (preset_path.name, preset.handlers),
        ("blueprint overrides", overrides.handlers),
    ):
        specs.update({name: (spec, origin) for name, spec in handlers.items()})
    compiled: dict[str, CompiledHandler] = {
        name: compile_handler(name, spec, global_mappings, mapping_sets, origin)
        for name, (spec, origin) in specs.items()
    }
    return build_blueprint(
        vertical=vertical,
        version=shared.version,
        global_mappings=global_mappings,
        handlers=compiled,
        hash_identifiers=overrides.hash_identifiers,
        origins={name: origin for name, (_, origin) in specs.items()},
    )
