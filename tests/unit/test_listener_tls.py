"""TLS files of the listeners: every mistake is a problem naming the field, path and fix."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from amperity_signal.config import settings_from_dict
from amperity_signal.errors import ConfigError
from amperity_signal.gateway.settings import GatewaySettings
from amperity_signal.listener_tls import certificate_expiry, tls_warnings
from amperity_signal.service.app import report_configuration
from tests.tls_files import TlsFiles, write_tls_files
from tests.unit.cli_support import integration, run_cli

SERVE_PLAINTEXT = "or remove tls_cert_file and tls_key_file to serve plaintext."


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """One set of PEM files for the module (a key each: generating them is the slow part)."""
    return write_tls_files(tmp_path_factory.mktemp("pem"))


def problems_of(server: dict[str, Any], gateway: dict[str, Any] | None = None) -> list[str]:
    """Every problem of a configuration with this ``[server]`` (and ``[gateway]``)."""
    raw: dict[str, Any] = {"server": server, "integrations": [integration()]}
    if gateway is not None:
        raw["gateway"] = gateway
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(raw, {})
    return [str(p) for p in caught.value.problems]


def pair(tls: TlsFiles, **changes: str) -> dict[str, str]:
    """``[server]`` with the server certificate and key, ``changes`` applied."""
    return {"tls_cert_file": str(tls.server_cert), "tls_key_file": str(tls.server_key)} | changes


def test_a_certificate_and_its_key_are_accepted_and_the_default_is_plaintext(
    tls: TlsFiles,
) -> None:
    """The pair (and a client CA) loads; without them the listeners have no TLS."""
    raw = {"server": pair(tls, tls_client_ca_file=str(tls.ca)), "integrations": [integration()]}
    settings = settings_from_dict(raw, {})
    assert settings.server.tls is not None
    assert settings.server.tls.ca_file == str(tls.ca)
    assert settings_from_dict({"integrations": [integration()]}, {}).server.tls is None


def test_a_missing_certificate_file_is_named_with_its_path(tls: TlsFiles, tmp_path: Path) -> None:
    """A path that does not exist: the field, the path and what to set it to."""
    missing = tmp_path / "nope.pem"
    assert problems_of(pair(tls, tls_cert_file=str(missing))) == [
        f"server.tls_cert_file: names {missing}, which does not exist. Fix: set tls_cert_file "
        "to the path of the PEM certificate (its intermediates after it), " + SERVE_PLAINTEXT
    ]


def test_a_directory_or_an_unreadable_path_is_named(tls: TlsFiles, tmp_path: Path) -> None:
    """A directory for the key, and a path through a file, each say what they are."""
    through_a_file = tls.server_cert / "key.pem"
    assert problems_of(pair(tls, tls_key_file=str(tmp_path))) == [
        f"server.tls_key_file: names {tmp_path}, which is a directory. Fix: set tls_key_file "
        "to the path of the PEM private key of tls_cert_file, " + SERVE_PLAINTEXT
    ]
    assert problems_of(pair(tls, tls_key_file=str(through_a_file))) == [
        f"server.tls_key_file: names {through_a_file}, which cannot be read (Not a directory). "
        "Fix: make it readable by the user running amperity-signal, " + SERVE_PLAINTEXT
    ]


def test_an_empty_path_is_named_as_empty(tls: TlsFiles) -> None:
    """tls_cert_file = "" is refused as empty, not as a file named ''."""
    [problem] = problems_of(pair(tls, tls_cert_file=""))
    assert problem.startswith("server.tls_cert_file: is empty. Fix: set tls_cert_file")


def test_a_certificate_file_that_is_not_pem_is_refused(tls: TlsFiles, tmp_path: Path) -> None:
    """DER bytes, or a PEM armour around garbage: no certificate to load."""
    der = tmp_path / "cert.der"
    der.write_bytes(b"\x30\x82\x01\x0a" + bytes(200))
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    assert problems_of(pair(tls, tls_cert_file=str(der))) == [
        f"server.tls_cert_file: names {der}, which holds no PEM certificate "
        "(-----BEGIN CERTIFICATE-----). Fix: point it at the certificate in PEM form (openssl "
        "x509 -inform der -in CERT -out cert.pem converts a DER one), " + SERVE_PLAINTEXT
    ]
    [problem] = problems_of(pair(tls, tls_cert_file=str(broken)))
    assert problem.startswith(
        f"server.tls_cert_file: names {broken}, which holds no PEM certificate OpenSSL can load."
    )


def test_a_key_file_holding_no_key_is_refused(tls: TlsFiles) -> None:
    """The certificate given as the key too: no private key in it."""
    assert problems_of(pair(tls, tls_key_file=str(tls.server_cert))) == [
        f"server.tls_key_file: names {tls.server_cert}, which holds no PEM private key "
        "(-----BEGIN PRIVATE KEY-----). Fix: point it at the private key of tls_cert_file, in "
        "PEM form."
    ]


def test_an_encrypted_key_is_refused_with_the_way_to_decrypt_it(
    tls: TlsFiles, tmp_path: Path
) -> None:
    """A passphrase gRPC cannot ask for: the key must be written out without one."""
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_text(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    [problem] = problems_of(pair(tls, tls_key_file=str(encrypted)))
    assert problem.startswith(f"server.tls_key_file: names {encrypted}, which holds an encrypted")
    assert "openssl pkey -in KEY -out key.pem" in problem


def test_a_key_of_another_certificate_is_refused_without_showing_it(tls: TlsFiles) -> None:
    """OpenSSL's reason (key values mismatch) and both paths; never the key's contents."""
    [problem] = problems_of(pair(tls, tls_key_file=str(tls.other_key)))
    assert problem == (
        f"server.tls_key_file: names {tls.other_key}, which OpenSSL cannot use with "
        f"tls_cert_file {tls.server_cert} (KEY_VALUES_MISMATCH). Fix: set tls_key_file to the "
        "private key tls_cert_file was issued for; a key that does not match it is the usual "
        "cause."
    )
    key_lines = tls.other_key.read_text().splitlines()[1:-1]
    assert key_lines
    assert not any(line in problem for line in key_lines)


@pytest.mark.parametrize(
    ("given", "missing"), [("tls_cert_file", "tls_key_file"), ("tls_key_file", "tls_cert_file")]
)
def test_a_certificate_or_key_alone_names_the_other(
    tls: TlsFiles, given: str, missing: str
) -> None:
    """Only one of the pair: the missing one is named, with what it needs."""
    [problem] = problems_of({given: pair(tls)[given]})
    assert problem.startswith(
        f"server.{missing}: is not set, but {given} is: TLS needs the certificate and its key. "
        f"Fix: set {missing} to the path of "
    )


def test_a_client_ca_without_a_certificate_is_refused(tls: TlsFiles) -> None:
    """Client certificates are asked for only over TLS, which needs the pair."""
    assert problems_of({"tls_client_ca_file": str(tls.ca)}) == [
        "server.tls_client_ca_file: is set, but tls_cert_file and tls_key_file are not: client "
        "certificates are asked for only over TLS. Fix: set tls_cert_file and tls_key_file "
        "too, or remove tls_client_ca_file."
    ]


def test_a_client_ca_file_holding_no_certificate_is_refused(tls: TlsFiles) -> None:
    """A key given as the client CA holds no certificate."""
    [problem] = problems_of(pair(tls, tls_client_ca_file=str(tls.client_key)))
    assert problem == (
        f"server.tls_client_ca_file: names {tls.client_key}, which holds no PEM certificate "
        "(-----BEGIN CERTIFICATE-----). Fix: set tls_client_ca_file to the path of the PEM "
        "certificate(s) of the CA that signs client certificates."
    )


def test_the_gateways_service_files_are_checked_alike(tls: TlsFiles, tmp_path: Path) -> None:
    """[gateway]: a client certificate without the CA, a missing CA, a mismatched key."""
    assert problems_of(
        {},
        {"service_cert_file": str(tls.client_cert), "service_key_file": str(tls.client_key)},
    ) == [
        "gateway.service_ca_file: is not set, but service_cert_file is: a client certificate is "
        "only sent over TLS. Fix: set service_ca_file to the CA that signed "
        "server.tls_cert_file, or remove service_cert_file and service_key_file."
    ]
    missing = tmp_path / "ca.pem"
    [problem] = problems_of({}, {"service_ca_file": str(missing)})
    assert problem.startswith(f"gateway.service_ca_file: names {missing}, which does not exist.")
    [problem] = problems_of(
        {},
        {
            "service_ca_file": str(tls.ca),
            "service_cert_file": str(tls.client_cert),
            "service_key_file": str(tls.server_key),
        },
    )
    assert problem.startswith(
        f"gateway.service_key_file: names {tls.server_key}, which OpenSSL cannot use with "
        f"service_cert_file {tls.client_cert} (KEY_VALUES_MISMATCH)."
    )


def test_an_expired_certificate_is_a_warning_with_its_days(tls: TlsFiles) -> None:
    """Expired three days ago: a warning saying so, with the date, not a refusal."""
    raw = {
        "server": pair(tls, tls_cert_file=str(tls.expired_cert), tls_key_file=str(tls.expired_key)),
        "integrations": [integration()],
    }
    settings = settings_from_dict(raw, {})
    assert settings.server.tls is not None
    expires = certificate_expiry(tls.expired_cert.read_bytes())
    assert expires is not None
    [warning] = tls_warnings("server", settings.server.tls, datetime.now(UTC))
    assert warning == (
        f"server.tls_cert_file: the certificate expired 3 day(s) ago, on "
        f"{expires:%Y-%m-%d %H:%M} UTC; renew the certificate and replace {tls.expired_cert} "
        "(clients refuse an expired one)."
    )
    soon = tls_warnings("server", settings.server.tls, expires - timedelta(days=2))
    assert soon[0].startswith("server.tls_cert_file: the certificate expires in 2.0 days")
    assert tls_warnings("server", settings.server.tls, expires - timedelta(days=20)) == []


def test_a_key_file_readable_by_others_is_a_warning(tls: TlsFiles, tmp_path: Path) -> None:
    """Mode 644 warns with the chmod to run; 600 does not."""
    key = tmp_path / "server.key"
    key.write_bytes(tls.server_key.read_bytes())
    settings = settings_from_dict(
        {"server": pair(tls, tls_key_file=str(key)), "integrations": [integration()]}, {}
    )
    assert settings.server.tls is not None
    os.chmod(key, 0o600)
    assert tls_warnings("server", settings.server.tls, datetime.now(UTC)) == []
    os.chmod(key, 0o644)
    assert tls_warnings("server", settings.server.tls, datetime.now(UTC)) == [
        f"server.tls_key_file: {key} is open to other users (mode 0644); anyone who reads the "
        f"key can pose as the service. Run chmod 600 {key} (owned by the service's user)."
    ]


def test_check_config_prints_tls_warnings_and_serve_names_a_bad_file(
    tls: TlsFiles, tmp_path: Path
) -> None:
    """check-config warns of the expired certificate; serve refuses a mismatch, no traceback."""
    server = {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0"}
    config = tmp_path / "expired.toml"
    expired = pair(tls, tls_cert_file=str(tls.expired_cert), tls_key_file=str(tls.expired_key))
    config.write_text(tomli_w.dumps({"server": server | expired, "integrations": [integration()]}))
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "warning: server.tls_cert_file: the certificate expired 3 day(s) ago" in result.stdout
    mismatched = tmp_path / "mismatched.toml"
    bad = pair(tls, tls_key_file=str(tls.other_key))
    mismatched.write_text(tomli_w.dumps({"server": server | bad, "integrations": [integration()]}))
    result = run_cli("serve", "--config", str(mismatched), "--no-gateway")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"server.tls_key_file: names {tls.other_key}" in result.stderr


def test_certificate_expiry_reads_both_time_forms(tls: TlsFiles) -> None:
    """UTCTime (before 2050) and GeneralizedTime (trustme's year 3000) notAfter dates."""
    assert certificate_expiry(tls.server_cert.read_bytes()) == datetime(3000, 1, 1, tzinfo=UTC)
    expired = certificate_expiry(tls.expired_cert.read_bytes())
    assert expired is not None and expired < datetime.now(UTC)
    assert certificate_expiry(b"no certificate here") is None


def test_the_standalone_gateway_refuses_a_tls_service_without_its_ca(
    tls: TlsFiles, tmp_path: Path
) -> None:
    """`gateway` on a configuration whose service speaks TLS needs service_ca_file."""
    server = {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0"} | pair(tls)
    config = tmp_path / "c.toml"
    config.write_text(tomli_w.dumps({"server": server, "integrations": [integration()]}))
    result = run_cli("gateway", "--config", str(config), "--grpc-target", "127.0.0.1:1", timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "gateway.service_ca_file: is not set, but server.tls_cert_file is: the service listens "
        "with TLS, and the gateway would call it in plaintext." in result.stderr
    )


def test_serve_logs_the_certificate_warnings_at_start(
    tls: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """report_configuration (once per service, also under --workers) warns of the expiry."""
    expired = pair(tls, tls_cert_file=str(tls.expired_cert), tls_key_file=str(tls.expired_key))
    settings = settings_from_dict({"server": expired, "integrations": [integration()]}, {})
    with caplog.at_level(logging.WARNING, logger="amperity_signal.server"):
        report_configuration(settings, proxies=False)
    assert any(
        r.getMessage().startswith("server.tls_cert_file: the certificate expired 3 day(s) ago")
        for r in caplog.records
    ), caplog.text


def test_a_damaged_key_is_named_as_unloadable_not_as_a_mismatch(
    tls: TlsFiles, tmp_path: Path
) -> None:
    """A PEM armour around a truncated key: OpenSSL cannot load it at all."""
    damaged = tmp_path / "damaged.key"
    damaged.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert problems_of(pair(tls, tls_key_file=str(damaged))) == [
        f"server.tls_key_file: names {damaged}, which holds no private key OpenSSL can load (a "
        "damaged or truncated PEM). Fix: point it at the private key of tls_cert_file, in PEM "
        "form, copied whole."
    ]


def test_a_file_setting_that_is_not_text_gets_the_type_check_alone(tls: TlsFiles) -> None:
    """tls_key_file = 5 is named as not a string, not as a missing key."""
    [problem] = problems_of(pair(tls) | {"tls_key_file": 5})
    assert problem.startswith("server.tls_key_file:")
    assert "is not set" not in problem


def test_a_file_gone_since_the_load_is_named_when_the_credentials_are_built(
    tls: TlsFiles, tmp_path: Path
) -> None:
    """A key removed between the check and the bind: the field and path, not an OSError."""
    key = tmp_path / "server.key"
    key.write_bytes(tls.server_key.read_bytes())
    server = settings_from_dict(
        {"server": pair(tls, tls_key_file=str(key)), "integrations": [integration()]}, {}
    ).server.tls
    ca = tmp_path / "ca.pem"
    ca.write_bytes(tls.ca.read_bytes())
    gateway = GatewaySettings.from_settings(
        settings_from_dict(
            {"gateway": {"service_ca_file": str(ca)}, "integrations": [integration()]}, {}
        )
    ).service_tls
    assert server is not None and gateway is not None
    key.unlink()
    ca.unlink()

    with pytest.raises(ConfigError) as caught:
        server.server_credentials()
    assert [str(p) for p in caught.value.problems] == [
        f"server.tls_key_file: names {key}, which could not be read at start (No such file "
        "or directory), though it was when the configuration was loaded. Fix: put the file "
        "back (readable by the user running amperity-signal) and start again."
    ]
    with pytest.raises(ConfigError) as caught:
        gateway.channel_credentials()
    assert str(caught.value.problems[0]).startswith(f"gateway.service_ca_file: names {ca},")
