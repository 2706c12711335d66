"""What each ``amperity-signal`` subcommand does (the parser lives in ``cli``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
from datetime import UTC, datetime

from amperity_signal.config import IntegrationSettings, Settings, load_settings
from amperity_signal.config_values import did_you_mean
from amperity_signal.errors import ConfigError, ConfigProblem
from amperity_signal.logs import configure_logging

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


def redis_check(
    settings: Settings, *, login: bool = False
) -> tuple[list[ConfigProblem], list[str]]:
    """With the Redis cache, whether its user may run the service's Lua scripts.

    Checked before serving (and by check-config) because it is a setting to change, not an
    outage: without scripting every cache merge and rate-limit slot fails. One too slow to
    answer is a warning that the check could not be made. Returns the problems and the
    warnings.

    With ``login`` (check-config) a Redis that refuses ``cache.redis_url``'s user or
    password is a problem too (a setting to change), and one that cannot be reached a
    warning (it may be up by the time serve starts). Without it (serve) both are left to
    the start-up ping, which logs the same advice and serves without Redis: deliveries do
    not need it.
    """
    if settings.cache.backend != "redis":
        return [], []
    from amperity_signal.redis_scripting import check_redis_scripting

    found = asyncio.run(check_redis_scripting(settings.cache.redis_url))
    problems = [found.problem] if found.problem else []
    warnings = [found.warning] if found.warning else []
    if login and found.credentials:
        problems.append(found.credentials)
    if login and found.unreachable:
        warnings.append(found.unreachable)
    return problems, warnings


def _load_checked_settings(path: str, *, login: bool = False) -> tuple[Settings, list[str]]:
    """The settings, and the warnings of the checks they passed (to print or log).

    ``login`` as for ``redis_check``.
    """
    settings = load_settings(path)
    redis_problems, warnings = redis_check(settings, login=login)
    problems = blueprint_problems(settings, path) + redis_problems
    if problems:
        raise ConfigError(problems, source=path)
    return settings, warnings


def _gateway_warnings(settings: Settings) -> list[str]:
    """The gateway's deadlines that work against each other (``deliver_timeout_warnings``)."""
    from amperity_signal.config_checks import deliver_timeout_warnings
    from amperity_signal.gateway.settings import settings_from_config

    gateway = settings_from_config(settings)
    return deliver_timeout_warnings(gateway.deliver_timeout, gateway.batch_deadline)


def _log_warnings(warnings: list[str]) -> None:
    """Log the checks' warnings, once logging is set up."""
    for warning in warnings:
        logging.getLogger(__name__).warning(warning)


def check_config(args: argparse.Namespace) -> int:
    """Validate the configuration; print every problem with its fix, or OK and warnings."""
    from amperity_signal.amperity.tokens import expiry_warnings
    from amperity_signal.setup_advice import rate_limit_warnings, setup_warnings, summary

    settings, checked = _load_checked_settings(args.config, login=True)
    for warning in [*checked, *settings.proxies.warnings, *_gateway_warnings(settings)]:
        print(f"warning: {warning}")
    now = datetime.now(UTC)
    for integration in settings.integrations:
        warnings = expiry_warnings(integration, now) + setup_warnings(integration)
        for warning in warnings + rate_limit_warnings(settings, integration):
            print(f"warning: {warning}")
    for warning in _tls_warnings(settings, now):
        print(f"warning: {warning}")
    print(f"config OK: {len(settings.integrations)} integration(s) in {args.config}")
    for integration in settings.integrations:
        print(f"  {summary(integration)}")
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

    settings, warnings = _load_checked_settings(args.config)
    configure_logging(_log_level(args, settings), secrets=settings.secret_values())
    _log_warnings(warnings + ([] if args.no_gateway else _gateway_warnings(settings)))
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
    for warning in [*_tls_warnings(settings, datetime.now(UTC)), *_gateway_warnings(settings)]:
        logging.getLogger("amperity_signal.gateway").warning(warning)
    address = args.http_address or settings.server.http_address
    # Asked first, so that a taken port names the flag or setting the address came from.
    check_bindable(
        "--http-address" if args.http_address else "server.http_address",
        address,
        reuse_port=False,
    )
    return run_gateway(address, args.grpc_target, settings_from_config(settings))


def demo(args: argparse.Namespace) -> int:
    """Sandbox + service + gateway + sample traffic, with a summary of what happened."""
    from amperity_signal.demo import EXIT_PROCESS_GONE, run_demo
    from amperity_signal.processes import ProcessFailed

    try:
        return asyncio.run(run_demo(once=args.once, log_level=args.log_level or "info"))
    except ProcessFailed as error:  # its message has the process's own words: no traceback
        print(f"error: {error}", file=sys.stderr)
        return EXIT_PROCESS_GONE


class UsageError(Exception):
    """A flag's value cannot be used; the message names the flag and the fix."""


def blueprint(args: argparse.Namespace) -> int:
    """``blueprint show`` prints the effective blueprint; ``blueprint test`` dry-runs events.

    See ``blueprint_command.run``, imported only when the command runs.
    """
    from amperity_signal.blueprint_command import run

    return run(args)


def chosen_integration(
    settings: Settings, integration_id: str | None, config: str
) -> IntegrationSettings:
    """The ``--integration`` of ``config`` (its first one when not given).

    Raises:
        UsageError: No integration of that id is configured; the message lists the ids.
    """
    chosen = settings.integration(integration_id or settings.integrations[0].id)
    if chosen is None:
        ids = tuple(i.id for i in settings.integrations)
        raise UsageError(
            f"--integration: no integration {integration_id!r} in {config}; "
            f"{did_you_mean(integration_id, ids)}choose one of: {', '.join(map(repr, ids))}"
        )
    return chosen


def send_test_event(args: argparse.Namespace) -> int:
    """Deliver one test event through the configured integration, as the spec's check."""
    from amperity_signal.testevent import send_test_event as send

    settings, warnings = _load_checked_settings(args.config)
    try:
        chosen = chosen_integration(settings, args.integration, args.config)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(level="WARNING", secrets=settings.secret_values())
    _log_warnings(warnings)
    return asyncio.run(send(settings, chosen.id))
