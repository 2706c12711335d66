"""Not written yet (issue 8, priority after enrich, economy and deliver)."""

from __future__ import annotations

from typing import Any

from tests.benchmarks.profiles import Profile


async def run(profile: Profile) -> dict[str, Any]:
    """Report the benchmark as not implemented, so the run and the table stay complete."""
    return {"implemented": False, "table": [("memory", "not implemented", "", "", "")]}
