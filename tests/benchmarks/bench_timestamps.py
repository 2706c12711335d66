"""The gateway's timestamp reading, RFC 3339 by regex, against the ``fromisoformat`` it replaced.

``python -m tests.benchmarks.bench_timestamps``: in one process, rounds alternate between
the old reading and the new (so load from other processes falls on both alike), and the
best round of each is printed in ns per string; ``--callgrind`` counts instructions
instead (valgrind's callgrind, the loop between two ``os.getppid`` markers after a warm-up),
which the other work on a shared machine does not disturb. Three layers:

- ``parse``: the string to an instant; old ``fromisoformat`` + ``astimezone(UTC)``, new
  ``rfc3339.timestamp_parts``;
- ``event``: what ``event_from_json`` does with it; old ``FromDatetime`` of the parsed
  datetime into ``event.timestamp``, new the gateway's ``(seconds, nanos)`` set on it;
- over ``2025-01-31T12:00:00.123Z`` (what ``Date.toISOString()`` sends) and over the 59
  shared cases of ``clients/testdata/timestamps.json`` (refusals included, each caught);
- ``receive``: an event without a timestamp, which gets the receive time; old
  ``FromDatetime(now)`` into ``event.timestamp``, new the gateway's ``_receive_time``
  parts set on it (the string is not read).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from amperity_signal import rfc3339
from amperity_signal.gateway import convert
from amperity_signal.gateway.errors import InvalidFieldError
from datafly.amperity.v1 import amperity_service_pb2 as pb

TYPICAL = "2025-01-31T12:00:00.123Z"
CASES = [
    case["input"]
    for case in json.loads(
        (Path(__file__).parents[2] / "clients" / "testdata" / "timestamps.json").read_text("utf-8")
    )["cases"]
]
ROUNDS = 7
_EVENT = pb.Event()
_NOW = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)


def _old_parse(value: str) -> datetime | None:
    """The gateway's reading before: ``fromisoformat``, no offset is UTC, then in UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


def _new_parse(value: str) -> tuple[int, int] | None:
    try:
        return rfc3339.timestamp_parts(value)
    except rfc3339.TimestampError:
        return None


def _old_event(value: str) -> None:
    moment = _old_parse(value)
    if moment is not None:
        _EVENT.timestamp.FromDatetime(moment)


def _new_event(value: str) -> None:
    try:
        parts = convert._timestamp(value, "timestamp")
    except InvalidFieldError:
        return
    stamp = _EVENT.timestamp
    stamp.seconds, stamp.nanos = parts


def _old_receive(_: str) -> None:
    _EVENT.timestamp.FromDatetime(_NOW)


def _new_receive(_: str) -> None:
    stamp = _EVENT.timestamp
    stamp.seconds, stamp.nanos = convert._receive_time(_NOW)


def _per_string(function: Callable[[str], object], values: list[str]) -> float:
    """Nanoseconds per string of one round of ~200,000 strings."""
    calls = max(1, 200_000 // len(values))

    def run() -> None:
        for value in values:
            function(value)

    return timeit.timeit(run, number=calls) / (calls * len(values)) * 1e9


LAYERS: dict[str, tuple[Callable[[str], object], Callable[[str], object]]] = {
    "parse": (_old_parse, _new_parse),
    "event": (_old_event, _new_event),
    "receive": (_old_receive, _new_receive),
}
INPUTS = {"typical": [TYPICAL], "59 cases": CASES, "none": [""]}
LAYER_INPUTS = {"parse": ("typical", "59 cases"), "event": ("typical", "59 cases")}
"""The inputs each layer is run over (``receive`` reads none: "none")."""
MARKED_STRINGS = 20_000
"""Strings read between the callgrind markers (the 59 cases round it up to whole passes)."""


def _marked(layer: str, side: int, inputs: str) -> None:
    """Read ``MARKED_STRINGS`` strings between two ``getppid`` calls, after a warm-up."""
    function, values = LAYERS[layer][side], INPUTS[inputs]
    passes = -(-MARKED_STRINGS // len(values))
    for value in values * 100:
        function(value)
    os.getppid()
    for _ in range(passes):
        for value in values:
            function(value)
    os.getppid()


def _instructions(layer: str, side: int, inputs: str) -> float:
    """Instructions per string of one layer, side and input, under callgrind."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--dump-before=getppid",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                __spec__.name if __spec__ else "tests.benchmarks.bench_timestamps",
                "--marked",
                layer,
                str(side),
                inputs,
            ],
            check=True,
            capture_output=True,
        )
        # Part 1 ends at the first marker, part 2 (the loop) at the second.
        dump = next(p for p in Path(folder).iterdir() if p.name.endswith(".2"))
        totals = next(line for line in dump.read_text().splitlines() if line.startswith("totals:"))
    values = INPUTS[inputs]
    return int(totals.split()[1]) / (-(-MARKED_STRINGS // len(values)) * len(values))


def main() -> None:
    """Print the best of ``ROUNDS`` alternated rounds for each layer and input (or Ir)."""
    if sys.argv[1:2] == ["--marked"]:
        _marked(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    callgrind = sys.argv[1:2] == ["--callgrind"]
    for layer, (old, new) in LAYERS.items():
        for name in LAYER_INPUTS.get(layer, ("none",)):
            values = INPUTS[name]
            if callgrind:
                best_old, best_new = _instructions(layer, 0, name), _instructions(layer, 1, name)
                unit = "Ir"
            else:
                best_old, best_new = float("inf"), float("inf")
                for _ in range(ROUNDS):
                    best_old = min(best_old, _per_string(old, values))
                    best_new = min(best_new, _per_string(new, values))
                unit = "ns"
            print(
                f"{layer:7} {name:8}: old {best_old:6.0f} {unit}, new {best_new:6.0f} {unit}, "
                f"new/old {best_new / best_old:.2f}"
            )


if __name__ == "__main__":
    main()
