"""Identifiers carried by a flat event, as the linking keys a collection stores.

- ``cookieid`` → ``device_cookie``, as sent.
- ``email`` → ``email_sha256``: SHA-256 of the trimmed, lowercased email (lowercase hex);
  ``email_sha256`` → ``email_sha256`` as sent, lowercased.
- ``user_id`` → ``customer_id``, as sent.
- ``phone`` → ``phone_sha256``: SHA-256 of the E.164 form (``+`` and digits);
  ``phone_sha256`` → ``phone_sha256`` as sent, lowercased.

That is a collection's default hashing, ``sha256``. A collection built the way Amperity's
own Profile API examples hash (``sha256_upper``: trim, UPPER, SHA-256, UPPER hex) stores
both hashes and pre-hashed values in upper case instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

DEVICE_COOKIE = "device_cookie"
EMAIL_SHA256 = "email_sha256"
CUSTOMER_ID = "customer_id"
PHONE_SHA256 = "phone_sha256"
SHA256 = "sha256"
SHA256_UPPER = "sha256_upper"
HASHINGS = (SHA256, SHA256_UPPER)


def sha256_hex(value: str) -> str:
    """SHA-256 of a UTF-8 string, lowercase hex."""
    return hashlib.sha256(value.encode()).hexdigest()


def hash_email(email: str) -> str:
    """The ``email_sha256`` of an email: trim, lowercase, SHA-256, lowercase hex."""
    return sha256_hex(email.strip().lower())


def normalise_phone(phone: str) -> str:
    """E.164 form of a phone number: ``+`` then its digits, when it has a country code.

    ``+44 7700 900123`` and ``0044 7700 900123`` become ``+447700900123``. The sandbox knows
    no default region, so a national number (``07700 900123``) is kept as its digits,
    ``07700900123``: the form Signal's blueprint sends and its lookups hash.
    """
    text = phone.strip()
    digits = "".join(char for char in text if char.isdigit())
    if text.startswith("+"):
        return f"+{digits}"
    if digits.startswith("00"):
        return f"+{digits[2:]}"
    return digits


def hash_phone(phone: str) -> str:
    """The ``phone_sha256`` of a phone number: SHA-256 of its E.164 form."""
    return sha256_hex(normalise_phone(phone))


def identifiers(event: Mapping[str, Any], hashing: str = SHA256) -> list[tuple[str, str]]:
    """The ``(linking_key, value)`` pairs an event carries, in a stable order.

    ``hashing`` is the collection's: ``sha256`` (lowercase) or ``sha256_upper``.
    """
    case = str.upper if hashing == SHA256_UPPER else str.lower
    found: list[tuple[str, str]] = []

    def add(key: str, value: object, transform: Callable[[str], str] | None = None) -> None:
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            text = str(value).strip()
            found.append((key, transform(text) if transform else text))

    add(DEVICE_COOKIE, event.get("cookieid"))
    add(EMAIL_SHA256, event.get("email"), lambda email: case(sha256_hex(case(email))))
    add(EMAIL_SHA256, event.get("email_sha256"), case)
    add(CUSTOMER_ID, event.get("user_id"))
    add(PHONE_SHA256, event.get("phone"), lambda phone: case(hash_phone(phone)))
    add(PHONE_SHA256, event.get("phone_sha256"), case)
    return list(dict.fromkeys(found))
