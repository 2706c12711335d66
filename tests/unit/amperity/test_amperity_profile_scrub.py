"""A profile Amperity answers with a key in it: scrubbed where it is read, before any cache."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from amperity_signal.amperity import AmperityClient
from amperity_signal.config import IntegrationSettings, Settings, settings_from_dict
from amperity_signal.errors import AmperityError
from amperity_signal.proxies import ProxyRules
from tests.support import base64_echoes, integration_dict, mint_keys, reveals_encoded

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


def _service_secrets() -> tuple[Settings, dict[str, str]]:
    """Settings of two integrations with an admin token and a Redis password; the canaries."""
    other = mint_keys()
    canaries = {
        "admin": f"canary-admin-{uuid.uuid4().hex}",
        "pipeline": f"pk_canary_{uuid.uuid4().hex}",
        "other_pipeline": f"pk_other_{uuid.uuid4().hex}",
        "password": f"canary-redis-{uuid.uuid4().hex[:12]}",
        "other_key": other.profile,
    }
    settings = settings_from_dict(
        {
            "server": {"admin_token": canaries["admin"]},
            "cache": {
                "backend": "redis",
                "redis_url": f"redis://:{canaries['password']}@127.0.0.1:6379/0",
            },
            "integrations": [
                integration_dict(
                    "http://sandbox.test", mint_keys(), pipeline_key=canaries["pipeline"]
                ),
                integration_dict(
                    "http://sandbox.test",
                    other,
                    integration_id="other",
                    pipeline_key=canaries["other_pipeline"],
                ),
            ],
        },
        {},
    )
    return settings, canaries


async def test_a_profile_quoting_any_secret_the_service_holds_has_it_replaced(
    make_client: ClientFactory,
) -> None:
    """The admin token, pipeline keys, another integration's key, a Redis password: all gone.

    Only the keys the client sent were scrubbed from a profile, while logs and live records
    were scrubbed of every secret: an attribute fed from events that carried the admin
    token or a pipeline key reached the cache, the Enrich answer and, allowlisted, the page.
    """
    settings, canaries = _service_secrets()
    signature = canaries["other_key"].split(".")[2]
    admin_basic = base64.b64encode(f"ops:{canaries['admin']}".encode()).decode()
    attributes = {
        "Admin": canaries["admin"],
        "AdminBasic": f"Basic {admin_basic}",
        "Pipeline": f"key={canaries['pipeline']}&x=1",
        "OtherPipeline": [canaries["other_pipeline"]],
        "Password": {"said": f"AUTH {canaries['password']} failed"},
        "OtherSignature": signature,
        # Cut: no whole secret, but 12 characters and more of another integration's key.
        "OtherSignatureCut": f"sig {signature[:30]}",
        canaries["admin"]: "the token as an attribute name",
        "LifetimeTier": "Gold",
        "Note": "an ordinary sentence, left as it is: 0123456789abcdef",
    }
    client = make_client(
        _echoing(lambda _: attributes),
        integration=settings.integrations[0],
        redact=settings.secret_values(),
    )
    profile = await client.get_profile("p-123", deadline=None)

    assert profile is not None
    found = dict(profile.attributes)
    # Encoded, the characters sharing bits with "ops:" and the padding give nothing away.
    assert REDACTED in found.pop("AdminBasic")
    assert found == {
        "Admin": REDACTED,
        "Pipeline": f"key={REDACTED}&x=1",
        "OtherPipeline": [REDACTED],
        "Password": {"said": f"AUTH {REDACTED} failed"},
        "OtherSignature": REDACTED,
        "OtherSignatureCut": f"sig {REDACTED}",
        REDACTED: "the token as an attribute name",
        "LifetimeTier": "Gold",
        "Note": "an ordinary sentence, left as it is: 0123456789abcdef",
    }
    text = repr(profile.attributes)
    pieces = {signature[i : i + 12] for i in range(len(signature) - 11)}
    assert [piece for piece in pieces if piece in text] == []
    for secret in canaries.values():
        assert not reveals_encoded(text, secret)


async def test_an_error_body_quoting_a_pipeline_key_or_the_admin_token_is_scrubbed(
    make_client: ClientFactory,
) -> None:
    """Amperity's 400 quoting what an event carried: the error names neither secret."""
    settings, canaries = _service_secrets()
    said = f"bad field note={canaries['pipeline']} near {canaries['admin']}"

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"message": said, "request_id": canaries["admin"]})

    client = make_client(
        refuse, integration=settings.integrations[0], redact=settings.secret_values()
    )
    with pytest.raises(AmperityError) as caught:
        await client.post_event({"event": "x"}, deadline=None)

    error = caught.value
    shown = f"{error} {error.message} {error.metadata}"
    assert f"note={REDACTED} near {REDACTED}" in shown
    assert canaries["pipeline"] not in shown and canaries["admin"] not in shown


async def test_a_proxy_hosts_name_in_a_profile_is_left_its_credentials_are_not(
    make_client: ClientFactory,
) -> None:
    """Only a secret shaped like a JWT is matched in part: a proxy URL's host is no secret.

    A proxy URL with three dot-separated parts looked like a JWT to the key matcher, whose
    12-character stretches of "internalnetwork" would replace the word in any attribute.
    """
    proxy = "http://ops:Pr0xy-Passw0rd@proxy.internalnetwork.com:3128"
    proxies = ProxyRules.from_environ({"HTTPS_PROXY": proxy})
    attributes = {"Note": "see the internalnetwork status page", "Echo": f"via {proxy}"}
    client = make_client(_echoing(lambda _: attributes), proxies=proxies, redact=proxies.secrets)
    profile = await client.get_profile("p-123", deadline=None)

    assert profile is not None
    assert profile.attributes == {
        "Note": "see the internalnetwork status page",
        "Echo": f"via {REDACTED}",
    }


async def test_a_secret_too_short_to_scrub_is_left_even_when_shaped_like_a_jwt(
    make_client: ClientFactory,
) -> None:
    """Under ``logs.SCRUB_MIN_LENGTH`` a secret is left alone, dotted in three like a JWT or not.

    Replacing "a.b.c" would replace any such text in every profile; config already refuses
    a key that short, so only a word of the profile would be lost.
    """
    attributes = {"Version": "app a.b.c build short", "Tier": "Gold"}
    client = make_client(_echoing(lambda _: attributes), redact=["a.b.c", "short"])
    profile = await client.get_profile("p-123", deadline=None)

    assert profile is not None
    assert profile.attributes == attributes
