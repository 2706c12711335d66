"""The values the Amperity client returns: results, profiles and the vendor call record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VendorCall:
    """What was sent to Amperity and how it went, safe to show (Authorization redacted).

    Attributes:
        method: The HTTP method.
        url: The full URL of the last attempt.
        status_code: The last HTTP status, or 0 when Amperity never answered.
        attempts: How many requests were made, retries included.
        duration: Seconds from the first attempt to the outcome, backoff included.
        headers: The request headers, with ``Authorization: Bearer [REDACTED]``.
    """

    method: str
    url: str
    status_code: int
    attempts: int
    duration: float
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestResult:
    """Amperity accepted an event.

    Attributes:
        status_code: 202 (published) or 204 (accepted while the stream drops events), or
            another 2xx that Amperity does not document (``unexpected_status``).
        dropping: True when the stream is set to drop events (204): flag it to the user.
        unexpected_status: True for a 2xx other than 202 and 204. It is a success, so
            the event is not sent again (that would duplicate it), but flag it to the user:
            something between us and Amperity, or Amperity itself, answers off the notes.
        call: The vendor request that delivered it.
        body_cut: What cut off the response body after its status line (a reset, a
            timeout; safe to show), or "" when it came whole. The status line is
            Amperity's acceptance, so the event was delivered all the same.
    """

    status_code: int
    dropping: bool
    call: VendorCall
    body_cut: str = ""
    unexpected_status: bool = False


@dataclass(frozen=True)
class Profile:
    """A profile from a keychain lookup or a profile GET.

    Attributes:
        collection_id: The profile collection (``apc-...``).
        profile_id: The profile id (the spec's ``amperity_id``).
        attributes: Attribute name to value (enriched or context-dependent when asked).
        links: Linking key to the identifiers stitched into this profile.
        updated_at: When Amperity last updated the profile, as sent, or None.
    """

    collection_id: str
    profile_id: str
    attributes: dict[str, Any]
    links: dict[str, Any]
    updated_at: str | None


def profile_from_json(body: Any, collection_id: str, profile_id: str | None = None) -> Profile:
    """Build a Profile from Amperity's JSON answer.

    Args:
        body: The decoded response body.
        collection_id: The collection asked for, used when the body leaves it out.
        profile_id: The profile asked for, used when the body leaves it out.

    Raises:
        TypeError: When the body or its attributes/links are not objects.
        ValueError: When the body has no profile id.
    """
    if not isinstance(body, Mapping):
        raise TypeError("the profile answer is not a JSON object")
    found_id = body.get("profile_id", profile_id)
    if not isinstance(found_id, str) or not found_id:
        raise ValueError("the profile answer has no profile_id")
    attributes = body.get("attributes") or {}
    links = body.get("links") or {}
    if not isinstance(attributes, Mapping) or not isinstance(links, Mapping):
        raise TypeError("the profile answer's attributes or links is not an object")
    updated_at = body.get("updated_at")
    return Profile(
        collection_id=str(body.get("collection_id") or collection_id),
        profile_id=found_id,
        attributes=dict(attributes),
        links=dict(links),
        updated_at=updated_at if isinstance(updated_at, str) else None,
    )
