"""The JSON log formatter scrubs configured secrets from every line; gRPC core stays quiet."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from urllib.parse import quote, quote_plus

import pytest

from amperity_signal.logs import JsonFormatter, configure_logging, quiet_grpc_core
from tests.support import base64_echoes, reveals_encoded


def _line(formatter: JsonFormatter, message: str, *args: object) -> str:
    record = logging.makeLogRecord(
        {"name": "t", "levelno": logging.INFO, "levelname": "INFO", "msg": message, "args": args}
    )
    return formatter.format(record)


@pytest.mark.parametrize(
    "secret",
    ['pass"word-1234', "back\\slash-1234", "mot-de-passe-\u00e9t\u00e9", "tab\tpassword-1"],
    ids=["quote", "backslash", "non-ascii", "control"],
)
def test_a_secret_that_json_escapes_is_scrubbed_as_written(secret: str) -> None:
    """A secret with a quote, backslash, control or non-ASCII character is still redacted."""
    formatter = JsonFormatter([secret])
    line = _line(formatter, "connecting to redis://:%s@cache:6379/0", secret)
    assert json.loads(line)["msg"] == "connecting to redis://:[REDACTED]@cache:6379/0"


@pytest.mark.parametrize("secret", ["canary-key-0123456789abcdef", "canary-key-0123456789abcd"])
def test_a_secret_echoed_base64_encoded_is_scrubbed_at_every_alignment(secret: str) -> None:
    """An upstream echoing a key base64-encoded (a Basic header, user:key) leaves no part of it.

    Standard and URL-safe, padded or not, alone or after 1, 2 or 4 other bytes.
    """
    formatter = JsonFormatter([secret])
    for echo in base64_echoes(secret):
        line = _line(formatter, "proxy said: Authorization: Basic %s rejected", echo)
        assert not reveals_encoded(line, secret), echo
        assert "[REDACTED]" in json.loads(line)["msg"]


@pytest.mark.parametrize(
    "secret", ["Adm1n+Tok/en=Q&z", "pass word/with?query#chars"], ids=["token", "spaces"]
)
def test_a_secret_in_a_url_percent_encoded_is_scrubbed(secret: str) -> None:
    """A URL quoting the admin token or a password (``%2B``, ``%2F``, ``+`` for a space).

    Only the forms as written and base64 were scrubbed: ``?token=Adm1n%2BTok%2Fen%3DQ%26z``
    in a proxy's or an upstream's error went to the log whole.
    """
    formatter = JsonFormatter([secret])
    for encoded in (quote(secret, safe=""), quote_plus(secret)):
        line = _line(formatter, "GET /live?token=%s&x=1 refused", encoded)
        assert json.loads(line)["msg"] == "GET /live?token=[REDACTED]&x=1 refused"


def test_an_error_is_logged_with_its_traceback_scrubbed_of_secrets() -> None:
    """A logged exception carries its stack, chained causes included, with secrets redacted."""
    secret = "canary-admin-token-0123456789"
    formatter = JsonFormatter([secret])

    def refuse() -> None:
        raise ValueError(f"bad token {secret}")

    def fail() -> None:
        try:
            refuse()
        except ValueError as cause:
            raise RuntimeError("handler failed") from cause

    try:
        fail()
    except RuntimeError:
        record = logging.makeLogRecord(
            {"name": "t", "levelno": logging.ERROR, "levelname": "ERROR", "msg": "boom"}
        )
        record.exc_info = sys.exc_info()
    line = json.loads(formatter.format(record))
    assert (line["error_type"], line["error"]) == ("RuntimeError", "handler failed")
    assert "in fail" in line["traceback"]
    assert "ValueError: bad token [REDACTED]" in line["traceback"]
    assert secret not in json.dumps(line)


@pytest.mark.parametrize(
    ("environ", "verbosity"),
    [
        ({}, "ERROR"),
        ({"GRPC_VERBOSITY": "DEBUG"}, "DEBUG"),
        ({"GRPC_VERBOSITY": ""}, ""),
        ({"GRPC_TRACE": "tcp,http"}, None),
    ],
    ids=["unset", "chosen", "chosen-empty", "tracing"],
)
def test_grpc_core_is_kept_to_errors_unless_the_operator_chose(
    environ: dict[str, str], verbosity: str | None
) -> None:
    """GRPC_VERBOSITY defaults to ERROR; a set one, or GRPC_TRACE (needs INFO), is left alone."""
    quiet_grpc_core(environ)
    assert environ.get("GRPC_VERBOSITY") == verbosity


def test_the_cli_module_does_not_import_grpc() -> None:
    """main() sets core's level before grpc loads, so importing the CLI must not load it."""
    check = "import sys, amperity_signal.cli; print('grpc' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


def test_debug_level_leaves_out_grpcs_line_per_call() -> None:
    """At debug, the service's own lines show; gRPC's "Loaded running loop" per call does not.

    grpc.aio's Cython layer logs that line at debug for every call it handles: with
    ``--log-level debug`` it was most of the log, and says nothing an operator can use.
    """
    root, grpc_aio = logging.getLogger(), logging.getLogger("grpc._cython.cygrpc")
    handlers, level, grpc_level = root.handlers[:], root.level, grpc_aio.level
    try:
        configure_logging("DEBUG")
        assert logging.getLogger("amperity_signal.server").isEnabledFor(logging.DEBUG)
        assert not grpc_aio.isEnabledFor(logging.DEBUG)
        assert grpc_aio.isEnabledFor(logging.WARNING)
    finally:  # this process's logging as it was
        root.handlers[:] = handlers
        root.setLevel(level)
        grpc_aio.setLevel(grpc_level)
