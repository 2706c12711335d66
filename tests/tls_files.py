"""Throwaway PEM files for the listeners' TLS tests: a CA, a server and a client certificate.

trustme (a dev dependency) signs them; every key file is written mode 600, as an operator
is told to keep one, so a test of the permission warning opens one up itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files ``write_tls_files`` wrote."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_key: Path
    expired_cert: Path
    expired_key: Path
    other_ca: Path


def _key(blob: trustme.Blob, path: Path) -> Path:
    blob.write_to_path(str(path))
    os.chmod(path, 0o600)
    return path


def write_tls_files(directory: Path) -> TlsFiles:
    """Write the files: server for 127.0.0.1 and localhost, a client, an expired one, strays.

    ``other_key`` is a valid key of another certificate (a mismatch for ``server_cert``);
    ``other_ca`` is a CA that signed none of them.
    """
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    client = ca.issue_cert("gateway@example.com")
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    other = ca.issue_cert("other.example.com")
    now = datetime.now(UTC)
    expired = ca.issue_cert(
        "127.0.0.1", not_before=now - timedelta(days=30), not_after=now - timedelta(days=3)
    )
    expired.cert_chain_pems[0].write_to_path(str(directory / "expired.pem"))
    trustme.CA().cert_pem.write_to_path(str(directory / "other-ca.pem"))
    return TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=_key(server.private_key_pem, directory / "server.key"),
        client_cert=directory / "client.pem",
        client_key=_key(client.private_key_pem, directory / "client.key"),
        other_key=_key(other.private_key_pem, directory / "other.key"),
        expired_cert=directory / "expired.pem",
        expired_key=_key(expired.private_key_pem, directory / "expired.key"),
        other_ca=directory / "other-ca.pem",
    )
