"""Amperity's answers turned into errors whose messages say what to fix.

The advice is the product spec's Troubleshooting table. Messages and metadata name
the integration, tenant, stream and host, never a token or an Authorization value.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import orjson

from amperity_signal.amperity.endpoints import EVENTS, LOOKUP, PROFILE
from amperity_signal.amperity.tokens import jwt_expiry
from amperity_signal.config import IntegrationSettings
from amperity_signal.config_values import jwt_private_parts
from amperity_signal.errors import (
    AmperityAuthError,
    AmperityError,
    AmperityMisconfigured,
    AmperityRejected,
    AmperityUnavailable,
)
from amperity_signal.logs import SCRUB_MIN_LENGTH, encoded_forms, scrub_forms
from amperity_signal.redaction import REDACTED
from amperity_signal.tenant_hosts import tenant_base_url

TLS_REFUSED = "TLS certificate refused: "
"""How a connection failure's description starts when the host's certificate was refused."""
_MAX_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class ErrorBody:
    """Amperity's error body ``{"status", "message", "request_id", "trace_id"}``."""

    message: str = ""
    request_id: str = ""
    trace_id: str = ""


def _secrets(integration: IntegrationSettings) -> Iterable[str]:
    yield integration.api_key.get_secret_value()
    if integration.profile_api_key is not None:
        yield integration.profile_api_key.get_secret_value()


# A stretch this long of a key's private part, anywhere in a run of token characters, marks
# the run as (part of) the key: a JWT's payload or signature alone, a cut head, the last
# characters. Random base64url text shares no 12 characters with a key by chance.
_PIECE_CHARS = 12
_TOKEN_RUN = re.compile(rf"[A-Za-z0-9_.-]{{{_PIECE_CHARS},}}")


@functools.lru_cache(maxsize=256)
def _pieces(secret: str) -> frozenset[str]:
    """Every 12-character stretch of a key's private part.

    For a JWT that is its payload and its signature, each on its own: the header segment
    is the same in every token of an algorithm, so it gives nothing away.
    """
    private = jwt_private_parts(secret) or [secret]
    return frozenset(
        segment[start : start + _PIECE_CHARS]
        for segment in private
        for start in range(len(segment) - _PIECE_CHARS + 1)
    )


_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
"""A JWT as Amperity issues them (another integration's key); not a URL with three dots."""
_DENSE = "[A-Za-z0-9+/=_.-]"
"""The characters keys, tokens and their base64 forms are made of."""
_DENSE_RUN = re.compile(f"{_DENSE}+")


class _FormsByLength:
    """Secret forms, longest first, each replaced in a text only when it fits in it."""

    def __init__(self, forms: list[str]) -> None:
        self.forms = forms
        self._minus_lengths = [-len(form) for form in forms]

    def replace(self, text: str) -> str:
        """``text`` with each form in it replaced; a form longer than ``text`` is skipped."""
        for form in self.forms[bisect.bisect_left(self._minus_lengths, -len(text)) :]:
            text = text.replace(form, REDACTED)
        return text


class Scrubber:
    """Replaces an integration's tokens, and every other secret, in Amperity's answers.

    Built once per client (the forms and pieces worked out once), so that scrubbing every
    string of a profile answer costs no more than the replacements themselves.

    Args:
        integration: Whose ``api_key`` and ``profile_api_key`` to replace, whole, base64-
            encoded, or any 12 characters of their payload or signature.
        also: Other secrets: the credentials the requests carry (a proxy's, whose error
            page may quote its Proxy-Authorization) and those the service holds (the admin
            token, pipeline keys, a Redis password: ``Settings.secret_values``), replaced
            whole or base64-encoded. One shaped like a JWT (another integration's key) is
            replaced in part too, as the integration's own keys are; the rest only whole:
            a proxy URL's host is no secret, nor is any 12 characters of a password.
    """

    def __init__(self, integration: IntegrationSettings, also: Iterable[str] = ()) -> None:
        others = list(also)
        jwts = (s for s in others if len(s) >= SCRUB_MIN_LENGTH and _JWT.fullmatch(s))
        keys = list(dict.fromkeys([*(s for s in _secrets(integration) if s), *jwts]))
        forms = {form for key in keys for form in (key, *encoded_forms(key))}
        ordered = sorted(forms.union(scrub_forms(others)), key=len, reverse=True)
        # Each group longest first, so that a form inside a longer one goes after it, not
        # through it; the sparse group first, as a form holding a dense one may be sparse.
        # A dense form (a key, a token, a base64 form) can only lie in a run of the dense
        # characters at least as long as itself, which prose and short values lack: one
        # search tells whether to try the dense forms at all.
        self._sparse = _FormsByLength([f for f in ordered if not _DENSE_RUN.fullmatch(f)])
        self._dense = _FormsByLength([f for f in ordered if _DENSE_RUN.fullmatch(f)])
        shortest = min(map(len, self._dense.forms), default=1)
        self._dense_run = re.compile(f"{_DENSE}{{{shortest},}}")
        self._pieces: frozenset[str] = frozenset().union(*(_pieces(k) for k in keys))

    def __call__(self, text: str) -> str:
        """``text`` with every token and credential, whole or in part, replaced."""
        text = self._sparse.replace(text)
        if self._dense_run.search(text):
            text = self._dense.replace(text)
        if not self._pieces:
            return text
        return _TOKEN_RUN.sub(self._redact_run, text)

    def _redact_run(self, run: re.Match[str]) -> str:
        found = run[0]
        for start in range(len(found) - _PIECE_CHARS + 1):
            if found[start : start + _PIECE_CHARS] in self._pieces:
                return REDACTED
        return found

    def json(self, value: Any) -> Any:
        """A copy of a decoded JSON value with every string in it (keys too) scrubbed."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(k): self.json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v) for v in value]
        return value


def parse_error_body(content: bytes, scrub: Scrubber) -> ErrorBody:
    """Read Amperity's error body, scrubbed; anything unreadable gives an empty one.

    Whole secrets first, as written or base64-encoded (an echoed Basic header); then any
    run of token characters holding 12 characters of a key's payload or signature: an echo
    may be partial (one segment, a cut head, the tail). See ``Scrubber``.
    """
    try:
        data: Any = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        text = content.decode("utf-8", "replace").strip() if content else ""
        return ErrorBody(message=scrub(text)[:_MAX_MESSAGE_CHARS])

    def field(name: str) -> str:
        value = data.get(name)
        # Scrub, then cut: cut first, a token across the cut would survive in part.
        if value is None:
            return ""
        return scrub(str(value))[:_MAX_MESSAGE_CHARS]

    return ErrorBody(field("message"), field("request_id"), field("trace_id"))


def _metadata(
    integration: IntegrationSettings, endpoint: str, body: ErrorBody | None, **extra: str
) -> dict[str, str]:
    meta = {"integration_id": integration.id, "tenant_id": integration.tenant_id}
    meta["endpoint"] = endpoint
    if body is not None:
        if body.request_id:
            meta["request_id"] = body.request_id
        if body.trace_id:
            meta["trace_id"] = body.trace_id
    meta.update(extra)
    return meta


# (endpoint or None for any, status) -> (error class, reason, message template). Templates
# take {status}, {endpoint}, {tenant_id}, {event_stream_id} and {said} (Amperity's message).
_Rule = tuple[type[AmperityRejected], str, str]
_OTHER_TENANT = (
    " If the key is new, check tenant_id {tenant_id!r}: the Amperity-Tenant header must name "
    "the tenant the key was issued for.{said}"
)
_INGEST_KEY = (
    AmperityAuthError,
    "INGEST_KEY_REJECTED",
    "Amperity answered {status} on event POST: the Streaming Ingest JWT (api_key) is expired "
    "or has the wrong scope. Regenerate it under Settings > Security > API Keys with "
    "Streaming Ingest Write Access." + _OTHER_TENANT,
)
_CONNECTOR_BUG = (
    AmperityRejected,
    "CONNECTOR_BUG",
    "Amperity answered {status} (missing Content-Length or wrong Content-Type): this is a "
    "bug in amperity-signal, not in your configuration. Please report it with the "
    "request_id.{said}",
)
_RULES: dict[tuple[str | None, int], _Rule] = {
    (EVENTS, 401): _INGEST_KEY,
    (EVENTS, 403): _INGEST_KEY,
    (None, 403): (
        AmperityAuthError,
        "PROFILE_KEY_FORBIDDEN",
        "403 on Profile API: this looks like the Streaming Ingest JWT used instead of the "
        "Profile API JWT. They're distinct tokens with distinct scopes — generate a new one "
        "with Profile Read Access and set profile_api_key." + _OTHER_TENANT,
    ),
    (None, 401): (
        AmperityAuthError,
        "PROFILE_KEY_INVALID",
        "401 on Profile API: the Profile API JWT (profile_api_key) is invalid or expired. "
        "Regenerate it under Settings > Security > API Keys with Profile Read Access and set "
        "profile_api_key.",
    ),
    (EVENTS, 404): (
        AmperityMisconfigured,
        "STREAM_NOT_FOUND",
        "Amperity has no stream {event_stream_id} for tenant {tenant_id} (404): check "
        "event_stream_id — it is the esm- id shown under Sources > Streams in Amperity, for "
        "tenant {tenant_id}.",
    ),
    (EVENTS, 409): (
        AmperityMisconfigured,
        "STREAM_REJECTING",
        "stream {event_stream_id} is in Reject mode and refuses events (409): set the "
        "stream's mode to active in Amperity (Sources > Streams).",
    ),
    (EVENTS, 400): (
        AmperityRejected,
        "AMPERITY_BAD_REQUEST",
        "Amperity rejected the event as malformed (400).{said} The body must be exactly one "
        "JSON object; check the blueprint mapping.",
    ),
    # The API notes: a lookup is 400 when it carries no keys, and a key the collection's
    # linking_keys lacks is 404, not 400; a profile GET has no documented 400 at all.
    (LOOKUP, 400): (
        AmperityRejected,
        "AMPERITY_BAD_REQUEST",
        "Amperity rejected the lookup as malformed (400).{said} Amperity answers 400 to a "
        "keychain lookup that carries no keys, and amperity-signal always sends one linking "
        "key with its value, so the body did not reach Amperity as it was sent (a key "
        "missing from the collection's linking_keys is a 404, not a 400). Check that "
        "nothing on the way (an outbound proxy, or the host api_base_url names) changes the "
        "POST body; if nothing does, report it as a bug in amperity-signal with the "
        "request_id.",
    ),
    (PROFILE, 400): (
        AmperityRejected,
        "AMPERITY_BAD_REQUEST",
        "Amperity rejected the profile request as malformed (400).{said} Amperity documents "
        "no 400 for a profile GET, which carries only the profile id a lookup returned and "
        "enrich=true (a profile not in the collection is a 404). Check that api_base_url "
        "points at Amperity's Real-time API; if it does, report it with the request_id.",
    ),
    (EVENTS, 413): (
        AmperityRejected,
        "PAYLOAD_TOO_LARGE",
        "Amperity refused the body as too large (413): an event may be at most 65,536 bytes. "
        "Shorten or drop the largest mapped fields in the blueprint.{said}",
    ),
    (None, 413): (
        AmperityRejected,
        "PAYLOAD_TOO_LARGE",
        "Amperity refused the {endpoint} request as too large (413).{said} It carries one "
        "identifier (lookup) or the context values (profile): check that the event fields "
        "named by linking_keys and personalisation_context_mappings hold identifiers and "
        "short values, not whole documents.",
    ),
    (None, 407): (
        AmperityMisconfigured,
        "PROXY_AUTH_REQUIRED",
        "the outbound proxy answered 407 (Proxy Authentication Required) to the {endpoint} "
        "request: it wants credentials, and got none it accepts. Put the proxy's user and "
        "password in the proxy variable (HTTP_PROXY for an http base URL, HTTPS_PROXY for "
        "https), as http://user:password@host:port.",
    ),
    (None, 411): _CONNECTOR_BUG,
    (None, 415): _CONNECTOR_BUG,
}
_PERSONALISED_PROFILE_400: _Rule = (
    AmperityRejected,
    "AMPERITY_BAD_REQUEST",
    "Amperity rejected the profile request as malformed (400).{said} Amperity documents no "
    "400 for a profile GET, which carries the profile id a lookup returned, enrich=true and, "
    "for a personalised call, one query parameter per personalisation_context_mappings "
    "target (a profile not in the collection is a 404). Check that your tenant's "
    "context-sensitive attribute logic accepts those targets and the values the mappings "
    "read; then that api_base_url points at Amperity's Real-time API.",
)
"""A profile 400 when personalisation is on: its context parameters are what it adds."""
_UNEXPECTED: _Rule = (
    AmperityRejected,
    "AMPERITY_UNEXPECTED_STATUS",
    "Amperity answered an unexpected {status} to the {endpoint} request.{said} Check that "
    "api_base_url points at Amperity's Real-time API, and report it if it does.",
)


_EXPIRED_KEYS = {
    EVENTS: ("api_key", "event POST", "Streaming Ingest JWT", "Streaming Ingest Write Access"),
    None: ("profile_api_key", "Profile API", "Profile API JWT", "Profile Read Access"),
}


def _expired_key_rule(
    endpoint: str, integration: IntegrationSettings
) -> tuple[_Rule, datetime] | None:
    """The 401 rule naming the expiry date, and the date, when the key's exp has passed."""
    field, call, name, access = _EXPIRED_KEYS.get(endpoint, _EXPIRED_KEYS[None])
    secret = getattr(integration, field)
    expires = jwt_expiry(secret.get_secret_value()) if secret is not None else None
    if expires is None or expires > datetime.now(UTC):
        return None
    when = expires.strftime("%Y-%m-%d %H:%M UTC")
    rule = (
        AmperityAuthError,
        "INGEST_KEY_REJECTED" if field == "api_key" else "PROFILE_KEY_INVALID",
        f"Amperity answered 401 on {call}: the {name} ({field}) expired on {when} (its exp "
        f"claim). Regenerate it under Settings > Security > API Keys with {access} and "
        f"update {field}.{{said}}",
    )
    return rule, expires


def rejection(
    status: int,
    endpoint: str,
    integration: IntegrationSettings,
    body: ErrorBody,
    attempts: int,
) -> AmperityError:
    """The permanent error for a non-retryable status (404 on profile calls is not one)."""
    expired = _expired_key_rule(endpoint, integration) if status == 401 else None
    personalised = integration.personalisation_enabled and bool(
        integration.personalisation_context_mappings
    )
    if expired:
        rule = expired[0]
    elif (endpoint, status) == (PROFILE, 400) and personalised:
        rule = _PERSONALISED_PROFILE_400
    else:
        rule = _RULES.get((endpoint, status), _RULES.get((None, status), _UNEXPECTED))
    error_class, reason, template = rule
    # Every variable of the message is in the metadata (AIP-193), status_code and
    # attempts added by the error itself.
    meta = _metadata(integration, endpoint, body)
    if "{event_stream_id}" in template:
        meta["event_stream_id"] = integration.event_stream_id
    if "{said}" in template and body.message:
        meta["amperity_message"] = body.message
    if expired:
        meta["key_expired_at"] = expired[1].isoformat().replace("+00:00", "Z")
    message = template.format(
        status=status,
        endpoint=endpoint,
        tenant_id=integration.tenant_id,
        event_stream_id=integration.event_stream_id,
        said=_amperity_said(body.message),
    )
    return error_class(message, reason=reason, status_code=status, attempts=attempts, metadata=meta)


def _amperity_said(message: str) -> str:
    """Amperity's own message as a sentence of ours, so advice that follows it reads apart."""
    if not message:
        return ""
    text = message.rstrip()
    return f" Amperity said: {text}" + ("" if text.endswith((".", "!", "?")) else ".")


def redirected(
    integration: IntegrationSettings,
    endpoint: str,
    *,
    status: int,
    location: str,
    suggested_base_url: str | None,
    attempts: int,
    scrub: Scrubber,
) -> AmperityError:
    """The permanent error for a 3xx: redirects are not followed, so the base URL must move.

    ``suggested_base_url`` is the base URL under which the redirect's target is this same
    call, or None when the target is some other page; ``scrub`` the client's.
    """
    location = scrub(location)[:_MAX_MESSAGE_CHARS]
    field = "api_base_url" if integration.api_base_url else "tenant_subdomain"
    meta = _metadata(integration, endpoint, None, location=location)
    if suggested_base_url:
        # Cut from the same target, so scrubbed and cut as it is: a Location echoing a key
        # before the API path would otherwise carry it whole, to the caller and the logs.
        suggested_base_url = scrub(suggested_base_url)[:_MAX_MESSAGE_CHARS]
        fix = f"Set api_base_url = {suggested_base_url!r}."
        meta["suggested_base_url"] = suggested_base_url
    else:
        fix = f"It is not the same API path: check that {field} points at Amperity's Real-time API."
    return AmperityRejected(
        f"Amperity answered {status} to the {endpoint} request, redirecting to {location}; "
        "redirects are not followed (an event POST would lose its body), so nothing was "
        f"sent there. {fix}",
        reason="AMPERITY_UNEXPECTED_STATUS",
        status_code=status,
        attempts=attempts,
        metadata=meta,
    )


def exhausted(
    integration: IntegrationSettings,
    endpoint: str,
    *,
    status: int | None,
    cause: str,
    attempts: int,
    retry_after: float,
    body: ErrorBody | None,
    why: str,
    failure: str | None = None,
) -> AmperityUnavailable:
    """The error once retries (or the caller's deadline) ran out on 429/5xx/no answer.

    ``why`` says what ended the retrying, e.g. "the 5 retries (max_retries) ran out";
    ``failure`` what the last connection failure was (e.g. "Connect call failed ...").
    """
    meta = _metadata(
        integration, endpoint, body, cause=cause, retry_after_seconds=f"{retry_after:.3f}"
    )
    if attempts > integration.max_retries:  # ``why`` says the retries ran out
        meta["max_retries"] = str(integration.max_retries)
    if status == 429:
        meta["rate_limit_per_second"] = str(integration.rate_limit_per_second)
        return AmperityUnavailable(
            f"Amperity kept throttling (429) and {why} after {attempts} attempt(s): the tenant "
            "is over its Real-time API limit at Amperity (500 requests/s unless Amperity "
            "raised it, ingest and profile calls of every client of the tenant together), "
            "while this integration keeps to rate_limit_per_second = "
            f"{integration.rate_limit_per_second}. Lower rate_limit_per_second, share it "
            f"across replicas with the redis cache backend, or retry in {retry_after:.1f}s.",
            reason="AMPERITY_THROTTLED",
            status_code=status,
            attempts=attempts,
            retry_after=retry_after,
            metadata=meta,
        )
    host = integration.base_url
    meta["host"] = host
    if status is None and attempts == 0:
        return AmperityUnavailable(
            f"{why}, so nothing was sent to Amperity at {host}: give the call a longer "
            f"deadline, or retry in {retry_after:.1f}s.",
            reason="AMPERITY_UNAVAILABLE",
            attempts=attempts,
            retry_after=retry_after,
            metadata=meta,
        )
    if failure is not None and failure.startswith(TLS_REFUSED):
        field = "api_base_url" if integration.api_base_url else "tenant_subdomain"
        meta["failure"] = failure
        problem = failure.removeprefix(TLS_REFUSED)
        return AmperityUnavailable(
            f"Amperity could not be reached at {host}: its TLS certificate was refused "
            f"({problem}) on {attempts} attempt(s). Check that {field} names Amperity's "
            "host. Certificates are checked against the bundled CA list (certifi), or the "
            "CA certificates in SSL_CERT_FILE / SSL_CERT_DIR when set: for a proxy that "
            "re-signs TLS, set SSL_CERT_FILE to a PEM file holding its CA. Retry in "
            f"{retry_after:.1f}s if it is Amperity's own certificate.",
            reason="AMPERITY_UNAVAILABLE",
            attempts=attempts,
            retry_after=retry_after,
            metadata=meta,
        )
    said = f"{cause}: {failure}" if failure else cause
    if failure:
        meta["failure"] = failure
    # No answer from this machine's own port: most likely the sandbox is not started.
    local = (
        f" {host} is this machine: is `amperity-signal sandbox` running there?"
        if status is None and _on_this_machine(host)
        else ""
    )
    return AmperityUnavailable(
        f"Amperity did not answer successfully ({said}) and {why} after {attempts} "
        f"attempt(s): it is temporarily unavailable or unreachable. Retry in "
        f"{retry_after:.1f}s; if it persists, check network egress to {host} and "
        f"request_timeout.{local}",
        reason="AMPERITY_UNAVAILABLE",
        status_code=status,
        attempts=attempts,
        retry_after=retry_after,
        metadata=meta,
    )


def _on_this_machine(base_url: str) -> bool:
    """Whether ``base_url`` names this machine: ``localhost`` or a loopback address."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: not one that is this machine by definition
        return False


def tunnel_refused(
    integration: IntegrationSettings,
    endpoint: str,
    *,
    status: int,
    target: str,
    proxy: str,
    attempts: int,
) -> AmperityError:
    """The outbound proxy refused the https tunnel (a 4xx to ``CONNECT``, not 407). Not retried.

    It is the proxy's own answer, by its rules: Amperity never saw the request, so none of
    the advice for Amperity's own 403 or 404 applies. ``proxy`` is shown with its
    credentials redacted, and its variable. The status is named by its standard phrase,
    not the proxy's: whatever a proxy puts there stays out of the error.
    """
    try:
        said = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        said = str(status)
    host = target.rpartition(":")[0].strip("[]")
    return AmperityMisconfigured(
        f"the outbound proxy {proxy} refused the tunnel to {target} ({said}) for the "
        f"{endpoint} request, so it never reached Amperity; a proxy refuses by its rules, so "
        f"it is not retried. Allow CONNECT to {target} in the proxy's rules, or add {host} "
        "to NO_PROXY if it can be reached directly.",
        reason="PROXY_REFUSED",
        attempts=attempts,
        metadata=_metadata(
            integration, endpoint, None, proxy=proxy, proxy_status=str(status), target=target
        ),
    )


def unknown_host(integration: IntegrationSettings, endpoint: str, host: str) -> AmperityError:
    """DNS says the host does not exist: the subdomain (or api_base_url) is wrong. Not retried."""
    if integration.api_base_url:
        # The host came from the override, not from tenant_subdomain: that is what to fix
        # (so the metadata names the URL without it, not tenant_subdomain as at fault).
        without_override = tenant_base_url(integration.tenant_subdomain)
        return AmperityMisconfigured(
            f"no such host {host}: it is the host of api_base_url, which overrides "
            "tenant_subdomain. Correct the host in api_base_url, or remove api_base_url to "
            f"reach {without_override}.",
            reason="TENANT_HOST_NOT_FOUND",
            attempts=1,
            metadata=_metadata(
                integration, endpoint, None, host=host, base_url_without_override=without_override
            ),
        )
    return AmperityMisconfigured(
        f"no such host {host}: tenant_subdomain is wrong — it's the URL host, not the "
        "Amperity-Tenant header value. Use the subdomain portion of your Amperity dashboard "
        "URL.",
        reason="TENANT_HOST_NOT_FOUND",
        attempts=1,
        metadata=_metadata(
            integration, endpoint, None, host=host, tenant_subdomain=integration.tenant_subdomain
        ),
    )


def bad_response(
    integration: IntegrationSettings, endpoint: str, status: int, problem: str, attempts: int
) -> AmperityUnavailable:
    """Amperity answered success with a body that is not what the API notes describe."""
    return AmperityUnavailable(
        f"Amperity answered {status} to the {endpoint} request but {problem}. Check that "
        "api_base_url points at Amperity's Real-time API; retry later if it does.",
        reason="AMPERITY_BAD_RESPONSE",
        status_code=status,
        attempts=attempts,
        metadata=_metadata(integration, endpoint, None, problem=problem),
    )
