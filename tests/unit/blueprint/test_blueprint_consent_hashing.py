"""map_event: the built-in consent field and the hash_identifiers choice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from amperity_signal.blueprint import Blueprint, BlueprintOverrides, load_blueprint, map_event
from amperity_signal.enrich.identifiers import prepare
from amperity_signal.sandbox.identity import hash_phone as sandbox_hash_phone

EventFactory = Callable[..., dict[str, Any]]


def test_consent_is_nested_exactly_as_the_spec_shows(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """A full context.consent is forwarded as the spec's nested consent object."""
    consent = {
        "analytics": True,
        "marketing": False,
        "functional": True,
        "categories": {"C0001": True, "C0002": False, "ad_personalization": False},
        "google": {
            "ad_storage": "denied",
            "ad_user_data": "denied",
            "ad_personalization": "denied",
            "analytics_storage": "granted",
        },
    }
    event = make_event("view_item", context={"consent": consent})
    assert map_event(retail, event, source_value="S").payload["consent"] == consent


def test_partial_consent_keeps_only_the_parts_that_were_set(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """Absent flags, empty categories and unset google signals stay absent (no nulls)."""
    event = make_event(
        "view_item",
        context={
            "consent": {
                "marketing": False,
                "categories": {},
                "google": {"analytics_storage": "granted", "ad_storage": ""},
            }
        },
    )
    payload = map_event(retail, event, source_value="S").payload
    assert payload["consent"] == {"marketing": False, "google": {"analytics_storage": "granted"}}


@pytest.mark.parametrize("context", [{}, {"consent": {}}, {"consent": {"categories": {}}}])
def test_absent_consent_leaves_the_field_out(
    retail: Blueprint, make_event: EventFactory, context: dict[str, Any]
) -> None:
    """A visitor with no CMP interaction gets no consent field at all."""
    assert (
        "consent"
        not in map_event(retail, make_event("x", context=context), source_value="S").payload
    )


def test_consent_survives_overrides_and_every_handler(make_event: EventFactory) -> None:
    """Consent is built in: handlers and global overrides never strip it."""
    overrides = BlueprintOverrides.model_validate(
        {"global_mappings": [{"source": "context.ip", "target": "ip_address"}]}
    )
    blueprint = load_blueprint("retail", overrides)
    for name in ("view_item", "Unknown Thing"):
        event = make_event(name, context={"consent": {"analytics": False}})
        assert map_event(blueprint, event, source_value="S").payload["consent"] == {
            "analytics": False
        }


@pytest.mark.parametrize(
    ("mode", "present", "absent"),
    [
        ("plain", {"email", "phone"}, {"email_sha256", "phone_sha256"}),
        ("hashed", {"email_sha256", "phone_sha256"}, {"email", "phone"}),
        ("both", {"email", "phone", "email_sha256", "phone_sha256"}, set()),
    ],
)
def test_hash_identifiers_chooses_plain_hashed_or_both(
    make_event: EventFactory, mode: str, present: set[str], absent: set[str]
) -> None:
    """hash_identifiers sends email/phone plain, as *_sha256 only, or both."""
    blueprint = load_blueprint(
        "retail", BlueprintOverrides.model_validate({"hash_identifiers": mode})
    )
    event = make_event("x", traits={"email": "Jane@Example.com", "phone": "0044 7700-900123"})
    payload = map_event(blueprint, event, source_value="S").payload
    assert present <= payload.keys()
    assert not absent & payload.keys()


@pytest.mark.parametrize("name", ["Newsletter Signup", "Wished"])
def test_hashed_never_passes_the_plain_email_or_phone_through_as_properties(
    make_event: EventFactory, name: str
) -> None:
    """With hashed, properties.email/phone go out only as *_sha256, not as prop_email."""
    overrides = BlueprintOverrides.model_validate(
        {
            "hash_identifiers": "hashed",
            "handlers": {
                "wish": {"type": "wish", "events": ["Wished"], "include_properties": True}
            },
        }
    )
    blueprint = load_blueprint("retail", overrides)
    properties = {"email": "Jane@Example.com", "phone": "+44 7700 900123", "plan": "gold"}
    payload = map_event(
        blueprint, make_event(name, properties=properties), source_value="S"
    ).payload
    assert payload["email_sha256"] == hashlib.sha256(b"jane@example.com").hexdigest()
    assert "phone_sha256" in payload
    assert payload["plan"] == "gold"
    sent = json.dumps(payload)
    assert "Jane@Example.com" not in sent
    assert "7700" not in sent


def test_phone_is_hashed_after_e164_normalisation(make_event: EventFactory) -> None:
    """phone_sha256 is the SHA-256 of the E.164 form, email_sha256 of the lower-cased email."""
    blueprint = load_blueprint(
        "retail", BlueprintOverrides.model_validate({"hash_identifiers": "hashed"})
    )
    event = make_event("x", traits={"email": " Jane@Example.com", "phone": "0044 7700-900123"})
    payload = map_event(blueprint, event, source_value="S").payload
    assert payload["phone_sha256"] == hashlib.sha256(b"+447700900123").hexdigest()
    assert payload["email_sha256"] == hashlib.sha256(b"jane@example.com").hexdigest()


@pytest.mark.parametrize(
    "phone",
    [
        "+44 7700 900123",
        "0044 7700-900123",
        "07700 900123",
        "+1 (555) 010-0199 ext. 12",
        "555.0100",
    ],
)
def test_the_payload_and_the_lookups_hash_a_phone_the_same_way(
    make_event: EventFactory, phone: str
) -> None:
    """An event's phone_sha256 is what a phone linking key looks up and the sandbox files.

    National numbers and extensions included: one normaliser for all three.
    """
    blueprint = load_blueprint(
        "retail", BlueprintOverrides.model_validate({"hash_identifiers": "both"})
    )
    payload = map_event(blueprint, make_event("x", traits={"phone": phone}), source_value="S")
    looked_up = prepare("phone", "sha256", phone)
    assert payload.payload["phone_sha256"] == looked_up
    assert sandbox_hash_phone(payload.payload["phone"]) == looked_up


def test_an_already_hashed_email_is_not_hashed_twice(make_event: EventFactory) -> None:
    """A site that sends a sha256 digest as the email gets that digest as email_sha256."""
    digest = hashlib.sha256(b"jane@example.com").hexdigest()
    blueprint = load_blueprint(
        "retail", BlueprintOverrides.model_validate({"hash_identifiers": "hashed"})
    )
    payload = map_event(
        blueprint, make_event("x", traits={"email": digest}), source_value="S"
    ).payload
    assert payload["email_sha256"] == digest
