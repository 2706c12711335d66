"""The ``amperity-signal`` command line: serve, sandbox, gateway, demo and the checks.

Nothing imported at the top of this module imports grpc: :func:`main` first sets gRPC
core's log level (``logs.quiet_grpc_core``), which core reads when grpc is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn

from amperity_signal.blueprint import VERTICALS
from amperity_signal.cli_hints import HintingParser
from amperity_signal.config_values import LOG_LEVELS, listen_address_problem, log_level
from amperity_signal.errors import AmperitySignalError, ConfigError
from amperity_signal.lifeline import stop_with_parent
from amperity_signal.logs import quiet_grpc_core

EXIT_CONFIG = 2
MAX_WORKERS = 64  # the ceiling [server] workers has in the configuration

# Target forms gRPC resolves itself (dns:///host:port, unix:/path, ...): passed on as given.
_GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")


def workers_count(text: str) -> int:
    """``--workers``: a whole number from 1 to 64, the range ``[server] workers`` allows."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a worker count; pass a whole number from 1 to {MAX_WORKERS} "
            "(one process per core is the most that helps)"
        )
    return count


def _log_level_arg(parser: argparse.ArgumentParser, overrides: str) -> None:
    parser.add_argument(
        "--log-level",
        type=log_level,
        help=f"{', '.join(LOG_LEVELS)}: the least severe level logged ({overrides})",
    )


def grpc_target(text: str) -> str:
    """``--grpc-target``: HOST:PORT of the service (or a target with a gRPC scheme)."""
    if text.startswith(_GRPC_SCHEMES):
        return text
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an unbracketed IPv6 address: its last group would read as the port
    valid_host = bool(host) and not any(c.isspace() or c in "[]/" for c in host)
    valid_port = port.isascii() and port.isdigit() and 1 <= int(port) <= 65535
    if not (valid_host and valid_port):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT; pass the service's [server] grpc_address, "
            "e.g. 127.0.0.1:50051 or [::1]:50051"
        )
    return text


def http_address(text: str) -> str:
    """``--http-address``: HOST:PORT to listen on, as ``[server] http_address`` takes it."""
    if problem := listen_address_problem(text):
        raise argparse.ArgumentTypeError(
            f"{problem} Pass the interface and port to listen on, e.g. 127.0.0.1:8080 "
            "(0.0.0.0 for every interface, [::1] for IPv6); port 0 picks a free port."
        )
    return text


# Where --config is read from when it is not given.
CONFIG_ENV = "AMPERITY_SIGNAL_CONFIG"


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV),
        required=CONFIG_ENV not in os.environ,
        help=f"the TOML configuration file (or set {CONFIG_ENV})",
    )


def _vertical_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vertical",
        help=f"the vertical preset: {', '.join(VERTICALS)}; required without --config "
        "(with it: the integration's vertical, the default and the only one accepted)",
    )


def _integration_args(parser: argparse.ArgumentParser, also: str) -> None:
    """``blueprint show|test``'s ``--config`` and ``--integration``: whose blueprint it is."""
    parser.add_argument(
        "--config", help=f"apply this config's overrides for --integration, on its vertical{also}"
    )
    parser.add_argument(
        "--integration",
        help="integration id whose vertical and overrides apply (default: the config's first)",
    )


_REQUIRED = "the following arguments are required: "


class CommandLineParser(HintingParser):
    """argparse's parser, except that a missing argument no longer hides an unknown one.

    argparse checks the required arguments first: ``amperity-signal --bogus`` said only
    "the following arguments are required: command", and ``serve --bogus`` only that
    ``--config`` was, never a word of ``--bogus``. This parser names what it did not
    recognise first, and the commands to choose from where one is missing. Subcommands'
    parsers are of this class too (``add_subparsers`` makes them of their parent's).
    """

    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        """As argparse's, keeping the words parsed for :meth:`error`.

        Words before the command that this parser does not take are refused first: argparse
        would hand the rest to the command's parser, whose missing ``--config`` (``--bogus
        serve``) is then all that is said.
        """
        self._words = list(sys.argv[1:] if args is None else args)
        unknown = self._unrecognized_before_command()
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)} (see {self.prog} --help)")
        return super().parse_known_args(self._words, namespace)

    def error(self, message: str) -> NoReturn:
        """As argparse's (usage, the message, exit 2), saying more of a missing argument."""
        if message.startswith(_REQUIRED) and self._words is not None:
            message = self._missing(message.removeprefix(_REQUIRED).split(", "))
        super().error(message)

    def _missing(self, names: list[str]) -> str:
        """The message for required ``names`` missing, after what was not recognised."""
        unknown = self._unrecognized()
        parts = [f"unrecognized arguments: {' '.join(unknown)}"] if unknown else []
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and action.dest in names:
                names.remove(action.dest)
                parts.append(f"name a command: {', '.join(action.choices)}")
        if names:
            # --config has a second way in, which its absence should not hide.
            said = [
                f"{name} (or set {CONFIG_ENV})" if name == "--config" else name for name in names
            ]
            parts.append(_REQUIRED + ", ".join(said))
        return f"{'; '.join(parts)} (see {self.prog} --help)"

    def format_usage(self) -> str:
        """As argparse's, with ``[--config CONFIG]``: the environment can give it instead."""
        with self._config_optional():
            return super().format_usage()

    def format_help(self) -> str:
        """As argparse's, with ``[--config CONFIG]`` in its usage line (``format_usage``)."""
        with self._config_optional():
            return super().format_help()

    @contextlib.contextmanager
    def _config_optional(self) -> Iterator[None]:
        """``--config`` shown as optional: required only when CONFIG_ENV is not set.

        argparse shows a required option without brackets, which read as though
        AMPERITY_SIGNAL_CONFIG could not stand in for it.
        """
        config = [a for a in self._actions if a.required and "--config" in a.option_strings]
        for action in config:
            action.required = False
        try:
            yield
        finally:
            for action in config:
                action.required = True

    def _unrecognized_before_command(self) -> list[str]:
        """The words before the first command's name that no argument of this parser takes."""
        assert self._words is not None
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                at = next((i for i, w in enumerate(self._words) if w in action.choices), 0)
                return self._unrecognized(self._words[:at]) if at else []
        return []

    def _unrecognized(self, words: list[str] | None = None) -> list[str]:
        """The words (else all of them) no argument of this parser takes, none required."""
        required = [action for action in self._actions if action.required]
        for action in required:
            action.required = False
        try:
            return super().parse_known_args(self._words if words is None else words)[1]
        finally:
            for action in required:
                action.required = True


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = CommandLineParser(
        prog="amperity-signal", description="Datafly Signal to Amperity connector."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the gRPC service and the HTTP gateway",
        description="Run the gRPC service (Deliver, Enrich, BrowserProfile) and its HTTP "
        "gateway on the configuration's addresses (the service alone with --no-gateway). "
        "SIGTERM or Ctrl-C stops it within [server] grace_period; a second Ctrl-C at once.",
    )
    _config_arg(serve)
    serve.add_argument(
        "--workers", type=workers_count, help="worker processes, 1 to 64 (overrides [server])"
    )
    serve.add_argument("--no-gateway", action="store_true", help="run the gRPC service only")
    serve.add_argument(
        "--handoff",
        action="store_true",
        help="share the ports with another `serve --handoff`, to replace it without "
        "dropping calls (README: Rotating keys and certificates)",
    )
    _log_level_arg(serve, "overrides [server] log_level; every worker logs at it")

    check = commands.add_parser(
        "check-config",
        help="validate a configuration file",
        description="Validate a configuration file as serve reads it: every problem with "
        "the field and its fix (exit 2), or OK, its warnings, and what each integration does.",
    )
    _config_arg(check)

    # Listed for --help only: main() hands `sandbox ...` to the sandbox's own parser, so its
    # options are defined once (see `amperity-signal sandbox --help`).
    commands.add_parser("sandbox", help="run the Amperity sandbox tenant")

    gateway = commands.add_parser(
        "gateway",
        help="run the HTTP gateway as its own process",
        description="Run the HTTP gateway (the browser's /v1/ routes, Live Events, /metrics) "
        "as its own process, calling the service at --grpc-target; serve runs one itself "
        "unless --no-gateway.",
    )
    _config_arg(gateway)
    gateway.add_argument(
        "--grpc-target", type=grpc_target, required=True, help="HOST:PORT of the service"
    )
    gateway.add_argument(
        "--http-address", type=http_address, help="HOST:PORT to listen on (overrides [server])"
    )
    _log_level_arg(gateway, "overrides [server] log_level")

    demo = commands.add_parser(
        "demo",
        help="sandbox + service + gateway + sample traffic",
        description="Start a sandbox tenant, the service and its gateway on this machine "
        "(ports 8765, 50051 and 8080, or free ones where those are taken), send a sample "
        "shopping session, and print what happened and the URLs to open. Stays up until "
        "Ctrl-C; needs no configuration.",
    )
    demo.add_argument("--once", action="store_true", help="exit after the summary")
    _log_level_arg(demo, "of the sandbox, service and gateway the demo starts; default info")

    blueprint = commands.add_parser(
        "blueprint",
        help="inspect and dry-run blueprints",
        description="Inspect the blueprint that maps events to Amperity's payloads, or "
        "dry-run events through it; neither calls Amperity.",
    )
    blueprint_commands = blueprint.add_subparsers(dest="blueprint_command", required=True)
    show = blueprint_commands.add_parser(
        "show",
        help="print the effective blueprint",
        description="Print the effective blueprint: a vertical preset, with the overrides "
        "of a configuration's integration when --config is given.",
    )
    _vertical_arg(show)
    _integration_args(show, "")
    test = blueprint_commands.add_parser(
        "test",
        help="dry-run sample events",
        description="Map a JSON file of Datafly events through the blueprint and print the "
        "payload each would post to Amperity, or why the service would refuse it; nothing "
        "is sent.",
    )
    _vertical_arg(test)
    test.add_argument(
        "--events", required=True, help="a JSON file holding an array of Datafly events"
    )
    test.add_argument(
        "--source-value",
        help="the payloads' source (default: --config's integration's source_value, else DATAFLY)",
    )
    _integration_args(
        test,
        ", and its size limits "
        "([server] max_message_bytes, [gateway] max_batch_body_bytes and max_body_bytes)",
    )

    send = commands.add_parser(
        "send-test-event",
        help="deliver one test event (verify setup)",
        description="Post one test event through an integration to its Amperity stream (or "
        "its api_base_url), and print the payload and Amperity's answer, or what to check: "
        "whether the keys, the stream and the network are right. Exit 1 if not accepted.",
    )
    _config_arg(send)
    send.add_argument("--integration", help="integration id (default: the first one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script.

    Errors the user can fix (this package's own errors, and the operating system's: a
    missing file, a taken port) print one ``error:`` line and exit 2. Anything else is a
    bug in amperity-signal and keeps its traceback, which is what a bug report needs.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    stop_with_parent(os.environ, os.getppid())  # started by start_process: SIGTERM at its end
    if "grpc" not in sys.modules:  # imported already (a test calling main): too late to set
        quiet_grpc_core(os.environ)
    from amperity_signal import commands  # imports grpc: after the line above

    try:
        if words[:1] == ["sandbox"]:
            return commands.sandbox(words[1:])
        return _dispatch(build_parser().parse_args(words))
    except ConfigError as error:
        print(str(error), file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        sys.stderr.close()
        return 0
    except (AmperitySignalError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG


def _dispatch(args: argparse.Namespace) -> int:
    from amperity_signal import commands  # main imported it, after setting core's log level

    handlers = {
        "serve": commands.serve,
        "check-config": commands.check_config,
        "gateway": commands.gateway,
        "demo": commands.demo,
        "blueprint": commands.blueprint,
        "send-test-event": commands.send_test_event,
    }
    return handlers[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
