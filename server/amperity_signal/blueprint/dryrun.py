"""``dry_run``: map a batch of events and report what the blueprint did and did not do.

Used by ``amperity-signal blueprint test --events FILE`` to check a blueprint against
real traffic before it goes live: which mappings never fired (a typo in a path, or a
property the site never sends) and which events fell through to pass-through.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from amperity_signal.blueprint.compiled import Blueprint
from amperity_signal.blueprint.engine import MappedEvent, map_event


@dataclass(frozen=True, slots=True)
class DryRunEntry:
    """One event of a dry run: its position, its name and what it mapped to."""

    index: int
    event_name: str
    result: MappedEvent


@dataclass(frozen=True, slots=True)
class DryRunReport:
    """What a dry run found.

    Attributes:
        entries: Every event's mapping, in input order.
        unfired_global: Global mapping targets no event wrote.
        unfired_by_handler: For each handler that matched at least once, its own mapping
            targets that none of its events wrote.
        unmatched_handlers: Handlers no event matched.
        passed_through: The entries that no handler matched.
    """

    entries: tuple[DryRunEntry, ...]
    unfired_global: tuple[str, ...]
    unfired_by_handler: Mapping[str, tuple[str, ...]]
    unmatched_handlers: tuple[str, ...]
    passed_through: tuple[DryRunEntry, ...]

    def render(self) -> str:
        """Render the report as text: each payload, then the gaps."""
        lines: list[str] = []
        for entry in self.entries:
            result = entry.result
            via = f"handler {result.handler}" if result.handler else "pass-through"
            lines.append(f"#{entry.index} {entry.event_name} -> {result.amperity_type} ({via})")
            lines.append(json.dumps(result.payload, indent=2, allow_nan=False))
            lines.extend(f"  warning: {w}" for w in result.warnings)
        lines.append("")
        lines.append(f"events: {len(self.entries)}, passed through: {len(self.passed_through)}")
        for entry in self.passed_through:
            lines.append(f"  pass-through: #{entry.index} {entry.event_name}")
        lines.append(f"global mappings that never fired: {_listing(self.unfired_global)}")
        for name, targets in self.unfired_by_handler.items():
            if targets:
                lines.append(f"handler {name}: mappings that never fired: {_listing(targets)}")
        lines.append(f"handlers no event matched: {_listing(self.unmatched_handlers)}")
        return "\n".join(lines) + "\n"


def _listing(names: tuple[str, ...]) -> str:
    """Comma-separated names, or ``none``."""
    return ", ".join(names) if names else "none"


def _event_name(event: Mapping[str, Any]) -> str:
    """A label for an event: its name, else its message type."""
    return str(event.get("event") or event.get("type") or "(unnamed)")


def dry_run(
    blueprint: Blueprint,
    events: Iterable[Mapping[str, Any]],
    source_value: str,
    *,
    numbers: Sequence[int] | None = None,
) -> DryRunReport:
    """Map every event and report unfired mappings and pass-through events.

    Args:
        blueprint: The blueprint under test.
        events: Event dicts (convert Datafly JSON with ``event_from_datafly_json`` first).
        source_value: The integration's ``source_value``.
        numbers: The number each event is shown with (``#n``); 1, 2, 3… by default. A
            caller that left some events out (``blueprint test`` leaves out those the
            service would refuse) passes their positions, so ``#n`` stays the n-th event.

    Returns:
        The report; ``report.render()`` prints it.
    """
    entries = []
    fired_global: set[str] = set()
    fired_by_handler: dict[str, set[str]] = {}
    for position, event in enumerate(events):
        index = numbers[position] if numbers is not None else position + 1
        result = map_event(blueprint, event, source_value=source_value)
        entries.append(DryRunEntry(index=index, event_name=_event_name(event), result=result))
        fired_global.update(result.fired)
        if result.handler is not None:
            fired_by_handler.setdefault(result.handler, set()).update(result.fired)
    unfired_by_handler = {
        name: tuple(
            m.target for m in blueprint.handlers[name].own_mappings if m.target not in fired
        )
        for name, fired in fired_by_handler.items()
    }
    return DryRunReport(
        entries=tuple(entries),
        unfired_global=tuple(
            m.target for m in blueprint.global_mappings if m.target not in fired_global
        ),
        unfired_by_handler=unfired_by_handler,
        unmatched_handlers=tuple(n for n in blueprint.handlers if n not in fired_by_handler),
        passed_through=tuple(e for e in entries if e.result.passed_through),
    )
