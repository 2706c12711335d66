"""JWT-shaped API keys: HS256, ``header.payload.signature`` in base64url.

Claims are ``tenant``, ``scopes``, ``exp``, ``iat`` and ``jti``. Two scopes matter:
``stream:write`` (Streaming Ingest Write Access) and ``profile:read`` (Profile Read Access,
which Amperity spells as ``profile-collections:read`` plus ``pii:read``; both spellings are
accepted).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from amperity_signal.sandbox import jsonbody

STREAM_WRITE = "stream:write"
PROFILE_READ = "profile:read"
_PROFILE_READ_PARTS = frozenset({"profile-collections:read", "pii:read"})
_HEADER = {"alg": "HS256", "typ": "JWT"}


class TokenError(Exception):
    """A token that does not authenticate: malformed, badly signed or expired."""


@dataclass(frozen=True)
class Claims:
    """The verified claims of a token."""

    tenant: str
    scopes: frozenset[str]
    expires_at: float
    issued_at: float
    token_id: str

    def allows(self, scope: str) -> bool:
        """Tells whether the token grants ``scope`` (``stream:write`` or ``profile:read``)."""
        if scope == PROFILE_READ and self.scopes >= _PROFILE_READ_PARTS:
            return True
        return scope in self.scopes


def mint_token(
    secret: str,
    tenant: str,
    scopes: Iterable[str],
    ttl_seconds: float,
    now: float | None = None,
) -> str:
    """Mints a signed token; a negative ``ttl_seconds`` gives an already expired one.

    Args:
        secret: The sandbox's signing secret.
        tenant: The tenant id the token is for (the ``Amperity-Tenant`` it must be sent with).
        scopes: Scopes granted, e.g. ``["stream:write"]``.
        ttl_seconds: Lifetime from ``now``.
        now: Issue time in epoch seconds; the current time when omitted.

    Returns:
        The token, unique per call thanks to a random ``jti``.
    """
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "tenant": tenant,
        "scopes": list(scopes),
        "iat": issued_at,
        "exp": int(issued_at + ttl_seconds),
        "jti": secrets.token_hex(8),
    }
    signing_input = f"{_encode(_HEADER)}.{_encode(claims)}"
    return f"{signing_input}.{_b64(_sign(secret, signing_input))}"


def verify_token(secret: str, token: str, now: float) -> Claims:
    """Checks a token's shape, signature and expiry and returns its claims.

    Raises:
        TokenError: With a message saying which check failed (never the token itself).
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("the bearer token is not a JWT (header.payload.signature)")
    header, payload, signature = parts
    expected = _sign(secret, f"{header}.{payload}")
    try:
        decoded_header = jsonbody.loads(_unb64(header))
        decoded_signature = _unb64(signature)
        claims = jsonbody.loads(_unb64(payload))
    except (ValueError, binascii.Error) as error:
        raise TokenError("the bearer token is not valid base64url JSON") from error
    if not isinstance(decoded_header, dict) or decoded_header.get("alg") != "HS256":
        raise TokenError("the bearer token is not signed with HS256")
    if not hmac.compare_digest(expected, decoded_signature):
        raise TokenError("the bearer token's signature does not verify")
    if not isinstance(claims, dict):
        raise TokenError("the bearer token's payload is not an object")
    try:
        result = Claims(
            tenant=str(claims["tenant"]),
            scopes=frozenset(str(scope) for scope in claims["scopes"]),
            expires_at=float(claims["exp"]),
            issued_at=float(claims["iat"]),
            token_id=str(claims["jti"]),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise TokenError(
            "the bearer token lacks usable tenant/scopes/exp/iat/jti claims"
        ) from error
    if result.expires_at <= now:
        raise TokenError("the bearer token has expired; generate a new API key")
    return result


def fingerprint(token: str) -> str:
    """A safe stand-in for a token in logs: the first 12 hex of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _sign(secret: str, signing_input: str) -> bytes:
    return hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()


def _encode(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
