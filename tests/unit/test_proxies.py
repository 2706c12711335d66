"""Outbound proxies read from the environment as httpx reads them, credentials kept hidden."""

from __future__ import annotations

import asyncio
import base64
import logging

import httpcore
import httpx
import pytest

from amperity_signal.amperity.aiohttp_transport import AiohttpTransport
from amperity_signal.config import settings_from_dict
from amperity_signal.errors import ConfigError
from amperity_signal.proxies import ProxyRules
from amperity_signal.service.app import report_proxies
from tests.support import integration_dict, mint_keys

PROXY = "http://proxy.corp:3128"
SECRET = "pr0xy-s3cret-7f3a9c"  # a canary: never in a log or an error


def route(environ: dict[str, str], url: str) -> str | None:
    """The proxy for ``url`` under ``environ`` (None: direct), asked as the transport asks."""
    parsed = httpx.URL(url)
    proxy = ProxyRules.from_environ(environ).proxy_for(parsed.scheme, parsed.host, parsed.port)
    return str(proxy.url) if proxy is not None else None


@pytest.mark.parametrize(
    ("environ", "url", "expected"),
    [
        ({"HTTP_PROXY": PROXY}, "http://acme.test/", PROXY),
        ({"HTTP_PROXY": PROXY}, "https://acme.amperity.com/", None),
        ({"HTTPS_PROXY": PROXY}, "https://acme.amperity.com/", PROXY),
        ({"HTTPS_PROXY": PROXY}, "http://acme.test/", None),
        ({"ALL_PROXY": PROXY}, "https://acme.amperity.com/", PROXY),
        (
            {"ALL_PROXY": PROXY, "HTTPS_PROXY": "http://other:8080"},
            "https://a.test/",
            "http://other:8080",
        ),
        ({"HTTPS_PROXY": "proxy.corp:3128"}, "https://a.test/", PROXY),
        ({"HTTPS_PROXY": "http://ignored:1", "https_proxy": PROXY}, "https://a.test/", PROXY),
        ({"HTTPS_PROXY": PROXY, "https_proxy": ""}, "https://a.test/", None),
        ({"HTTP_PROXY": PROXY, "REQUEST_METHOD": "GET"}, "http://a.test/", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "*"}, "https://acme.amperity.com/", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "amperity.com"}, "https://amperity.com/", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "amperity.com"}, "https://acme.amperity.com/", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "amperity.com"}, "https://notamperity.com/", PROXY),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": ".amperity.com"}, "https://acme.amperity.com/", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": ".amperity.com"}, "https://amperity.com/", PROXY),
        (
            {"HTTPS_PROXY": PROXY, "NO_PROXY": " a.test , Acme.Amperity.com "},
            "https://acme.amperity.com/",
            None,
        ),
        ({"HTTP_PROXY": PROXY, "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:8765/", None),
        ({"HTTP_PROXY": PROXY, "NO_PROXY": "127.0.0.1"}, "http://127.0.0.10:8765/", PROXY),
        ({"HTTP_PROXY": PROXY, "NO_PROXY": "::1"}, "http://[::1]:8765/", None),
        ({"HTTP_PROXY": PROXY, "NO_PROXY": "localhost"}, "http://localhost:8765/", None),
        ({"HTTP_PROXY": PROXY, "NO_PROXY": "sandbox.test:8765"}, "http://sandbox.test:8765/", None),
        (
            {"HTTP_PROXY": PROXY, "NO_PROXY": "sandbox.test:8765"},
            "http://sandbox.test:9999/",
            PROXY,
        ),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "a.test:443"}, "https://a.test/", None),
        ({"ALL_PROXY": PROXY, "NO_PROXY": "http://a.test"}, "http://a.test/", None),
        ({"ALL_PROXY": PROXY, "NO_PROXY": "http://a.test"}, "https://a.test/", PROXY),
        ({"NO_PROXY": "a.test"}, "https://b.test/", None),
    ],
)
def test_each_url_goes_through_the_proxy_httpx_would_pick(
    environ: dict[str, str], url: str, expected: str | None
) -> None:
    """HTTP(S)_PROXY / ALL_PROXY by scheme, lower case winning, NO_PROXY's host rules."""
    assert route(environ, url) == expected


@pytest.mark.parametrize(
    ("no_proxy", "url", "expected"),
    [
        ("10.0.0.0/8", "https://10.20.30.40/", None),
        ("10.0.0.0/8", "https://10.255.255.255:8443/", None),
        ("10.0.0.0/8", "https://11.0.0.1/", PROXY),
        ("127.0.0.0/8", "https://127.0.0.1:8765/", None),
        ("192.168.1.5/24", "https://192.168.1.200/", None),
        ("192.168.1.5/24", "https://192.168.2.1/", PROXY),
        ("172.16.0.0/12, ::1/128", "https://[::1]:8443/", None),
        ("::1/128", "https://[::2]/", PROXY),
        ("fd00::/8", "https://[fd12:3456::1]/", None),
        ("fd00::/8", "https://10.0.0.1/", PROXY),
        ("10.0.0.0/8", "https://[::ffff:a00:1]/", PROXY),
        ("0.0.0.0/0", "https://203.0.113.7/", None),
        ("10.0.0.0/8:8443", "https://10.1.1.1:8443/", None),
        ("10.0.0.0/8:8443", "https://10.1.1.1/", PROXY),
        ("https://10.0.0.0/8", "https://10.1.1.1/", None),
        ("http://10.0.0.0/8", "https://10.1.1.1/", PROXY),
        # Host names are not resolved: localhost is not matched by 127.0.0.0/8.
        ("127.0.0.0/8", "https://localhost:8443/", PROXY),
        ("10.0.0.0/8", "https://10.0.0.1.nip.io/", PROXY),
        # Not a range (no such prefix length): matches nothing, as before.
        ("10.0.0.0/33", "https://10.0.0.1/", PROXY),
    ],
)
def test_no_proxy_cidr_ranges_cover_ip_literals_only(
    no_proxy: str, url: str, expected: str | None
) -> None:
    """A NO_PROXY CIDR range (curl's and Go's reading) sends the IP literals in it directly."""
    assert route({"HTTPS_PROXY": PROXY, "NO_PROXY": no_proxy}, url) == expected


@pytest.mark.parametrize(
    ("no_proxy", "url", "expected"),
    [
        ("[fd00::]/8", "https://[fd12:3456::1]/", None),
        ("[fd00::]/8", "https://[fe80::1]/", PROXY),
        ("[fd00::/8]", "https://[fd12:3456::1]/", None),
        ("[::1]/128", "https://[::1]:8443/", None),
        ("[::1]/127", "https://[::]/", None),
        ("[::1]/128", "https://[::2]/", PROXY),
        ("[fd00::]/16", "https://[fd00:1::1]/", None),
        # The port after the brackets applies to the range, as after an address.
        ("[fd00::]/8:8443", "https://[fd12::1]:8443/", None),
        ("[fd00::]/8:8443", "https://[fd12::1]/", PROXY),
        ("https://[fd00::]/8", "https://[fd12::1]/", None),
        ("http://[fd00::]/8", "https://[fd12::1]/", PROXY),
        # Bracketed or bare, an address is one address; a range in brackets is no name.
        ("[fd00::]", "https://[fd00::1]/", PROXY),
        ("[fd00::]/129", "https://[fd00::]/", PROXY),
    ],
)
def test_bracketed_ipv6_ranges_read_as_the_bare_form(
    no_proxy: str, url: str, expected: str | None
) -> None:
    """[fd00::]/8 and [fd00::/8] are fd00::/8; [::1]/128 is ::1/128 (an optional :port)."""
    assert route({"HTTPS_PROXY": PROXY, "NO_PROXY": no_proxy}, url) == expected


def test_a_bracketed_range_is_listed_as_its_network() -> None:
    """describe() shows a bracketed range as the bare network, in brackets beside a port."""
    rules = ProxyRules.from_environ(
        {"HTTPS_PROXY": PROXY, "NO_PROXY": "[fd12::1]/8,[fd00::]/16:8443,[::1]:80"}
    )

    assert rules.describe() == (
        f"HTTPS_PROXY={PROXY}; NO_PROXY: [fd00::]/16:8443, [::1]:80, fd00::/8"
    )


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("10.0.0.0/33", "/33 is more than the 32 bits of an IPv4 address"),
        ("::1/129", "/129 is more than the 128 bits of an IPv6 address"),
        ("[fd00::]/200", "/200 is more than the 128 bits of an IPv6 address"),
        ("10.0.0/8", "'10.0.0' before the / is not an IP address"),
        ("corp.test/16", "'corp.test' before the / is not an IP address"),
        ("10.0.0.0/eight", "'eight' after the / is not a number of bits"),
        ("https://10.0.0.0/33:443", "/33 is more than the 32 bits"),
    ],
)
def test_a_no_proxy_entry_that_is_no_range_is_ignored_with_a_warning(entry: str, why: str) -> None:
    """10.0.0.0/33 still matches nothing, and warnings names it, why, and how to write one."""
    rules = ProxyRules.from_environ(
        {"HTTPS_PROXY": PROXY, "no_proxy": f"localhost, {entry} ,10.0.0.0/8"}
    )

    (warning,) = rules.warnings
    assert warning.startswith(f"no_proxy entry {entry!r} is ignored: {why}")
    assert "covers no address" in warning
    assert "address/bits (10.0.0.0/8, fd00::/8)" in warning
    assert route({"HTTPS_PROXY": PROXY, "NO_PROXY": entry}, "https://10.0.0.1:443/") == PROXY


@pytest.mark.parametrize(
    "environ",
    [
        {"HTTPS_PROXY": PROXY, "NO_PROXY": "localhost,.corp.test,10.0.0.0/8,::1/128,[fd00::]/8"},
        {"HTTPS_PROXY": PROXY, "NO_PROXY": "10.0.0.0/33,*"},  # nothing goes through it
        {"NO_PROXY": "10.0.0.0/33"},  # no proxy: NO_PROXY changes nothing here
    ],
)
def test_no_warning_when_every_entry_is_usable_or_none_matters(environ: dict[str, str]) -> None:
    """Good entries, NO_PROXY=*, or no proxy at all: no warnings."""
    assert ProxyRules.from_environ(environ).warnings == ()


def test_a_cidr_range_is_listed_in_the_start_up_line() -> None:
    """describe() shows a range as its network, among the NO_PROXY entries."""
    rules = ProxyRules.from_environ({"HTTPS_PROXY": PROXY, "NO_PROXY": "10.1.2.3/8,::1/128"})

    assert rules.describe() == f"HTTPS_PROXY={PROXY}; NO_PROXY: 10.0.0.0/8, ::1/128"


def test_credentials_become_a_header_and_are_shown_redacted() -> None:
    """user:password goes into Proxy-Authorization only; URL, repr and log line hide it."""
    rules = ProxyRules.from_environ({"HTTPS_PROXY": f"http://signal:{SECRET}@proxy.corp:3128"})
    proxy = rules.proxy_for("https", "acme.amperity.com", None)

    assert proxy is not None
    assert str(proxy.url) == PROXY
    expected = base64.b64encode(f"signal:{SECRET}".encode()).decode()
    assert proxy.authorization == f"Basic {expected}"
    assert proxy.shown == "http://[REDACTED]@proxy.corp:3128"
    assert rules.describe() == "HTTPS_PROXY=http://[REDACTED]@proxy.corp:3128"
    for text in (repr(rules), repr(proxy), rules.describe()):
        assert SECRET not in text
        assert expected not in text
    assert {SECRET, expected} <= set(rules.secrets)


def test_percent_encoded_credentials_are_decoded_for_the_header() -> None:
    """A password with @ or : is written percent-encoded, and sent decoded."""
    rules = ProxyRules.from_environ({"HTTP_PROXY": "http://me%40corp:p%3Ass@proxy.corp:3128"})
    proxy = rules.proxy_for("http", "a.test", None)

    assert proxy is not None
    assert proxy.authorization == "Basic " + base64.b64encode(b"me@corp:p:ss").decode()
    assert "p:ss" in rules.secrets


def test_a_proxy_the_service_cannot_use_stops_the_configuration_naming_the_variable() -> None:
    """A SOCKS proxy or a URL without a host: a config problem, credentials redacted."""
    table = integration_dict("https://acme.amperity.com", mint_keys())
    environ = {"ALL_PROXY": f"socks5://signal:{SECRET}@proxy.corp:1080", "http_proxy": "http://:80"}

    with pytest.raises(ConfigError) as refused:
        settings_from_dict({"integrations": [table]}, environ)

    text = str(refused.value)
    assert "environment variable ALL_PROXY: is socks5://[REDACTED]@proxy.corp:1080" in text
    assert "HTTP proxies only" in text
    assert "environment variable http_proxy: is http://:80, which is not a proxy URL" in text
    assert "Fix: set it to http://host:port" in text
    assert SECRET not in text


def test_settings_carry_the_proxies_and_their_secrets_for_the_log_scrubber() -> None:
    """The environment's proxies reach Settings; secret_values lists their credentials."""
    table = integration_dict("https://acme.amperity.com", mint_keys())
    environ = {"HTTPS_PROXY": f"http://signal:{SECRET}@proxy.corp:3128"}

    settings = settings_from_dict({"integrations": [table]}, environ)

    assert settings.proxies.proxy_for("https", "acme.amperity.com", None) is not None
    assert SECRET in settings.secret_values()
    assert not settings_from_dict({"integrations": [table]}, {}).proxies


def test_serve_logs_each_ignored_no_proxy_entry_once_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The start-up report warns once per unusable NO_PROXY entry, beside the routes."""
    table = integration_dict("https://acme.amperity.com", mint_keys())
    environ = {"HTTPS_PROXY": PROXY, "NO_PROXY": "10.0.0.0/33,localhost,10.0.0/8"}
    settings = settings_from_dict({"integrations": [table]}, environ)
    caplog.set_level(logging.INFO, logger="amperity_signal.server")

    report_proxies(settings)

    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [text.split(" is ignored")[0] for text in warned] == [
        "NO_PROXY entry '10.0.0.0/33'",
        "NO_PROXY entry '10.0.0/8'",
    ]
    assert "through the proxy" in caplog.text


@pytest.mark.parametrize(
    ("value", "url", "shown"),
    [
        ("http://proxy.internal", "http://proxy.internal", "http://proxy.internal:80"),
        (f"http://signal:{SECRET}@proxy", "http://proxy", "http://[REDACTED]@proxy:80"),
        ("http://proxy:", "http://proxy", "http://proxy:80"),
        ("http://proxy.internal/", "http://proxy.internal", "http://proxy.internal:80"),
        ("proxy.internal", "http://proxy.internal", "http://proxy.internal:80"),
        ("https://proxy.internal", "https://proxy.internal", "https://proxy.internal:443"),
        ("http://[::1]", "http://[::1]", "http://[::1]:80"),
        ("http://[fd00::1]:3128", "http://[fd00::1]:3128", "http://[fd00::1]:3128"),
    ],
)
def test_a_proxy_without_a_port_is_the_schemes_default_port_as_in_httpx(
    value: str, url: str, shown: str
) -> None:
    """No port (or an empty one) is 80 for http://, 443 for https://: httpcore's choice.

    The port is then written out wherever the proxy is shown, so a forgotten :3128 is seen.
    """
    proxy = ProxyRules.from_environ({"HTTPS_PROXY": value}).proxy_for("https", "a.test", None)

    assert proxy is not None
    assert (str(proxy.url), proxy.shown) == (url, shown)
    httpx_proxy = httpx.Proxy(value if "://" in value else f"http://{value}").url
    origin = httpcore.URL(
        scheme=httpx_proxy.raw_scheme, host=httpx_proxy.raw_host, port=httpx_proxy.port, target="/"
    ).origin
    assert (proxy.url.host, proxy.url.port) == (origin.host.decode(), origin.port)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("http://proxy:0", "whose port is not a number from 1 to 65535"),
        ("http://proxy:99999", "whose port is not a number from 1 to 65535"),
        (f"http://signal:{SECRET}@proxy:31x8", "whose port is not a number from 1 to 65535"),
        ("http://proxy: 3128", "whose port is not a number from 1 to 65535"),
        ("http://proxy:+3128", "whose port is not a number from 1 to 65535"),
        ("http://fd00::1:3128", "an IPv6 address without brackets"),
        (f"http://signal:{SECRET}/x@proxy:3128", "a / ? or # that is not percent-encoded"),
        (f"http://signal:1234/{SECRET}@proxy", "a / ? or # that is not percent-encoded"),
    ],
)
def test_a_proxy_with_a_bad_port_is_refused_naming_the_variable_and_the_fix(
    value: str, why: str
) -> None:
    """A port that is none, or a password read as one, is a problem; the password unshown."""
    table = integration_dict("https://acme.amperity.com", mint_keys())

    with pytest.raises(ConfigError) as refused:
        settings_from_dict({"integrations": [table]}, {"HTTPS_PROXY": value})

    (problem,) = refused.value.problems
    text = str(problem)
    assert text.startswith("environment variable HTTPS_PROXY: is ") and why in text
    assert "Fix: set it to http://host:port" in text and "http:// means port 80" in text
    assert SECRET not in text and "1234" not in text


async def test_an_ipv6_literal_proxy_is_reached() -> None:
    """HTTP_PROXY=http://user:password@[::1]:PORT: the request goes to that proxy."""
    received: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "::1", 0)
    port = server.sockets[0].getsockname()[1]
    environ = {"HTTP_PROXY": f"http://signal:{SECRET}@[::1]:{port}"}
    transport = AiohttpTransport(max_connections=1, proxies=ProxyRules.from_environ(environ))
    try:
        request = httpx.Request("POST", "http://amperity.test/prof/events", content=b"{}")
        response = await transport.handle_async_request(request)
        await response.aclose()
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()

    assert response.status_code == 202
    (head,) = received
    assert head.startswith(b"POST http://amperity.test/prof/events HTTP/1.1\r\n")
    credentials = base64.b64encode(f"signal:{SECRET}".encode())
    assert b"Proxy-Authorization: Basic " + credentials in head
