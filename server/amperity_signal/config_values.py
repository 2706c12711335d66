"""Checks of single configuration values that must have a shape: URLs, addresses, origins.

Each check turns a value that would only fail later (at bind, at the first request, or
silently) into a ``ConfigProblem`` naming the field and the fix. A URL that may carry a
password (``api_base_url``, ``redis_url``) is only quoted back when it cannot hold one.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from amperity_signal.errors import ConfigProblem
from amperity_signal.logs import SCRUB_MIN_LENGTH

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_PORT = re.compile(r"[0-9]+")
_ORIGIN = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)/?")
_DB = re.compile(r"/?[0-9]*")
# Amperity's API keys are JWTs: a JSON header, base64url-encoded, starts "eyJ".
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# ``[server] log_level`` and ``--log-level``. Here, not in ``config``, because the CLI reads
# it before anything imports grpc (``logs.quiet_grpc_core``).
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")


def log_level(text: str) -> str:
    """``--log-level`` (the service's and the sandbox's): one of ``LOG_LEVELS``, in any case."""
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log level; "
            f"{did_you_mean(text, LOG_LEVELS)}pass one of {', '.join(LOG_LEVELS)}"
        )
    return text.lower()


# The consent an event carries (the proto's Consent message), as ``ConsentLedger`` reads it.
CONSENT_FLAGS = ("analytics", "marketing", "functional")
GOOGLE_CONSENT = ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage")
_CATEGORY = re.compile(r"categories\.[^.\s]+")
_QUOTES_OR_BRACKETS = re.compile(r"[\"'\[\]{}]")
# The keys and tokens of the configuration being checked, which ``quoted`` never shows.
_UNQUOTABLE: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "unquotable", default=()
)


def holds_key(value: Any) -> bool:
    """Whether ``value`` is, or contains, something shaped like an API key (a JWT)."""
    return isinstance(value, str) and _JWT.search(value) is not None


def jwt_private_parts(key: str) -> list[str]:
    """A JWT-shaped key's payload and signature segments; nothing for any other key.

    What identifies the key: its header segment is the same in every token of an algorithm.
    """
    segments = key.split(".")
    return segments[1:] if len(segments) == 3 and all(segments) else []


@contextlib.contextmanager
def unquotable(secrets: Iterable[str]) -> Iterator[None]:
    """While a configuration is checked, ``quoted`` describes any value holding one of its keys.

    A pipeline key pasted into ``tenant_id`` (or any key into any field) would otherwise
    be quoted back by that field's problem. Values shorter than ``SCRUB_MIN_LENGTH`` are
    not looked for: "web" or "acme" may be a key and a tenant alike.
    """
    reset = _UNQUOTABLE.set(tuple(s for s in secrets if len(s) >= SCRUB_MIN_LENGTH))
    try:
        yield
    finally:
        _UNQUOTABLE.reset(reset)


def quoted(value: Any) -> str:
    """``repr(value)`` for a message, unless it holds a key pasted in the wrong field.

    Problems are printed to terminals and CI logs: a key is described, never quoted. A key
    is known by its look (a JWT) or, while ``unquotable`` holds the configuration's own
    keys and tokens (pipeline keys included), by being one of them.
    """
    if holds_key(value):
        return "the value (an API key, by its look)"
    if holds_configured_secret(value):
        return "the value (not quoted: it holds a pipeline key, API key or token set here)"
    return repr(value)


def closest(value: Any, names: tuple[str, ...]) -> str | None:
    """The one of ``names`` that ``value`` is a slip from, if any.

    Case, spaces, hyphens and underscores aside (``"B2B SaaS"`` is ``b2b_saas``,
    ``"SHA-256"`` is ``sha256``), else a close spelling (``"retial"``).
    """
    if not isinstance(value, str):
        return None
    import difflib  # noqa: PLC0415 (a mistake's hint only: not on every start, ~1 ms)

    def bare(text: str) -> str:
        return re.sub(r"[\s_-]+", "", text.lower())

    by_bare = {bare(name): name for name in names}
    if bare(value) in by_bare:
        return by_bare[bare(value)]
    # The start of one name alone ("warn" of warning), long enough to mean something.
    starting = [name for key, name in by_bare.items() if key.startswith(bare(value))]
    if len(bare(value)) >= 3 and len(starting) == 1:
        return starting[0]
    # 0.75: one letter swapped in a four-letter word ("shwo"), one wrong in "servr".
    close = difflib.get_close_matches(bare(value), list(by_bare), n=1, cutoff=0.75)
    return by_bare[close[0]] if close else None


def did_you_mean(value: Any, names: tuple[str, ...]) -> str:
    """``"did you mean 'retail'? If not, "`` for a slip from one of ``names``, else ``""``."""
    guess = closest(value, names)
    return f"did you mean {quoted(guess)}? If not, " if guess else ""


def withheld(problem: ConfigProblem) -> ConfigProblem:
    """``problem`` with every key it holds described: the last guard before it is printed.

    ``quoted`` and the locations already describe keys; this catches a message written by
    a validator that quotes what it was given (a blueprint override's unknown transform).
    A key is one ``unquotable`` holds, or anything shaped like an API key (a JWT).
    """

    def described(text: str) -> str:
        for secret in _UNQUOTABLE.get():
            text = text.replace(secret, "<a pipeline key, API key or token set here>")
        return _JWT.sub("<an API key>", text)

    return ConfigProblem(
        described(problem.location), described(problem.problem), described(problem.fix)
    )


def holds_configured_secret(value: Any) -> bool:
    """Whether ``value`` holds one of the keys or tokens ``unquotable`` was given."""
    secrets = _UNQUOTABLE.get()
    if not secrets:
        return False
    texts = (repr(value), str(value))  # a repr escapes what str shows, and the other way
    return any(secret in text for secret in secrets for text in texts)


def check_server(table: Any) -> list[ConfigProblem]:
    """The ``[server]`` table's listen addresses."""
    if not isinstance(table, dict):
        return []
    problems = []
    for name, example in (("grpc_address", "127.0.0.1:50051"), ("http_address", "127.0.0.1:8080")):
        value = table.get(name)
        if isinstance(value, str) and (problem := listen_address_problem(value)):
            problems.append(
                ConfigProblem(
                    f"server.{name}",
                    problem,
                    f"write the interface and port to listen on, e.g. {example} "
                    "(0.0.0.0 for every interface, [::1] or [::] for IPv6); "
                    "port 0 picks a free port.",
                )
            )
    if not problems and (shared := _shared_port_problem(table)):
        problems.append(shared)
    return problems


def _shared_port_problem(table: dict[str, Any]) -> ConfigProblem | None:
    """The gRPC service and the gateway on one port (allowed only as port 0 or two hosts).

    A single process fails to bind the second; under ``--workers`` every listener binds
    with SO_REUSEPORT and the kernel hands each connection to either of them.
    """
    grpc_address = table.get("grpc_address", "127.0.0.1:50051")
    http_address = table.get("http_address", "127.0.0.1:8080")
    if not isinstance(grpc_address, str) or not isinstance(http_address, str):
        return None
    grpc_parts, http_parts = _split_host_port(grpc_address), _split_host_port(http_address)
    if grpc_parts is None or http_parts is None or grpc_parts[1] != http_parts[1]:
        return None
    if grpc_parts[1] == "0" or not _hosts_overlap(grpc_parts[0], http_parts[0]):
        return None
    return ConfigProblem(
        "server.http_address",
        f"{quoted(http_address)} is the port of server.grpc_address ({quoted(grpc_address)}); "
        "the gRPC service and the HTTP gateway each need their own.",
        "set http_address to another port, e.g. 127.0.0.1:8080 (port 0 picks a free one).",
    )


def _hosts_overlap(first: str, second: str) -> bool:
    """Whether one port on both hosts is one socket address (a bind of one takes the other)."""
    if first == second or "[::]" in (first, second):
        return True  # [::] is dual-stack: it takes the port on every IPv4 address too
    pair = {first, second}
    if "0.0.0.0" in pair:  # noqa: S104 - compared with, not bound to
        return not (pair - {"0.0.0.0"}).pop().startswith("[")  # noqa: S104 - as above
    return pair in ({"localhost", "127.0.0.1"}, {"localhost", "[::1]"})


def check_cache(table: Any) -> list[ConfigProblem]:
    """The ``[cache]`` table's ``redis_url``."""
    value = table.get("redis_url") if isinstance(table, dict) else None
    if not isinstance(value, str) or not (problem := _redis_url_problem(value)):
        return []
    return [
        ConfigProblem(
            "cache.redis_url",
            problem,
            "write redis://HOST:PORT/DB (rediss:// for TLS, unix:///path/to/redis.sock for a "
            "socket), e.g. redis://127.0.0.1:6379/0; a password goes in as "
            "redis://:PASSWORD@HOST:PORT/DB (write env:NAME to read the URL from the "
            "environment).",
        )
    ]


def check_integration_values(where: str, table: dict[str, Any]) -> list[ConfigProblem]:
    """An integration's ``api_base_url``, ``allowed_origins``, ``browser_consent`` and allowlist."""
    problems = []
    base_url = table.get("api_base_url")
    if isinstance(base_url, str) and (problem := _base_url_problem(base_url)):
        problems.append(
            ConfigProblem(
                f"{where}.api_base_url",
                problem,
                "write http(s)://HOST[:PORT] with nothing after the host but an optional path, "
                "e.g. http://127.0.0.1:8765 for the sandbox; or remove api_base_url to reach "
                "https://{tenant_subdomain}.amperity.com.",
            )
        )
    problems.extend(_check_origins(where, table.get("allowed_origins")))
    problems.extend(_check_allowlist(where, table.get("browser_attribute_allowlist")))
    consent = table.get("browser_consent")
    if isinstance(consent, str) and not is_consent_condition(consent):
        problems.append(
            ConfigProblem(
                f"{where}.browser_consent",
                f"{quoted(consent)} is not a consent condition the service understands, so no "
                "visitor would ever meet it and every page would get no attributes.",
                f"use one of {', '.join(CONSENT_FLAGS)}, categories.CODE (a consent "
                "platform's category, e.g. categories.C0003) or google.NAME "
                f"({', '.join(GOOGLE_CONSENT)}); or remove browser_consent to show the "
                "allowlisted attributes without a consent check.",
            )
        )
    return problems


def is_consent_condition(condition: str) -> bool:
    """Whether ``ConsentLedger.allows`` can ever find ``condition`` in a visitor's consent."""
    if condition in CONSENT_FLAGS or _CATEGORY.fullmatch(condition):
        return True
    prefix, _, name = condition.partition(".")
    return prefix == "google" and name in GOOGLE_CONSENT


def csv_items(value: Any) -> Any:
    """A CSV field's items (the spec's CSV strings); any other value (an array) as it is."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _check_allowlist(where: str, value: Any) -> list[ConfigProblem]:
    """Attribute names hold no quotes or brackets: such a name is JSON or quoted CSV misread.

    Split as CSV, '["Persona", "Tier"]' gives the names '["Persona"' and '"Tier"]', which no
    profile has, so the page would see nothing and the empty-allowlist advice never show.
    """
    value = csv_items(value)
    if not isinstance(value, list | tuple):
        return []
    return [
        ConfigProblem(
            f"{where}.browser_attribute_allowlist[{index}]",
            f"{quoted(name)} holds quotes or brackets, which no attribute name has, so no "
            "attribute would match it and the page would see nothing.",
            'write the attribute names as CSV without quotes, e.g. "Persona,LifetimeTier", '
            'or as an array of strings, e.g. ["Persona", "LifetimeTier"].',
        )
        for index, name in enumerate(value)
        if isinstance(name, str) and _QUOTES_OR_BRACKETS.search(name)
    ]


def _check_origins(where: str, value: Any) -> list[ConfigProblem]:
    value = csv_items(value)
    if not isinstance(value, list | tuple):
        return []
    problems = []
    for index, origin in enumerate(value):
        if not isinstance(origin, str):
            continue
        location = f"{where}.allowed_origins[{index}]"
        if origin.strip() == "*":
            problems.append(
                ConfigProblem(
                    location,
                    "'*' is not supported: the gateway answers with credentials (cookies), "
                    "which browsers never allow for every origin.",
                    "list each site's origin instead, e.g. https://shop.example.com.",
                )
            )
        elif not _is_origin(origin):
            problems.append(
                ConfigProblem(
                    location,
                    f"{quoted(origin)} is not an origin, so no page would match it.",
                    "write the page's scheme://host[:port] with no path, as the browser sends "
                    "it, e.g. https://shop.example.com or http://localhost:8080.",
                )
            )
    return problems


def _is_origin(origin: str) -> bool:
    match = _ORIGIN.fullmatch(origin.strip())
    if match is None:
        return False
    parts = _split_host_port(match[2])
    return parts is not None and _valid_host(parts[0]) and _valid_port(parts[1], lowest=1)


def listen_address_problem(address: str) -> str | None:
    """What is wrong with a ``host:port`` to listen on (port 0 allowed), or None."""
    parts = _split_host_port(address)
    if parts is None or parts[1] is None or not _valid_host(parts[0]):
        return f"{quoted(address)} is not host:port."
    if not _PORT.fullmatch(parts[1]):
        return f"{quoted(address)} has a port that is not a number."
    if not _valid_port(parts[1], lowest=0):
        return f"{quoted(address)} has port {parts[1]}, outside 0-65535."
    return None


def _base_url_problem(url: str) -> str | None:
    shown = _shown_url(url)
    parts = _parse_url(url)
    if parts is None or "://" not in url:
        return f"{shown} is not a URL."
    if parts.scheme not in ("http", "https"):
        return f"{shown} is not an http:// or https:// URL."
    if "@" in parts.netloc:
        # Userinfo would conflict with the Authorization header on every call, and end up
        # in the rate limiter's key and its log lines.
        return (
            "holds a user name or password (user:password@...), which Amperity does not "
            "use and which would conflict with the API key on every call."
        )
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        return f"{shown} has a query or fragment (?... or #...), which API paths cannot follow."
    return _host_port_problem(shown, parts.netloc, required=True)


def _redis_url_problem(url: str) -> str | None:
    shown = _shown_url(url)
    parts = _parse_url(url)
    if parts is None:
        return f"{shown} is not a URL."
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"{shown} is not a redis://, rediss:// or unix:// URL."
    if parts.scheme == "unix":
        return None if parts.path else f"{shown} names no socket path."
    host_port = parts.netloc.rpartition("@")[2]
    if problem := _host_port_problem(shown, host_port, required=False):
        return problem
    if not _DB.fullmatch(parts.path):
        return f"{shown} has a database other than a number after the port."
    return None


def _host_port_problem(shown: str, host_port: str, *, required: bool) -> str | None:
    parts = _split_host_port(host_port)
    if parts is None or ((required or host_port) and not _valid_host(parts[0])):
        return f"{shown} has no valid host."
    if not _valid_port(parts[1], lowest=1):
        return f"{shown} has a port other than a number from 1 to 65535."
    return None


def _parse_url(url: str) -> SplitResult | None:
    """The URL's parts, or None for one with spaces, control characters or a broken host."""
    if not url.isascii() or not url.isprintable() or " " in url:
        return None
    try:
        return urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None


def _shown_url(url: str) -> str:
    """The URL quoted, unless it may carry a password (user info or a query) or an API key."""
    if any(mark in url for mark in "@?#") or "password" in url.lower():
        return "the value"
    return quoted(url)


def _split_host_port(text: str) -> tuple[str, str | None] | None:
    """``host[:port]`` or ``[v6][:port]`` as (host, port or None); None when malformed."""
    if text.startswith("["):
        host, bracket, rest = text.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        return host + bracket, (rest[1:] if rest else None)
    host, colon, port = text.partition(":")
    if ":" in port:  # an IPv6 address without brackets
        return None
    return host, (port if colon else None)


def _valid_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and _HOSTNAME.fullmatch(host) is not None


def _valid_port(port: str | None, *, lowest: int) -> bool:
    return port is None or (_PORT.fullmatch(port) is not None and lowest <= int(port) <= 65535)
