"""``make bench [ARGS=...]``: run the benchmarks, write bench-results/results.json, print a table.

Usage: ``.venv/bin/python -m tests.benchmarks.run [--quick] [--only NAME ...] [--out DIR]``.
Every figure that matters is a ratio against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.benchmarks import (
    bench_deliver,
    bench_economy,
    bench_enrich,
    bench_gateway,
    bench_memory,
    bench_workers,
)
from tests.benchmarks.profiles import FULL, QUICK, Profile
from tests.benchmarks.report import table

BENCHMARKS: dict[str, Callable[[Profile], Awaitable[dict[str, Any]]]] = {
    "enrich": bench_enrich.run,
    "economy": bench_economy.run,
    "deliver": bench_deliver.run,
    "gateway": bench_gateway.run,
    "memory": bench_memory.run,
    "workers": bench_workers.run,
}


async def run_all(profile: Profile, names: list[str]) -> dict[str, Any]:
    """Run the named benchmarks in priority order; a failure is recorded, not fatal."""
    results: dict[str, Any] = {}
    for name in names:
        started = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = await BENCHMARKS[name](profile)
        except Exception as exc:
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["wall_seconds"] = round(time.monotonic() - started, 1)
        print(f"[bench] {name} done in {results[name]['wall_seconds']} s", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, write the result file, print the table."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.run")
    parser.add_argument("--quick", action="store_true", help="the few-minutes profile")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--out", default="bench-results", help="result directory")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    names = args.only or list(BENCHMARKS)
    results = asyncio.run(run_all(profile, names))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Results are machine-specific: keep the directory out of git without touching .gitignore.
    (out / ".gitignore").write_text("*\n")
    document = {
        "profile": profile.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
    }
    (out / "results.json").write_text(json.dumps(document, indent=2, sort_keys=True))
    print(table(results))
    print(f"\nwritten: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
