"""Profile API: lookup by linking key and get by id.

Checks in order: 401/403/429 (see :mod:`.auth`) → 404 unknown tenant or collection →
(lookup) 415 a POST whose ``Content-Type`` is not ``application/json`` → 400 no keys /
malformed POST body → 404 a key outside the collection's
``linking_keys`` → 404 no profile matches → 200 with the profile (lookup: plus a
``Location`` header). ``enrich=true`` adds ``PredictedLifetimeValue``; on GET by id, any
further query parameter is a personalisation context and adds the context-dependent
attributes of :func:`amperity_signal.sandbox.rules.context_attributes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from amperity_signal.sandbox import jsonbody
from amperity_signal.sandbox.auth import authorize
from amperity_signal.sandbox.errors import RefusalError
from amperity_signal.sandbox.profiles import CollectionProfiles, Profile
from amperity_signal.sandbox.responses import error
from amperity_signal.sandbox.rules import context_attributes
from amperity_signal.sandbox.state import SandboxState
from amperity_signal.sandbox.tokens import PROFILE_READ

ENRICH_PARAMETER = "enrich"
PREDICTED_VALUE_FACTOR = 1.5


class ProfileRoutes:
    """The lookup and get endpoints, bound to the sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def routes(self) -> list[Route]:
        """The Starlette routes of the Profile API."""
        return [
            Route("/prof/lookup/{collection_id}/keychain", self.lookup, methods=["GET", "POST"]),
            Route("/prof/profiles/{collection_id}/{profile_id}", self.get_profile, methods=["GET"]),
        ]

    async def lookup(self, request: Request) -> Response:
        """Finds the profile linked to the first matching key (query or POSTed ``keys``)."""
        try:
            collection = self._collection(request)
            keys, enrich = await _lookup_keys(request)
            profile = _find(collection, keys)
        except RefusalError as refusal:
            return error(request, refusal.status, refusal.message)
        location = f"/prof/profiles/{profile.collection_id}/{profile.profile_id}"
        return JSONResponse(
            profile.to_json(_enrichment(profile) if enrich else None),
            headers={"Location": location},
        )

    async def get_profile(self, request: Request) -> Response:
        """Returns a profile by id, enriched and personalised on request."""
        try:
            collection = self._collection(request)
        except RefusalError as refusal:
            return error(request, refusal.status, refusal.message)
        profile_id = request.path_params["profile_id"]
        profile = collection.get(profile_id)
        if profile is None:
            return error(request, 404, f"no profile {profile_id!r} in this collection")
        query = request.query_params
        if query.get(ENRICH_PARAMETER, "").lower() != "true":
            return JSONResponse(profile.to_json())
        extra = _enrichment(profile)
        context = {k: v for k, v in query.items() if k != ENRICH_PARAMETER}
        if context:
            extra.update(context_attributes(profile.attributes, context))
        return JSONResponse(profile.to_json(extra))

    def _collection(self, request: Request) -> CollectionProfiles:
        claims = authorize(self._state, request, PROFILE_READ)
        collection_id = request.path_params["collection_id"]
        collection = self._state.collection(claims.tenant, collection_id)
        if collection is None:
            raise RefusalError(404, f"no collection {collection_id!r} for tenant {claims.tenant!r}")
        return collection


async def _lookup_keys(request: Request) -> tuple[dict[str, str], bool]:
    """``(keys, enrich)`` of a lookup, from the query (GET) or the JSON body (POST)."""
    if request.method == "POST":
        jsonbody.require_json_media_type(request.headers.get("content-type", ""))
        keys, enrich = _keys_from_body(await request.body())
    else:
        query = request.query_params
        keys = {k: v for k, v in query.items() if k != ENRICH_PARAMETER}
        enrich = query.get(ENRICH_PARAMETER, "").lower() == "true"
    if not keys:
        raise RefusalError(400, "give at least one linking key, e.g. ?email_sha256=...")
    return keys, enrich


def _find(collection: CollectionProfiles, keys: dict[str, str]) -> Profile:
    """The profile linked to the first key (in the order given) that matches one."""
    linking_keys = collection.collection.linking_keys
    outside = sorted(key for key in keys if key not in linking_keys)
    if outside:
        raise RefusalError(
            404, f"{outside} not in the collection's linking_keys {list(linking_keys)}"
        )
    for key, value in keys.items():
        profile = collection.find(key, value)
        if profile is not None:
            return profile
    raise RefusalError(404, "no profile matches these keys")


def _enrichment(profile: Profile) -> dict[str, Any]:
    """Attributes only an ``enrich=true`` request gets."""
    value = profile.stats.lifetime_value
    return {"PredictedLifetimeValue": round(value * PREDICTED_VALUE_FACTOR, 2)}


def _keys_from_body(body: bytes) -> tuple[dict[str, str], bool]:
    """``(keys, enrich)`` from a POSTed lookup.

    Raises:
        RefusalError: 400 when the body is not ``{"keys": {name: value}, "enrich": bool}``.
    """
    try:
        parsed = jsonbody.loads(body) if body.strip() else {}
    except ValueError as problem:
        raise RefusalError(
            400, f'the body is not JSON ({problem}): send {{"keys": {{"email_sha256": "..."}}}}'
        ) from problem
    if not isinstance(parsed, Mapping):
        raise RefusalError(400, 'send a JSON object: {"keys": {...}, "enrich": false}')
    keys = parsed.get("keys", {})
    if not isinstance(keys, Mapping) or not all(isinstance(v, str) for v in keys.values()):
        raise RefusalError(400, '"keys" must be an object of string values')
    return {str(k): v for k, v in keys.items()}, parsed.get("enrich") is True
