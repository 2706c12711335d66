"""The generated mapping functions write exactly what the reference interpreter writes.

``map_event`` runs each handler's mappings as one generated function (``codegen``);
``interpret_mappings`` is the same semantics as a plain loop. For every preset, the
shipped samples, an event per claimed name and random events (hypothesis), both must
write the same keys, in the same order, with the same values and warnings.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amperity_signal.blueprint import (
    SAMPLES_DIR,
    VERTICALS,
    Blueprint,
    BlueprintOverrides,
    event_from_datafly_json,
    load_blueprint,
    map_event,
)
from amperity_signal.blueprint.codegen import mapping_function, source_of
from amperity_signal.blueprint.compiled import CompiledMapping, HashMode, compile_mapping
from amperity_signal.blueprint.engine import interpret_mappings
from amperity_signal.blueprint.paths import CompiledPath
from amperity_signal.blueprint.spec import MappingSpec

HASH_MODES: list[HashMode] = ["plain", "hashed", "both"]
BLUEPRINTS = {
    vertical: load_blueprint(vertical, BlueprintOverrides(hash_identifiers=mode))
    for vertical, mode in zip(VERTICALS, HASH_MODES * 3, strict=False)
}
SAMPLES = [
    event_from_datafly_json(raw)
    for name in ("retail_ga4.json", "retail_segment.json")
    for raw in json.loads((SAMPLES_DIR / name).read_text())
]


def _mapping_sets(blueprint: Blueprint) -> list[tuple[str, Sequence[CompiledMapping], Any]]:
    """Every generated function of a blueprint with the mappings it was made from."""
    sets: list[tuple[str, Sequence[CompiledMapping], Any]] = [
        ("global", blueprint.global_mappings, blueprint.map_global_fields)
    ]
    sets += [(h.name, h.mappings, h.map_fields) for h in blueprint.handlers.values()]
    return sets


def _same(left: Any, right: Any) -> bool:
    """Equal, NaN included (a NaN default is written as is by both)."""
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    return bool(left == right) and type(left) is type(right)


def assert_equivalent(mappings: Sequence[CompiledMapping], generated: Any, event: Any) -> None:
    """Both forms write the same payload (keys in order, values, types) and warnings."""
    expected: dict[str, Any] = {"source": "s", "type": "t"}
    expected_warnings: list[str] = []
    interpret_mappings(mappings, event, expected, expected_warnings)
    payload: dict[str, Any] = {"source": "s", "type": "t"}
    warnings: list[str] = []
    generated(event, payload, warnings)
    assert list(payload) == list(expected)
    assert all(_same(payload[key], expected[key]) for key in expected), (payload, expected)
    assert warnings == expected_warnings


def _claimed_events(blueprint: Blueprint, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One event per name and message type any handler claims, on a sample's fields."""
    events = [{**base, "type": "track", "event": name} for name in blueprint.by_event_name]
    events += [{**base, "type": message_type} for message_type in blueprint.by_message_type]
    return events


@pytest.mark.parametrize("vertical", VERTICALS)
def test_every_preset_maps_its_samples_and_claimed_events_as_the_interpreter_does(
    vertical: str,
) -> None:
    """Shipped samples and every claimed event, through every handler and the globals."""
    blueprint = BLUEPRINTS[vertical]
    events = SAMPLES + [e for sample in SAMPLES for e in _claimed_events(blueprint, sample)]
    for _, mappings, generated in _mapping_sets(blueprint):
        for event in events:
            assert_equivalent(mappings, generated, event)


@pytest.mark.parametrize("vertical", VERTICALS)
def test_map_event_output_is_unchanged_by_the_generated_form(vertical: str) -> None:
    """map_event's payload equals the globals/handler interpreted plus the built-ins."""
    blueprint = BLUEPRINTS[vertical]
    for sample in SAMPLES:
        for event in _claimed_events(blueprint, sample):
            mapped = map_event(blueprint, event, source_value="DATAFLY")
            handler = blueprint.match(event)
            mappings = handler.mappings if handler else blueprint.global_mappings
            reference: dict[str, Any] = {}
            interpret_mappings(mappings, event, reference, [])
            for target, value in reference.items():
                if target not in ("email", "phone"):
                    assert mapped.payload[target] == value
            assert set(reference) <= mapped.fired


def _all_paths() -> list[CompiledPath]:
    """Every path any preset's mappings read."""
    paths = {
        path
        for blueprint in BLUEPRINTS.values()
        for _, mappings, _ in _mapping_sets(blueprint)
        for mapping in mappings
        for path in mapping.paths
    }
    return sorted(paths)


PATHS = _all_paths()
SCALARS = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=6),
    st.sampled_from([" Jane ", "+44 (20) 7946-0958", "yes", "12.5", "2026-04-17T15:37:10Z"]),
    st.integers(min_value=-(10**13), max_value=10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(timezones=st.just(UTC), min_value=datetime(1000, 1, 1)),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=2).map(tuple),
        st.dictionaries(
            st.sampled_from(["item_id", "name", "price", "0", "x"]), children, max_size=3
        ),
        st.dictionaries(st.sampled_from(["sku", "1"]), children, max_size=2).map(MappingProxyType),
    ),
    max_leaves=6,
)


def _place(event: dict[str, Any], path: CompiledPath, value: Any, as_list: bool) -> None:
    """Write ``value`` at ``path``, making dicts (or a list for a numeric segment) on the way."""
    current: Any = event
    for position, (key, index) in enumerate(path):
        last = position == len(path) - 1
        child: Any = value if last else {}
        if isinstance(current, list):
            if index is None:  # an earlier path put a list where this one needs a dict
                return
            while len(current) <= index:
                current.append({})
            if last or not isinstance(current[index], dict | list):
                current[index] = child
            current = current[index]
            continue
        if not isinstance(current, dict):
            return
        if not last and as_list and path[position + 1][1] is not None:
            child = []
        if last or not isinstance(current.get(key), dict | list):
            current[key] = child
        current = current[key]


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """An event with random values at a random subset of the paths mappings read."""
    event: dict[str, Any] = {}
    for path in draw(st.lists(st.sampled_from(PATHS), max_size=60)):
        _place(event, path, draw(VALUES), draw(st.booleans()))
    return event


ODD_VALUES = [
    None,
    "",
    [],
    {},
    (),
    0,
    False,
    float("nan"),
    float("inf"),
    12.0,
    " Jane@Example.COM ",
    "not a number",
    b"bytes are not JSON",
    datetime(2026, 4, 17, 15, 37, 10, 484000, tzinfo=UTC),
    [{"item_id": 7.0, "price": "9.5"}, {"x": float("nan")}],
    ("a", None, ""),
    MappingProxyType({"sku": "S-1", "0": {"item_id": "A"}}),
    {"0": "zero", "nested": {"deep": [1, float("inf")]}},
]


def _fresh(value: Any) -> Any:
    """A copy, so later paths never write into a value placed at an earlier one."""
    if isinstance(value, MappingProxyType):
        return MappingProxyType(copy.deepcopy(dict(value)))
    return copy.deepcopy(value)


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
@pytest.mark.parametrize("as_list", [False, True], ids=["dicts", "lists"])
def test_an_odd_value_at_every_path_maps_as_the_interpreter_maps_it(
    value: Any, as_list: bool
) -> None:
    """Empties, non-finite numbers, non-JSON, containers and Mappings at every read path."""
    event: dict[str, Any] = {}
    for path in PATHS:
        _place(event, path, _fresh(value), as_list)
    for blueprint in BLUEPRINTS.values():
        for _, mappings, generated in _mapping_sets(blueprint):
            assert_equivalent(mappings, generated, event)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events(), vertical=st.sampled_from(VERTICALS), pick=st.integers(min_value=0))
def test_random_events_map_as_the_interpreter_maps_them(
    event: dict[str, Any], vertical: str, pick: int
) -> None:
    """Any values at the read paths (empty, odd types, lists, Mappings) map identically."""
    sets = _mapping_sets(BLUEPRINTS[vertical])
    _, mappings, generated = sets[pick % len(sets)]
    assert_equivalent(mappings, generated, event)


def test_no_blueprint_text_is_written_into_the_generated_source() -> None:
    """Keys, targets and defaults are bound as constants: code-like text stays data."""
    hostile = "x\"]; __import__('os'); #"
    overrides = BlueprintOverrides.model_validate(
        {
            "global_mappings": [
                {"source": f"properties.{hostile}", "target": "odd", "default": hostile},
            ]
        }
    )
    blueprint = load_blueprint("retail", overrides)
    source = source_of(blueprint.map_global_fields)

    assert "__import__" not in source
    assert "odd" not in source
    payload: dict[str, Any] = {}
    blueprint.map_global_fields({"properties": {hostile: "read"}}, payload, [])
    assert payload["odd"] == "read"
    payload = {}
    blueprint.map_global_fields({}, payload, [])
    assert payload["odd"] == hostile


def test_blueprints_of_one_shape_share_compiled_code_but_keep_their_own_values() -> None:
    """Two integrations' overrides of one shape: one compile, each its own targets.

    The generated text is the same for both (their values are constants in the function's
    namespace), so it is compiled once; each still writes its own target and default.
    """
    made = [
        load_blueprint(
            "retail",
            BlueprintOverrides.model_validate(
                {"global_mappings": [{"source": "properties.x", "target": t, "default": t}]}
            ),
        ).map_global_fields
        for t in ("first_target", "second_target")
    ]
    assert made[0].__code__ is made[1].__code__
    assert made[0] is not made[1]
    written = []
    for function in made:
        payload: dict[str, Any] = {}
        function({}, payload, [])
        written.append({k: v for k, v in payload.items() if k.endswith("_target")})
    assert written == [{"first_target": "first_target"}, {"second_target": "second_target"}]


class _CountingMapping(Mapping[str, Any]):
    """A read-only event that counts how often each key is looked up."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self.reads: dict[str, int] = {}

    def __getitem__(self, key: str) -> Any:
        self.reads[key] = self.reads.get(key, 0) + 1
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_a_prefix_shared_by_several_paths_is_read_once_per_event() -> None:
    """``context`` (dozens of paths start there) is looked up once, with the same payload."""
    mappings = [
        compile_mapping(MappingSpec(source=source, target=target))
        for source, target in [
            ("context.page.url", "page_url"),
            ("context.page.path", "page_path"),
            ("context.ip", "ip_address"),
            ("anonymous_id", "anonymous_id"),
        ]
    ]
    data = {"context": {"page": {"url": "https://a.test/x", "path": "/x"}, "ip": "1.2.3.4"}}
    event = _CountingMapping({**data, "anonymous_id": "anon-1"})

    assert_equivalent(mappings, mapping_function(mappings), event)
    event.reads.clear()
    payload: dict[str, Any] = {}
    mapping_function(mappings)(event, payload, [])

    assert event.reads == {"context": 1, "anonymous_id": 1}
    assert payload == {
        "page_url": "https://a.test/x",
        "page_path": "/x",
        "ip_address": "1.2.3.4",
        "anonymous_id": "anon-1",
    }


@pytest.mark.parametrize(
    ("value", "transform", "problem"),
    [
        ("2025-01-31T12:00:00z", "iso8601", "'2025-01-31T12:00:00z' is not an ISO 8601 timestamp"),
        ("1738324800", "iso8601", "'1738324800' is not an ISO 8601 timestamp"),
        ("   ", ["trim", "iso8601"], "'' is not an ISO 8601 timestamp"),
        (True, "iso8601", "True is not a timestamp"),
        (math.nan, "iso8601", "nan is not a timestamp"),
        (1e30, "iso8601", "1e+30 is outside the years 1-9999 (UTC)"),
    ],
    ids=repr,
)
def test_an_iso8601_failure_is_warned_in_the_same_words_by_both_forms(
    value: Any, transform: str | list[str], problem: str
) -> None:
    """The value is left out and the warning says why, the same from the generated code."""
    mappings = [
        compile_mapping(
            MappingSpec(source="traits.created_at", target="user_created_at", transform=transform)
        )
    ]
    event = {"traits": {"created_at": value}}
    payload: dict[str, Any] = {}
    warnings: list[str] = []
    mapping_function(mappings)(event, payload, warnings)

    assert payload == {}
    assert warnings == [f"user_created_at: transform iso8601 failed: {problem}; omitted"]
    assert_equivalent(mappings, mapping_function(mappings), event)
