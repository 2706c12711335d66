"""Fixtures of the reliability tests: a ``stack`` of real processes, stopped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Processes started through this fixture are stopped when the test ends."""
    started = Stack(workdir=tmp_path)
    try:
        yield started
    finally:
        await started.close()
