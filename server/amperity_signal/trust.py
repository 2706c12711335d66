"""The CA certificates Amperity's TLS is checked against, from the environment as httpx reads them.

As ``httpx.create_ssl_context(trust_env=True)``: ``SSL_CERT_FILE`` (a PEM file of CA
certificates) or, when it is unset or empty, ``SSL_CERT_DIR`` (a directory of certificates
under their hashed names, as ``openssl rehash`` leaves them) replaces the bundled certifi
list; with neither, certifi's list is used. This is how a network whose egress proxy
re-signs TLS with its own CA is trusted. Verification itself is never switched off.

The variables are read once, at configuration load, and a path that cannot be used (missing,
unreadable, holding no certificate) is a configuration problem naming the variable, so
``check-config`` and ``serve`` stop before the first call rather than fail on each one.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from amperity_signal.errors import ConfigProblem

_HASHED_NAME = re.compile(r"^[0-9a-f]{8}\.r?[0-9]+$")
_FIX_FILE = (
    "set SSL_CERT_FILE to a readable PEM file holding your CA certificate(s) (e.g. the "
    "system bundle with your proxy's CA added), or unset it to use the bundled CA list."
)
_FIX_DIR = (
    "set SSL_CERT_DIR to a readable directory of PEM certificates under their hashed names "
    "(run `openssl rehash DIR`), use SSL_CERT_FILE with a PEM file instead, or unset it."
)


@dataclass(frozen=True)
class TrustedCertificates:
    """Where the CA certificates come from; certifi's bundle when ``variable`` is None.

    Build it with ``TrustedCertificates.from_environ(os.environ)``; ``problems`` lists what
    could not be used (the configuration refuses to start with any).

    Attributes:
        variable: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR``, or None for the bundled list.
        path: That variable's value.
        problems: Why the path cannot be used; empty when it can.
    """

    variable: str | None = None
    path: str = ""
    problems: tuple[ConfigProblem, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> TrustedCertificates:
        """Read ``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, and check the path can be used."""
        if cert_file := environ.get("SSL_CERT_FILE"):
            found = cls("SSL_CERT_FILE", cert_file)
        elif cert_dir := environ.get("SSL_CERT_DIR"):
            found = cls("SSL_CERT_DIR", cert_dir)
        else:
            return cls()
        why = found._unusable()
        if why is None:
            return found
        fix = _FIX_FILE if found.variable == "SSL_CERT_FILE" else _FIX_DIR
        problem = ConfigProblem(f"environment variable {found.variable}", why, fix)
        return cls(found.variable, found.path, (problem,))

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies against these certificates (never unverified)."""
        if self.variable == "SSL_CERT_FILE":
            return ssl.create_default_context(cafile=self.path)
        if self.variable == "SSL_CERT_DIR":
            return ssl.create_default_context(capath=self.path)
        return httpx.create_ssl_context(trust_env=False)

    def describe(self) -> str:
        """For the start-up log: which CA certificates TLS to Amperity is checked against."""
        if self.variable is None:
            return "the bundled CA list (certifi)"
        return f"the CA certificates in {self.variable}={self.path}"

    def _unusable(self) -> str | None:
        """Why ``path`` cannot be used for ``variable``, in a sentence; None when it can."""
        if not os.path.exists(self.path):
            return f"names {self.path}, which does not exist."
        if self.variable == "SSL_CERT_FILE":
            return _file_problem(self.path)
        return _dir_problem(self.path)


def _file_problem(path: str) -> str | None:
    """Why an existing ``path`` is no CA file OpenSSL can load; None when it is one."""
    if os.path.isdir(path):
        return f"names {path}, which is a directory (that is SSL_CERT_DIR's job)."
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:
        return f"names {path}, which holds no PEM certificate OpenSSL can load."
    except OSError as exc:
        return f"names {path}, which cannot be read ({exc.strerror or exc})."
    return None


def _dir_problem(path: str) -> str | None:
    """Why an existing ``path`` is no CA directory OpenSSL can search; None when it is one."""
    if not os.path.isdir(path):
        return f"names {path}, which is not a directory."
    try:
        names = os.listdir(path)
    except OSError as exc:
        return f"names {path}, which cannot be read ({exc.strerror or exc})."
    if not any(_HASHED_NAME.match(name) for name in names):
        return (
            f"names {path}, which holds no certificate under a hashed name "
            "(e.g. 5ed36f99.0), so OpenSSL would find none in it."
        )
    return None
