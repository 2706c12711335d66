"""What each ``amperity-signal`` subcommand does (the parser lives in ``cli``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amperity_signal.config import GatewayTable, IntegrationSettings, Settings, load_settings
from amperity_signal.errors import ConfigError, ConfigProblem, InvalidEvent
from amperity_signal.logs import configure_logging

if TYPE_CHECKING:
    from amperity_signal.blueprint import Blueprint

EXIT_USAGE = 2
# ``blueprint test``: the report is printed, but the service would refuse some events.
EXIT_REFUSED = 1


def blueprint_problems(settings: Settings, config: str) -> list[ConfigProblem]:
    """Compile every integration's blueprint (its vertical plus its overrides).

    The configuration's own checks see each field alone; whether a handler's ``use`` names
    a mapping set the vertical defines is only known once the two are compiled together.
    ``config`` is the file the settings came from, named in the fix's commands.
    """
    from amperity_signal.blueprint import BlueprintError, load_blueprint

    problems = []
    for index, integration in enumerate(settings.integrations):
        try:
            load_blueprint(integration.vertical, integration.blueprint)
        except BlueprintError as error:
            # The integration's own blueprint cannot be shown until its overrides compile
            # (`blueprint show --config` stops at this same error): the preset is what says
            # which handlers and mapping sets they may name, the integration's is the check.
            problems.append(
                ConfigProblem(
                    f"integrations[{index}].blueprint",
                    f"integration {integration.id!r} (vertical {integration.vertical!r}): "
                    f"{error.message}.",
                    "change the overrides as the message says; `amperity-signal blueprint "
                    f"show --vertical {integration.vertical}` prints the handlers and mapping "
                    "sets of the preset they apply to, and once they compile, "
                    f"`amperity-signal blueprint show --config {shlex.quote(config)} "
                    f"--integration {shlex.quote(integration.id)}` prints the integration's "
                    "blueprint as the service compiles it.",
                )
            )
    return problems


def redis_problems(settings: Settings) -> list[ConfigProblem]:
    """With the Redis cache, whether its user may run the service's Lua scripts.

    Checked before serving (and by check-config) because it is a setting to change, not an
    outage: without scripting every cache merge and rate-limit slot fails. A Redis that does
    not answer is not a problem here; the service starts and says what to check.
    """
    if settings.cache.backend != "redis":
        return []
    from amperity_signal.redis_scripting import redis_scripting_problem

    problem = asyncio.run(redis_scripting_problem(settings.cache.redis_url))
    return [problem] if problem is not None else []


def _load_checked_settings(path: str) -> Settings:
    settings = load_settings(path)
    problems = blueprint_problems(settings, path) + redis_problems(settings)
    if problems:
        raise ConfigError(problems, source=path)
    return settings


def check_config(args: argparse.Namespace) -> int:
    """Validate the configuration; print every problem with its fix, or OK and warnings."""
    from amperity_signal.amperity.tokens import expiry_warnings
    from amperity_signal.setup_advice import setup_warnings

    settings = _load_checked_settings(args.config)
    for warning in settings.proxies.warnings:
        print(f"warning: {warning}")
    now = datetime.now(UTC)
    for integration in settings.integrations:
        warnings = expiry_warnings(integration, now) + setup_warnings(integration)
        for warning in warnings:
            print(f"warning: {warning}")
    for warning in _tls_warnings(settings, now):
        print(f"warning: {warning}")
    print(f"config OK: {len(settings.integrations)} integration(s) in {args.config}")
    return 0


def _tls_warnings(settings: Settings, now: datetime) -> list[str]:
    """The listeners' and the standalone gateway's certificates: expiry, open key files."""
    from amperity_signal.gateway.settings import settings_from_config
    from amperity_signal.listener_tls import tls_warnings

    warnings = []
    if settings.server.tls is not None:
        warnings += tls_warnings("server", settings.server.tls, now)
    if (service_tls := settings_from_config(settings).service_tls) is not None:
        warnings += tls_warnings("gateway", service_tls, now)
    return warnings


def _log_level(args: argparse.Namespace, settings: Settings) -> str:
    """``--log-level`` if given, else ``[server] log_level``, as ``logging`` names it."""
    return str(args.log_level or settings.server.log_level).upper()


def serve(args: argparse.Namespace) -> int:
    """Run the gRPC service (and, unless --no-gateway, the HTTP gateway) until signalled."""
    from amperity_signal.runner import run_service

    settings = _load_checked_settings(args.config)
    configure_logging(_log_level(args, settings), secrets=settings.secret_values())
    workers = args.workers or settings.server.workers
    return run_service(settings, workers=workers, gateway=not args.no_gateway, handoff=args.handoff)


def sandbox(words: list[str]) -> int:
    """Run the Amperity sandbox tenant, with the sandbox's own option parser."""
    from amperity_signal.sandbox.__main__ import main as sandbox_main

    return sandbox_main(words, prog="amperity-signal sandbox")


# The service this configuration describes listens with TLS; a plaintext channel to it
# would fail every call, each answered 503, with nothing in the gateway's log to say why.
_GATEWAY_WITHOUT_CA = ConfigProblem(
    "gateway.service_ca_file",
    "is not set, but server.tls_cert_file is: the service listens with TLS, and the gateway "
    "would call it in plaintext.",
    "set service_ca_file to the PEM certificate of the CA that signed server.tls_cert_file "
    "(and service_cert_file and service_key_file when server.tls_client_ca_file is set).",
)


def gateway(args: argparse.Namespace) -> int:
    """Run the HTTP gateway as its own process, talking to the service over gRPC."""
    from amperity_signal.gateway import run_gateway, settings_from_config
    from amperity_signal.listening import check_bindable

    settings = load_settings(args.config)
    if settings.server.tls is not None and settings.gateway.service_ca_file is None:
        raise ConfigError([_GATEWAY_WITHOUT_CA], source=args.config)
    configure_logging(_log_level(args, settings), secrets=settings.secret_values())
    for warning in _tls_warnings(settings, datetime.now(UTC)):
        logging.getLogger("amperity_signal.gateway").warning(warning)
    address = args.http_address or settings.server.http_address
    # Asked first, so that a taken port names the flag or setting the address came from.
    check_bindable(
        "--http-address" if args.http_address else "server.http_address",
        address,
        reuse_port=False,
    )
    run_gateway(address, args.grpc_target, settings_from_config(settings))
    return 0


def demo(args: argparse.Namespace) -> int:
    """Sandbox + service + gateway + sample traffic, with a summary of what happened."""
    from amperity_signal.demo import run_demo

    return asyncio.run(run_demo(once=args.once, log_level=args.log_level or "info"))


class _UsageError(Exception):
    """A flag's value cannot be used; the message names the flag and the fix."""


def blueprint(args: argparse.Namespace) -> int:
    """``blueprint show`` prints the effective blueprint; ``blueprint test`` dry-runs events.

    ``test`` maps every event the service would take and lists each one it would refuse
    (on stderr, in the gateway's or Deliver's words), then exits ``EXIT_REFUSED``. An
    event mapped although a ``/v1/batch`` body cannot carry it gets a warning line.
    """
    from amperity_signal.blueprint import dry_run, render_blueprint

    try:
        loaded, settings = _compile_blueprint(args)
        if args.blueprint_command == "show":
            print(render_blueprint(loaded))
            return 0
        raw = _read_events(args.events)
    except _UsageError as error:
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
        _UsageError: An unknown vertical or integration, --integration without --config,
            no --vertical without --config, a --vertical that is not the integration's,
            or overrides that do not compile.
    """
    from amperity_signal.blueprint import (
        VERTICALS,
        BlueprintError,
        BlueprintOverrides,
        load_blueprint,
    )

    given = getattr(args, "vertical", None)
    if given is not None and given not in VERTICALS:
        raise _UsageError(
            f"--vertical: unknown vertical {given!r}; choose one of: {', '.join(VERTICALS)}"
        )
    if getattr(args, "integration", None) and not getattr(args, "config", None):
        # Without a configuration there are no overrides: the plain preset would be shown
        # as if it were the integration's.
        raise _UsageError(
            f"--integration {args.integration} needs --config, the file that defines its "
            f"overrides, e.g. --config amperity-signal.toml --integration {args.integration}"
        )
    overrides = BlueprintOverrides()
    settings = None
    if getattr(args, "config", None):
        settings = load_settings(args.config)
        if not settings.integrations:
            raise _UsageError(
                f"--config {args.config} defines no [[integrations]] whose overrides to "
                "apply; add one, or leave out --config"
            )
        chosen = _chosen_integration(settings, args.integration, args.config)
        if given is not None and given != chosen.vertical:
            # Its overrides on another preset: a blueprint the service never compiles.
            raise _UsageError(_vertical_mismatch(given, chosen, settings, args.config))
        vertical, overrides = chosen.vertical, chosen.blueprint
        # What is compiled, for an error: the vertical is known by now, so a BlueprintError
        # comes from the integration's overrides (or a damaged install).
        compiled = (
            f"vertical {vertical!r} with --config {args.config}'s overrides for "
            f"integration {chosen.id!r}"
        )
    elif given is None:
        raise _UsageError(
            f"--vertical is required without --config; choose one of: {', '.join(VERTICALS)}"
            " (or pass --config to take its integration's vertical)"
        )
    else:
        vertical, compiled = given, f"vertical {given!r}"
    try:
        return load_blueprint(vertical, overrides), settings
    except BlueprintError as error:
        raise _UsageError(f"{compiled}: {error}") from None


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
    return _chosen_integration(settings, args.integration, args.config).source_value


def _chosen_integration(
    settings: Settings, integration_id: str | None, config: str
) -> IntegrationSettings:
    """The ``--integration`` of ``config`` (its first one when not given).

    Raises:
        _UsageError: No integration of that id is configured; the message lists the ids.
    """
    chosen = settings.integration(integration_id or settings.integrations[0].id)
    if chosen is None:
        known = ", ".join(repr(i.id) for i in settings.integrations)
        raise _UsageError(
            f"--integration: no integration {integration_id!r} in {config}; choose one of: {known}"
        )
    return chosen


def _read_events(path: str) -> list[Any]:
    """The JSON array of an ``--events`` file, its items not yet checked.

    NaN and Infinity are read as numbers, so that the event holding one is refused on
    its own (``_deliverable_events``) rather than the whole file.

    Raises:
        _UsageError: The file cannot be read or is not a JSON array.
    """
    where = f"--events {path}"
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8-sig"))  # a BOM is no mistake
    except OSError as exc:
        raise _UsageError(f"{where}: cannot read the file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise _UsageError(f"{where}: is not UTF-8 text; save it as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise _UsageError(f"{where}: is not valid JSON ({exc}); fix the syntax") from None
    except RecursionError:
        raise _UsageError(f"{where}: is nested too deeply to read") from None
    if not isinstance(raw, list):
        raise _UsageError(f"{where}: expected a JSON array of events")
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


def send_test_event(args: argparse.Namespace) -> int:
    """Deliver one test event through the configured integration, as the spec's check."""
    from amperity_signal.testevent import send_test_event as send

    settings = _load_checked_settings(args.config)
    try:
        chosen = _chosen_integration(settings, args.integration, args.config)
    except _UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(level="WARNING", secrets=settings.secret_values())
    return asyncio.run(send(settings, chosen.id))
