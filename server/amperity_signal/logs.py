"""Structured JSON log lines, with request id and integration id from context variables.

The formatter holds the configured secret values and replaces any occurrence in a log
line with ``[REDACTED]``, as written or base64-encoded (``scrub_forms``): defence in
depth behind the rule that code never logs them.

gRPC's C core writes its own plain-text lines to the same stderr (through absl, at INFO
for every refused TLS handshake), which :func:`quiet_grpc_core` keeps to errors.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import json
import logging
import sys
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

from amperity_signal.redaction import REDACTED

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
integration_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "integration_id", default=""
)
message_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("message_id", default="")

# Record attributes that are not extra fields. uvicorn adds ``color_message``, a copy of
# its message template with terminal colour codes, which has no place in a JSON line.
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

# gRPC core's level when the operator chose none: its errors (a port it cannot bind) stay.
GRPC_CORE_VERBOSITY = "ERROR"

# Shorter values are not scrubbed: replacing every "admin" or "1234" would mangle ordinary
# words and numbers. The configuration refuses keys and tokens this short (config_checks).
SCRUB_MIN_LENGTH = 8
_URLSAFE = str.maketrans("+/", "-_")


@functools.lru_cache(maxsize=256)
def encoded_forms(secret: str) -> tuple[str, ...]:
    """``secret`` as base64 shows it: standard and URL-safe, padded or not, alone or inside.

    An upstream or a proxy may echo a key encoded: a Basic ``Authorization`` header encodes
    ``user:key``, so the key's characters fall at any of three byte alignments of a longer
    encoded text. For each alignment the form is the run of base64 characters that the
    key's bits alone decide; the one or two characters at either end that share bits with
    the text around it give nothing away. A secret shorter than ``SCRUB_MIN_LENGTH`` has
    none: its forms would be a few characters, found by chance in any encoded text.
    """
    if len(secret) < SCRUB_MIN_LENGTH:
        return ()
    raw = secret.encode()
    whole = base64.b64encode(raw).decode()
    forms = [whole, whole.rstrip("=")]
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + raw).decode()
        first = -(-8 * shift // 6)  # the first character holding none of the shift's bits
        forms.append(encoded[first : 8 * (shift + len(raw)) // 6])
    forms += [form.translate(_URLSAFE) for form in forms]
    return tuple(dict.fromkeys(form for form in forms if form))


def scrub_forms(secrets: Iterable[str]) -> list[str]:
    """What a scrubber replaces, longest first: each secret long enough, and its encoded forms.

    Base64 (``encoded_forms``), and percent-encoded as a URL's query carries it (``%2F``
    for ``/``, ``%20`` or ``+`` for a space): a proxy's or Redis's error may quote a URL.
    """
    kept = {s for s in secrets if len(s) >= SCRUB_MIN_LENGTH}
    kept |= {form for s in kept for form in (quote(s, safe=""), quote_plus(s))}
    kept |= {form for s in kept for form in encoded_forms(s)}
    return sorted(kept, key=len, reverse=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, extra fields.

    Any configured secret value in the finished line, as written or base64-encoded, is
    replaced with ``[REDACTED]``: defence in depth behind the rule that code never logs one
    (extra fields and exception text included).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        kept = scrub_forms(secrets)
        # The line is scrubbed after json.dumps, which writes a quote, a backslash, a
        # control or a non-ASCII character escaped: such a secret is looked for as written.
        escaped = {json.dumps(s)[1:-1] for s in kept}
        self._secrets = sorted(escaped.union(kept), key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a JSON line, scrubbed of secrets."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in (
            ("request_id", request_id_var),
            ("integration_id", integration_id_var),
            ("message_id", message_id_var),
        ):
            value = var.get()
            if value:
                line[key] = value
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["error_type"] = record.exc_info[0].__name__
            line["error"] = str(record.exc_info[1])
            # Where it failed: an unexpected error is a bug, and its report needs the stack.
            # Scrubbed with the rest of the line (chained errors' messages included).
            line["traceback"] = self.formatException(record.exc_info)
        text = json.dumps(line, default=str)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Send JSON lines to stderr, scrubbed of the given secrets."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # grpc._cython.cygrpc: grpc.aio logs "Loaded running loop" at debug for every call.
    for noisy in ("httpx", "httpcore", "uvicorn.access", "grpc._cython.cygrpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def quiet_grpc_core(environ: MutableMapping[str, str]) -> None:
    """Keep gRPC core's INFO lines off stderr, unless the operator asked for core's output.

    Core writes plain text (``I1207 00:04:52.298644 6874 ssl_transport_security.cc:2563]
    Handshake failed ...``) for each refused TLS handshake and each plaintext client on a
    TLS port: lines a JSON log pipeline cannot parse, and as many as a scanner makes. Core
    reads ``GRPC_VERBOSITY`` once, when ``grpc`` is first imported, so this must run before
    that; spawned workers and the processes ``demo`` starts inherit it. Either variable
    already set (``GRPC_TRACE`` needs INFO to print anything) is left as it is.

    Args:
        environ: The process environment (``os.environ``), updated in place.
    """
    if "GRPC_VERBOSITY" not in environ and "GRPC_TRACE" not in environ:
        environ["GRPC_VERBOSITY"] = GRPC_CORE_VERBOSITY
