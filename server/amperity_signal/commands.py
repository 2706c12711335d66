"""What each ``amperity-signal`` subcommand does (the parser lives in ``cli``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from amperity_signal.config import Settings, load_settings
from amperity_signal.logs import configure_logging


def _secrets(settings: Settings) -> list[str]:
    values = [s.api_key.get_secret_value() for s in settings.integrations]
    values += [
        s.profile_api_key.get_secret_value() for s in settings.integrations if s.profile_api_key
    ]
    if settings.server.admin_token:
        values.append(settings.server.admin_token.get_secret_value())
    return values


def check_config(args: argparse.Namespace) -> int:
    """Validate the configuration; print every problem with its fix, or OK and warnings."""
    from amperity_signal.amperity.tokens import expiry_warnings
    from amperity_signal.setup_advice import setup_warnings

    settings = load_settings(args.config)
    for integration in settings.integrations:
        warnings = expiry_warnings(integration, datetime.now(UTC)) + setup_warnings(integration)
        for warning in warnings:
            print(f"warning: {warning}")
    print(f"config OK: {len(settings.integrations)} integration(s) in {args.config}")
    return 0


def serve(args: argparse.Namespace) -> int:
    """Run the gRPC service (and, unless --no-gateway, the HTTP gateway) until signalled."""
    from amperity_signal.runner import run_service

    settings = load_settings(args.config)
    configure_logging(secrets=_secrets(settings))
    workers = args.workers or settings.server.workers
    return run_service(settings, workers=workers, gateway=not args.no_gateway)


def sandbox(words: list[str]) -> int:
    """Run the Amperity sandbox tenant, with the sandbox's own option parser."""
    from amperity_signal.sandbox.__main__ import main as sandbox_main

    return sandbox_main(words, prog="amperity-signal sandbox")


def gateway(args: argparse.Namespace) -> int:
    """Run the HTTP gateway as its own process, talking to the service over gRPC."""
    from amperity_signal.gateway import run_gateway, settings_from_config

    settings = load_settings(args.config)
    configure_logging(secrets=_secrets(settings))
    address = args.http_address or settings.server.http_address
    run_gateway(address, args.grpc_target, settings_from_config(settings))
    return 0


def demo(args: argparse.Namespace) -> int:
    """Sandbox + service + gateway + sample traffic, with a summary of what happened."""
    from amperity_signal.demo import run_demo

    return asyncio.run(run_demo(once=args.once))


def blueprint(args: argparse.Namespace) -> int:
    """``blueprint show`` prints the effective blueprint; ``blueprint test`` dry-runs events."""
    from amperity_signal.blueprint import (
        BlueprintOverrides,
        dry_run,
        event_from_datafly_json,
        load_blueprint,
        render_blueprint,
    )

    overrides = BlueprintOverrides()
    if getattr(args, "config", None):
        settings = load_settings(args.config)
        chosen = settings.integration(args.integration or settings.integrations[0].id)
        if chosen is None:
            print(f"no integration {args.integration!r} in {args.config}", file=sys.stderr)
            return 2
        overrides = chosen.blueprint
    loaded = load_blueprint(args.vertical, overrides)
    if args.blueprint_command == "show":
        print(render_blueprint(loaded))
        return 0
    try:
        raw = json.loads(Path(args.events).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(
            f"--events {args.events}: cannot read a JSON array of events ({exc})", file=sys.stderr
        )
        return 2
    if not isinstance(raw, list):
        print(f"--events {args.events}: expected a JSON array of events", file=sys.stderr)
        return 2
    report = dry_run(loaded, [event_from_datafly_json(e) for e in raw], args.source_value)
    print(report.render())
    return 0


def send_test_event(args: argparse.Namespace) -> int:
    """Deliver one test event through the configured integration, as the spec's check."""
    from amperity_signal.testevent import send_test_event as send

    settings = load_settings(args.config)
    configure_logging(level="WARNING", secrets=_secrets(settings))
    return asyncio.run(send(settings, args.integration))
