"""``ConnectionGate``: how many connections the gateway holds open, per client and in all.

Every open connection holds one of the process's open files (``ulimit -n``). uvicorn takes
every connection it is offered, and the per-client rate limit counts requests, not
connections: one client holding ~20,000 sockets, each with a head it never finishes,
used up every open file of ``serve`` within the read timeout, and the gRPC port, Redis and
Amperity calls failed with it. The gate refuses a connection over either cap when it is
made (``JsonErrorHttpToolsProtocol.connection_made``), and lets the operator know once per
streak of refusals, not once per connection.
"""

from __future__ import annotations

import ipaddress
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass

_log = logging.getLogger(__name__)

# The gateway's share of the open-file limit by default: the rest is for the gRPC port's
# callers, the Redis and Amperity connections, and the files the process reads.
_GATEWAY_SHARE = 2
# One client's share of the gateway's connections by default: it takes eight clients at
# their cap to fill the gateway, while a NAT of many browsers (six each) still gets in.
_CLIENT_SHARE = 8
# The least a client's default share is (half the total permitting, so one client never
# fills the gateway alone): under the common ulimit -n 1024 an eighth is 64, ten browsers of
# an office behind one NAT address.
_CLIENT_FLOOR = 256
# What the derived caps assume when the process has no open-file limit.
_UNLIMITED_FILES = 1 << 20
# A streak of refusals ends when none came for this long (``ConnectionGate.sweep``).
STREAK_QUIET_SECONDS = 10.0

PER_CLIENT = "client"
"""The ``limit`` a refusal names when the client already holds its share."""
TOTAL = "total"
"""The ``limit`` a refusal names when the gateway holds as many connections as it may."""


def open_file_limit() -> int:
    """The process's soft open-file limit (``ulimit -n``), a large number when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if 0 < soft != resource.RLIM_INFINITY else _UNLIMITED_FILES


@dataclass(frozen=True)
class ConnectionCaps:
    """The open connections the gateway allows in all, and per client.

    Attributes:
        total: Connections open at once, whoever made them.
        per_client: Connections open at once from one client (``client_keys``: an IPv4
            address, or an IPv6 network); a trusted proxy's are counted in ``total`` only.
    """

    total: int
    per_client: int

    @classmethod
    def derive(cls, total: int | None, per_client: int | None, open_files: int) -> ConnectionCaps:
        """The configured caps; an unset one derived from the open-file limit.

        ``total``: half of ``open_files``; ``per_client``: an eighth of ``total``, at least
        256 but at most half of ``total`` (so a client never holds every connection).
        """
        whole = total if total is not None else max(1, open_files // _GATEWAY_SHARE)
        share = per_client
        if share is None:
            share = max(1, min(whole // 2, max(_CLIENT_FLOOR, whole // _CLIENT_SHARE)))
        return cls(whole, share)


def proxy_test(trusted_proxies: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether a peer address is one of ``trusted_proxies`` (``"*"`` trusts every peer)."""
    if "*" in trusted_proxies:
        return lambda host: True
    networks = [ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies]

    def is_proxy(host: str) -> bool:
        if not networks:
            return False
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        return any(address in network for network in networks)

    return is_proxy


class ConnectionGate:
    """Counts the open connections, refusing one over ``caps``; logs each streak of refusals.

    A trusted proxy's connections carry many visitors, whose addresses are known only from
    each request's ``X-Forwarded-For``: they count towards the total alone.

    Args:
        caps: The caps.
        client_key: A client address's key (``ratelimit.client_keys``).
        is_proxy: Whether a peer address is a trusted proxy (``proxy_test``).
        refused: Called with the limit (``PER_CLIENT`` or ``TOTAL``) of each refusal.
    """

    def __init__(
        self,
        caps: ConnectionCaps,
        *,
        client_key: Callable[[str], str],
        is_proxy: Callable[[str], bool],
        refused: Callable[[str], None],
    ) -> None:
        self.caps = caps
        self._client_key = client_key
        self._is_proxy = is_proxy
        self._refused = refused
        self.open = 0
        self._by_client: dict[str, int] = {}
        # The streak of refusals under way: when it began, its last refusal, its counts.
        self._streak_began: float | None = None
        self._last_refusal = 0.0
        self._streak: dict[str, int] = {}

    def admit(self, host: str | None, now: float) -> str | None:
        """Count a new connection from ``host`` (None: no address, a Unix socket).

        Returns:
            None when it is admitted (``release`` it once closed), else the limit it is
            over: ``TOTAL`` or ``PER_CLIENT``.
        """
        key = self._key(host)
        if self.open >= self.caps.total:
            return self._refuse(TOTAL, host, now)
        if key is not None:
            held = self._by_client.get(key, 0)
            if held >= self.caps.per_client:
                return self._refuse(PER_CLIENT, host, now)
            self._by_client[key] = held + 1
        self.open += 1
        return None

    def release(self, host: str | None) -> None:
        """An admitted connection from ``host`` closed."""
        self.open -= 1
        key = self._key(host)
        if key is not None:
            held = self._by_client.pop(key) - 1
            if held:
                self._by_client[key] = held

    def sweep(self, now: float) -> None:
        """End the streak of refusals if none came for ``STREAK_QUIET_SECONDS``, saying so."""
        if self._streak_began is None or now - self._last_refusal < STREAK_QUIET_SECONDS:
            return
        _log.info(
            "gateway accepting connections again: %d refused over %.0f s",
            sum(self._streak.values()),
            self._last_refusal - self._streak_began,
            extra={"refused": dict(self._streak)},
        )
        self._streak_began = None
        self._streak = {}

    def _key(self, host: str | None) -> str | None:
        if host is None or self._is_proxy(host):
            return None
        return self._client_key(host)

    def _refuse(self, limit: str, host: str | None, now: float) -> str:
        self._refused(limit)
        self._last_refusal = now
        self._streak[limit] = self._streak.get(limit, 0) + 1
        if self._streak_began is None:
            self._streak_began = now
            over = (
                f"one client holds {self.caps.per_client} (max_connections_per_client)"
                if limit == PER_CLIENT
                else f"the gateway holds {self.caps.total} (max_connections)"
            )
            _log.warning(
                "gateway refusing connections: %s; answered 503 TOO_MANY_CONNECTIONS and "
                "closed, one line per streak (raise [gateway] max_connections_per_client or "
                "max_connections, and ulimit -n, if these are real visitors)",
                over,
                extra={"limit": limit, "client": host or "", "open": self.open},
            )
        return limit
