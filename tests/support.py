"""Shared test support: configurations pointed at a sandbox, and freshly minted keys."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from amperity_signal.config import Settings, settings_from_dict
from amperity_signal.enrich.stores import MemoryStore
from amperity_signal.sandbox import PROFILE_READ, STREAM_WRITE, default_data, mint_token
from amperity_signal.service.live import DeliveryRecord

COLLECTION = "apc-vPsQheAm"
STREAM = "esm-2VP6va3Zn"
DROP_STREAM = "esm-7DrpQ4mZe"
REJECT_STREAM = "esm-9RjkT2wXa"
ALICE_EMAIL = "alice@example.com"
ALICE_PROFILE = "p-a11ce0000001"
LINKING_KEYS = [
    {"source": "email", "key": "email_sha256", "hash": "sha256"},
    {"source": "canonical_id", "key": "device_cookie"},
    {"source": "user_id", "key": "customer_id"},
]


@dataclass(frozen=True)
class Keys:
    """A fresh, unique pair of sandbox keys for one tenant (canaries for leak scans)."""

    ingest: str
    profile: str


_CI_OFF = frozenset({"", "0", "false", "no"})


def in_ci() -> bool:
    """Whether this run is CI's, where a missing component fails instead of skipping.

    CI services set ``CI`` to ``true``, ``True`` or ``1``; any non-empty value other than
    ``0``, ``false`` or ``no`` (in any case, spaces aside) counts, so no spelling turns a
    required browser, Node or redis-server into a silent skip.
    """
    return os.environ.get("CI", "").strip().lower() not in _CI_OFF


def base64_echoes(secret: str) -> list[str]:
    """``secret`` base64-encoded as an upstream or a proxy might echo it.

    Standard and URL-safe, padded and not, alone and inside a longer encoded text at each
    of the three byte alignments (a Basic ``Authorization`` encodes ``user:secret``).
    """
    echoes = []
    for before in (b"", b"a", b"ab", b"api:"):
        for after in (b"", b"!"):
            encoded = base64.b64encode(before + secret.encode() + after).decode()
            for form in (encoded, encoded.translate(str.maketrans("+/", "-_"))):
                echoes += [form, form.rstrip("=")]
    return list(dict.fromkeys(echoes))


_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}")


def reveals_encoded(text: str, secret: str) -> bool:
    """Whether base64 in ``text``, at any alignment, decodes to ``secret`` but its ends.

    The end characters of an encoded secret share bits with what surrounds it, so the
    secret's first and last characters need not be redacted; the rest must be.
    """
    middle = secret.encode()[1:-1]
    for run in _BASE64_RUN.findall(text):
        standard = run.translate(str.maketrans("-_", "+/"))
        for start in range(4):
            chunk = standard[start:]
            chunk = chunk[: len(chunk) - (len(chunk) % 4 == 1)]  # one character is no byte
            try:
                decoded = base64.b64decode(chunk + "=" * (-len(chunk) % 4))
            except binascii.Error:
                continue
            if middle in decoded:
                return True
    return False


def mint_keys(tenant: str = "acme", ttl: float = 3_600) -> Keys:
    """Mint unique ingest and profile keys, signed by the default sandbox data's secret."""
    secret = default_data().signing_secret
    return Keys(
        ingest=mint_token(secret, tenant, [STREAM_WRITE], ttl),
        profile=mint_token(secret, tenant, [PROFILE_READ], ttl),
    )


def integration_dict(
    base_url: str,
    keys: Keys,
    *,
    integration_id: str = "web",
    enrichment: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """One [[integrations]] table for the default sandbox tenant ``acme``.

    ``enrichment=False``: without the Profile API's key, collection and linking keys, so
    only event POSTs reach the sandbox.
    """
    table: dict[str, Any] = {
        "id": integration_id,
        "pipeline_key": f"pk_{integration_id}",
        "vertical": "retail",
        "tenant_subdomain": "acme",
        "tenant_id": "acme",
        "api_base_url": base_url,
        "api_key": keys.ingest,
        "event_stream_id": STREAM,
        "source_value": "DATAFLY",
        "profile_api_key": keys.profile,
        "profile_collection_id": COLLECTION,
        "linking_keys": LINKING_KEYS,
        "browser_attribute_allowlist": "Persona,LifetimeTier,NextBestOffer",
        "allowed_origins": ["http://127.0.0.1"],
    }
    if not enrichment:
        for name in ("profile_api_key", "profile_collection_id", "linking_keys"):
            del table[name]
    table.update(overrides)
    return table


def settings_for(*integrations: dict[str, Any], **sections: Any) -> Settings:
    """Validated settings binding gRPC to a free loopback port."""
    raw: dict[str, Any] = {
        "server": {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0"},
        "integrations": list(integrations),
    }
    raw.update(sections)
    return settings_from_dict(raw, {})


def message_id() -> str:
    """A unique message id."""
    return f"msg-{uuid.uuid4()}"


def delivery_record(number: int, integration_id: str = "web") -> DeliveryRecord:
    """A delivered Live Events record, ``msg-<number>``, as ``Delivery`` publishes them."""
    return DeliveryRecord(
        integration_id=integration_id,
        message_id=f"msg-{number}",
        delivered_at=datetime(2026, 12, 5, tzinfo=UTC),
        event={"type": "page", "messageId": f"msg-{number}"},
        amperity_type="pageview",
        payload={"type": "pageview"},
        vendor_request=None,
        outcome="delivered",
    )


class OutageStore(MemoryStore):
    """A memory store whose reads and writes raise ConnectionError while ``down``.

    ``calls`` counts them, so a test can see the backend skip the store during an outage.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        if clock is None:
            super().__init__(1000)
        else:
            super().__init__(1000, clock=clock)
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("store unreachable")

    async def get(self, key: str) -> bytes | None:
        self._check()
        return await super().get(key)

    async def multi_get(self, keys: Sequence[str]) -> list[bytes | None]:
        self._check()
        return await super().multi_get(keys)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._check()
        await super().set(key, value, ttl)


async def read_http_answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str]]:
    """One whole HTTP/1.1 answer with a Content-Length body: status line, headers (lower)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return status_line.encode(), headers


async def until_refused(address: str) -> None:
    """Return once a new TCP connection to ``address`` (host:port) is refused: it stopped listening.

    Bound it with ``asyncio.wait_for`` (a hang guard, not a timed assertion).
    """
    host, port = address.rsplit(":", 1)
    while True:
        try:
            await asyncio.to_thread(lambda: socket.create_connection((host, int(port)), 5).close())
        except ConnectionRefusedError:
            return
        await asyncio.sleep(0.02)


async def until_held(inspector: httpx.AsyncClient, request: asyncio.Future[Any]) -> None:
    """Return once the sandbox's faults are used up: a one-use ``hold`` has its request.

    The fault's use is taken when the request reaches the sandbox, which holds it from
    then on. Fails at once if ``request`` ends meanwhile (it was never held).
    """
    while (await inspector.get("/_sandbox/faults")).json()["faults"]:
        assert not request.done(), request.result()
        await asyncio.sleep(0.02)


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    describe: Callable[[], str] = lambda: "the condition never held",
) -> None:
    """Wait until ``condition`` holds (bounded at 30 s, so a bug fails, not hangs).

    A loaded machine may take seconds where a quiet one takes milliseconds: the bound is
    there to end a test that would never pass, not to time anything. ``describe`` says
    what did not happen, for the failure.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        held = condition()
        if held if isinstance(held, bool) else await held:
            return
        if loop.time() > deadline:
            raise AssertionError(describe())
        await asyncio.sleep(0.02)


async def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` now."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True
