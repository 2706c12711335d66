"""End-to-end fixtures: a ``stack`` that starts real processes and stops them afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.e2e.stack import Sandbox, Service, Stack
from tests.support import integration_dict, mint_keys


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Processes started through this fixture are stopped when the test ends."""
    started = Stack(workdir=tmp_path)
    try:
        yield started
    finally:
        await started.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_plain_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Sandbox, Service]]:
    """A sandbox and a retail service without enrichment, shared by a module's tests.

    Only event POSTs reach the sandbox, and the service keeps nothing between deliveries;
    a module using it runs its tests in the module's event loop
    (``pytest.mark.asyncio(loop_scope="module")``) and takes ``plain_service``.
    """
    stack = Stack(workdir=tmp_path_factory.mktemp("plain"))
    try:
        sandbox = await stack.sandbox()
        keys = mint_keys()
        table = integration_dict(sandbox.url, keys, enrichment=False)
        yield sandbox, await stack.service(sandbox, table, keys=keys)
    finally:
        await stack.close()


@pytest_asyncio.fixture(loop_scope="module")
async def plain_service(
    module_plain_service: tuple[Sandbox, Service],
) -> tuple[Sandbox, Service]:
    """The module's plain sandbox and service, the sandbox reset (no requests, no events)."""
    (await module_plain_service[0].inspector.post("/_sandbox/reset")).raise_for_status()
    return module_plain_service
