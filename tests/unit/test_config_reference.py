"""The README's configuration reference is the models': every field, its default, its range.

Each table of the reference follows a ``<!-- config-reference: [TABLE] -->`` line and has
``field``, ``default`` and ``allowed`` columns. Until session 26 ``[server] workers`` was
in no table and several defaults and bounds (``max_retries`` 0-20, ``jitter`` 0-0.5, ...)
were nowhere, while ``check-config`` told them right.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from amperity_signal.config import (
    CacheSettings,
    GatewayTable,
    IntegrationSettings,
    ServerSettings,
    settings_from_dict,
)
from amperity_signal.errors import ConfigError
from tests.unit.cli_support import integration

README = Path(__file__).resolve().parents[2] / "README.md"
MODELS: dict[str, type[BaseModel]] = {
    "[server]": ServerSettings,
    "[cache]": CacheSettings,
    "[gateway]": GatewayTable,
    "[[integrations]]": IntegrationSettings,
}
_MARKER = re.compile(r"<!-- config-reference: (\S+) -->")


def reference_tables(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """Each marked table of ``text``: its rows by field name, each row's cells by column."""
    tables: dict[str, dict[str, dict[str, str]]] = {}
    lines = text.splitlines()
    for at, line in enumerate(lines):
        marker = _MARKER.fullmatch(line.strip())
        if marker is None:
            continue
        header = _cells(lines[at + 1])
        rows: dict[str, dict[str, str]] = {}
        for row in lines[at + 3 :]:
            if not row.startswith("|"):
                break
            cells = dict(zip(header, _cells(row), strict=True))
            [name] = re.findall(r"`([a-z0-9_]+)`", cells["field"])
            assert name not in rows, f"{marker[1]} {name} has two rows"
            rows[name] = cells
        tables[marker[1]] = rows
    return tables


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _number(value: Any) -> str:
    """A number as the reference writes it: ``3600``, not the ``3600.0`` of a float field."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def written_default(field: FieldInfo) -> str:
    """The model's default as the reference writes it (TOML words; "required" without one)."""
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return "none"
    default = field.default
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, int | float):
        return _number(default)
    if isinstance(default, str):
        return f'"{default}"'
    return {None: "unset", (): "[]"}[default]


def written_range(field: FieldInfo) -> str | None:
    """The values the model allows, as the reference writes them; None when it has no rule.

    Bounds (``1 to 64``, ``at least 100``, ``more than 0, up to 3600``) for a number, the
    values for a choice (``memory, redis``).
    """
    if typing.get_origin(field.annotation) is typing.Literal:
        return ", ".join(typing.get_args(field.annotation))
    if field.annotation not in (int, float):
        return None
    lowest = highest = None
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Ge):
            lowest = _number(bound.ge)
        elif isinstance(bound, annotated_types.Gt):
            lowest = f"more than {_number(bound.gt)}"
        elif isinstance(bound, annotated_types.Le):
            highest = _number(bound.le)
    if lowest is None:
        return f"at most {highest}" if highest is not None else "any"
    if highest is None:
        return lowest if lowest.startswith("more") else f"at least {lowest}"
    return f"{lowest}, up to {highest}" if lowest.startswith("more") else f"{lowest} to {highest}"


def cell_value(cell: str) -> str:
    """A cell's value without its gloss: ``1048576 (1 MiB)`` is 1048576, ``10 s`` is 10."""
    value = cell.split(" (", 1)[0].replace("`", "").strip()
    return value.removesuffix(" s")


TABLES = reference_tables(README.read_text())


@pytest.mark.parametrize("table", MODELS)
def test_every_field_of_a_table_is_in_its_reference_and_nothing_else(table: str) -> None:
    """A field added to a model without a README row (or a row left for a field gone) fails."""
    assert set(TABLES[table]) == set(MODELS[table].model_fields)


@pytest.mark.parametrize(
    ("table", "name"),
    [(table, name) for table, model in MODELS.items() for name in model.model_fields],
)
def test_each_field_s_default_and_range_are_the_model_s(table: str, name: str) -> None:
    """The default and allowed columns say what the model does, field by field."""
    field = MODELS[table].model_fields[name]
    row = TABLES[table][name]
    assert cell_value(row["default"]) == written_default(field)
    expected = written_range(field)
    if expected is not None:
        assert cell_value(row["allowed"]) == expected


@pytest.mark.parametrize(
    ("table", "name"),
    [
        (table, name)
        for table, model in MODELS.items()
        for name, field in model.model_fields.items()
        if field.annotation in (int, float)
    ],
)
def test_each_documented_bound_is_the_one_check_config_enforces(table: str, name: str) -> None:
    """Just past a documented bound is refused naming the field; the bound itself loads."""
    allowed = cell_value(TABLES[table][name]["allowed"])
    numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", allowed)]
    step = 1.0 if MODELS[table].model_fields[name].annotation is int else 0.01
    for bound, inside in _edges(allowed, numbers, step):
        raw = _with(table, name, bound)
        if inside:
            settings_from_dict(raw, {})
        else:
            with pytest.raises(ConfigError) as caught:
                settings_from_dict(raw, {})
            assert any(p.location.endswith(name) for p in caught.value.problems)


def _edges(allowed: str, numbers: list[float], step: float) -> list[tuple[float, bool]]:
    """Values at and ``step`` past each bound of ``allowed``, each with whether it is allowed."""
    if allowed.startswith("more than"):
        edges = [(numbers[0], False), (numbers[0] + step, True)]
        rest = numbers[1:]
    elif allowed.startswith("at most"):
        return [(numbers[0], True), (numbers[0] + step, False)]
    else:
        edges = [(numbers[0], True), (numbers[0] - step, False)]
        rest = numbers[1:]
    for highest in rest:
        edges += [(highest, True), (highest + step, False)]
    return edges


def _with(table: str, name: str, value: float) -> dict[str, Any]:
    """A configuration that is valid but for ``name`` = ``value`` (a whole number if it is)."""
    number: float = int(value) if value.is_integer() else value
    if table == "[[integrations]]":
        return {"integrations": [integration(**{name: number})]}
    return {table.strip("[]"): {name: number}, "integrations": [integration()]}
