"""Retry policy: which answers are retried, how long to wait, and unknown-host detection."""

from __future__ import annotations

import random
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx

# 429 and every 5xx ("temporary, retry with backoff" in the ingest table), except the two a
# retry cannot change: 501 Not Implemented and 505 HTTP Version Not Supported. Also 408
# (the notes are silent on it): the server, or a load balancer in front of it, gave up
# waiting for the request and processed nothing; RFC 9110 15.5.9 lets the client repeat it,
# and an idle keep-alive connection can get one unasked.
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)} - {501, 505})

# The longest wait a Retry-After can ask for (a day, as the sandbox's faults allow): a
# longer one is cut to it, so a caller is never told to wait years (or infinitely long).
MAX_RETRY_AFTER = 86_400.0
# delay-seconds: ASCII digits (RFC 9110), plus a fraction as some servers send. Not a sign,
# an exponent, "inf" or "nan", which float() would accept.
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")

_DNS_NOT_FOUND_TEXT = (
    "name or service not known",
    "nodename nor servname",
    "no address associated with hostname",
    "no such host",
)
# getaddrinfo codes meaning "this name does not exist" (not a transient resolver failure).
_DNS_NOT_FOUND_CODES = frozenset(
    code
    for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**retry))``.

    Attributes:
        base: The first retry's maximum delay, in seconds.
        cap: The largest delay ever chosen, in seconds.
    """

    base: float = 0.1
    cap: float = 5.0

    def delay(self, retry: int, rng: random.Random) -> float:
        """The delay before retry number ``retry`` (0 for the first retry)."""
        return rng.uniform(0.0, min(self.cap, self.base * 2.0**retry))

    def ceiling(self, retry: int) -> float:
        """The longest delay ``delay(retry)`` can choose: what to suggest to a caller."""
        return min(self.cap, self.base * 2.0**retry)


def parse_retry_after(value: str | None, date_header: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Args:
        value: The ``Retry-After`` header, if any.
        date_header: The response's ``Date`` header, the reference for an HTTP date.
        now: The current epoch time, used when the response has no usable ``Date``.

    Returns:
        Seconds between 0 and ``MAX_RETRY_AFTER``, or None when absent or unreadable
        (a negative, infinite or NaN number is unreadable: the backoff applies).
    """
    if not value:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return min(float(text), MAX_RETRY_AFTER)
    when = _http_date(text)
    if when is None:
        return None
    reference = _http_date(date_header) if date_header else None
    if reference is None:
        reference = now
    return min(max(0.0, when - reference), MAX_RETRY_AFTER)


def _http_date(text: str) -> float | None:
    """An HTTP date as epoch seconds, or None when unreadable.

    HTTP dates are always GMT; the asctime form (``Sun Nov  6 08:49:37 1994``) carries no
    zone, and ``parsedate_to_datetime`` leaves it naive, which ``timestamp()`` would read
    in the machine's local time zone.
    """
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def is_unknown_host(exc: BaseException) -> bool:
    """Tell whether a connection error is a DNS "no such host" (the chain is searched).

    A transient resolver failure (``EAI_AGAIN``) is not an unknown host: it is retried.
    """
    for current in _chain(exc):
        if isinstance(current, socket.gaierror) and current.errno in _DNS_NOT_FOUND_CODES:
            return True
        text = str(current).lower()
        if any(fragment in text for fragment in _DNS_NOT_FOUND_TEXT):
            return True
    return False


NO_ANSWER_REASONS = frozenset(
    {
        "PROXY_FAILED",
        "TENANT_HOST_NOT_FOUND",
        "CONNECT_TIMEOUT",
        "TIMEOUT",
        "TLS_REFUSED",
        "CONNECT_FAILED",
        "CONNECTION_LOST",
        "CANCELLED",
    }
)
"""Every reason ``no_answer_reason`` gives (and ``CANCELLED``: the caller gave up)."""


# One return per kind: the function is the table, read top to bottom.
def no_answer_reason(exc: BaseException) -> str:  # noqa: PLR0911
    """Why a request got no answer, as the ``amperity_calls`` metric's ``reason``.

    The outbound proxy failed (``PROXY_FAILED``), DNS has no such host
    (``TENANT_HOST_NOT_FOUND``), connecting timed out (``CONNECT_TIMEOUT``), the request or
    its answer did (``TIMEOUT``), the host's certificate was refused (``TLS_REFUSED``), the
    connection could not be opened (``CONNECT_FAILED``: refused, unreachable) or broke
    once it was (``CONNECTION_LOST``).
    """
    if isinstance(exc, httpx.ProxyError):
        return "PROXY_FAILED"
    if is_unknown_host(exc):
        return "TENANT_HOST_NOT_FOUND"
    if isinstance(exc, httpx.ConnectTimeout):
        return "CONNECT_TIMEOUT"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "TIMEOUT"
    if certificate_problem(exc) is not None:
        return "TLS_REFUSED"
    if isinstance(exc, httpx.ConnectError):
        return "CONNECT_FAILED"
    return "CONNECTION_LOST"


def certificate_problem(exc: BaseException) -> str | None:
    """What TLS certificate verification said when it refused the host (the chain is searched).

    Returns:
        The verification message (e.g. "self-signed certificate"), or None when the
        failure is not a refused certificate.
    """
    for current in _chain(exc):
        # aiohttp's ClientConnectorCertificateError is one too, without the SSL attributes.
        message = getattr(current, "verify_message", None)
        if isinstance(current, ssl.SSLCertVerificationError) and message:
            return str(message)
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
