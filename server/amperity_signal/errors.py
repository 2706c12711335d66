"""The errors amperity-signal raises, as one small hierarchy.

Every error carries a ``reason`` (UPPER_SNAKE, the ErrorInfo reason), ``metadata`` (every
variable of the message, never a secret) and a message that tells the user what to change.
Errors are raised where they happen and mapped to a gRPC status in one place
(``amperity_signal.service.status``)::

    AmperitySignalError
    ├── ConfigError              configuration problems, all of them at once
    ├── InvalidFields            a request with invalid fields (BadRequest field violations):
    │   │                        INVALID_REQUEST where no event or consent is at fault (which
    │   │                        integration, BrowserProfile's anonymous_id)
    │   ├── InvalidEvent         an event that cannot be delivered
    │   └── InvalidConsent       a consent state that cannot be kept (RecordConsent)
    ├── MalformedRequest         request bytes that are not the method's protobuf message
    ├── UnknownIntegration       no integration with that id or pipeline key
    ├── ProfileUnavailable       enrichment cannot run (no profile key or collection)
    ├── ServiceStopping          the service is shutting down: a stream ends to reopen elsewhere
    ├── CacheUnavailable         the shared cache (Redis) is unreachable and a write must land
    └── AmperityError            Amperity answered, or could not be reached
        ├── AmperityRejected     a permanent answer: never retried
        │   ├── AmperityAuthError        401/403: the key is wrong, expired or mis-scoped
        │   └── AmperityMisconfigured    unknown host, unknown stream, reject mode
        └── AmperityUnavailable  429/5xx/connection errors after retries ran out
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DOMAIN = "amperity-signal.datafly.com"


class AmperitySignalError(Exception):
    """Base of every error this package raises on purpose."""

    reason: str = "INTERNAL"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in the configuration: where it is, what is wrong, how to fix it.

    Attributes:
        location: The dotted path of the offending field, e.g. ``integrations[0].api_key``.
        problem: What is wrong, in a sentence.
        fix: What to change, in a sentence.
    """

    location: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.location}: {self.problem} Fix: {self.fix}"


class ConfigError(AmperitySignalError):
    """The configuration has one or more problems; all of them are listed.

    Args:
        problems: Each problem with its location and fix.
        source: The file they are in, named in the message when known.
    """

    reason = "INVALID_CONFIG"

    def __init__(self, problems: Sequence[ConfigProblem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        where = f"the configuration in {source}" if source else "configuration"
        super().__init__(
            f"{where} has {len(self.problems)} problem(s):\n{lines}",
            metadata={"problem_count": str(len(self.problems))},
        )


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request (becomes a google.rpc.BadRequest field violation)."""

    field: str
    description: str


class InvalidFields(AmperitySignalError):
    """A request with invalid fields; each violation names its field and the fix.

    Args:
        violations: Each invalid field, with what is wrong and how to fix it.
        metadata: A variable a violation's description names, beside ``fields``.
    """

    reason = "INVALID_REQUEST"
    subject = "request"
    """What the message says is invalid ("invalid event: ...")."""

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.violations = list(violations)
        text = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(
            f"invalid {self.subject}: {text}",
            metadata={"fields": ",".join(v.field for v in self.violations), **(metadata or {})},
        )


class InvalidEvent(InvalidFields):
    """The event cannot be delivered as it is; each violation names its field."""

    reason = "INVALID_EVENT"
    subject = "event"


class InvalidConsent(InvalidFields):
    """A RecordConsent request cannot be kept as it is; each violation names its field."""

    reason = "INVALID_CONSENT"
    subject = "consent"


class MalformedRequest(AmperitySignalError):
    """A request's bytes are not the method's protobuf message (a streamed one ends the stream)."""

    reason = "MALFORMED_REQUEST"


class UnknownIntegration(AmperitySignalError):
    """No configured integration has the given id or pipeline key."""

    reason = "UNKNOWN_INTEGRATION"


class ProfileUnavailable(AmperitySignalError):
    """Enrichment cannot run for this integration: it has no Profile API key or collection.

    A breaker that stops partner calls raises nothing: enrichment answers with a warning.
    """

    reason = "PROFILE_UNAVAILABLE"


class ServiceStopping(AmperitySignalError):
    """The service is shutting down; a stream or watch it held open ends with this."""

    reason = "SERVICE_STOPPING"


class CacheUnavailable(AmperitySignalError):
    """The shared cache cannot be reached, and the call needs its write to land.

    Most cache users degrade without it (a miss, a dropped write); a consent state recorded
    on its own (RecordConsent) cannot: answering as if it were kept would tell the caller
    something untrue. Retrying later can help.

    Attributes:
        retry_after: Seconds the caller should wait before trying again.
    """

    reason = "CACHE_UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 1.0,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata)
        self.retry_after = retry_after


class AmperityError(AmperitySignalError):
    """Amperity answered with an error, or could not be reached.

    Attributes:
        status_code: The HTTP status Amperity answered with, or None when it never answered.
        attempts: How many requests were made before giving up.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        status_code: int | None = None,
        attempts: int = 1,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        meta = dict(metadata or {})
        if status_code is not None:
            meta.setdefault("status_code", str(status_code))
        meta.setdefault("attempts", str(attempts))
        super().__init__(message, metadata=meta)
        self.reason = reason
        self.status_code = status_code
        self.attempts = attempts


class AmperityRejected(AmperityError):
    """A permanent answer (400, 404, 409, 413, ...): retrying cannot help."""


class AmperityAuthError(AmperityRejected):
    """401 or 403: the token is invalid, expired, or has the wrong scope."""


class AmperityMisconfigured(AmperityRejected):
    """The integration points at something that does not exist or refuses events."""


class AmperityUnavailable(AmperityError):
    """Retries inside the caller's deadline ran out on 429/5xx/connection errors.

    Attributes:
        retry_after: Seconds the caller should wait before trying again.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        status_code: int | None = None,
        attempts: int = 1,
        retry_after: float = 1.0,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            message,
            reason=reason,
            status_code=status_code,
            attempts=attempts,
            metadata=metadata,
        )
        self.retry_after = retry_after
