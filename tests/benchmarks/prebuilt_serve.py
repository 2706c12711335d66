"""``amperity-signal serve`` whose Enrich answers one prebuilt response: the stack's ceiling.

``python -m tests.benchmarks.prebuilt_serve serve --config ...`` runs the real CLI and the
real server, but ``AmperityServicer.Enrich`` answers every call with the response of its
first call. What remains per call is everything around a handler: HTTP/2, parsing the
EnrichRequest, the RPC observation and serialising the response. The Enrich benchmark runs
it beside echo and the real Enrich, so each run shows how far any handler could get
(docs/benchmarks.md, session 5).
"""

from __future__ import annotations

import sys
from typing import Any

from amperity_signal.cli import main
from amperity_signal.service.servicer import AmperityServicer


def with_prebuilt_enrich(servicer: type[AmperityServicer]) -> None:
    """Make ``servicer.Enrich`` answer its first response to every later call."""
    real = servicer.Enrich
    answer: list[Any] = []

    async def enrich(self: AmperityServicer, request: Any, context: Any) -> Any:
        if not answer:
            answer.append(await real(self, request, context))
        return answer[0]

    setattr(servicer, "Enrich", enrich)  # noqa: B010 - a benchmark's patch, before serving


if __name__ == "__main__":
    with_prebuilt_enrich(AmperityServicer)
    sys.exit(main())
