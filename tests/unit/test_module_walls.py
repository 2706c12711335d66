"""The walls between modules DESIGN.md keeps, checked on the import graph of the server.

Every ``import`` of a module counts, those inside functions included (a lazy import
breaches a wall as surely as one at the top), and so does every import it leads to: the
``__init__`` of each package on the way included, which Python runs first.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import amperity_signal

PACKAGE = Path(amperity_signal.__file__).parent
ROOT = "amperity_signal"


@cache
def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = [ROOT, *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``: the packages Python imports before the module."""
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


@cache
def _imports(name: str) -> frozenset[str]:
    """What one module imports, wherever in it: module names, or top-level distributions."""
    path = _modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*kept, *([node.module] if node.module else [])])
            named.add(base)
            # ``from package import module`` imports the module too.
            named.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(named)


def _reached(roots: Iterable[str]) -> set[str]:
    """Every name the roots import, directly or through the package's own modules."""
    modules = _modules()
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in _imports(name):
            for candidate in (*_parents(imported), imported):
                if candidate in modules:
                    todo.append(candidate)
                elif not candidate.startswith(ROOT):
                    seen.add(candidate)
    return seen


def _package(name: str) -> list[str]:
    """The modules of one package of ours: ``amperity_signal.NAME`` and below."""
    prefix = f"{ROOT}.{name}"
    return [m for m in _modules() if m == prefix or m.startswith(f"{prefix}.")]


def _within(reached: set[str], *names: str) -> list[str]:
    """The reached names that are ``name`` or below it, for each name."""
    return sorted(r for r in reached for n in names if r == n or r.startswith(f"{n}."))


def test_the_blueprint_engine_imports_neither_grpc_nor_httpx() -> None:
    """The engine is pure, an event dict in and a payload out: no gRPC, no HTTP client."""
    reached = _reached(_package("blueprint"))
    assert _within(reached, "grpc", "httpx", "aiohttp", f"{ROOT}.amperity") == []


def test_the_amperity_client_imports_nothing_of_the_servicers_or_the_gateway() -> None:
    """Data flows one way: the edge calls the client, never the reverse."""
    reached = _reached(_package("amperity"))
    assert _within(reached, f"{ROOT}.service", f"{ROOT}.gateway") == []


def test_the_gateway_reaches_the_service_only_through_the_generated_stub() -> None:
    """The gateway runs as its own process: none of the service's parts are in it.

    It shares ``service.convert`` (Struct to dict and back, pure functions over the
    generated messages); it loads neither the servicers and their use cases nor the
    Amperity client, which only the service calls.
    """
    reached = _reached(_package("gateway"))
    service = [m for m in _within(reached, f"{ROOT}.service") if m != f"{ROOT}.service"]
    assert service == [f"{ROOT}.service.convert"]
    used_by_the_service_alone = [
        f"{ROOT}.amperity",
        f"{ROOT}.delivery",
        f"{ROOT}.enrich",
        f"{ROOT}.browser",
        f"{ROOT}.runner",
        f"{ROOT}.sandbox",
    ]
    assert _within(reached, *used_by_the_service_alone) == []


def test_the_service_never_imports_the_sandbox() -> None:
    """Only the command line (and its console script) and the demo load the sandbox."""
    allowed = {
        *(f"{ROOT}.{name}" for name in ("console", "cli", "commands", "blueprint_command")),
        f"{ROOT}.demo",
    }
    rest = [m for m in _modules() if m not in allowed and m not in _package("sandbox")]
    assert _within(_reached(rest), f"{ROOT}.sandbox") == []
