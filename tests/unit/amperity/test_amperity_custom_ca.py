"""SSL_CERT_FILE / SSL_CERT_DIR: a CA of one's own (a TLS-inspecting proxy's) is trusted.

Each test runs a real TLS server on 127.0.0.1:0 whose certificate a throwaway CA (trustme)
signed, and reaches it through the real aiohttp transport, so the certificate check is
OpenSSL's, as in production.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import trustme

from amperity_signal.amperity import AmperityClient, MemoryRateLimiter
from amperity_signal.config import IntegrationSettings, settings_from_dict
from amperity_signal.errors import AmperityUnavailable, ConfigError
from amperity_signal.metrics import Metrics
from amperity_signal.trust import TrustedCertificates
from tests.unit.amperity.faketime import FakeTime

ACCEPTED = b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway CA, as a TLS-inspecting proxy's would be."""
    return trustme.CA()


@pytest.fixture
async def tls_url(ca: trustme.CA) -> AsyncIterator[str]:
    """A real HTTPS server for ``localhost``, signed by ``ca``, answering 202 to every request."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()  # a client that refused our certificate hangs up in the handshake
            return
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(ACCEPTED)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    yield f"https://localhost:{port}"
    server.close()
    await server.wait_closed()


def _config(url: str = "https://localhost:8443") -> dict[str, object]:
    """A configuration with one integration at ``url``, retried once."""
    return {
        "integrations": [
            {
                "id": "acme-web",
                "pipeline_key": "pk_live_acme",
                "tenant_subdomain": "acme",
                "tenant_id": "acme-tenant",
                "api_key": "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6ImluZ2VzdCJ9.sig",
                "event_stream_id": "esm-abc123",
                "source_value": "datafly",
                "api_base_url": url,
                "max_retries": 1,
            }
        ]
    }


def _settings_client(url: str, environ: Mapping[str, str], time: FakeTime) -> AmperityClient:
    """A client for an integration at ``url``, configured as ``serve`` would be from ``environ``."""
    settings = settings_from_dict(_config(url), environ)
    integration: IntegrationSettings = settings.integrations[0]
    return AmperityClient(
        integration,
        limiter=MemoryRateLimiter(clock=time.clock, sleep=time.sleep),
        metrics=Metrics(),
        clock=time.clock,
        sleep=time.sleep,
        trusted_certificates=settings.trusted_certificates,
    )


async def test_without_ssl_cert_file_a_private_ca_is_refused_with_the_fix(tls_url: str) -> None:
    """With certifi's list only, a re-signed certificate is refused, naming SSL_CERT_FILE."""
    client = _settings_client(tls_url, {}, FakeTime())
    try:
        with pytest.raises(AmperityUnavailable) as caught:
            await client.post_event({"event": "purchase"}, deadline=None)
    finally:
        await client.aclose()

    message = caught.value.message
    assert "TLS certificate was refused" in message
    assert "SSL_CERT_FILE" in message


async def test_ssl_cert_file_naming_the_ca_lets_the_call_through(
    tls_url: str, ca: trustme.CA, tmp_path: Path
) -> None:
    """SSL_CERT_FILE pointing at the proxy's CA makes the same call succeed, verified."""
    ca_file = tmp_path / "corp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = _settings_client(tls_url, {"SSL_CERT_FILE": str(ca_file)}, FakeTime())
    try:
        result = await client.post_event({"event": "purchase"}, deadline=None)
    finally:
        await client.aclose()

    assert result.status_code == 202 and result.body_cut == ""


async def test_ssl_cert_dir_of_hashed_certificates_lets_the_call_through(
    tls_url: str, ca: trustme.CA, tmp_path: Path
) -> None:
    """SSL_CERT_DIR with the CA under its OpenSSL hashed name is used when SSL_CERT_FILE is not."""
    ca_file = tmp_path / "corp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / f"{_subject_hash(ca_file)}.0").write_bytes(ca_file.read_bytes())
    client = _settings_client(tls_url, {"SSL_CERT_DIR": str(tmp_path / "certs")}, FakeTime())
    try:
        result = await client.post_event({"event": "purchase"}, deadline=None)
    finally:
        await client.aclose()

    assert result.status_code == 202 and result.body_cut == ""


def _subject_hash(ca_file: Path) -> str:
    """OpenSSL's subject-name hash of a CA certificate (``openssl x509 -hash``)."""
    import subprocess

    done = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(ca_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("variable", "make", "said"),
    [
        ("SSL_CERT_FILE", lambda tmp: tmp / "missing.pem", "which does not exist"),
        ("SSL_CERT_FILE", lambda tmp: tmp, "which is a directory"),
        ("SSL_CERT_FILE", lambda tmp: _write(tmp / "not.pem", "hello"), "holds no PEM certificate"),
        ("SSL_CERT_DIR", lambda tmp: tmp / "missing", "which does not exist"),
        ("SSL_CERT_DIR", lambda tmp: _write(tmp / "ca.pem", "x"), "which is not a directory"),
        ("SSL_CERT_DIR", lambda tmp: tmp, "no certificate under a hashed name"),
    ],
)
def test_an_unusable_ca_path_stops_the_configuration_naming_the_variable(
    variable: str, make: object, said: str, tmp_path: Path
) -> None:
    """A CA path that cannot be used is a config error naming the variable and the fix."""
    assert callable(make)
    path = str(make(tmp_path))
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(_config(), {variable: path})

    [problem] = caught.value.problems
    assert problem.location == f"environment variable {variable}"
    assert path in problem.problem and said in problem.problem
    assert f"set {variable} to a readable" in problem.fix


def test_ssl_cert_file_wins_over_ssl_cert_dir_as_in_httpx(ca: trustme.CA, tmp_path: Path) -> None:
    """Both set: SSL_CERT_FILE is used and SSL_CERT_DIR not even checked, as httpx does."""
    ca_file = tmp_path / "corp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    trusted = TrustedCertificates.from_environ(
        {"SSL_CERT_FILE": str(ca_file), "SSL_CERT_DIR": str(tmp_path / "missing")}
    )

    assert trusted.problems == ()
    assert trusted.describe() == f"the CA certificates in SSL_CERT_FILE={ca_file}"
    assert trusted.ssl_context().verify_mode == ssl.CERT_REQUIRED


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
