"""Profile API over ASGI: lookups, gets, scopes, live updates, stitching, context."""

from __future__ import annotations

import asyncio

from amperity_signal.sandbox.identity import hash_email
from amperity_signal.sandbox.testing import (
    ACME,
    ACME_COLLECTION,
    ACME_EMPTY_KEYS_COLLECTION,
    ALICE_PROFILE,
    GLOBEX,
    GLOBEX_COLLECTION,
    GLOBEX_STREAM,
    InProcessSandbox,
)

ALICE_EMAIL = hash_email("alice@example.com")
PROFILE_FIELDS = {
    "collection_id",
    "profile_id",
    "attributes",
    "created_at",
    "updated_at",
    "ticked_at",
    "links",
}


async def test_lookup_by_email_returns_alice_with_location(sandbox: InProcessSandbox) -> None:
    """A GET lookup by email_sha256 answers 200, the wire shape and a Location header."""
    response = await sandbox.lookup(email_sha256=ALICE_EMAIL)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == PROFILE_FIELDS
    assert body["profile_id"] == ALICE_PROFILE
    assert body["attributes"]["Persona"] == "Value Hunter"
    assert body["created_at"] == "2025-09-14T10:22:31Z"
    assert response.headers["location"] == f"/prof/profiles/{ACME_COLLECTION}/{ALICE_PROFILE}"


async def test_post_lookup_takes_keys_from_the_body(sandbox: InProcessSandbox) -> None:
    """A POST lookup with {"keys": ...} finds the same profile as the GET."""
    response = await sandbox.client.post(
        f"/prof/lookup/{ACME_COLLECTION}/keychain",
        json={"keys": {"customer_id": "cust-1001"}, "enrich": False},
        headers=sandbox.headers("acme-profile"),
    )
    assert response.status_code == 200
    assert response.json()["profile_id"] == ALICE_PROFILE


async def test_a_post_lookup_not_sent_as_json_is_415(sandbox: InProcessSandbox) -> None:
    """A POST lookup without Content-Type: application/json is refused as Amperity does."""
    for content_type in ("text/plain", ""):
        response = await sandbox.client.post(
            f"/prof/lookup/{ACME_COLLECTION}/keychain",
            content=b'{"keys": {"customer_id": "cust-1001"}}',
            headers={**sandbox.headers("acme-profile"), "Content-Type": content_type},
        )
        assert response.status_code == 415, content_type
        assert "application/json" in response.json()["message"]


async def test_a_lookup_body_nested_too_deep_or_with_nan_is_400(
    sandbox: InProcessSandbox,
) -> None:
    """Bodies Python's json would crash on, or accept though not JSON, are refused with 400."""
    deep = b'{"keys": ' * 5_000 + b"{}" + b"}" * 5_000  # past the recursion limit, under 64 KB
    for body in (deep, b'{"keys": {}, "x": NaN}'):
        response = await sandbox.client.post(
            f"/prof/lookup/{ACME_COLLECTION}/keychain",
            content=body,
            headers={**sandbox.headers("acme-profile"), "Content-Type": "application/json"},
        )
        assert response.status_code == 400, body[:30]


async def test_lookup_without_keys_is_400(sandbox: InProcessSandbox) -> None:
    """A lookup with no keys (GET or POST) is 400."""
    assert (await sandbox.lookup()).status_code == 400
    response = await sandbox.client.post(
        f"/prof/lookup/{ACME_COLLECTION}/keychain",
        json={"keys": {}},
        headers=sandbox.headers("acme-profile"),
    )
    assert response.status_code == 400


async def test_lookups_404_for_no_match_and_keys_outside_linking_keys(
    sandbox: InProcessSandbox,
) -> None:
    """No match, a key not in linking_keys and an empty linking_keys collection are 404."""
    assert (await sandbox.lookup(email_sha256="0" * 64)).status_code == 404
    assert (await sandbox.lookup(account_id="cust-1001")).status_code == 404
    response = await sandbox.lookup(ACME_EMPTY_KEYS_COLLECTION, email_sha256=ALICE_EMAIL)
    assert response.status_code == 404


async def test_get_profile_by_id_and_unknowns_404(sandbox: InProcessSandbox) -> None:
    """GET by id answers the profile; unknown profile or collection is 404."""
    headers = sandbox.headers("acme-profile")
    ok = await sandbox.client.get(
        f"/prof/profiles/{ACME_COLLECTION}/{ALICE_PROFILE}", headers=headers
    )
    assert ok.status_code == 200
    assert set(ok.json()) == PROFILE_FIELDS
    empty_keys = await sandbox.client.get(
        f"/prof/profiles/{ACME_EMPTY_KEYS_COLLECTION}/p-e11e00000005", headers=headers
    )
    assert empty_keys.status_code == 200
    missing = await sandbox.client.get(
        f"/prof/profiles/{ACME_COLLECTION}/p-000000000000", headers=headers
    )
    assert missing.status_code == 404
    nope = await sandbox.client.get(f"/prof/profiles/apc-nope/{ALICE_PROFILE}", headers=headers)
    assert nope.status_code == 404


async def test_a_profile_call_without_a_key_is_401_naming_the_bearer_scheme(
    sandbox: InProcessSandbox,
) -> None:
    """HTTP requires WWW-Authenticate on a 401; a 403 (a key without the scope) has none."""
    unauthenticated = await sandbox.client.get(
        f"/prof/profiles/{ACME_COLLECTION}/{ALICE_PROFILE}", headers={"Amperity-Tenant": ACME}
    )
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    forbidden = await sandbox.client.get(
        f"/prof/profiles/{ACME_COLLECTION}/{ALICE_PROFILE}", headers=sandbox.headers("acme-ingest")
    )
    assert forbidden.status_code == 403
    assert "www-authenticate" not in forbidden.headers


async def test_ingest_key_on_the_profile_api_is_403(sandbox: InProcessSandbox) -> None:
    """The Streaming Ingest key is refused with 403 on lookups and gets."""
    headers = sandbox.headers("acme-ingest")
    lookup = await sandbox.client.get(
        f"/prof/lookup/{ACME_COLLECTION}/keychain", params={"customer_id": "x"}, headers=headers
    )
    get = await sandbox.client.get(
        f"/prof/profiles/{ACME_COLLECTION}/{ALICE_PROFILE}", headers=headers
    )
    assert (lookup.status_code, get.status_code) == (403, 403)


async def test_tenants_cannot_read_each_others_collections(sandbox: InProcessSandbox) -> None:
    """Globex's profile key reads globex's alice, and gets 404 for acme's collection."""
    headers = sandbox.headers("globex-profile", GLOBEX)
    own = await sandbox.client.get(
        f"/prof/lookup/{GLOBEX_COLLECTION}/keychain",
        params={"email_sha256": ALICE_EMAIL},
        headers=headers,
    )
    assert own.json()["attributes"]["FavoriteBrand"] == "Globex Home"
    other = await sandbox.client.get(
        f"/prof/lookup/{ACME_COLLECTION}/keychain",
        params={"email_sha256": ALICE_EMAIL},
        headers=headers,
    )
    assert other.status_code == 404


async def test_profile_changes_only_after_the_update_is_applied(sandbox: InProcessSandbox) -> None:
    """A 202 leaves the profile unchanged until the pending update is flushed."""
    event = {"source": "DATAFLY", "type": "purchase", "user_id": "cust-1001", "value": 600}
    assert (await sandbox.post_event(event)).status_code == 202
    before = (await sandbox.lookup(customer_id="cust-1001")).json()
    assert before["attributes"]["OrderCount"] == 12
    sandbox.clock.now += 5
    assert await sandbox.flush() == 1
    after = (await sandbox.lookup(customer_id="cust-1001")).json()
    assert after["attributes"]["OrderCount"] == 13
    assert after["attributes"]["LifetimeOrderValue"] == 2080.5
    assert after["attributes"]["Persona"] == "Loyal Big Spender"
    assert after["attributes"]["LifetimeTier"] == "Gold"
    assert after["attributes"]["LastEventType"] == "purchase"
    assert after["updated_at"] != before["updated_at"]


async def test_a_negative_order_value_gives_a_bronze_profile(sandbox: InProcessSandbox) -> None:
    """A purchase with a negative value (a refund) is applied; the new profile is Bronze."""
    event = {"source": "DATAFLY", "type": "purchase", "cookieid": "anon_refund", "value": -20}
    assert (await sandbox.post_event(event)).status_code == 202
    assert await sandbox.flush() == 1
    response = await sandbox.lookup(device_cookie="anon_refund")
    assert response.status_code == 200
    attributes = response.json()["attributes"]
    assert (attributes["LifetimeOrderValue"], attributes["LifetimeTier"]) == (-20.0, "Bronze")


async def test_order_values_that_are_not_finite_numbers_count_as_no_value(
    sandbox: InProcessSandbox,
) -> None:
    """A value of "nan", "1e999", 10**400 or a sum past the float range: lookups still 200."""
    values: list[object] = ["nan", "-Infinity", "1e999", 10**400, 1e308, 1e308]
    for value in values:
        event = {"source": "DATAFLY", "type": "purchase", "cookieid": "anon_inf", "value": value}
        assert (await sandbox.post_event(event)).status_code == 202
    assert await sandbox.flush() == len(values)
    response = await sandbox.lookup(device_cookie="anon_inf")
    assert response.status_code == 200
    attributes = response.json()["attributes"]
    assert (attributes["OrderCount"], attributes["LifetimeOrderValue"]) == (6, 1e308)


async def test_updates_apply_by_themselves_after_the_delay() -> None:
    """With a short profile_delay the update lands without a flush."""
    box = InProcessSandbox.build(profile_delay=0.05)
    async with box.client:
        event = {"source": "DATAFLY", "type": "page", "cookieid": "anon_timer"}
        await box.post_event(event)
        assert box.state.pending_updates() == 1
        for _ in range(100):
            if box.state.pending_updates() == 0:
                break
            await asyncio.sleep(0.01)
        assert (await box.lookup(device_cookie="anon_timer")).status_code == 200
    box.state.close()


async def test_events_sharing_an_identifier_stitch_into_one_profile(
    sandbox: InProcessSandbox,
) -> None:
    """Anonymous events then an identify sharing the cookie make one profile found both ways."""
    for event_type in ("view_item", "add_to_cart", "view_item"):
        await sandbox.post_event({"source": "DATAFLY", "type": event_type, "cookieid": "anon_s1"})
    identify = {
        "source": "DATAFLY",
        "type": "identify",
        "cookieid": "anon_s1",
        "email": "Sam@Example.com",
    }
    await sandbox.post_event(identify)
    await sandbox.flush()
    by_cookie = (await sandbox.lookup(device_cookie="anon_s1")).json()
    by_email = (await sandbox.lookup(email_sha256=hash_email("sam@example.com"))).json()
    assert by_cookie["profile_id"] == by_email["profile_id"]
    assert by_cookie["profile_id"].startswith("p-")
    assert len(by_cookie["profile_id"]) == 14
    assert by_cookie["attributes"]["EventCount"] == 4
    assert by_cookie["attributes"]["Persona"] == "Window Shopper"


async def test_an_event_linking_two_profiles_merges_them(sandbox: InProcessSandbox) -> None:
    """An event carrying identifiers of two profiles merges them into the older one."""
    await sandbox.post_event({"source": "DATAFLY", "type": "page", "cookieid": "anon_new"})
    await sandbox.flush()
    newcomer = (await sandbox.lookup(device_cookie="anon_new")).json()["profile_id"]
    await sandbox.post_event(
        {"source": "DATAFLY", "type": "login", "cookieid": "anon_new", "user_id": "cust-1001"}
    )
    await sandbox.flush()
    merged = (await sandbox.lookup(device_cookie="anon_new")).json()
    assert merged["profile_id"] == ALICE_PROFILE
    assert "anon_new" in merged["links"]["device_cookie"]
    assert merged["attributes"]["EventCount"] == 86 + 2
    profiles = (
        await sandbox.client.get("/_sandbox/profiles", params={"collection": ACME_COLLECTION})
    ).json()
    assert newcomer not in {p["profile_id"] for p in profiles["profiles"]}


async def test_context_parameters_add_context_dependent_attributes(
    sandbox: InProcessSandbox,
) -> None:
    """enrich=true with pageCategory/cartValue adds NextBestOffer etc.; without them it does not."""
    url = f"/prof/profiles/{ACME_COLLECTION}/{ALICE_PROFILE}"
    headers = sandbox.headers("acme-profile")
    plain = (await sandbox.client.get(url, params={"enrich": "true"}, headers=headers)).json()
    assert "NextBestOffer" not in plain["attributes"]
    assert plain["attributes"]["PredictedLifetimeValue"] == 2220.75
    shoes = await sandbox.client.get(
        url, params={"enrich": "true", "pageCategory": "shoes"}, headers=headers
    )
    assert shoes.json()["attributes"]["NextBestOffer"] == "shoes-10-off"
    assert shoes.json()["attributes"]["HeroVariant"] == "hero-premium"
    cart = await sandbox.client.get(
        url, params={"enrich": "true", "pageCategory": "shoes", "cartValue": "120"}, headers=headers
    )
    assert cart.json()["attributes"]["NextBestOffer"] == "free-shipping"
    no_enrich = await sandbox.client.get(url, params={"pageCategory": "shoes"}, headers=headers)
    assert "NextBestOffer" not in no_enrich.json()["attributes"]


async def test_ingest_and_profile_calls_share_one_rate_limit_per_tenant() -> None:
    """The notes' 500/s is per tenant for the whole Real-time API.

    Events and profile calls draw on one window, whichever key they carry; another tenant
    has a window of its own.
    """
    box = InProcessSandbox.build(rate_limit_per_second=3)
    profile = f"/prof/profiles/{ACME_COLLECTION}/{ALICE_PROFILE}"
    event = {"source": "DATAFLY", "type": "view_item"}
    async with box.client:
        admitted = [
            (await box.post_event(event)).status_code,
            (await box.lookup(customer_id="cust-1001")).status_code,
            (await box.client.get(profile, headers=box.headers("acme-profile"))).status_code,
        ]
        throttled = await box.post_event(event)
        other_tenant = await box.client.post(
            f"/prof/events/{GLOBEX_STREAM}",
            json=event,
            headers=box.headers("globex-ingest", GLOBEX),
        )
        box.clock.now += 1.0
        next_second = await box.client.get(profile, headers=box.headers("acme-profile"))
    box.state.close()

    assert admitted == [202, 200, 200]
    assert throttled.status_code == 429
    assert set(throttled.json()) == {"status", "message", "request_id", "trace_id"}
    assert other_tenant.status_code == 202
    assert next_second.status_code == 200
