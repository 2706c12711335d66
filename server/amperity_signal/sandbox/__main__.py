"""``python -m amperity_signal.sandbox``: run the sandbox tenant on localhost."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

from amperity_signal.sandbox.server import run


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m amperity_signal.sandbox"
) -> None:
    """Parses the command line and serves until interrupted."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A faithful Amperity tenant on localhost (Real-time API + inspector).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=8765, help="TCP port; 0 picks a free one")
    parser.add_argument("--data", default=None, help="data file (YAML or JSON) to load")
    parser.add_argument(
        "--profile-delay", type=float, default=1.0, help="seconds before events reach profiles"
    )
    parser.add_argument(
        "--rate-limit", type=int, default=500, help="requests per second per tenant"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for ids and fault draws")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        run(
            args.host,
            args.port,
            args.data,
            args.profile_delay,
            rate_limit_per_second=args.rate_limit,
            seed=args.seed,
        )


if __name__ == "__main__":
    main()
