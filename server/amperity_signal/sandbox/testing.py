"""Helpers for tests that talk to the sandbox: in process or as a real process.

``InProcessSandbox`` runs the app behind ``httpx.ASGITransport`` on a :class:`FakeClock`;
:func:`sandbox_process` starts ``python -m amperity_signal.sandbox --port 0`` and yields
its base URL. The ``DEFAULT_*`` names are the ids of the shipped default data.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from amperity_signal.sandbox.app import SandboxApp, create_app
from amperity_signal.sandbox.data import SandboxData, default_data
from amperity_signal.sandbox.state import SandboxState
from amperity_signal.sandbox.tokens import mint_token

ACME = "acme"
GLOBEX = "globex"
ACME_STREAM = "esm-2VP6va3Zn"
ACME_DROP_STREAM = "esm-7DrpQ4mZe"
ACME_REJECT_STREAM = "esm-9RjkT2wXa"
GLOBEX_STREAM = "esm-G1obx5Evt"
ACME_COLLECTION = "apc-vPsQheAm"
ACME_EMPTY_KEYS_COLLECTION = "apc-Kx3nNoLnk"
GLOBEX_COLLECTION = "apc-Gx8bPrf2Q"
ALICE_PROFILE = "p-a11ce0000001"
LISTENING_PREFIX = "sandbox listening on "


@dataclass
class FakeClock:
    """A clock that only moves when a test moves it."""

    now: float = 1_790_000_000.0

    def __call__(self) -> float:
        """The current fake time in epoch seconds."""
        return self.now


def default_tokens(data: SandboxData) -> dict[str, str]:
    """A data file's tokens by ``"{tenant}-{name}"``, e.g. ``acme-ingest``, ``acme-profile``."""
    return {
        f"{tenant.tenant_id}-{token.name}": token.token
        for tenant in data.tenants.values()
        for token in tenant.tokens
    }


@dataclass
class InProcessSandbox:
    """A sandbox app on a fake clock with an ``httpx`` client bound to it."""

    app: SandboxApp
    client: httpx.AsyncClient
    clock: FakeClock
    tokens: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, *, profile_delay: float = 0.0, rate_limit_per_second: int = 500
    ) -> InProcessSandbox:
        """A sandbox with the default data and a seeded random generator."""
        clock = FakeClock()
        app = create_app(
            default_data(),
            clock=clock,
            profile_delay=profile_delay,
            rate_limit_per_second=rate_limit_per_second,
            seed=7,
        )
        assert isinstance(app, SandboxApp)
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://sandbox")
        return cls(app, client, clock, default_tokens(app.sandbox.data))

    @property
    def state(self) -> SandboxState:
        """The app's live state."""
        return self.app.sandbox

    def headers(self, key_name: str, tenant: str = ACME) -> dict[str, str]:
        """``Amperity-Tenant`` and ``Authorization`` for one of the default tokens."""
        return {"Amperity-Tenant": tenant, "Authorization": f"Bearer {self.tokens[key_name]}"}

    def mint(self, tenant: str, scopes: Sequence[str], ttl: float = 3600) -> str:
        """A fresh token issued at the fake clock's time."""
        secret = self.state.data.signing_secret
        return mint_token(secret, tenant, scopes, ttl, now=self.clock.now)

    async def post_event(
        self, event: object, stream: str = ACME_STREAM, key_name: str = "acme-ingest"
    ) -> httpx.Response:
        """POSTs one event as JSON with a default token."""
        return await self.client.post(
            f"/prof/events/{stream}", json=event, headers=self.headers(key_name)
        )

    async def lookup(self, collection: str = ACME_COLLECTION, **keys: str) -> httpx.Response:
        """A GET keychain lookup with acme's profile token."""
        return await self.client.get(
            f"/prof/lookup/{collection}/keychain", params=keys, headers=self.headers("acme-profile")
        )

    async def flush(self) -> int:
        """Applies pending profile updates now."""
        response = await self.client.post("/_sandbox/flush")
        return int(response.json()["applied"])


@dataclass(frozen=True)
class SandboxProcess:
    """A sandbox running as its own process."""

    base_url: str
    tokens: dict[str, str]
    signing_secret: str


@contextlib.contextmanager
def sandbox_process(*arguments: str) -> Iterator[SandboxProcess]:
    """Runs ``python -m amperity_signal.sandbox --port 0 [arguments]`` until the block ends.

    Raises:
        RuntimeError: The process did not print its listening line.
    """
    server_dir = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [server_dir, os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "amperity_signal.sandbox", "--port", "0", *arguments]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            env={**os.environ, "PYTHONPATH": path},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            line = process.stdout.readline().strip() if process.stdout else ""
            if not line.startswith(LISTENING_PREFIX):
                stderr.seek(0)
                raise RuntimeError(f"sandbox did not start: {line!r} {stderr.read().decode()}")
            data = default_data()
            url = line.removeprefix(LISTENING_PREFIX)
            yield SandboxProcess(url, default_tokens(data), data.signing_secret)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout:
                process.stdout.close()
