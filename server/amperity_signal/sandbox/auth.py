"""Authentication, permission and rate-limit checks shared by the ``/prof`` routes.

Order (the first failing check answers): 401 token missing/malformed/badly signed/expired →
403 token for another tenant than ``Amperity-Tenant`` → 403 token without the scope →
429 tenant over its rate limit. Only requests that pass the 403 checks count against the
tenant's rate limit, at the time the request arrived (the time the inspector shows).
"""

from __future__ import annotations

from starlette.requests import Request

from amperity_signal.sandbox.errors import RefusalError
from amperity_signal.sandbox.responses import arrived_at
from amperity_signal.sandbox.state import SandboxState
from amperity_signal.sandbox.tokens import (
    PROFILE_READ,
    STREAM_WRITE,
    Claims,
    TokenError,
    verify_token,
)

_SCOPE_HINTS = {
    STREAM_WRITE: "generate a Streaming Ingest key (Streaming Ingest Write Access)",
    PROFILE_READ: "generate a Profile API key (Profile Read Access)",
}


def authorize(state: SandboxState, request: Request, scope: str) -> Claims:
    """The token's claims when the request may proceed.

    Raises:
        RefusalError: 401, 403 or 429, with the reason.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RefusalError(401, "send Authorization: Bearer <API key>")
    try:
        claims = verify_token(state.data.signing_secret, token.strip(), state.clock())
    except TokenError as problem:
        raise RefusalError(401, str(problem)) from problem
    if request.headers.get("amperity-tenant") != claims.tenant:
        raise RefusalError(
            403,
            f"the API key is for tenant {claims.tenant!r}: send Amperity-Tenant: {claims.tenant}",
        )
    if not claims.allows(scope):
        raise RefusalError(403, f"the API key lacks {scope}: {_SCOPE_HINTS[scope]}")
    arrival = arrived_at(request.scope)
    if not state.limiter.admit(claims.tenant, state.clock() if arrival is None else arrival):
        raise RefusalError(429, f"over {state.limiter.limit} requests per second for this tenant")
    return claims
