"""Personalisation context sources: what the visitor is doing, never who they are.

A context value goes into the query string of every profile GET; the API notes keep
identifiers, even hashed, out of URLs and access logs (lookups POST them in a body).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w
from pydantic import ValidationError

from amperity_signal.blueprint import load_blueprint
from amperity_signal.config import ContextMapping, settings_from_dict
from amperity_signal.config_checks import identity_field
from amperity_signal.enrich.identifiers import SOURCE_PATHS
from amperity_signal.errors import ConfigError
from tests.unit.cli_support import integration, run_cli

PROFILE = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6InByb2ZpbGUifQ.cHJvZmlsZS1jYW5hcnktNjc4OTA"
# The spec's Identity table, by the targets the global blueprint maps it to.
IDENTITY_TARGETS = {
    "cookieid",
    "anonymous_id",
    "canonical_id",
    "user_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "amperity_id",
    "ip_address",
    "user_agent",
}
SPEC_EXAMPLE = [
    {"source": "properties.category", "target": "pageCategory"},
    {"source": "properties.value", "target": "cartValue"},
    {"source": "context.page.path", "target": "pagePath"},
    {"source": "partner_attrs.amperity.LifetimeTier", "target": "tierHint"},
]


def personalised(*mappings: dict[str, str]) -> dict[str, Any]:
    """A configuration with one personalised integration, ``acme-web``, using ``mappings``."""
    table = integration(
        id="acme-web",
        profile_api_key=PROFILE,
        profile_collection_id="apc-vPsQheAm",
        linking_keys=[{"source": "email", "key": "email_sha256", "hash": "sha256"}],
        personalisation_enabled=True,
        personalisation_context_mappings=[*SPEC_EXAMPLE, *mappings],
    )
    return {"integrations": [table]}


def identity_paths() -> list[str]:
    """Every path linking keys read, and every path of the blueprint's identity mappings."""
    paths = {
        field if key is None else f"{field}.{key}"
        for p in SOURCE_PATHS.values()
        for field, key in p
    }
    for mapping in load_blueprint("retail").global_mappings:
        spec = mapping.spec
        source = spec.source or ""  # a mapping with a default alone reads nothing
        if mapping.target in IDENTITY_TARGETS or source.startswith("context.vendor_ids."):
            paths.update(path for path in [source, *spec.fallbacks] if path)
    return sorted(paths)


def test_an_email_as_context_is_refused_naming_the_integration_mapping_and_fix() -> None:
    """traits.email -> emailHint would put the raw email in every profile GET's URL."""
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(personalised({"source": "traits.email", "target": "emailHint"}), {})

    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.startswith(
        "integrations[0].personalisation_context_mappings[4].source: 'traits.email' is an "
        "email address, an identifier of the visitor: mapping it to 'emailHint', integration "
        "'acme-web' would send it in the query string of every profile call"
    )
    assert "even hashed" in problem
    assert "Fix: personalise by a page or context attribute" in problem
    assert "identifiers go in linking_keys only" in problem


def test_the_spec_examples_context_sources_load() -> None:
    """The spec's four mappings (category, cart, page path, tier) are context, not identity."""
    settings = settings_from_dict(personalised(), {})
    mappings = settings.integrations[0].personalisation_context_mappings
    assert [m.source for m in mappings] == [m["source"] for m in SPEC_EXAMPLE]


@pytest.mark.parametrize("path", identity_paths())
def test_every_identifier_the_blueprint_or_a_linking_key_reads_is_refused(path: str) -> None:
    """SOURCE_PATHS, and the global identity and vendor id mappings: none may be context."""
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(personalised({"source": path, "target": "hint"}), {})
    (problem,) = [str(p) for p in caught.value.problems]
    assert f"'{path}' is " in problem and "an identifier of the visitor" in problem


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("traits.email_sha256", "an email address"),
        ("properties.hashed_email", "an email address"),
        ("traits.emailSHA256", "an email address"),
        ("properties.phone_hash", "a phone number"),
        ("traits.userId", "a user id"),
        ("properties.anonymousId", "a device or anonymous id"),
        ("properties.customer_id", "a user id"),
        ("partner_attrs.amperity.Email", "an email address"),
        ("context.vendor_ids", "an advertising click id or cookie (a vendor id)"),
        ("properties.user.email", "an email address"),
        ("context.userAgent", "the browser's user agent"),
        ("context.device.advertising_id", "a device's advertising id"),
        ("properties.mobile_number", "a phone number"),
        ("traits.mobile", "a phone number"),
        ("traits.mobilePhone", "a phone number"),
    ],
)
def test_hashed_and_differently_spelled_identifiers_are_refused(path: str, what: str) -> None:
    """A digest identifies the visitor as well as the value; userId is user_id."""
    assert identity_field(path) == what


@pytest.mark.parametrize(
    "path",
    [
        "properties.phone_model",
        "properties.email_opt_in",
        "context.page.title",
        "properties.items.0.category",
        "context.geo.country",
        "partner_attrs.amperity.Persona",
        "context.device.mobile",
        "properties.device.mobile",
    ],
)
def test_context_that_only_mentions_an_identifier_is_not_refused(path: str) -> None:
    """A phone model or an opt-in flag names no visitor: it stays a context source."""
    assert identity_field(path) is None


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("context.session.id", "a session id"),
        ("properties.sessionId", "a session id"),
        ("context.device.id", "a device or anonymous id"),
        ("context.user.id", "a user id"),
        ("context.user.id_sha256", "a user id"),
        ("traits.customer.id", "a user id"),
        ("traits.id", "a user id"),  # Segment's user id (until session 27 taken)
        ("context.traits.id", "a user id"),
        ("context.traits.ID_sha256", "a user id"),
        ("properties.anonymous.id", "a device or anonymous id"),
        ("properties.visitor_id", "a device or anonymous id"),
        ("context.profile.id", "an Amperity profile id"),
        ("partner_attrs.amperity.ID", "an Amperity profile id"),
    ],
)
def test_an_id_under_a_part_naming_an_identifier_is_refused(path: str, what: str) -> None:
    """context.device.id is context.deviceId: the parent says whose id it is."""
    assert identity_field(path) == what


@pytest.mark.parametrize(
    "path", ["properties.id", "properties.product.id", "properties.items.0.id", "context.page.id"]
)
def test_an_id_under_a_part_naming_no_identifier_stays_a_context_source(path: str) -> None:
    """A product's or a page's id names what the visitor looks at, not who they are."""
    assert identity_field(path) is None


def test_an_identifier_is_refused_by_the_model_too() -> None:
    """Settings built without check-config (tests, embedders) refuse it as well."""
    with pytest.raises(ValidationError) as refused:
        ContextMapping(source="traits.phone", target="phoneHint")
    assert "'traits.phone' is a phone number" in str(refused.value)


def test_check_config_refuses_an_identifier_as_context(tmp_path: Path) -> None:
    """check-config fails (exit 2) on the audit's mapping, with the fix, and no config OK."""
    config = tmp_path / "c.toml"
    raw = personalised({"source": "traits.email", "target": "emailHint"})
    config.write_text(tomli_w.dumps(raw), encoding="utf-8")

    result = run_cli("check-config", "--config", str(config))

    assert result.returncode == 2
    assert "personalisation_context_mappings[4].source: 'traits.email'" in result.stderr
    assert "integration 'acme-web'" in result.stderr
    assert "config OK" not in result.stdout
