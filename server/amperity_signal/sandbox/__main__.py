"""``python -m amperity_signal.sandbox``: run the sandbox tenant on localhost."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Callable, Sequence

import yaml

from amperity_signal.cli_hints import HintingParser
from amperity_signal.config_values import LOG_LEVELS, log_level
from amperity_signal.logs import configure_logging
from amperity_signal.sandbox.data import SandboxData, SandboxDataError, default_data, load_data
from amperity_signal.sandbox.server import CannotListen, run

EXIT_USAGE = 2


def _whole_number(low: int, high: int | None, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (None: no ceiling)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise argparse.ArgumentTypeError(f"{text!r}: pass a whole number {span} ({what})")
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: pass a number of seconds, 0 or more")
    return value


def _host(text: str) -> str:
    """An argparse type: an interface address; empty is refused.

    An empty host (``--host "$UNSET"``) made the socket bind every interface, exposing the
    unauthenticated ``/_sandbox/`` controls, and printed ``http://:PORT``.
    """
    host = text.strip()
    if not host:
        raise argparse.ArgumentTypeError(
            "pass an address of this machine, e.g. 127.0.0.1 (0.0.0.0 for every interface)"
        )
    return host


def _secrets(data: SandboxData) -> list[str]:
    """What the log formatter scrubs: the signing secret and every pre-minted token."""
    tokens = [token.token for tenant in data.tenants.values() for token in tenant.tokens]
    return [data.signing_secret, *tokens]


def _load(path: str) -> SandboxData:
    """The ``--data`` file, or SandboxDataError saying what is wrong with it."""
    try:
        return load_data(path)
    except SandboxDataError:
        raise
    except OSError as exc:
        raise SandboxDataError(f"cannot read the file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise SandboxDataError("is not UTF-8 text; save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise SandboxDataError(f"is not valid JSON ({exc}); fix the syntax") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise SandboxDataError(f"is not valid YAML ({detail}); fix the syntax") from None
    except RecursionError:
        raise SandboxDataError("is nested too deeply to read; flatten it") from None
    except ValueError as exc:  # an integer of over 4300 digits (Python's int_max_str_digits)
        raise SandboxDataError(
            f"holds a value that cannot be read ({str(exc).split(';')[0]}); shorten it or quote it"
        ) from None


def main(argv: Sequence[str] | None = None, prog: str = "python -m amperity_signal.sandbox") -> int:
    """Parses the command line and serves until interrupted; the exit code.

    A flag the sandbox cannot use (a bad data file, a taken port) prints one ``error:``
    line naming it and returns 2, as argparse does for malformed flags.
    """
    parser = HintingParser(
        prog=prog,
        description="A faithful Amperity tenant on localhost (Real-time API + inspector).",
    )
    parser.add_argument(
        "--host", type=_host, default="127.0.0.1", help="interface to bind; default 127.0.0.1"
    )
    parser.add_argument(
        "--port",
        type=_whole_number(0, 65535, "a TCP port; 0 picks a free one"),
        default=8765,
        help="TCP port; 0 picks a free one; default 8765",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="data file (YAML or JSON) to load; default: the built-in tenant (docs/sandbox.md)",
    )
    parser.add_argument(
        "--profile-delay",
        type=_seconds,
        default=1.0,
        help="seconds before events reach profiles; default 1",
    )
    parser.add_argument(
        "--rate-limit",
        type=_whole_number(1, None, "requests per second per tenant"),
        default=500,
        help="requests per second per tenant (ingest and profile calls share it); default 500",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed for ids and fault draws; default: random"
    )
    parser.add_argument(
        "--stop-grace",
        type=_whole_number(0, None, "seconds a stop waits for the requests in flight"),
        default=2,
        help="whole seconds a stop waits for the requests in flight before cutting them "
        "(a second Ctrl-C cuts them at once); default 2",
    )
    parser.add_argument(
        "--log-level",
        type=log_level,
        default="warning",
        help=f"{', '.join(LOG_LEVELS)}: the least severe level logged (JSON lines on stderr; "
        "debug adds one line per /prof request); default warning",
    )
    args = parser.parse_args(argv)
    try:
        data = _load(args.data) if args.data else default_data()
    except SandboxDataError as error:
        print(f"{prog}: error: --data {args.data}: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.log_level.upper(), secrets=_secrets(data))
    status = 0
    try:
        with contextlib.suppress(KeyboardInterrupt):
            status = run(
                args.host,
                args.port,
                None,
                args.profile_delay,
                rate_limit_per_second=args.rate_limit,
                seed=args.seed,
                data=data,
                stop_grace=args.stop_grace,
            )
    except CannotListen as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return status


if __name__ == "__main__":
    sys.exit(main())
