"""Fixtures for the sandbox tests: an in-process app and a real process per module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from amperity_signal.sandbox.testing import InProcessSandbox, SandboxProcess, sandbox_process


@pytest.fixture
async def sandbox() -> AsyncIterator[InProcessSandbox]:
    """An in-process sandbox whose profile updates wait for an explicit flush."""
    box = InProcessSandbox.build(profile_delay=60.0)
    async with box.client:
        yield box
    box.state.close()


@pytest.fixture(scope="module")
def sandbox_proc() -> Iterator[SandboxProcess]:
    """The sandbox as a real process, started once per module and killed at its end."""
    with sandbox_process("--seed", "11", "--profile-delay", "0.5") as process:
        yield process
