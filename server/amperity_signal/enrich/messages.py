"""Warning texts returned with enrichment results, and the partner-failure log line.

Warnings say what happened and what to change, in the spec's words (its Troubleshooting
table). They never contain identifiers or tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from amperity_signal.errors import AmperityError, AmperityRejected

RESOLVE_FAILED: Final = "partner resolve failed"
_LINKING_KEYS_FIX: Final = (
    "the collection's linking_keys may not include any key Signal is sending — ask your "
    "Amperity admin to add email_sha256 / device cookie / etc. to the collection's linking_keys"
)
LINKING_KEYS_404: Final = f"Profile lookups 404: {_LINKING_KEYS_FIX}"
"""The troubleshooting row "Profile lookups always 404", carried by a miss while no lookup of
the integration's collection has matched a profile, or after a long streak of 404s since the
last one did (``Resolver``): a 404 is also simply a visitor Amperity does not know."""


def not_configured(missing: Sequence[str]) -> str:
    """Profile enrichment lacks these settings, so nothing is attached.

    The spec's "Profile API creds missing OR no linking keys configured".
    """
    verb = "is" if len(missing) == 1 else "are"
    return (
        f"{RESOLVE_FAILED}: partner_attrs.amperity not attached: {', '.join(missing)} {verb} "
        "not configured; profile enrichment needs profile_api_key, profile_collection_id and "
        "linking_keys"
    )


def no_sources(sources: Sequence[str]) -> str:
    """The visitor carries none of the values the linking keys read."""
    listed = ", ".join(dict.fromkeys(sources))
    return (
        f"{RESOLVE_FAILED}: partner_attrs.amperity not attached: the visitor carries none of "
        f"the linking keys' sources ({listed}); call datafly.identify() to add "
        "email/phone/user_id"
    )


def not_found(keys: Sequence[str]) -> str:
    """Every linking key was looked up and none matched a profile."""
    return f"{RESOLVE_FAILED}: no profile matched linking keys {', '.join(keys)}"


def partner_error(exc: AmperityError, *, stale: bool) -> str:
    """A Profile API call failed; a permanent refusal carries the client's fix.

    The 403 advice, the wrong tenant_subdomain advice: retrying changes nothing there.
    """
    if isinstance(exc, AmperityRejected):
        text = f"{RESOLVE_FAILED}: {exc.message}"
    else:
        # A success whose body is no profile says what was wrong with it (too large, not
        # JSON, an encoding that does not decode): our own words, never the body's.
        problem = exc.metadata.get("problem")
        detail = f": {problem}" if problem else ""
        text = (
            f"{RESOLVE_FAILED}: Amperity Profile API error {exc.reason}"
            f" ({_status(exc.status_code)}{detail}); Signal retries it shortly"
        )
    return text + (_STALE if stale else "")


def dampened_error(reason: str, message: str | None, *, stale: bool) -> str:
    """A recent failure for this visitor is remembered, so no call was made."""
    text = (
        f"{RESOLVE_FAILED}: {message}"
        if message
        else (
            f"{RESOLVE_FAILED}: a recent Profile API error ({reason}) is dampened; "
            "Signal retries it after cache.error_ttl"
        )
    )
    return text + (_STALE if stale else "")


def breaker_open(failures: int, retry_in: float, *, stale: bool) -> str:
    """The integration's breaker is stopping Profile API calls."""
    text = (
        f"{RESOLVE_FAILED}: Profile API calls paused for {retry_in:.0f} s after {failures} "
        "consecutive failures (5xx/timeouts); check Amperity's status or cache.breaker_cooldown"
    )
    return text + (_STALE if stale else "")


SHARED_CALL_LATE: Final = (
    f"{RESOLVE_FAILED}: the Profile API call this request shared with a concurrent one for "
    "the same visitor had not answered by this request's deadline; a later request uses its "
    "answer (a slow Profile API: check Amperity's status)"
)
"""A request that joined a call in flight (single flight) and whose own deadline came first."""

_STALE: Final = "; attached the last known attributes (stale)"
STALE_LATER_KEY: Final = (
    f"{RESOLVE_FAILED}: attached the last known attributes of a later linking key's cached "
    "profile (stale)"
)


def _status(status_code: int | None) -> str:
    return "no answer" if status_code is None else f"HTTP {status_code}"


def log_failure(
    logger: logging.Logger, integration_id: str, endpoint: str, exc: AmperityError
) -> None:
    """Log the spec's ``partner resolve failed`` warning for a failed Profile API call.

    The integration, the call, the reason and the fix: the text the call's warning carries
    (``partner_error``), for an operator who reads only the logs (BrowserProfile and
    ``/v1/enrich`` traffic returns no warnings). Never an identifier or a token: the
    client's messages name fields, and Amperity's words in them are scrubbed of keys.
    """
    _log(logger, integration_id, endpoint, exc.reason, partner_error(exc, stale=False))


def log_breaker_opened(
    logger: logging.Logger, integration_id: str, endpoint: str, failures: int, retry_in: float
) -> None:
    """Log that this failure opened the breaker (``reason=BREAKER_OPEN``), with its warning."""
    _log(
        logger,
        integration_id,
        endpoint,
        "BREAKER_OPEN",
        breaker_open(failures, retry_in, stale=False),
    )


def _log(
    logger: logging.Logger, integration_id: str, endpoint: str, reason: str, warning: str
) -> None:
    logger.warning(
        "%s: integration=%s endpoint=%s reason=%s: %s",
        RESOLVE_FAILED,
        integration_id,
        endpoint,
        reason,
        warning.removeprefix(f"{RESOLVE_FAILED}: "),
    )


def log_always_404(
    logger: logging.Logger, integration_id: str, lookups: int, *, matched_before: bool
) -> None:
    """Log that an integration's last ``lookups`` lookups all answered 404 (once per streak).

    ``matched_before``: an earlier lookup matched, so the linking keys worked and may have
    changed since. The integration id and the count only: no linking key value, profile id
    or token.
    """
    which = "last" if matched_before else "first"
    logger.warning(
        "Profile lookups always 404: integration=%s: none of the %s %d Profile API "
        "lookups matched a profile%s; %s",
        integration_id,
        which,
        lookups,
        " (earlier ones did)" if matched_before else "",
        _LINKING_KEYS_FIX,
    )
