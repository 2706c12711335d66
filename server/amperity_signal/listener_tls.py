"""TLS on the service's own listeners: the PEM files checked at load, the credentials built.

``[server] tls_cert_file`` and ``tls_key_file`` put the gRPC port and the HTTP gateway on
TLS; ``tls_client_ca_file`` also requires a client certificate it signed on gRPC (mutual
TLS; browsers reach the gateway, so HTTP asks for none). ``[gateway] service_ca_file``
(and, for mutual TLS, ``service_cert_file`` and ``service_key_file``) is how the
standalone ``gateway`` reaches such a service. Without them everything stays plaintext.

Every file is read and the certificate and key loaded together (``ssl.load_cert_chain``)
at configuration load, so a missing, unreadable, non-PEM or mismatched file is a problem
naming the field and the path, from ``check-config`` and before ``serve`` binds. Nothing
here ever quotes a file's contents: problems give the path and OpenSSL's reason only.
"""

from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc

from amperity_signal.config_values import holds_key
from amperity_signal.errors import ConfigError, ConfigProblem

CERTIFICATE_WINDOW = timedelta(days=14)
_CERT_MARK = b"-----BEGIN CERTIFICATE-----"
_KEY_MARK = b"PRIVATE KEY-----"
_FIELDS = {
    "server": ("tls_cert_file", "tls_key_file", "tls_client_ca_file"),
    "gateway": ("service_cert_file", "service_key_file", "service_ca_file"),
}
_OFF = {
    "server": "or remove tls_cert_file and tls_key_file to serve plaintext",
    "gateway": "or remove service_ca_file, service_cert_file and service_key_file to "
    "reach the service in plaintext",
}


def _read(location: str, path: str, what: str, off: str) -> bytes | ConfigProblem:
    """The file's bytes, or the problem naming ``location`` and ``path``."""
    fix = f"set {location.rpartition('.')[2]} to the path of {what}, {off}."
    if holds_key(path):  # a key pasted here is described, never quoted as a path
        return ConfigProblem(location, "holds an API key (a JWT), not the path of a file.", fix)
    if not path.strip():
        return ConfigProblem(location, "is empty.", fix)
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return ConfigProblem(location, f"names {path}, which does not exist.", fix)
    except IsADirectoryError:
        return ConfigProblem(location, f"names {path}, which is a directory.", fix)
    except OSError as exc:
        return ConfigProblem(
            location,
            f"names {path}, which cannot be read ({exc.strerror or exc}).",
            f"make it readable by the user running amperity-signal, {off}.",
        )


def _certificate_problem(path: str, data: bytes) -> str | None:
    """Why ``data`` holds no PEM certificate OpenSSL can load; None when it holds one."""
    if _CERT_MARK not in data:
        return f"names {path}, which holds no PEM certificate (-----BEGIN CERTIFICATE-----)."
    try:
        ssl.create_default_context(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError):
        return f"names {path}, which holds no PEM certificate OpenSSL can load."
    return None


def _pair_problems(table: dict[str, Any], kind: str) -> list[ConfigProblem]:
    """The certificate and key of one side: both or neither, readable, PEM, matching."""
    cert_field, key_field, _ = _FIELDS[kind]
    given = [name for name in (cert_field, key_field) if name in table]
    if not given:
        return []
    off = _OFF[kind]
    cert_what = "the PEM certificate (its intermediates after it)"
    key_what = f"the PEM private key of {cert_field}"
    if len(given) == 1:
        [present] = given
        missing = key_field if present == cert_field else cert_field
        what = cert_what if missing == cert_field else key_what
        return [
            ConfigProblem(
                f"{kind}.{missing}",
                f"is not set, but {present} is: TLS needs the certificate and its key.",
                f"set {missing} to the path of {what}, {off}.",
            )
        ]
    cert_path, key_path = table[cert_field], table[key_field]
    if not isinstance(cert_path, str) or not isinstance(key_path, str):
        return []  # not text: the type check names it
    problems: list[ConfigProblem] = []
    cert = _read(f"{kind}.{cert_field}", cert_path, cert_what, off)
    if isinstance(cert, ConfigProblem):
        problems.append(cert)
    elif problem := _certificate_problem(cert_path, cert):
        problems.append(
            ConfigProblem(
                f"{kind}.{cert_field}",
                problem,
                f"point it at the certificate in PEM form (openssl x509 -inform der -in "
                f"CERT -out cert.pem converts a DER one), {off}.",
            )
        )
    key = _read(f"{kind}.{key_field}", key_path, key_what, off)
    if isinstance(key, ConfigProblem):
        problems.append(key)
    elif _KEY_MARK not in key:
        problems.append(
            ConfigProblem(
                f"{kind}.{key_field}",
                f"names {key_path}, which holds no PEM private key (-----BEGIN PRIVATE KEY-----).",
                f"point it at the private key of {cert_field}, in PEM form.",
            )
        )
    elif b"ENCRYPTED" in key:
        problems.append(
            ConfigProblem(
                f"{kind}.{key_field}",
                f"names {key_path}, which holds an encrypted private key; gRPC cannot load "
                "one with a passphrase.",
                "write it out without one (openssl pkey -in KEY -out key.pem) and keep that "
                "file readable by the service's user only (chmod 600).",
            )
        )
    if problems:
        return problems
    try:
        # A password callback, so that OpenSSL never prompts on the terminal for one.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path, _no_password)
    except ssl.SSLError as exc:
        if exc.reason != "KEY_VALUES_MISMATCH":
            return [
                ConfigProblem(
                    f"{kind}.{key_field}",
                    f"names {key_path}, which holds no private key OpenSSL can load (a "
                    "damaged or truncated PEM).",
                    f"point it at the private key of {cert_field}, in PEM form, copied whole.",
                )
            ]
        problems.append(
            ConfigProblem(
                f"{kind}.{key_field}",
                f"names {key_path}, which OpenSSL cannot use with {cert_field} {cert_path} "
                f"({exc.reason}).",
                f"set {key_field} to the private key {cert_field} was issued for; a key "
                "that does not match it is the usual cause.",
            )
        )
    return problems


def _no_password() -> str:
    return ""


def _ca_problems(table: dict[str, Any], kind: str) -> list[ConfigProblem]:
    """The CA file of one side: readable and holding PEM certificates."""
    cert_field, _, ca_field = _FIELDS[kind]
    ca_path = table.get(ca_field)
    if not isinstance(ca_path, str):
        return []
    location = f"{kind}.{ca_field}"
    what = (
        "the PEM certificate(s) of the CA that signs client certificates"
        if kind == "server"
        else "the PEM certificate(s) of the CA that signed server.tls_cert_file"
    )
    if kind == "server" and cert_field not in table:
        return [
            ConfigProblem(
                location,
                "is set, but tls_cert_file and tls_key_file are not: client certificates "
                "are asked for only over TLS.",
                "set tls_cert_file and tls_key_file too, or remove tls_client_ca_file.",
            )
        ]
    data = _read(location, ca_path, what, _OFF[kind])
    if isinstance(data, ConfigProblem):
        return [data]
    if problem := _certificate_problem(ca_path, data):
        return [ConfigProblem(location, problem, f"set {ca_field} to the path of {what}.")]
    return []


def check_tls(kind: str, table: Any) -> list[ConfigProblem]:
    """The TLS files of ``[server]`` (``kind`` "server") or ``[gateway]`` ("gateway")."""
    if not isinstance(table, dict):
        return []
    cert_field, key_field, ca_field = _FIELDS[kind]
    problems = _pair_problems(table, kind) + _ca_problems(table, kind)
    if kind == "gateway" and cert_field in table and ca_field not in table:
        problems.append(
            ConfigProblem(
                f"gateway.{ca_field}",
                f"is not set, but {cert_field} is: a client certificate is only sent over TLS.",
                f"set {ca_field} to the CA that signed server.tls_cert_file, or remove "
                f"{cert_field} and {key_field}.",
            )
        )
    return problems


@dataclass(frozen=True)
class TlsFiles:
    """One side's PEM files: its certificate and key, and the CA it checks the peer by."""

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    side: str = "server"  # whose files: "server" (the listeners) or "gateway" (its channel)

    def _read(self, path: str | None) -> bytes | None:
        """The file's bytes, read when the credentials are built (after the load's check).

        Raises:
            ConfigError: The file went away, or became unreadable, since the check.
        """
        if path is None:
            return None
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError as exc:
            paths = (self.cert_file, self.key_file, self.ca_file)
            fields = dict(zip(paths, _FIELDS[self.side], strict=True))
            raise ConfigError(
                [
                    ConfigProblem(
                        f"{self.side}.{fields[path]}",
                        f"names {path}, which could not be read at start "
                        f"({exc.strerror or exc}), though it was when the configuration "
                        "was loaded.",
                        "put the file back (readable by the user running amperity-signal) "
                        "and start again.",
                    )
                ]
            ) from None

    def server_credentials(self) -> grpc.ServerCredentials:
        """The service's TLS credentials; a client certificate is required with ``ca_file``.

        Raises:
            ValueError: No certificate or key to serve with.
        """
        cert, key = self._read(self.cert_file), self._read(self.key_file)
        if cert is None or key is None:
            raise ValueError("TLS on a listener needs a certificate and its key.")
        roots = self._read(self.ca_file)
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=roots, require_client_auth=roots is not None
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The credentials of a TLS channel to a service, checked against ``ca_file``."""
        return grpc.ssl_channel_credentials(
            root_certificates=self._read(self.ca_file),
            private_key=self._read(self.key_file),
            certificate_chain=self._read(self.cert_file),
        )


def certificate_warnings(location: str, path: str, now: datetime) -> list[str]:
    """A warning when the certificate in ``path`` has expired or expires within 14 days."""
    try:
        with open(path, "rb") as file:
            expires = certificate_expiry(file.read())
    except (OSError, ValueError):
        return []  # a file that cannot be read or parsed is a problem of its own
    if expires is None:
        return []
    when = expires.strftime("%Y-%m-%d %H:%M UTC")
    fix = f"renew the certificate and replace {path} (clients refuse an expired one)."
    left = expires - now
    if left <= timedelta(0):
        ago = (now - expires).days
        return [f"{location}: the certificate expired {ago} day(s) ago, on {when}; {fix}"]
    if left <= CERTIFICATE_WINDOW:
        days = left.total_seconds() / 86_400
        return [f"{location}: the certificate expires in {days:.1f} days (on {when}); {fix}"]
    return []


def key_file_warnings(location: str, path: str) -> list[str]:
    """A warning when the private key file can be read or changed by other users."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return []
    if not mode & 0o077:
        return []
    return [
        f"{location}: {path} is open to other users (mode {mode:04o}); anyone who reads the "
        f"key can pose as the service. Run chmod 600 {path} (owned by the service's user)."
    ]


def tls_warnings(kind: str, files: TlsFiles, now: datetime) -> list[str]:
    """The expiry and key-permission warnings of one side's files."""
    cert_field, key_field, _ = _FIELDS[kind]
    warnings = []
    if files.cert_file is not None:
        warnings += certificate_warnings(f"{kind}.{cert_field}", files.cert_file, now)
    if files.key_file is not None:
        warnings += key_file_warnings(f"{kind}.{key_field}", files.key_file)
    return warnings


def certificate_expiry(pem: bytes) -> datetime | None:
    """The ``notAfter`` of the first certificate in ``pem`` (None when it holds none).

    The standard library loads certificates but does not show a leaf's dates; the
    ``cryptography`` package reads them.

    Raises:
        ValueError: The first certificate is not one a certificate parser would accept.
    """
    # Imported here: ~70 ms at every start, for the configurations that name a certificate.
    from cryptography import x509  # noqa: PLC0415

    start = pem.find(_CERT_MARK)
    if start < 0:
        return None
    return x509.load_pem_x509_certificate(pem[start:]).not_valid_after_utc
