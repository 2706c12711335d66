"""Limits that the service and the gateway (its own process) both enforce, stated once.

And the ceilings of configuration values that end in a fixed-width integer (a gRPC channel
argument is a C int) or that each connection or Redis write pays for: the configuration
refuses a value above one, naming the field, the range and why (``config_messages``).
"""

from __future__ import annotations

import re

MAX_ANONYMOUS_ID = 200
"""The longest anonymous id accepted anywhere: an event's (Deliver, DeliverStream, Enrich,
the gateway's collector routes) and a visitor's (BrowserProfile, RecordConsent,
``/v1/enrich``, ``/v1/consent``). One limit, so that no event is delivered for a visitor
whose profile and consent could then never be asked for; datafly.js makes a 36-character
uuid."""

ANONYMOUS_ID_TOO_LONG = (
    f"is longer than {MAX_ANONYMOUS_ID} characters, the limit for an anonymous id; send the "
    "visitor's _dfid value (a uuid from datafly.js)."
)
"""Why an anonymous id is refused, after the field's name, wherever it is refused."""

ANONYMOUS_ID_REQUIRED = (
    "is required, with a userId or without: it becomes the cookieid Amperity stitches "
    "profiles on; send the visitor's Datafly anonymous identifier (the _dfid cookie "
    "datafly.js sets)."
)
"""Why an event without an anonymous id is refused, after the field's name: by Deliver and
by the gateway's collector routes alike (the gateway takes the ``_dfid`` cookie for it), so
no refusal advises a userId the other then refuses."""

MAX_CANONICAL_ID = MAX_ANONYMOUS_ID
"""The longest canonical id accepted anywhere (Deliver, DeliverStream, Enrich, the gateway's
collector routes). Datafly's canonical id is a visitor id of the anonymous id's kind (the
stitched device cookie, sent to Amperity as ``cookieid``), and an event without one takes
its anonymous id: a shorter limit would refuse an anonymous id copied into it, a longer
one admit ids that no visitor's cookie could hold."""

CANONICAL_ID_TOO_LONG = (
    f"is longer than {MAX_CANONICAL_ID} characters, the limit for a canonical id; send "
    "Datafly's canonical visitor id, or leave it out and the anonymous id is used."
)
"""Why a canonical id is refused, after the field's name, wherever it is refused."""

# C0, DEL and C1 (NEL, U+0085, ends a line too), and the Unicode line and paragraph
# separators, which log viewers and JSON-lines readers also break lines at.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def control_character_problem(identifier: str) -> str | None:
    """Why an id holding a control character or a line separator is refused, after its name.

    An anonymous, canonical or message id is opaque text, but none is made with a NUL, a
    tab or a line break (datafly.js makes a uuid): such a value is a mistake or an attempt
    to split a log line or a header, refused wherever it arrives. Control characters are
    C0, DEL and C1; U+2028 and U+2029 split lines in log viewers too. Other characters
    ``isprintable`` rejects (a no-break space, say) are taken. None when it holds none.
    """
    if identifier.isprintable():  # the usual case, in C: no control character at all
        return None
    found = _CONTROL_CHARACTER.search(identifier)
    if found is None:
        return None
    kind = "line separator" if found.group() in "\u2028\u2029" else "control character"
    return (
        f"holds the {kind} {found.group()!r} at position {found.start()}; an id is "
        "printable text: send it without control characters (NULs, tabs, line breaks, C1 "
        "codes such as NEL) or Unicode line and paragraph separators (U+2028, U+2029)."
    )


MAX_PIPELINE_KEY = 200
"""The longest pipeline key the gateway takes, and so the longest the configuration takes."""

PIPELINE_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_PIPELINE_KEY}}}")
"""What a pipeline key is, to ``fullmatch``: 1-200 printable ASCII characters, no space.

The gateway refuses any other key on every request (it travels in a header or a query
parameter, then as gRPC metadata), so the configuration refuses to set one."""

PIPELINE_KEY_RULE = f"1-{MAX_PIPELINE_KEY} printable ASCII characters, with no spaces"
"""The rule said in words, wherever a pipeline key is refused (never the key: a secret)."""

INT32_MAX = 2**31 - 1
"""The largest value of a gRPC channel argument (a C int): a larger one stops the server or
channel being built with ``OverflowError: value too large to convert to int``."""

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""The largest ``[server] max_message_bytes``, 256 MiB. The service sets gRPC's own receive
limit to 4 times it, so that an oversized event reaches validation and is refused by name;
4 x 256 MiB = 1 GiB stays within ``INT32_MAX`` (the exact ceiling, ``INT32_MAX // 4``, is
no round size), and an event of a page or pipeline is a few KiB."""

MAX_GATEWAY_BODY_BYTES = 64 * 1024 * 1024
"""The largest ``[gateway] max_body_bytes`` and ``max_batch_body_bytes``, 64 MiB: the
gateway's gRPC message limit to the service is 4 times ``max_batch_body_bytes`` (within
``INT32_MAX``), and a body is read into memory whole before it is parsed."""

MAX_HEADER_BYTES = 1024 * 1024
"""The largest ``[gateway] max_header_bytes``, 1 MiB: the HTTP parser buffers up to 4 times
it of each connection's request head (nginx's default for all headers is 32 KiB)."""

MAX_LIVE_REPLAY = 1000
"""The most records a Live Events page may ask to replay (``?replay=``), and so the largest
``[gateway] live_replay``, its default: the count travels as WatchDeliveries' int32
``replay``, and the service keeps only the last 200 records of an integration anyway."""

MAX_TTL_SECONDS = 10 * 365 * 86_400
"""The longest cache TTL the configuration takes (``[cache] *_ttl``), ten years: a longer
one is in effect forever, and Redis refuses an expiry past its integer range (``ERR value
is not an integer or out of range``), which failed every cache write. The Redis store
never sends a longer expiry either (``enrich.expiry``)."""

MAX_WAIT_SECONDS = 3_600
"""The longest wait the configuration takes, one hour: ``[server] grace_period``, the
deadlines and timeouts, ``[cache] breaker_cooldown``. A longer one is in effect no limit,
and a gRPC deadline past ~10**10 s wraps around and fails every call at once."""

MAX_INTEGRATION_ID = 64
"""The longest integration id (``[[integrations]] id``)."""

INTEGRATION_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_INTEGRATION_ID - 1}}}")
"""What an integration id is, to ``fullmatch``: 1-64 ASCII letters, digits, ``-``, ``_`` and
``.``, starting with a letter or digit (``web``, ``acme-web``, ``shop.eu_2``).

An id is a name callers type and the service repeats: in ``integration_id``, metric labels,
log lines, Live Events URLs (``/live?integration=acme-web``). The configuration refuses
any other, and the Live Events stream refuses to filter on one (no integration has it)."""

INTEGRATION_ID_RULE = (
    f"1-{MAX_INTEGRATION_ID} ASCII letters, digits, '-', '_' or '.', starting with a letter "
    "or digit"
)
"""The rule said in words, wherever an integration id is refused."""
