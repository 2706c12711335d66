"""One generated Python function per handler: its mappings as straight-line code.

Interpreting ~57 mappings per event (a loop over mappings, paths and segments, a call to
read, test and clean each value) was most of ``map_event``'s time. ``mapping_function``
writes the same steps out once, when the blueprint is compiled, and ``compile()``s them,
so mapping an event is one call with no loops and no per-mapping calls on the common path.
A path prefix that several paths share (``context``, ``context.vendor_ids``) is read once
at the top of the function into a local, not once per mapping: reading a path is a pure
lookup, so the values are the same, and most mappings then take one step instead of three.

Safety: the generated source holds only names this module makes up (``key_3``,
``transform_2_0``, ...) and Python keywords. Every string from a blueprint (keys, targets,
transform names, defaults) is bound to one of those names as a constant in the function's
namespace, never written into the source, so no blueprint value can become code.
``source_of`` returns the generated text for reading (``docs/blueprint.md``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from types import CodeType
from typing import TYPE_CHECKING, Any

from amperity_signal.blueprint.errors import TransformError
from amperity_signal.blueprint.flatten import OMITTED, clean_json
from amperity_signal.blueprint.paths import CompiledPath, is_empty, resolve_compiled

if TYPE_CHECKING:
    from amperity_signal.blueprint.compiled import CompiledMapping

MappingFunction = Callable[[Mapping[str, Any], dict[str, Any], list[str]], None]
"""``(event, payload, warnings)``: writes every mapped target into ``payload``."""

_ATTRIBUTE = "__generated_source__"
_MISSING = object()
"""Every path of a mapping was empty (its default, if any, applies)."""


def _step(value: Any, key: str, index: int | None) -> Any:
    """One path segment on a value that is not a plain dict (a list, a Mapping, a scalar)."""
    return resolve_compiled(value, ((key, index),))


def _transform_failed(target: str, name: str, error: TransformError) -> str:
    """The warning for a transform that could not convert a value."""
    return f"{target}: transform {name} failed: {error}; omitted"


class _Writer:
    """Collects the generated lines and the constants they refer to by name."""

    def __init__(self) -> None:
        self.lines: list[str] = ["def map_fields(event, payload, warnings):"]
        # Shared path prefix -> the local holding its value (set by ``shared_prefixes``).
        self._prefixes: dict[CompiledPath, str] = {}
        self.names: dict[str, Any] = {
            "MISSING": _MISSING,
            "OMITTED": OMITTED,
            "TransformError": TransformError,
            "clean_json": clean_json,
            "is_empty": is_empty,
            "step": _step,
            "transform_failed": _transform_failed,
        }
        self._counter = 0

    def constant(self, prefix: str, value: Any) -> str:
        """Bind ``value`` to a fresh name and return the name (never the value itself)."""
        name = f"{prefix}_{self._counter}"
        self._counter += 1
        self.names[name] = value
        return name

    def line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def shared_prefixes(self, mappings: Sequence[CompiledMapping]) -> None:
        """Read every proper path prefix that two or more paths share into a local, once.

        Each is read from the longest shared prefix before it, so ``context.geo`` costs
        one step from ``context``. Unshared prefixes stay inline in their one mapping.
        """
        uses: dict[CompiledPath, int] = {}
        for mapping in mappings:
            for path in mapping.paths:
                for length in range(1, len(path)):
                    uses[path[:length]] = uses.get(path[:length], 0) + 1
        # Shortest first, so a prefix's own shared prefixes are already read.
        for prefix in sorted((p for p, count in uses.items() if count > 1), key=len):
            self._read_steps(1, prefix)
            name = f"prefix_{self._counter}"
            self._counter += 1
            self.line(1, f"{name} = value")
            self._prefixes[prefix] = name

    def read(self, depth: int, path: CompiledPath) -> None:
        """``value = <path resolved against event>``: None when any segment is missing."""
        self._read_steps(depth, path)

    def _read_steps(self, depth: int, path: CompiledPath) -> None:
        """Start from the longest shared prefix already read, then step the remaining keys."""
        start = 0
        for length in range(len(path) - 1, 0, -1):
            if path[:length] in self._prefixes:
                start = length
                break
        self.line(depth, f"value = {self._prefixes[path[:start]]}" if start else "value = event")
        for key, index in path[start:]:
            key_name = self.constant("key", key)
            index_name = self.constant("index", index)
            self.line(depth, "if type(value) is dict:")
            self.line(depth + 1, f"value = value.get({key_name})")
            self.line(depth, "elif value is not None:")
            self.line(depth + 1, f"value = step(value, {key_name}, {index_name})")

    def mapping(self, mapping: CompiledMapping) -> None:
        """The code of one mapping: read its paths in turn, transform, clean, write."""
        target_name = self.constant("target", mapping.target)
        depth = 1
        # Each fallback is read only when everything before it was empty.
        for path in mapping.paths:
            self.read(depth, path)
            # is_empty's answer for a str, inline: most values found are strings.
            self.line(
                depth,
                'if value is None or (value == "" if type(value) is str else is_empty(value)):',
            )
            depth += 1
        self.line(depth, "value = MISSING")
        self.line(1, "if value is MISSING:")
        if mapping.default is None:
            self.line(2, "value = OMITTED")
        else:
            default_name = self.constant("default", mapping.default)
            self.line(2, f"value = clean_json({default_name}, {target_name}, warnings)")
        self.line(1, "else:")
        depth = 2
        if mapping.transforms:
            self.line(depth, "try:")
            for name, function in mapping.transforms:
                name_name = self.constant("transform_name", name)
                function_name = self.constant("transform", function)
                self.line(depth + 1, f"failing = {name_name}")
                self.line(depth + 1, f"value = {function_name}(value)")
            self.line(depth, "except TransformError as error:")
            self.line(
                depth + 1, f"warnings.append(transform_failed({target_name}, failing, error))"
            )
            self.line(depth + 1, "value = OMITTED")
            self.line(depth, "else:")
            depth += 1
        # clean_json's own fast path, inlined: ints, bools and non-empty strings as they are.
        self.line(depth, "kind = type(value)")
        self.line(depth, "if not (kind is int or kind is bool or (kind is str and value)):")
        self.line(depth + 1, f"value = clean_json(value, {target_name}, warnings)")
        self.line(1, "if value is not OMITTED:")
        self.line(2, f"payload[{target_name}] = value")


@functools.lru_cache(maxsize=128)
def _compiled(source: str) -> CodeType:
    """``source`` compiled, once per text: ~7 ms a function, ten for a preset's handlers.

    Every build of a blueprint (each integration, each server a process builds, each
    worker) wrote the same texts again; their values live in the namespace, not the text,
    so integrations of one preset share the code and each ``exec`` makes its own function.
    """
    return compile(source, "<blueprint mappings>", "exec")


def mapping_function(mappings: Sequence[CompiledMapping]) -> MappingFunction:
    """Generate and compile the function that applies ``mappings`` in order.

    Args:
        mappings: Compiled mappings (targets, pre-split paths, resolved transforms).

    Returns:
        ``map_fields(event, payload, warnings)``, which writes what ``map_event``'s
        interpreter would write, in the same order, with the same warnings.
    """
    writer = _Writer()
    writer.shared_prefixes(mappings)
    for position, mapping in enumerate(mappings):
        writer.line(1, f"# mappings[{position}]")
        writer.mapping(mapping)
    writer.line(1, "return None")
    source = "\n".join(writer.lines) + "\n"
    namespace = dict(writer.names)
    exec(_compiled(source), namespace)  # noqa: S102 - see module docstring
    function: MappingFunction = namespace["map_fields"]
    setattr(function, _ATTRIBUTE, source)
    return function


def source_of(function: MappingFunction) -> str:
    """The generated source of a function made by ``mapping_function``."""
    source: str = getattr(function, _ATTRIBUTE)
    return source
