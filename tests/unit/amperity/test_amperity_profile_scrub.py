"""A profile Amperity answers with a key in it: scrubbed where it is read, before any cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from amperity_signal.amperity import AmperityClient
from amperity_signal.config import IntegrationSettings
from amperity_signal.proxies import ProxyRules
from tests.support import base64_echoes, mint_keys, reveals_encoded

ClientFactory = Callable[..., AmperityClient]
REDACTED = "[REDACTED]"


def _echoing(attributes: Callable[[str], dict[str, Any]]) -> Callable[..., httpx.Response]:
    """A Profile API answering 200 with attributes built from the bearer token it was sent."""

    def answer(request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        body = {"profile_id": "p-123", "attributes": attributes(token), "links": {}}
        return httpx.Response(200, json=body)

    return answer


def _echoes(token: str) -> dict[str, Any]:
    """The token as an attribute may carry it: whole, in a sentence, nested, in part, encoded."""
    _, payload, signature = token.split(".")
    return {
        "Persona": token,
        "Note": f"Bearer {token}",
        "Nested": {"deeper": [f"key={token}", {"sig": signature}], "count": 3},
        "PayloadOnly": payload,
        "CutHead": token[:120],
        "Encoded": [f"Basic {echo}" for echo in base64_echoes(token)],
        token: "a key as an attribute name",
        "LifetimeTier": "Gold",
    }


async def test_a_profile_echoing_the_profile_key_has_it_replaced_in_every_attribute(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """The profile key in an attribute of a 200 answer, whole, in part or encoded, is gone.

    Error bodies were scrubbed but a profile was returned as answered: an attribute holding
    the key (an echo, or a value fed from events that carried it) reached the cache, the
    Enrich answer, the live records and, allowlisted, the browser.
    """
    keys = mint_keys()
    keyed = integration.model_copy(
        update={"api_key": SecretStr(keys.ingest), "profile_api_key": SecretStr(keys.profile)}
    )
    client = make_client(_echoing(_echoes), integration=keyed)
    found = [
        await client.lookup("email_sha256", "9f86d0", deadline=None),
        await client.get_profile("p-123", deadline=None),
    ]
    for profile in found:
        assert profile is not None
        attributes = profile.attributes
        assert attributes["Persona"] == REDACTED
        assert attributes["Note"] == f"Bearer {REDACTED}"
        assert attributes["Nested"] == {
            "deeper": [f"key={REDACTED}", {"sig": REDACTED}],
            "count": 3,
        }
        assert attributes["PayloadOnly"] == REDACTED
        assert attributes[REDACTED] == "a key as an attribute name"
        assert attributes["LifetimeTier"] == "Gold"
        text = repr(attributes)
        for segment in keys.profile.split(".")[1:]:
            pieces = {segment[i : i + 12] for i in range(len(segment) - 11)}
            assert [piece for piece in pieces if piece in text] == []
        assert not reveals_encoded(text, keys.profile)


async def test_a_profile_quoting_the_ingest_key_or_the_proxys_credentials_is_scrubbed_too(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """Every credential the client's requests carry is kept out of a profile's attributes."""
    proxies = ProxyRules.from_environ({"HTTPS_PROXY": "http://ops:Pr0xy-Passw0rd@proxy:3128"})
    ingest = integration.api_key.get_secret_value()
    client = make_client(
        _echoing(lambda _: {"Ingest": f"k {ingest}", "Proxy": "ops:Pr0xy-Passw0rd"}),
        proxies=proxies,
    )
    profile = await client.get_profile("p-123", deadline=None)
    assert profile is not None
    assert profile.attributes == {"Ingest": f"k {REDACTED}", "Proxy": REDACTED}
