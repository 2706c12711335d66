"""``amperity-signal blueprint``: ``show`` the effective blueprint, ``test`` a dry run of events.

``commands.blueprint`` imports this module when the command runs, so that ``--help`` and
the other commands never load it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from amperity_signal.blueprint import (
    VERTICALS,
    Blueprint,
    BlueprintError,
    BlueprintOverrides,
    dry_run,
    load_blueprint,
    render_blueprint,
)
from amperity_signal.commands import EXIT_REFUSED, EXIT_USAGE, UsageError, chosen_integration
from amperity_signal.config import GatewayTable, IntegrationSettings, Settings, load_settings
from amperity_signal.config_values import did_you_mean
from amperity_signal.errors import InvalidEvent


def run(args: argparse.Namespace) -> int:
    """``blueprint show`` prints the effective blueprint; ``blueprint test`` dry-runs events.

    ``test`` maps every event the service would take and lists each one it would refuse
    (on stderr, in the gateway's or Deliver's words), then exits ``EXIT_REFUSED``. An
    event mapped although a ``/v1/batch`` body cannot carry it gets a warning line.
    """
    try:
        loaded, settings = _compile_blueprint(args)
        if args.blueprint_command == "show":
            print(render_blueprint(loaded))
            return 0
        raw = _read_events(args.events)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    where = f"--events {args.events}"
    events = _deliverable_events(raw, settings)
    for _, refusal in events.refused:
        for violation in refusal.violations:
            print(f"error: {where}: {violation.field}: {violation.description}", file=sys.stderr)
    for note in events.notes:
        print(f"warning: {where}: {note}", file=sys.stderr)
    mapped = events.mapped
    report = dry_run(
        loaded,
        [e for _, e in mapped],
        _source_value(args, settings),
        numbers=[i + 1 for i, _ in mapped],
    )
    print(report.render())
    if not events.refused:
        return 0
    named = ", ".join(f"events[{index}]" for index, _ in events.refused)
    print(f"refused, not mapped: {named} (the errors say why)")
    return EXIT_REFUSED


def _compile_blueprint(args: argparse.Namespace) -> tuple[Blueprint, Settings | None]:
    """The blueprint of ``--vertical``, with ``--config``'s overrides when given.

    With ``--config`` the vertical is the chosen integration's, as the service compiles it;
    ``--vertical`` may be left out, and must name that vertical when given.

    Returns:
        The blueprint, and ``--config``'s settings (None without it).

    Raises:
        UsageError: An unknown vertical or integration, --integration without --config,
            no --vertical without --config, a --vertical that is not the integration's,
            or overrides that do not compile.
    """
    given = getattr(args, "vertical", None)
    if given is not None and given not in VERTICALS:
        raise UsageError(
            f"--vertical: unknown vertical {given!r}; "
            f"{did_you_mean(given, VERTICALS)}choose one of: {', '.join(VERTICALS)}"
        )
    if getattr(args, "integration", None) and not getattr(args, "config", None):
        # Without a configuration there are no overrides: the plain preset would be shown
        # as if it were the integration's.
        raise UsageError(
            f"--integration {args.integration} needs --config, the file that defines its "
            f"overrides, e.g. --config amperity-signal.toml --integration {args.integration}"
        )
    overrides = BlueprintOverrides()
    settings = None
    if getattr(args, "config", None):
        settings = load_settings(args.config)
        if not settings.integrations:
            raise UsageError(
                f"--config {args.config} defines no [[integrations]] whose overrides to "
                "apply; add one, or leave out --config"
            )
        chosen = chosen_integration(settings, args.integration, args.config)
        if given is not None and given != chosen.vertical:
            # Its overrides on another preset: a blueprint the service never compiles.
            raise UsageError(_vertical_mismatch(given, chosen, settings, args.config))
        vertical, overrides = chosen.vertical, chosen.blueprint
        # What is compiled, for an error: the vertical is known by now, so a BlueprintError
        # comes from the integration's overrides (or a damaged install).
        compiled = (
            f"vertical {vertical!r} with --config {args.config}'s overrides for "
            f"integration {chosen.id!r}"
        )
    elif given is None:
        raise UsageError(
            f"--vertical is required without --config; choose one of: {', '.join(VERTICALS)}"
            " (or pass --config to take its integration's vertical)"
        )
    else:
        vertical, compiled = given, f"vertical {given!r}"
    try:
        return load_blueprint(vertical, overrides), settings
    except BlueprintError as error:
        raise UsageError(f"{compiled}: {error}") from None


def _vertical_mismatch(
    given: str, chosen: IntegrationSettings, settings: Settings, config: str
) -> str:
    """Why ``--vertical`` cannot go with ``chosen``, and the two ways out."""
    others = [repr(i.id) for i in settings.integrations if i.vertical == given]
    choose = (
        f"or choose with --integration an integration of that vertical: {', '.join(others)}"
        if others
        else f"or leave out --config for the plain {given} preset (no integration in "
        f"{config} has vertical {given!r})"
    )
    return (
        f"--vertical {given}: integration {chosen.id!r} in {config} has vertical "
        f"{chosen.vertical!r}, the preset the service compiles its overrides with; "
        f"leave out --vertical, {choose}"
    )


def _source_value(args: argparse.Namespace, settings: Settings | None) -> str:
    """``--source-value``; else ``--config``'s integration's, as it delivers; else DATAFLY."""
    if args.source_value is not None:
        return str(args.source_value)
    if settings is None:
        return "DATAFLY"
    return chosen_integration(settings, args.integration, args.config).source_value


def _read_events(path: str) -> list[Any]:
    """The JSON array of an ``--events`` file, its items not yet checked.

    NaN and Infinity are read as numbers, so that the event holding one is refused on
    its own (``_deliverable_events``) rather than the whole file.

    Raises:
        UsageError: The file cannot be read or is not a JSON array.
    """
    where = f"--events {path}"
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8-sig"))  # a BOM is no mistake
    except OSError as exc:
        raise UsageError(f"{where}: cannot read the file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{where}: is not UTF-8 text; save it as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: is not valid JSON ({exc}); fix the syntax") from None
    except RecursionError:
        raise UsageError(f"{where}: is nested too deeply to read") from None
    if not isinstance(raw, list):
        raise UsageError(f"{where}: expected a JSON array of events")
    return raw


@dataclass
class _DryRunEvents:
    """A file's events, each by its position: mapped, refused, or mapped with a note."""

    mapped: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    refused: list[tuple[int, InvalidEvent]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _deliverable_events(raw: list[Any], settings: Settings | None = None) -> _DryRunEvents:
    """Each event as Deliver would map it, and each one the gateway or Deliver would refuse.

    One bad event does not hide what the others map to. The limits are ``settings``'
    (``--config``): Deliver's ``[server] max_message_bytes`` and the gateway's ``[gateway]
    max_batch_body_bytes`` and ``max_body_bytes``; without it, their defaults. An event only
    a single-event route's body carries is mapped, with a note saying so.
    """
    from amperity_signal.dry_run_events import deliverable_event, single_route_only

    gateway = settings.gateway if settings is not None else GatewayTable()
    bodies = {
        "max_body_bytes": gateway.max_batch_body_bytes,
        "max_single_body_bytes": gateway.max_body_bytes,
    }
    limits = {} if settings is None else {"max_bytes": settings.server.max_message_bytes}
    now = datetime.now(UTC)  # one receive time, as for one batch
    events = _DryRunEvents()
    for index, item in enumerate(raw):
        try:
            events.mapped.append((index, deliverable_event(item, index, now, **limits, **bodies)))
        except InvalidEvent as error:
            events.refused.append((index, error))
            continue
        note = single_route_only(item, index, **bodies)
        if note is not None:
            events.notes.append(note)
    return events
