"""Configuration: TOML in, every problem out at once, each with its fix; secrets hidden."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from pydantic import ValidationError

from amperity_signal.blueprint.paths import EVENT_ROOTS, EVENT_TABLES
from amperity_signal.config import ContextMapping, GatewayTable, load_settings, settings_from_dict
from amperity_signal.config_checks import identity_field
from amperity_signal.config_values import CONSENT_FLAGS, GOOGLE_CONSENT
from amperity_signal.enrich.result import attach
from amperity_signal.errors import ConfigError
from amperity_signal.gateway import routes_api
from amperity_signal.gateway.errors import GatewayError
from amperity_signal.gateway.settings import GatewaySettings
from amperity_signal.logs import JsonFormatter
from amperity_signal.service.app import report_configuration
from amperity_signal.service.convert import event_to_dict
from amperity_signal.setup_advice import setup_warnings, summary
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.support import base64_echoes, mint_keys, reveals_encoded
from tests.unit.cli_support import INGEST, integration, run_cli

ROOT = Path(__file__).resolve().parents[2]
PROFILE = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6InByb2ZpbGUifQ.cHJvZmlsZS1jYW5hcnktNjc4OTA"


def problems_of(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(raw, environ or {})
    return [str(p) for p in caught.value.problems]


def test_the_example_configuration_is_valid() -> None:
    """The shipped example loads, with the spec's field names and linking keys parsed."""
    settings = load_settings(ROOT / "examples" / "amperity-signal.toml")
    web = settings.integrations[0]
    assert web.event_stream_id.startswith("esm-")
    assert [k.key for k in web.linking_keys] == ["email_sha256", "device_cookie", "customer_id"]
    assert web.browser_attribute_allowlist[0] == "Persona"
    assert web.profile_enabled


def test_an_is_stream_id_is_refused_with_the_realtime_advice() -> None:
    """A batch is- stream id is refused, telling the user to use the realtime esm- stream."""
    [problem] = problems_of({"integrations": [integration(event_stream_id="is-abc")]})
    assert "integrations[0].event_stream_id" in problem
    assert "esm-" in problem and "real time" in problem


def test_a_profile_key_without_a_collection_asks_for_the_apc_id() -> None:
    """Setting profile_api_key without profile_collection_id asks for the apc- collection."""
    [problem] = problems_of({"integrations": [integration(profile_api_key=PROFILE)]})
    assert "profile_collection_id" in problem and "apc-" in problem


def test_the_same_jwt_for_ingest_and_profile_is_refused() -> None:
    """One JWT used for both scopes is refused with the distinct-tokens advice."""
    raw = integration(profile_api_key=INGEST, profile_collection_id="apc-x")
    [problem] = problems_of({"integrations": [raw]})
    assert "distinct tokens" in problem and "Profile Read Access" in problem


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant_id", "acme-tenänt"),
        ("api_key", INGEST + "\n"),
        ("profile_api_key", " " + PROFILE),
    ],
)
def test_values_sent_as_headers_must_be_visible_ascii(field: str, value: str) -> None:
    """A tenant id or key that no HTTP header can carry is refused by name, secrets unquoted."""
    raw = integration(profile_collection_id="apc-x", **{field: value})
    raw.setdefault("profile_api_key", PROFILE)
    [problem] = problems_of({"integrations": [raw]})
    assert f"integrations[0].{field}" in problem and "cannot carry" in problem
    if field != "tenant_id":
        assert value.strip() not in problem


def test_unknown_linking_key_source_and_hash_name_the_allowed_values() -> None:
    """An unknown linking-key source or hash lists the values that are allowed."""
    keys = (
        '[{"source": "cookie", "key": "device_cookie"},'
        ' {"source": "email", "key": "e", "hash": "md5"}]'
    )
    problems = problems_of({"integrations": [integration(linking_keys=keys)]})
    assert len(problems) == 2
    assert "linking_keys[0].source" in problems[0] and "canonical_id, anonymous_id" in problems[0]
    assert "linking_keys[1].hash" in problems[1] and "sha256_upper" in problems[1]


@pytest.mark.parametrize(
    ("entry", "field", "guess"),
    [
        ({"source": "Email", "key": "email_sha256"}, "source", "email"),
        ({"source": "userId", "key": "customer_id"}, "source", "user_id"),
        ({"source": "anonymous-id", "key": "device_cookie"}, "source", "anonymous_id"),
        ({"source": "email", "key": "e", "hash": "SHA-256"}, "hash", "sha256"),
        ({"source": "email", "key": "e", "hash": "sha256-upper"}, "hash", "sha256_upper"),
    ],
)
def test_a_linking_key_source_or_hash_one_slip_off_is_told_the_value(
    entry: dict[str, str], field: str, guess: str
) -> None:
    """Case, hyphens and camelCase aside, the allowed value is named before the list."""
    problems = problems_of({"integrations": [integration(linking_keys=json.dumps([entry]))]})
    assert len(problems) == 1
    assert problems[0].startswith(f"integrations[0].linking_keys[0].{field}: ")
    assert f"Fix: did you mean {guess!r}? If not, use " in problems[0]


def test_duplicate_ids_and_pipeline_keys_are_refused() -> None:
    """Two integrations may share neither an id nor a pipeline key."""
    problems = problems_of({"integrations": [integration(), integration()]})
    assert any("integrations[1].id" in p for p in problems)
    assert any("integrations[1].pipeline_key" in p for p in problems)


def test_integrations_of_one_tenant_must_agree_on_its_rate_limit() -> None:
    """Amperity's limit is one per tenant: two integrations on it cannot set two rates."""
    two = [integration(), integration(id="b", pipeline_key="pk_b", rate_limit_per_second=300)]
    problems = problems_of({"integrations": two})
    assert any("integrations[1].rate_limit_per_second" in p and "300" in p for p in problems)
    same = [integration(), integration(id="b", pipeline_key="pk_b", rate_limit_per_second=500)]
    assert len(settings_from_dict({"integrations": same}, {}).integrations) == 2


def test_an_empty_source_value_and_an_unknown_vertical_are_refused() -> None:
    """An empty source_value (silent _unknown routing) and an unknown vertical are refused."""
    problems = problems_of({"integrations": [integration(source_value=" ", vertical="grocery")]})
    assert any("source_value" in p and "_unknown" in p for p in problems)
    assert any("vertical" in p and "retail, travel" in p for p in problems)


@pytest.mark.parametrize(
    ("vertical", "guess"),
    [
        ("Retail", "retail"),
        ("retial", "retail"),
        ("B2B SaaS", "b2b_saas"),
        ("b2b-saas", "b2b_saas"),
    ],
)
def test_a_vertical_one_slip_from_a_preset_is_told_the_preset(vertical: str, guess: str) -> None:
    """A preset's name as the spec writes it, or mistyped: the fix names the preset."""
    [problem] = problems_of({"integrations": [integration(vertical=vertical)]})
    assert problem.startswith(f"integrations[0].vertical: {vertical!r} is not a vertical preset.")
    assert f"did you mean {guess!r}? If not, use one of retail, travel" in problem


def test_a_vertical_far_from_every_preset_gets_the_list_alone() -> None:
    """No guess where none is close: the list of presets, as before."""
    [problem] = problems_of({"integrations": [integration(vertical="grocery")]})
    assert "did you mean" not in problem and "use one of retail, travel" in problem


@pytest.mark.parametrize(
    ("blueprint", "fix"),
    [
        ("travel", 'to use the travel preset, write vertical = "travel" instead; overrides go'),
        ("Finanse", 'to use the finance preset, write vertical = "finance" instead; overrides'),
        ("custom.yaml", "Fix: overrides go in an [integrations.blueprint] table"),
    ],
)
def test_a_blueprint_written_as_a_string_is_told_where_a_preset_goes(
    blueprint: str, fix: str
) -> None:
    """``blueprint = "travel"``: the preset is picked by ``vertical``; the table overrides."""
    [problem] = problems_of({"integrations": [integration(blueprint=blueprint)]})
    assert problem.startswith(
        "integrations[0].blueprint: must be a table of overrides, not a string."
    )
    assert fix in problem and "docs/blueprint.md" in problem


def test_linking_keys_accept_json_text_or_native_toml() -> None:
    """The spec's JSON textarea and a native TOML array give the same linking keys."""
    as_text = '[{"source": "email", "key": "email_sha256", "hash": "sha256"}]'
    as_list = [{"source": "email", "key": "email_sha256", "hash": "sha256"}]
    one = settings_from_dict({"integrations": [integration(linking_keys=as_text)]}, {})
    two = settings_from_dict({"integrations": [integration(linking_keys=as_list)]}, {})
    assert one.integrations[0].linking_keys == two.integrations[0].linking_keys


def test_linking_keys_nested_too_deeply_are_a_problem_not_a_traceback() -> None:
    """A textarea of JSON nested past Python's recursion limit is named as bad JSON."""
    [problem] = problems_of({"integrations": [integration(linking_keys="[" * 100_000)]})
    assert "integrations[0].linking_keys" in problem and "nested too deeply" in problem


def test_a_nan_rate_limit_is_refused_as_not_a_whole_number() -> None:
    """rate_limit_per_second = nan gets the whole-number fix, not a clash with itself."""
    [problem] = problems_of({"integrations": [integration(rate_limit_per_second=float("nan"))]})
    assert "integrations[0].rate_limit_per_second" in problem and "whole number" in problem


def test_env_secrets_are_resolved_and_a_missing_variable_is_named() -> None:
    """env:NAME reads the variable; an unset one is a problem naming the variable."""
    settings = settings_from_dict(
        {"integrations": [integration(api_key="env:INGEST_KEY")]}, {"INGEST_KEY": INGEST}
    )
    assert settings.integrations[0].api_key.get_secret_value() == INGEST
    [problem] = problems_of({"integrations": [integration(api_key="env:NOPE")]})
    assert "NOPE" in problem and "not set" in problem


def test_an_env_secret_whose_variable_is_empty_says_it_is_empty() -> None:
    """env:NAME naming a variable that is set to "" says so, rather than that it is not set."""
    raw = {"integrations": [integration(api_key="env:INGEST_KEY")]}
    [problem] = problems_of(raw, {"INGEST_KEY": ""})
    assert "INGEST_KEY" in problem and "is empty" in problem and "not set" not in problem


def test_secrets_never_appear_in_reprs_or_problems() -> None:
    """Neither repr of the settings nor any problem message contains a secret value."""
    settings = settings_from_dict({"integrations": [integration()]}, {})
    assert INGEST not in repr(settings) and INGEST not in str(settings)
    problems = problems_of(
        {"integrations": [integration(profile_api_key=INGEST, api_key=INGEST, vertical="x")]}
    )
    assert all(INGEST not in p for p in problems)


def test_check_config_prints_every_mistake_and_exits_non_zero() -> None:
    """check-config on the five-mistake example prints each with its fix, no secret, exit 2."""
    result = run_cli("check-config", "--config", str(ROOT / "examples" / "broken.toml"))
    assert result.returncode == 2
    for field in (
        "vertical",
        "event_stream_id",
        "source_value",
        "profile_api_key",
        "profile_collection_id",
        "linking_keys[0].source",
    ):
        assert f"integrations[0].{field}" in result.stderr
    assert result.stderr.count("Fix:") >= 5
    assert "c2FtZS1rZXk" not in result.stderr + result.stdout


PROFILE = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6InByb2ZpbGUifQ.c2lnbmF0dXJl"
EMAIL_KEY = [{"source": "email", "key": "email_sha256", "hash": "sha256"}]


def advice_for(**overrides: Any) -> list[str]:
    settings = settings_from_dict({"integrations": [integration(**overrides)]}, {})
    return setup_warnings(settings.integrations[0])


def test_setup_advice_names_the_spec_troubleshooting_causes() -> None:
    """Loadable but likely wrong setups get a warning with the spec's advice.

    Half-configured enrichment, an empty browser allowlist, an allowlist without
    enrichment, a source_value with spaces around it.
    """
    profile = {"profile_api_key": PROFILE, "profile_collection_id": "apc-x"}
    (half,) = advice_for(**profile)
    assert "linking_keys is not set" in half and "partner resolve failed" in half
    (empty,) = advice_for(**profile, linking_keys=EMAIL_KEY)
    assert "window.datafly.profile.amperity stays empty" in empty
    assert "Add attribute names as CSV".lower() in empty.lower()
    assert "Anything not in the list is stripped server-side before reaching the browser" in empty
    (useless,) = advice_for(browser_attribute_allowlist="Persona")
    assert "browser_attribute_allowlist is set but profile enrichment is not" in useless
    (spaced,) = advice_for(source_value=" DATAFLY")
    assert "match exactly (case-sensitive)" in spaced and "_unknown" in spaced
    assert advice_for() == []  # ingest only: a choice, not a mistake
    assert advice_for(**profile, linking_keys=EMAIL_KEY, browser_attribute_allowlist="A") == []


def summary_of(**overrides: Any) -> str:
    settings = settings_from_dict({"integrations": [integration(**overrides)]}, {})
    return summary(settings.integrations[0])


def test_the_summary_says_what_an_integration_does_and_when_it_is_ingest_only() -> None:
    """check-config's line per integration: an ingest-only one says no event is enriched.

    The troubleshooting row "partner_attrs.amperity never appears" has "Profile API creds
    missing" as a cause; an integration with none of them gets no warning (a choice), so
    the summary is where its owner reads it.
    """
    ingest_only = summary_of()
    assert ingest_only.startswith(f"{integration()['id']}: delivers events (vertical ")
    assert "ingest only" in ingest_only and "no event gets partner_attrs.amperity" in ingest_only
    profile = {"profile_api_key": PROFILE, "profile_collection_id": "apc-x"}
    half = summary_of(**profile)
    assert "enrichment is off until linking_keys is set" in half
    enriching = summary_of(
        **profile,
        linking_keys=EMAIL_KEY,
        browser_attribute_allowlist="Persona,LifetimeTier",
        personalisation_enabled=True,
        personalisation_context_mappings=[
            {"source": "properties.category", "target": "pageCategory"}
        ],
    )
    assert "enriches them through the linking keys email_sha256" in enriching
    assert "pages may see Persona, LifetimeTier" in enriching
    assert "personalised by pageCategory" in enriching
    assert "ingest only" not in enriching
    assert "pages see no attribute" in summary_of(**profile, linking_keys=EMAIL_KEY)
    assert PROFILE not in enriching


def test_serve_logs_each_integration_s_summary_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """report_configuration (once per service) logs the summary at info, with its id."""
    settings = settings_from_dict({"integrations": [integration()]}, {})
    with caplog.at_level(logging.INFO, logger="amperity_signal.server"):
        report_configuration(settings, proxies=False)
    (record,) = [r for r in caplog.records if "delivers events" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert record.getMessage() == f"integration {summary(settings.integrations[0])}"
    assert getattr(record, "integration_id", None) == settings.integrations[0].id


@pytest.mark.parametrize(("key", "words"), [("  ", "is blank"), (" email_sha256", "spaces")])
def test_a_blank_or_padded_linking_key_name_is_refused(key: str, words: str) -> None:
    """Amperity matches key names exactly: a blank or padded name is a problem, not a 404."""
    keys = [{"source": "email", "key": key, "hash": "sha256"}]
    raw = {"integrations": [integration(profile_api_key=PROFILE, linking_keys=keys)]}
    problems = [p for p in problems_of(raw) if "linking_keys[0].key" in p]
    assert len(problems) == 1 and words in problems[0]


def test_a_hashed_key_name_without_hash_is_a_warning_naming_the_entry() -> None:
    """A key named ``*_sha256`` with no ``hash`` gets the plain value: advice to set hash."""
    profile = {"profile_api_key": PROFILE, "profile_collection_id": "apc-x"}
    allow = {"browser_attribute_allowlist": "Persona"}
    plain = [
        {"source": "user_id", "key": "customer_id"},
        {"source": "email", "key": "Email_SHA256"},
    ]
    (warning,) = advice_for(**profile, **allow, linking_keys=plain)
    assert "linking_keys[1]" in warning and "'Email_SHA256'" in warning
    assert '"hash": "sha256"' in warning and "always 404" in warning
    assert advice_for(**profile, **allow, linking_keys=EMAIL_KEY) == []


def test_half_of_the_personalisation_setup_is_a_warning_naming_the_other_half() -> None:
    """Mappings without personalisation_enabled, or the reverse, do nothing: a warning says so."""
    enriching = {
        "profile_api_key": PROFILE,
        "profile_collection_id": "apc-x",
        "linking_keys": EMAIL_KEY,
        "browser_attribute_allowlist": "Persona",
    }
    mappings = [{"source": "properties.category", "target": "pageCategory"}]
    (unused,) = advice_for(**enriching, personalisation_context_mappings=mappings)
    assert "personalisation_enabled is false" in unused and "set it to true" in unused
    (empty,) = advice_for(**enriching, personalisation_enabled=True)
    assert "personalisation_context_mappings is empty" in empty
    assert '"target": "pageCategory"' in empty
    both = {"personalisation_enabled": True, "personalisation_context_mappings": mappings}
    assert advice_for(**enriching, **both) == []


@pytest.mark.parametrize("source", ["properties..category", "properties.category.", "."])
def test_a_context_mapping_source_that_is_no_path_is_refused_at_load(source: str) -> None:
    """A malformed context path is a config problem, not an INTERNAL on every resolved event."""
    mappings = [{"source": source, "target": "pageCategory"}]
    [problem] = problems_of(
        {"integrations": [integration(personalisation_context_mappings=mappings)]}
    )
    assert "integrations[0].personalisation_context_mappings[0].source" in problem
    assert f"invalid path {source!r}" in problem and "context.page.path" in problem


@pytest.mark.parametrize("as_text", [False, True])
def test_a_context_source_starting_with_no_part_of_the_event_is_refused_with_a_guess(
    as_text: bool,
) -> None:
    """``propertes.category`` loaded and found nothing on any event: personalisation never ran."""
    mappings: Any = [{"source": "propertes.category", "target": "pageCategory"}]
    if as_text:
        mappings = json.dumps(mappings)
    [problem] = problems_of(
        {"integrations": [integration(personalisation_context_mappings=mappings)]}
    )
    assert problem.startswith(
        "integrations[0].personalisation_context_mappings[0].source: 'propertes.category' "
        "does not start with a part of the event"
    )
    assert "personalisation never applies" in problem
    assert "did you mean 'properties'?" in problem
    for root in ("context.", "properties.", "traits.", "partner_attrs.", "amperity_id"):
        assert root in problem


def test_a_context_source_like_no_part_of_the_event_gets_the_roots_without_a_guess() -> None:
    """``page.path`` (context. left out) is refused with the roots, and no wrong guess."""
    mappings = [{"source": "page.path", "target": "pagePath"}]
    [problem] = problems_of(
        {"integrations": [integration(personalisation_context_mappings=mappings)]}
    )
    assert "personalisation_context_mappings[0].source: 'page.path' does not start" in problem
    assert "did you mean" not in problem and "context., properties." in problem


def test_a_context_source_is_refused_by_the_model_too() -> None:
    """Settings built without check-config (tests, embedders) refuse the typo as well."""
    with pytest.raises(ValidationError) as refused:
        ContextMapping(source="propertes.category", target="pageCategory")
    assert "does not start with a part of the event" in str(refused.value)


def test_every_part_of_an_event_is_a_context_source_root() -> None:
    """The roots allowed are the keys of the event dict enrichment reads: none refused."""
    event = pb.Event(
        message_id="m",
        type="track",
        event="view_item",
        anonymous_id="a",
        canonical_id="c",
        user_id="u",
        context=pb.Context(ip="127.0.0.1"),
    )
    event.timestamp.GetCurrentTime()
    for part in ("properties", "traits", "partner_attrs"):
        getattr(event, part).update({"x": "y"})
    keys = set(attach(event_to_dict(event), "p-1", {"Persona": "Value Hunter"}))
    assert keys == set(EVENT_ROOTS)
    # A table's keys lie below it; a flat field is read whole (a path below one is refused).
    # The flat identifiers are parts of the event refused for being identifiers
    # (tests/unit/test_context_sources.py), never for starting nowhere.
    identifiers = {"amperity_id", "anonymous_id", "canonical_id", "user_id"}
    sources = [f"{key}.x" if key in EVENT_TABLES else key for key in sorted(keys)]
    assert identifiers < set(sources)
    assert all(identity_field(source) for source in identifiers)
    mappings = [
        {"source": source, "target": f"t{index}"}
        for index, source in enumerate(sources)
        if source not in identifiers
    ]
    settings_from_dict(
        {"integrations": [integration(personalisation_context_mappings=mappings)]}, {}
    )


@pytest.mark.parametrize("as_text", [False, True])
def test_two_context_mappings_with_one_target_are_refused(as_text: bool) -> None:
    """One call sends one value per target: a second mapping to it would be dropped silently."""
    mappings: Any = [
        {"source": "properties.category", "target": "pageCategory"},
        {"source": "properties.value", "target": "cartValue"},
        {"source": "context.page.path", "target": "pageCategory"},
    ]
    if as_text:
        mappings = json.dumps(mappings)
    raw = integration(personalisation_context_mappings=mappings)
    [problem] = problems_of({"integrations": [raw]})
    assert "integrations[0].personalisation_context_mappings[2].target" in problem
    assert "'pageCategory' is also the target of personalisation_context_mappings[0]" in problem
    assert "its own target" in problem


@pytest.mark.parametrize(
    ("value", "index"),
    [
        ('["Persona", "LifetimeTier"]', 0),
        ('"Persona","LifetimeTier"', 0),
        (["Persona", "'LifetimeTier'"], 1),
    ],
)
def test_an_allowlist_written_as_json_or_quoted_is_refused_not_read_as_names(
    value: str | list[str], index: int
) -> None:
    """Quotes or brackets name no attribute: read as CSV, such a list exposed nothing, silently."""
    raw = integration(browser_attribute_allowlist=value)
    problem, *more = problems_of({"integrations": [raw]})
    assert f"integrations[0].browser_attribute_allowlist[{index}]" in problem
    assert "quotes or brackets" in problem and '"Persona,LifetimeTier"' in problem
    assert all("quotes or brackets" in other for other in more)  # each such name


def test_check_config_prints_the_setup_advice_as_warnings(tmp_path: Path) -> None:
    """A half-configured integration loads (exit 0) with its warning printed."""
    config = tmp_path / "half.toml"
    half = integration(profile_api_key=PROFILE, profile_collection_id="apc-x")
    config.write_text(tomli_w.dumps({"integrations": [half]}))
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "warning: integration web: linking_keys is not set" in result.stdout
    assert PROFILE not in result.stdout + result.stderr


def test_check_config_accepts_a_valid_file() -> None:
    """check-config on the example exits 0 and says OK."""
    result = run_cli("check-config", "--config", str(ROOT / "examples" / "amperity-signal.toml"))
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout


def test_the_gateway_table_sets_the_gateways_limits() -> None:
    """``[gateway]`` reaches GatewaySettings, which otherwise keeps its defaults."""
    raw = {
        "gateway": {
            "rate_limit_per_second": 200,
            "rate_limit_burst": 400,
            "max_header_bytes": 32_768,
            "trusted_proxies": ["10.0.0.0/8", "192.0.2.7"],
        },
        "integrations": [integration()],
    }
    gateway = GatewaySettings.from_settings(settings_from_dict(raw, {}))
    assert (gateway.rate_limit_per_second, gateway.rate_limit_burst) == (200, 400)
    assert gateway.max_header_bytes == 32_768
    assert gateway.trusted_proxies == ("10.0.0.0/8", "192.0.2.7")
    assert gateway.pipelines[0].pipeline_key == "pk_web"
    example = GatewaySettings.from_settings(
        load_settings(ROOT / "examples" / "amperity-signal.toml")
    )
    assert example.replace(pipelines=(), redact=()) == GatewaySettings()


def test_the_gateway_tables_defaults_are_the_gateway_settings_defaults() -> None:
    defaults = GatewayTable()
    for name in GatewayTable.model_fields:
        assert getattr(defaults, name) == getattr(GatewaySettings(), name), name


def test_bad_gateway_values_are_refused_naming_the_field_and_the_fix() -> None:
    problems = problems_of(
        {
            "gateway": {
                "rate_limit_per_second": 0,
                "trusted_proxies": ["lb.example.com"],
                "rate_limit": 5,
            },
            "integrations": [integration()],
        }
    )
    assert len(problems) == 3
    unknown, rate, proxies = sorted(problems)
    assert "gateway.rate_limit_per_second" in rate and "greater than 0" in rate
    assert "gateway.trusted_proxies" in proxies and "'lb.example.com'" in proxies
    assert "10.0.0.0/8" in proxies
    assert "gateway.rate_limit" in unknown and "not a known field" in unknown


@pytest.mark.parametrize(
    ("table", "typo", "meant"),
    [
        ("servr", None, "server"),
        ("gateway", "rate_limit_brust", "rate_limit_burst"),
        ("server", "grace_periode", "grace_period"),
        ("integrations", "tenant_subdomian", "tenant_subdomain"),
        ("integrations", "profile_api_keys", "profile_api_key"),
        ("integrations", "tenantId", "tenant_id"),
        ("integrations", "eventStreamId", "event_stream_id"),
        ("Cache", None, "cache"),
    ],
)
def test_a_misspelt_field_is_told_the_field_it_is_close_to(
    table: str, typo: str | None, meant: str
) -> None:
    """An unknown key one slip from a known one names that one in its fix, at its depth."""
    raw: dict[str, Any] = {"integrations": [integration()]}
    if typo is None:
        raw[table] = {}
    elif table == "integrations":
        raw["integrations"][0][typo] = "x"
    else:
        raw[table] = {typo: 1}
    (problem,) = problems_of(raw)
    assert "is not a known field" in problem, problem
    assert f"did you mean {meant}?" in problem, problem


@pytest.mark.parametrize(
    ("written", "meant"), [("Redis", "redis"), ("in-memory", "memory"), ("MEMORY", "memory")]
)
def test_a_cache_backend_one_slip_off_is_told_the_backend(written: str, meant: str) -> None:
    """One of a fixed set of values, written another way: the value is named in the fix."""
    (problem,) = problems_of({"cache": {"backend": written}, "integrations": [integration()]})
    assert problem.startswith("cache.backend: must be 'memory' or 'redis'.")
    assert f"Fix: did you mean {meant!r}? If not, use one of those values." in problem


def test_a_cache_backend_like_neither_gets_no_guess() -> None:
    (problem,) = problems_of({"cache": {"backend": "memcached"}, "integrations": [integration()]})
    assert problem.endswith("Fix: use one of those values.")


def test_an_unknown_field_like_no_known_one_gets_no_guess() -> None:
    (problem,) = problems_of({"gateway": {"colour": "red"}, "integrations": [integration()]})
    assert "is not a known field" in problem and "did you mean" not in problem, problem


@pytest.mark.parametrize(("prefix", "limit"), [(32, "at least 48"), (129, "at most 128")])
def test_an_ipv6_prefix_outside_48_to_128_is_refused_with_the_fix(prefix: int, limit: str) -> None:
    raw = {"gateway": {"rate_limit_ipv6_prefix": prefix}, "integrations": [integration()]}
    (problem,) = problems_of(raw)
    assert "gateway.rate_limit_ipv6_prefix" in problem and limit in problem
    assert "e.g. 64" in problem


def test_the_ipv6_prefix_reaches_the_gateway_settings() -> None:
    raw = {"gateway": {"rate_limit_ipv6_prefix": 56}, "integrations": [integration()]}
    assert GatewaySettings.from_settings(settings_from_dict(raw, {})).rate_limit_ipv6_prefix == 56


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "ftp://127.0.0.1:8765",
        "127.0.0.1:8765",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",
        "http://127.0.0.1:port",
        "https://",
        "http://127.0.0.1:8765/?debug=1",
        "http://127.0.0.1:8765#top",
        "http://127.0.0.1:8765 ",
    ],
)
def test_an_api_base_url_that_no_request_could_use_is_refused(url: str) -> None:
    """api_base_url must be http(s)://host[:port][/path]: no other scheme, port or query."""
    [problem] = problems_of({"integrations": [integration(api_base_url=url)]})
    assert "integrations[0].api_base_url" in problem
    assert "http://127.0.0.1:8765" in problem and "remove api_base_url" in problem


def test_an_api_base_url_with_a_password_is_refused_without_showing_it() -> None:
    """user:password@ in api_base_url is refused; the password never appears in the message."""
    url = "http://user:S3cretPASS@127.0.0.1:8765"
    [problem] = problems_of({"integrations": [integration(api_base_url=url)]})
    assert "integrations[0].api_base_url" in problem and "password" in problem
    assert "S3cretPASS" not in problem and "user:" + "S3cret" not in problem


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8765",
        "https://app.amperity.com",
        "http://[::1]:8765",
        "http://sandbox.test/a/",
    ],
)
def test_an_http_or_https_api_base_url_loads(url: str) -> None:
    """Sandbox, proxy and Amperity URLs, with a port, an IPv6 host or a path prefix, load."""
    settings = settings_from_dict({"integrations": [integration(api_base_url=url)]}, {})
    assert settings.integrations[0].base_url == url.rstrip("/")


@pytest.mark.parametrize(
    "subdomain", ["evil@x", "acme:443", "ac me", "ACME_corp!", "-acme", "acme-", "a" * 64, ""]
)
def test_a_tenant_subdomain_must_be_one_dns_label(subdomain: str) -> None:
    """tenant_subdomain is one DNS label (letters, digits, inner hyphens, <= 63 characters)."""
    [problem] = problems_of({"integrations": [integration(tenant_subdomain=subdomain)]})
    assert "integrations[0].tenant_subdomain" in problem
    assert "use the subdomain portion of your Amperity dashboard URL" in problem


@pytest.mark.parametrize("subdomain", ["acme", "acme-corp", "Acme2", "a" * 63])
def test_a_dns_label_tenant_subdomain_loads(subdomain: str) -> None:
    """Letters of either case, digits and inner hyphens make a subdomain."""
    settings = settings_from_dict({"integrations": [integration(tenant_subdomain=subdomain)]}, {})
    assert settings.integrations[0].base_url == f"https://{subdomain}.amperity.com"


@pytest.mark.parametrize("field", ["grpc_address", "http_address"])
@pytest.mark.parametrize(
    "address", ["nonsense", "localhost", "127.0.0.1:99999", "::1:8080", ":8080", "127.0.0.1:http"]
)
def test_a_listen_address_must_be_host_and_a_port_up_to_65535(field: str, address: str) -> None:
    """grpc_address and http_address are host:port at load, not an error (or port % 65536) later."""
    [problem] = problems_of({"server": {field: address}, "integrations": [integration()]})
    assert f"server.{field}" in problem and repr(address) in problem
    assert "port 0 picks a free port" in problem


@pytest.mark.parametrize("field", ["grpc_address", "http_address"])
@pytest.mark.parametrize("address", ["127.0.0.1:0", "[::1]:50051", "0.0.0.0:65535", "localhost:80"])
def test_host_port_listen_addresses_load(field: str, address: str) -> None:
    """IPv4, bracketed IPv6 and host names load, with any port from 0 to 65535."""
    raw = {"server": {field: address}}
    settings = settings_from_dict({**raw, "integrations": [integration()]}, {})
    assert getattr(settings.server, field) == address


@pytest.mark.parametrize(
    ("grpc_address", "http_address"),
    [
        ("127.0.0.1:9000", "127.0.0.1:9000"),
        ("0.0.0.0:9000", "127.0.0.1:9000"),
        ("127.0.0.1:9000", "[::]:9000"),
        ("localhost:9000", "127.0.0.1:9000"),
    ],
)
def test_the_service_and_the_gateway_cannot_share_a_port(
    grpc_address: str, http_address: str
) -> None:
    """One port for both listeners is refused: with --workers, connections would go to either."""
    raw = {"server": {"grpc_address": grpc_address, "http_address": http_address}}
    [problem] = problems_of({**raw, "integrations": [integration()]})
    assert "server.http_address" in problem and "server.grpc_address" in problem
    assert "another port" in problem


@pytest.mark.parametrize(
    ("grpc_address", "http_address"),
    [("127.0.0.1:0", "127.0.0.1:0"), ("127.0.0.1:9000", "10.0.0.5:9000")],
)
def test_port_0_or_two_hosts_let_the_listeners_share_a_port_number(
    grpc_address: str, http_address: str
) -> None:
    """Port 0 (a free port each) and one port number on two interfaces load."""
    raw = {"server": {"grpc_address": grpc_address, "http_address": http_address}}
    settings = settings_from_dict({**raw, "integrations": [integration()]}, {})
    assert settings.server.http_address == http_address


@pytest.mark.parametrize(
    "url",
    [
        "not-a-url",
        "http://127.0.0.1:6379",
        "redis://:pw-Hunter2@127.0.0.1:notaport/0",
        "redis://127.0.0.1:65536/0",
        "redis://127.0.0.1:6379/zero",
        "unix://",
    ],
)
def test_a_redis_url_that_redis_cannot_use_is_refused_without_its_password(url: str) -> None:
    """redis_url is redis://, rediss:// or unix:// with a valid port; a password is never shown."""
    [problem] = problems_of({"cache": {"redis_url": url}, "integrations": [integration()]})
    assert "cache.redis_url" in problem and "redis://127.0.0.1:6379/0" in problem
    assert "Hunter2" not in problem


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://localhost",
        "rediss://:pw@cache.internal:6380/2",
        "unix:///var/run/redis.sock",
    ],
)
def test_redis_and_unix_socket_urls_load(url: str) -> None:
    """TCP, TLS (with a password) and unix-socket Redis URLs load."""
    raw = {"cache": {"backend": "redis", "redis_url": url}, "integrations": [integration()]}
    assert settings_from_dict(raw, {}).cache.redis_url == url


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_secrets_are_refused_with_what_to_paste(blank: str) -> None:
    """A blank api_key, profile_api_key or admin_token is a mistake, not a way to turn it off."""
    problems = problems_of(
        {
            "server": {"admin_token": blank},
            "integrations": [
                integration(api_key=blank, profile_api_key=blank, profile_collection_id="apc-x")
            ],
        }
    )
    assert len(problems) == 3
    api_key, profile, admin = sorted(problems)
    assert api_key.startswith("integrations[0].api_key: is blank") and "401" in api_key
    assert "Streaming Ingest key" in api_key
    assert profile.startswith("integrations[0].profile_api_key: is blank")
    assert "remove it to turn enrichment off, or paste the Profile API key" in profile
    assert admin.startswith("server.admin_token: is blank") and "remove it" in admin


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_stream_id", "esm-../../x?y"),
        ("event_stream_id", "esm-"),
        ("event_stream_id", "esm-2VP6 va3Zn"),
        ("profile_collection_id", "apc-../x#"),
        ("profile_collection_id", "apc-"),
    ],
)
def test_stream_and_collection_ids_are_the_prefix_and_an_id(field: str, value: str) -> None:
    """esm-/apc- must be followed by letters, digits, '-' or '_' only: nothing that is a path."""
    raw = integration(profile_api_key=PROFILE, **{"profile_collection_id": "apc-x", field: value})
    [problem] = problems_of({"integrations": [raw]})
    assert f"integrations[0].{field}" in problem and "letters, digits, - or _" in problem


@pytest.mark.parametrize(
    "origin",
    [
        "127.0.0.1:8080/",
        "*",
        "null",
        "https://shop.example.com/cart",
        "http://localhost:99999",
        "https://user@shop.example.com",
    ],
)
def test_an_allowed_origin_must_be_scheme_host_and_port(origin: str) -> None:
    """Browsers send scheme://host[:port]; anything else (or '*') would match no page."""
    raw = integration(allowed_origins=["https://ok.example.com", origin])
    [problem] = problems_of({"integrations": [raw]})
    assert "integrations[0].allowed_origins[1]" in problem
    assert "https://shop.example.com" in problem


def test_origins_load_as_an_array_or_as_csv() -> None:
    """Origins with a port, an IPv6 host or a trailing slash load, from an array or CSV."""
    origins = ["https://shop.example.com", "http://localhost:8080", "http://[::1]:8080/"]
    for value in (origins, ", ".join(origins)):
        settings = settings_from_dict({"integrations": [integration(allowed_origins=value)]}, {})
        assert settings.integrations[0].allowed_origins == tuple(origins)
    [problem] = problems_of(
        {"integrations": [integration(allowed_origins="https://a.example, a.example")]}
    )
    assert "integrations[0].allowed_origins[1]" in problem


@pytest.mark.parametrize(
    "condition",
    ["functonal", "Functional", "categories.", "google.ad_storag", "consent.analytics", ""],
)
def test_an_unknown_browser_consent_condition_is_refused_listing_the_known_ones(
    condition: str,
) -> None:
    """A browser_consent no event can meet (a typo) is refused instead of hiding every attribute."""
    [problem] = problems_of({"integrations": [integration(browser_consent=condition)]})
    assert "integrations[0].browser_consent" in problem
    assert "analytics, marketing, functional, categories.CODE" in problem
    assert "ad_personalization" in problem and "remove browser_consent" in problem


@pytest.mark.parametrize(
    "condition", ["functional", "analytics", "categories.C0003", "google.ad_personalization"]
)
def test_known_browser_consent_conditions_load(condition: str) -> None:
    """The flags, a CMP category and a Google Consent Mode parameter are conditions."""
    settings = settings_from_dict({"integrations": [integration(browser_consent=condition)]}, {})
    assert settings.integrations[0].browser_consent == condition


def test_the_consent_conditions_are_the_consent_messages_fields() -> None:
    """The conditions config accepts are exactly the fields an event's consent can carry."""
    flags = [f.name for f in pb.Consent.DESCRIPTOR.fields if f.type == f.TYPE_BOOL]
    assert tuple(flags) == CONSENT_FLAGS
    assert tuple(f.name for f in pb.GoogleConsent.DESCRIPTOR.fields) == GOOGLE_CONSENT


@pytest.mark.parametrize("raw", [{}, {"integrations": []}, {"server": {"workers": 2}}])
def test_a_configuration_without_integrations_is_refused_showing_a_minimal_one(
    raw: dict[str, Any],
) -> None:
    """With no [[integrations]] the service could deliver nothing: the fix shows the table."""
    [problem] = problems_of(raw)
    assert problem.startswith("integrations: is empty")
    for line in ("[[integrations]]", 'id = "web"', 'event_stream_id = "esm-', "source_value ="):
        assert line in problem


@pytest.mark.parametrize("value", ["env:", "env: INGEST_KEY", "env:INGEST-KEY"])
def test_an_env_reference_without_a_variable_name_says_how_to_write_one(value: str) -> None:
    """An env: with no valid name behind it shows the form, not "variable  is not set"."""
    [problem] = problems_of({"integrations": [integration(api_key=value)]})
    assert "integrations[0].api_key" in problem
    assert "not set" not in problem
    assert "env:NAME" in problem and "env:AMPERITY_INGEST_KEY" in problem


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ("server", "grace_period"),
        ("cache", "resolution_ttl"),
        ("cache", "attribute_ttl"),
        ("gateway", "rpc_timeout"),
        ("integrations", "request_timeout"),
    ],
)
def test_an_infinite_duration_is_refused_naming_the_field(table: str, field: str) -> None:
    """TOML's inf is refused for a duration: it would hang a shutdown or overflow a Redis TTL."""
    raw: dict[str, Any] = {"integrations": [integration()]}
    if table == "integrations":
        raw["integrations"][0][field] = float("inf")
        location = f"integrations[0].{field}"
    else:
        raw[table] = {field: float("inf")}
        location = f"{table}.{field}"
    [problem] = problems_of(raw)
    assert location in problem and "finite" in problem


def test_a_cache_byte_bound_under_one_mib_is_refused_naming_the_field() -> None:
    """Under 1 MiB (the most read of an answer) one big profile could never be cached."""
    [problem] = problems_of({"cache": {"max_bytes": 65_536}, "integrations": [integration()]})
    assert problem.startswith("cache.max_bytes: must be at least 1048576.")
    assert "remove the line to use the default" in problem


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"server": 5}, ["server: must be a table, not a number", "[server]"]),
        ({"integrations": [5]}, ["integrations[0]: must be a table", "[[integrations]]"]),
        (
            {"integrations": [integration(linking_keys="{}")]},
            ["linking_keys: must be an array, not a table", '"key": "email_sha256"'],
        ),
        (
            {"integrations": [integration(linking_keys="[1]")]},
            ["linking_keys[0]: must be a table", "each linking key as an object"],
        ),
        (
            {"integrations": [integration(browser_attribute_allowlist=5)]},
            ["browser_attribute_allowlist: must be an array", '"Persona,LifetimeTier"'],
        ),
        (
            {"gateway": {"trusted_proxies": "10.0.0.0/8"}, "integrations": [integration()]},
            ["trusted_proxies: must be an array, not a string", '["10.0.0.0/8"]'],
        ),
        (
            {
                "integrations": [
                    integration(
                        personalisation_context_mappings=[
                            {"source": "properties.a", "target": "a b"}
                        ]
                    )
                ]
            },
            ["target: has characters that are not allowed", "query parameter name"],
        ),
        ({"server": {"workers": "two"}}, ["workers: must be a whole number", "without quotes"]),
        ({"cache": {"backend": "memcached"}}, ["must be 'memory' or 'redis'"]),
        (
            {"integrations": [integration(tenant_id=datetime(2026, 1, 1, 9, 30))]},
            ["tenant_id: must be a string, not a date-time", "double quotes"],
        ),
    ],
)
def test_a_value_of_the_wrong_shape_is_described_in_toml_terms_with_an_example(
    raw: dict[str, Any], words: list[str]
) -> None:
    """A wrong type names the TOML shape wanted and how to write it, not pydantic's types."""
    raw.setdefault("integrations", [integration()])
    [problem] = problems_of(raw)
    for word in words:
        assert word in problem
    for jargon in ("Input should", "instance of", "tuple", "correct the value", "^["):
        assert jargon not in problem


def test_the_redis_password_is_kept_out_of_reprs_and_scrubbed_from_logs() -> None:
    """A password in cache.redis_url is no part of the settings' repr, and logs scrub it."""
    url = "redis://:hunter2-redis-pass@127.0.0.1:6379/0"
    settings = settings_from_dict(
        {"cache": {"backend": "redis", "redis_url": url}, "integrations": [integration()]}, {}
    )
    assert "hunter2-redis-pass" not in repr(settings) and "hunter2-redis-pass" not in str(settings)
    assert "hunter2-redis-pass" in settings.secret_values()
    assert settings.cache.redis_url == url


def test_a_config_saved_with_a_utf8_byte_order_mark_loads(tmp_path: Path) -> None:
    """A file a Windows editor saved as "UTF-8 with BOM" loads like the same file without one."""
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf" + tomli_w.dumps({"integrations": [integration()]}).encode())
    assert load_settings(path).integrations[0].id == "web"


def test_an_unquoted_string_is_a_toml_error_with_its_line_and_the_quoting_fix(
    tmp_path: Path,
) -> None:
    """tenant_id = acme (no quotes) names the line and column and says strings need quotes."""
    path = tmp_path / "c.toml"
    path.write_text('[[integrations]]\nid = "web"\ntenant_id = acme\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    [problem] = [str(p) for p in caught.value.problems]
    assert "line 3" in problem and 'in double quotes, e.g. tenant_id = "acme"' in problem


def test_a_toml_file_nested_too_deeply_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    """Arrays nested past Python's recursion limit are named as bad TOML, with no traceback."""
    path = tmp_path / "c.toml"
    path.write_text("x = " + "[" * 5_000 + "]" * 5_000 + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    [problem] = [str(p) for p in caught.value.problems]
    assert "not valid TOML" in problem and "nested too deeply" in problem


@pytest.mark.parametrize(
    "field",
    [
        "tenant_id",
        "tenant_subdomain",
        "event_stream_id",
        "profile_collection_id",
        "pipeline_key",
        "source_value",
    ],
)
def test_an_api_key_pasted_into_a_plain_field_is_refused_and_never_quoted(field: str) -> None:
    """A key in a field that is sent and shown in the clear is refused, and not quoted back."""
    raw = integration(**{field: PROFILE})
    problems = problems_of({"integrations": [raw]})
    assert any(p.startswith(f"integrations[0].{field}: holds an API key") for p in problems)
    assert not [p for p in problems if PROFILE.split(".")[1] in p]


# A real key's payload segment is longer than a DNS label (63): as a host, it is refused.
MINTED = mint_keys().profile


@pytest.mark.parametrize(
    "overrides",
    [
        {"api_base_url": MINTED},
        {"api_base_url": f"https://{MINTED}"},
        {"api_base_url": f"https://{MINTED}/v0"},
        {"personalisation_context_mappings": [{"source": f"{MINTED}..", "target": "x"}]},
        {MINTED: "an unknown field named by a pasted key"},
    ],
    ids=["base-url", "base-url-host", "base-url-path", "context-source", "field-name"],
)
def test_an_api_key_in_a_url_a_path_or_a_field_name_is_never_quoted(
    overrides: dict[str, Any],
) -> None:
    """Wherever a pasted key makes the configuration wrong, the problem describes it.

    The URL problems, the path syntax error and an unknown field's name quoted it whole.
    """
    problems = problems_of({"integrations": [integration(**overrides)]})
    assert problems
    assert not [p for p in problems if MINTED.split(".")[1] in p]


def test_an_api_key_given_as_a_tls_file_is_described_never_quoted() -> None:
    """A key where a PEM file's path goes is refused without printing it as the path."""
    server = {"tls_cert_file": MINTED, "tls_key_file": MINTED}
    problems = problems_of({"server": server, "integrations": [integration()]})
    assert any(p.startswith("server.tls_key_file: holds an API key") for p in problems)
    assert not [p for p in problems if MINTED.split(".")[1] in p]


def test_a_pipeline_key_used_twice_is_named_but_never_quoted() -> None:
    """Pipeline keys are named by their field, as the service's errors name them."""
    key = "pk-canary-5e6f7a8b"
    problems = problems_of(
        {"integrations": [integration(pipeline_key=key), integration(id="b", pipeline_key=key)]}
    )
    assert any("integrations[1].pipeline_key" in p for p in problems)
    assert not [p for p in problems if key in p]


@pytest.mark.parametrize(
    ("redis_url", "password"),
    [
        ("redis://:p%40ss%2Fword-123@cache:6379/0", "p@ss/word-123"),
        ("redis://cache:6379/0?password=query-pass-456", "query-pass-456"),
        ("redis://cache:6379/0?password=qu%2Fery+pass%40456", "qu%2Fery+pass%40456"),
        ("rediss://app:p%23ss-word-789@cache:6380/0", "p#ss-word-789"),
    ],
    ids=["percent-encoded", "query-parameter", "query-parameter-as-written", "user-and-password"],
)
def test_every_form_of_the_redis_password_is_scrubbed_from_logs(
    redis_url: str, password: str
) -> None:
    """The Redis password, decoded or given as ?password=, is among the scrubbed secrets.

    A ``?password=`` value is scrubbed as the URL writes it too (``%2F``, ``+``).
    """
    settings = settings_from_dict(
        {"cache": {"backend": "redis", "redis_url": redis_url}, "integrations": [integration()]},
        {},
    )
    formatter = JsonFormatter(settings.secret_values())
    record = logging.makeLogRecord({"msg": "AUTH failed for %s", "args": (password,)})
    assert password not in formatter.format(record)


@pytest.mark.parametrize(
    ("redis_url", "passwords"),
    [
        ("redis://:p%40ss-word-123@cache:6379/0", ["p%40ss-word-123", "p@ss-word-123"]),
        ("rediss://app:pw-one@cache:6380/2?password=pw-two&db=1", ["pw-one", "pw-two"]),
    ],
    ids=["user-info", "user-info-and-query"],
)
def test_a_dump_of_the_settings_masks_the_redis_password(
    redis_url: str, passwords: list[str]
) -> None:
    """``model_dump`` and ``model_dump_json`` show the URL with its password masked.

    ``redis_url`` was out of the repr but not out of dumps: ``Settings.model_dump()`` held
    the password. The attribute still holds the whole URL, for the Redis client.
    """
    raw = {"cache": {"backend": "redis", "redis_url": redis_url}, "integrations": [integration()]}
    settings = settings_from_dict(raw, {})
    dumped = settings.model_dump()["cache"]["redis_url"]
    for shown in (dumped, settings.model_dump_json()):
        assert "**********" in shown
        assert not [password for password in passwords if password in shown], shown
    assert dumped.split("**********")[0] in redis_url  # scheme, user and host kept
    assert settings.cache.redis_url == redis_url


def test_a_keys_payload_or_signature_alone_is_scrubbed_from_logs() -> None:
    """A line holding one segment of a key alone is scrubbed as the whole key is."""
    keys = mint_keys()
    table = integration(api_key=keys.ingest, profile_api_key=keys.profile)
    raw = {"integrations": [{**table, "profile_collection_id": "apc-x"}]}
    formatter = JsonFormatter(settings_from_dict(raw, {}).secret_values())
    for key in (keys.ingest, keys.profile):
        _, payload, signature = key.split(".")
        record = logging.makeLogRecord({"msg": "echoed %s, then %s", "args": (payload, signature)})
        line = formatter.format(record)
        assert payload not in line and signature not in line
        assert "echoed [REDACTED], then [REDACTED]" in line


def test_the_pipeline_keys_are_scrubbed_from_logs_as_written_and_encoded() -> None:
    """A pipeline key lets its holder send events: a log line carrying one is scrubbed.

    The Amperity keys were; the pipeline keys the gateway and the service accept were not,
    so a key quoted by a caller's error or a request URL reached the log as it was.
    """
    keys = ("pk_live_canary_7Qx2mV9b", "pk_live_second_0c4Fh2Lw")
    tables = [integration(pipeline_key=keys[0]), integration(id="app", pipeline_key=keys[1])]
    formatter = JsonFormatter(settings_from_dict({"integrations": tables}, {}).secret_values())
    for key in keys:
        for shown in (key, *base64_echoes(key)):
            url = f"/v1/t?pipeline_key={shown}"
            line = formatter.format(logging.makeLogRecord({"msg": "GET %s", "args": (url,)}))
            assert key not in line and not reveals_encoded(line, key)
            assert "[REDACTED]" in line


PIPELINE_KEY = "pk_live_canary_7Qx2mV9b"


@pytest.mark.parametrize(
    ("tables", "location", "fix"),
    [
        (
            [integration(pipeline_key=PIPELINE_KEY, tenant_id=f"{PIPELINE_KEY}\n")],
            "integrations[0].tenant_id",
            "copy it again from Amperity",
        ),
        (
            [integration(pipeline_key=PIPELINE_KEY, tenant_subdomain=PIPELINE_KEY)],
            "integrations[0].tenant_subdomain",
            "use the subdomain portion of your Amperity dashboard URL",
        ),
        (
            [
                integration(pipeline_key=PIPELINE_KEY, tenant_id=PIPELINE_KEY),
                integration(
                    id="app", pipeline_key="pk_app", tenant_id=PIPELINE_KEY, rate_limit_per_second=9
                ),
            ],
            "integrations[1].rate_limit_per_second",
            "set the same rate_limit_per_second",
        ),
        (
            [integration(pipeline_key=PIPELINE_KEY, allowed_origins=[f"{PIPELINE_KEY}.example"])],
            "integrations[0].allowed_origins[0]",
            "",
        ),
    ],
    ids=["tenant_id", "tenant_subdomain", "tenant-rate", "allowed_origins"],
)
def test_a_pipeline_key_pasted_into_another_field_is_never_quoted_back(
    tables: list[dict[str, Any]], location: str, fix: str
) -> None:
    """Whatever field's problem it is, a value holding the configuration's key is not quoted.

    The problem still names the field and its fix. A pipeline key pasted into tenant_id (or
    any field whose problem quotes its value) was printed back whole to terminals and CI.
    """
    problems = problems_of({"integrations": tables})
    assert [p for p in problems if PIPELINE_KEY in p] == []
    [problem] = [p for p in problems if p.startswith(f"{location}: ") and fix in p]
    assert "not quoted: it holds a pipeline key" in problem


@pytest.mark.parametrize("field", ["tenant_id", "id", "tenant_subdomain", "source_value"])
def test_a_fields_value_that_is_this_configurations_key_is_refused_by_name(field: str) -> None:
    """A pipeline key (or the admin token) pasted whole into a plain field is refused.

    tenant_id = the pipeline key loaded: it would be sent to Amperity in every request's
    Amperity-Tenant header, and shown wherever the tenant is (error metadata, Live Events).
    """
    token = "canary-admin-0123456789abcdef"
    for key in (PIPELINE_KEY, token):
        table = integration(pipeline_key=PIPELINE_KEY, **{field: key})
        problems = problems_of({"server": {"admin_token": token}, "integrations": [table]})
        assert [p for p in problems if key in p] == []
        assert (
            f"integrations[0].{field}: holds a pipeline key or token this configuration sets"
            in ("\n".join(problems))
        )
        assert f"write the {field} itself here" in "\n".join(problems)


def test_an_admin_token_pasted_into_an_address_is_never_quoted_back() -> None:
    """The same holds for the admin token, in a [server] field's problem."""
    token = "canary-admin-0123456789abcdef"
    server = {"admin_token": token, "http_address": token}
    [problem] = problems_of({"server": server, "integrations": [integration()]})
    assert token not in problem and problem.startswith("server.http_address: ")


@pytest.mark.parametrize(
    ("token", "at"),
    [
        ("canary admin 0123456789", 6),
        ("canary-admin-0123456789\n", 23),
        (" canary-admin-0123456789", 0),
        ("canary-admin-caf\u00e9-0123", 16),
    ],
    ids=["space", "newline", "leading-space", "non-ascii"],
)
def test_an_admin_token_a_bearer_header_cannot_carry_is_refused_by_position(
    token: str, at: int
) -> None:
    """Spaces, line breaks and non-ASCII, as api_key refuses them; never quoted back.

    ``admin_token`` took them: Live Events then refused the token pasted as configured
    (``Authorization: Bearer`` cannot carry it; a browser's address bar trims it).
    """
    [problem] = problems_of({"server": {"admin_token": token}, "integrations": [integration()]})
    assert problem.startswith(
        "server.admin_token: holds a space, a control character or a non-ASCII character "
        f"at position {at}, which Authorization: Bearer cannot carry. Fix: set a long random"
    )
    assert token.strip() not in problem
    raw = {"server": {"admin_token": "canary-admin-0123456789!~"}, "integrations": [integration()]}
    assert settings_from_dict(raw, {}).server.admin_token is not None


def test_an_unknown_log_level_names_the_field_and_the_levels() -> None:
    """[server] log_level takes debug, info, warning or error, in any case; nothing else."""
    [problem] = problems_of({"server": {"log_level": "verbose"}, "integrations": [integration()]})
    assert problem.startswith("server.log_level: must be 'debug', 'info', 'warning' or 'error'")
    raw = {"server": {"log_level": "WARNING"}, "integrations": [integration()]}
    assert settings_from_dict(raw, {}).server.log_level == "warning"


def test_a_redis_url_from_the_environment_keeps_its_password_out_of_reprs_and_logs() -> None:
    """cache.redis_url = "env:NAME" reads the URL; its password is hidden and scrubbed."""
    url = "redis://:env-Redis-Pa55word@cache.internal:6379/0"
    raw = {
        "cache": {"backend": "redis", "redis_url": "env:REDIS_URL"},
        "integrations": [integration()],
    }
    settings = settings_from_dict(raw, {"REDIS_URL": url})
    assert settings.cache.redis_url == url
    assert "env-Redis-Pa55word" not in repr(settings) and "env-Redis-Pa55word" not in str(settings)
    record = logging.makeLogRecord({"msg": "AUTH failed for %s", "args": (url,)})
    assert "env-Redis-Pa55word" not in JsonFormatter(settings.secret_values()).format(record)


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({}, ["REDIS_URL, which is not set", "export REDIS_URL with the Redis URL"]),
        ({"REDIS_URL": ""}, ["REDIS_URL, which is empty", "export REDIS_URL with the Redis URL"]),
    ],
    ids=["not-set", "empty"],
)
def test_a_redis_url_variable_that_is_missing_or_empty_is_named(
    environ: dict[str, str], words: list[str]
) -> None:
    """env:NAME in cache.redis_url fails as every env: secret does, naming the variable."""
    raw = {"cache": {"redis_url": "env:REDIS_URL"}, "integrations": [integration()]}
    [problem] = problems_of(raw, environ)
    assert problem.startswith("cache.redis_url: refers to environment variable REDIS_URL")
    for word in words:
        assert word in problem


@pytest.mark.parametrize(
    ("key", "environ", "words"),
    [
        ("env:PROFILE_KEY", {}, "refers to environment variable PROFILE_KEY, which is not set"),
        ("", {}, "is blank"),
    ],
    ids=["env-not-set", "blank"],
)
def test_a_profile_key_already_refused_is_not_refused_again_under_personalisation(
    key: str, environ: dict[str, str], words: str
) -> None:
    """One mistake, one problem: personalisation does not also ask for the key just named."""
    table = integration(
        profile_api_key=key, profile_collection_id="apc-x", personalisation_enabled=True
    )
    [problem] = problems_of({"integrations": [table]}, environ)
    assert problem.startswith("integrations[0].profile_api_key: ")
    assert words in problem


def test_an_env_prefix_without_a_variable_name_shows_the_field_s_example() -> None:
    """cache.redis_url = "env:" asks for env:NAME with an example variable for Redis."""
    raw = {"cache": {"redis_url": "env:"}, "integrations": [integration()]}
    [problem] = problems_of(raw)
    assert problem.startswith("cache.redis_url: starts with env:")
    assert 'redis_url = "env:AMPERITY_SIGNAL_REDIS_URL"' in problem


@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("api_key", ["JWTs of a few hundred characters", "Streaming Ingest key"]),
        ("profile_api_key", ["JWTs of a few hundred characters", "Profile API key"]),
        ("admin_token", ["easy to guess", "openssl rand -hex 16"]),
    ],
)
def test_a_secret_too_short_for_the_log_scrubber_is_refused_unquoted(
    field: str, words: list[str]
) -> None:
    """A key or token under 8 characters (a placeholder, a cut paste) is refused by name."""
    server = {"admin_token": "adm1n"} if field == "admin_token" else {}
    keys = {"profile_api_key": "pk-7chr", "profile_collection_id": "apc-x"}
    table = integration(**(keys if field == "profile_api_key" else {}))
    if field == "api_key":
        table["api_key"] = "env:INGEST_KEY"  # read from the environment: refused alike
    [problem] = problems_of({"server": server, "integrations": [table]}, {"INGEST_KEY": "xyz123"})
    assert problem.startswith(
        f"{'server' if field == 'admin_token' else 'integrations[0]'}.{field}"
    )
    assert "shorter than 8 characters" in problem and "logs could not scrub" in problem
    for word in words:
        assert word in problem
    for secret in ("adm1n", "pk-7chr", "xyz123"):
        assert secret not in problem


def test_a_secret_of_8_characters_is_long_enough_to_be_scrubbed_and_loads() -> None:
    """The shortest secret the configuration takes is the shortest the log scrubber sees."""
    raw = {"server": {"admin_token": "8-chars!"}, "integrations": [integration()]}
    settings = settings_from_dict(raw, {})
    record = logging.makeLogRecord({"msg": "token %s", "args": ("8-chars!",)})
    assert "8-chars!" not in JsonFormatter(settings.secret_values()).format(record)


@pytest.mark.parametrize(
    ("url", "forms"),
    [
        ("rediss://:pw@cache.internal:6380/2", [":pw@cache.internal:6380"]),
        ("redis://cache.internal:6379/0?password=pw", ["?password=pw"]),
    ],
    ids=["user-info", "query-parameter"],
)
def test_a_short_redis_password_loads_and_its_url_is_scrubbed_from_logs(
    url: str, forms: list[str]
) -> None:
    """Redis chose the password: a short one loads, and the URL forms carrying it are scrubbed."""
    raw = {"cache": {"backend": "redis", "redis_url": url}, "integrations": [integration()]}
    formatter = JsonFormatter(settings_from_dict(raw, {}).secret_values())
    for shown in (url, *forms):
        record = logging.makeLogRecord({"msg": "redis at %s failed", "args": (shown,)})
        line = formatter.format(record)
        assert "[REDACTED]" in line and ":pw@" not in line and "password=pw" not in line


@pytest.mark.parametrize(
    ("table", "field", "value", "words"),
    [
        (
            "server",
            "workers",
            True,
            ["must be a whole number, not true or false", "e.g. workers = 1."],
        ),
        (
            "server",
            "workers",
            "2",
            ["must be a whole number, not a string", "without quotes, e.g. workers = 1."],
        ),
        ("server", "workers", 2.0, ["must be a whole number, not a decimal number"]),
        ("cache", "max_entries", "1000", ["must be a whole number, not a string"]),
        ("cache", "max_bytes", "268435456", ["must be a whole number, not a string"]),
        ("cache", "max_bytes", 2.5e8, ["must be a whole number, not a decimal number"]),
        ("gateway", "rate_limit_burst", 40.5, ["must be a whole number, not a decimal number"]),
        ("integrations", "max_retries", False, ["must be a whole number, not true or false"]),
        ("integrations", "rate_limit_per_second", "500", ["must be a whole number"]),
        (
            "integrations",
            "personalisation_enabled",
            "yes",
            ["must be true or false, not a string", "e.g. personalisation_enabled = true"],
        ),
        ("integrations", "personalisation_enabled", 1, ["must be true or false, not a number"]),
        (
            "server",
            "grace_period",
            "10",
            ["must be a number, not a string", "e.g. grace_period = 10."],
        ),
        ("cache", "attribute_ttl", True, ["must be a number, not true or false"]),
        ("gateway", "rpc_timeout", "2.0", ["must be a number, not a string", "rpc_timeout = 2."]),
    ],
)
def test_booleans_and_numbers_must_be_toml_booleans_and_numbers(
    table: str, field: str, value: Any, words: list[str]
) -> None:
    """A quoted number, a boolean for a number, "yes" for a boolean: each is refused by name.

    The example to copy is the field's own line (its default for a number): workers = "2"
    was told only "e.g. 10", where a true or false wanted gets its field's line.
    """
    raw: dict[str, Any] = {"integrations": [integration()]}
    if table == "integrations":
        raw["integrations"][0][field] = value
        location = f"integrations[0].{field}"
    else:
        raw[table] = {field: value}
        location = f"{table}.{field}"
    [problem] = problems_of(raw)
    assert problem.startswith(f"{location}: ")
    for word in words:
        assert word in problem


@pytest.mark.parametrize("value", ["yes", "no", "true", 1, 0])
def test_include_properties_in_blueprint_overrides_must_be_a_toml_boolean(
    tmp_path: Path, value: Any
) -> None:
    """include_properties = "no" was read as false and "yes" or 1 as true: now each is named."""
    wish = {"type": "wish", "events": ["Wished"], "include_properties": value}
    table = integration(blueprint={"handlers": {"wish": wish}})
    path = tmp_path / "overrides.toml"
    path.write_text(tomli_w.dumps({"integrations": [table]}))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    [problem] = [str(p) for p in caught.value.problems]
    location = "integrations[0].blueprint.handlers.wish.include_properties"
    assert problem.startswith(f"{location}: must be true or false, not ")
    assert "e.g. include_properties = true" in problem
    assert str(caught.value).startswith(f"the configuration in {path} has 1 problem(s):")


@pytest.mark.parametrize(
    ("value", "given"),
    [
        (float("nan"), "not inf or nan"),
        (float("inf"), "not inf or nan"),
        (["a"], "not an array"),
        ({"a": 1}, "not a table"),
    ],
)
def test_a_mapping_default_in_overrides_is_one_finite_json_scalar(value: Any, given: str) -> None:
    """A NaN default was dropped from every event; an array got one error per union member."""
    mapping = {"target": "channel", "default": value}
    [problem] = problems_of(
        {"integrations": [integration(blueprint={"global_mappings": [mapping]})]}
    )
    assert problem.startswith("integrations[0].blueprint.global_mappings[0].default: must be ")
    assert given in problem and 'e.g. default = "unknown"' in problem


def test_a_mapping_default_keeps_its_toml_type() -> None:
    """A string, a whole number, a decimal and a boolean default stay what they were."""
    mappings = [
        {"target": f"t{n}", "default": value} for n, value in enumerate(["web", 0, 2.5, True])
    ]
    raw = {"integrations": [integration(blueprint={"global_mappings": mappings})]}
    loaded = settings_from_dict(raw, {}).integrations[0].blueprint.global_mappings
    assert [(m.default, type(m.default)) for m in loaded] == [
        ("web", str),
        (0, int),
        (2.5, float),
        (True, bool),
    ]


def test_a_whole_number_is_a_number_of_seconds() -> None:
    """A float field takes a TOML integer: grace_period = 10 is ten seconds."""
    raw = {"server": {"grace_period": 10}, "integrations": [integration()]}
    assert settings_from_dict(raw, {}).server.grace_period == 10.0


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        ({"integrations": [integration(**{PIPELINE_KEY: "x"})]}, "integrations[0].<a "),
        ({"integrations": [integration()], "server": {PIPELINE_KEY: 1}}, "server.<a "),
        ({"integrations": [integration()], PIPELINE_KEY: {"a": 1}}, "<a "),
        (
            {"integrations": [integration(blueprint={"handlers": {PIPELINE_KEY: {}}})]},
            "integrations[0].blueprint.handlers.<a ",
        ),
        (
            {
                "integrations": [
                    integration(
                        blueprint={
                            "global_mappings": [
                                {"source": "user_id", "target": "a", "transform": PIPELINE_KEY}
                            ]
                        }
                    )
                ]
            },
            "integrations[0].blueprint.global_mappings[0]",
        ),
    ],
    ids=["integration-field-name", "server-field-name", "table-name", "handler-name", "transform"],
)
def test_a_pipeline_key_typed_as_a_name_or_quoted_by_a_validator_is_never_printed(
    raw: dict[str, Any], location: str
) -> None:
    """A key pasted where a name goes (or quoted by a blueprint validator) is described.

    An unknown field is named by its key, so a pipeline key pasted as a field's name was
    printed back whole; so was one pasted as a blueprint override's transform.
    """
    for table in raw["integrations"]:
        table["pipeline_key"] = PIPELINE_KEY
    problems = problems_of(raw)
    assert [p for p in problems if PIPELINE_KEY in p] == []
    assert any(
        p.startswith(location) and "a pipeline key, API key or token set here" in p
        for p in problems
    ), problems


def test_a_handler_name_with_other_characters_names_the_rule_and_the_fix() -> None:
    """A blueprint handler's name is a table key; its problem says what a name may hold."""
    handler = {"type": "add_to_wishlist", "events": ["a"], "use": ["commerce"]}
    table = integration(blueprint={"handlers": {"Wish list": handler}})
    [problem] = problems_of({"integrations": [table]})
    assert problem == (
        "integrations[0].blueprint.handlers.Wish list: is not a handler name: a name has "
        "lowercase letters, digits and _, and starts with a letter. Fix: rename the table, "
        "e.g. [integrations.blueprint.handlers.add_to_wishlist]."
    )


def test_an_api_key_quoted_by_a_validator_is_described_by_its_look() -> None:
    """A JWT-shaped key no field of this configuration sets is still never printed whole."""
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlLWNhbmFyeQ"
    mapping = {"source": "user_id", "target": "a", "transform": jwt}
    [problem] = problems_of(
        {"integrations": [integration(blueprint={"global_mappings": [mapping]})]}
    )
    assert "c2lnbmF0dXJlLWNhbmFyeQ" not in problem and "eyJzdWIiOiJjYW5hcnkifQ" not in problem
    assert "unknown transform '<an API key>'" in problem


@pytest.mark.parametrize(
    ("blueprint", "location"),
    [
        (
            {"global_mappings": [{"source": "context.consent", "target": "consent"}]},
            "global_mappings[0]",
        ),
        (
            {
                "handlers": {
                    "wish": {
                        "type": "add_to_wishlist",
                        "events": ["Product Wishlisted"],
                        "mappings": [{"source": "properties.sku", "target": "sku id"}],
                    }
                }
            },
            "handlers.wish.mappings[0]",
        ),
    ],
)
def test_a_blueprint_target_is_told_the_payload_key_fix_not_the_query_parameter_one(
    blueprint: dict[str, Any], location: str
) -> None:
    """A blueprint target is a flat payload key: it was told to be a query parameter name."""
    [problem] = problems_of({"integrations": [integration(blueprint=blueprint)]})
    assert problem.startswith(f"integrations[0].blueprint.{location}.target: target ")
    assert "key of the flat JSON payload" in problem and "e.g. page_url" in problem
    assert "query parameter" not in problem and "pageCategory" not in problem


def test_a_context_mapping_target_keeps_the_query_parameter_fix() -> None:
    """A personalisation target is sent as a query parameter: its fix says so."""
    mappings = [{"source": "properties.category", "target": "enrich"}]
    [problem] = problems_of(
        {"integrations": [integration(personalisation_context_mappings=mappings)]}
    )
    assert problem.startswith("integrations[0].personalisation_context_mappings[0].target: ")
    assert "query parameter name" in problem and "flat JSON payload" not in problem


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("canary_ï_7Qx2", "at position 7"),
        ("canary 7Qx2", "at position 6"),
        ("canary_7Qx2\n", "at position 11"),
        ("canary_" + "x" * 194, "is 201 characters long, more than the 200"),
    ],
    ids=["non-ascii", "space", "newline", "too-long"],
)
def test_a_pipeline_key_the_gateway_would_refuse_is_refused_at_load_unquoted(
    key: str, words: str
) -> None:
    """check-config and serve took keys the gateway then refused on every request."""
    [problem] = problems_of({"integrations": [integration(pipeline_key=key)]})
    assert problem.startswith("integrations[0].pipeline_key: ")
    assert words in problem and "the gateway would refuse every request" in problem
    assert "1-200 printable ASCII characters, with no spaces" in problem
    assert "canary" not in problem


@pytest.mark.parametrize(
    "key", ["p", "pk_live_" + "x" * 192, "pk_web", "pk_!#$%&'()*+,-./:;<=>?@[]^`{|}~", " pk", "pk "]
)
def test_the_configuration_takes_exactly_the_pipeline_keys_the_gateway_takes(key: str) -> None:
    """One rule for both: a key loads if and only if the gateway's routes accept it."""
    try:
        routes_api._pipeline_key(key, {})
        gateway_takes = True
    except GatewayError:
        gateway_takes = False
    try:
        settings_from_dict({"integrations": [integration(pipeline_key=key)]}, {})
        loads = True
    except ConfigError:
        loads = False
    assert loads is gateway_takes


@pytest.mark.parametrize(
    ("integration_id", "words"),
    [
        ("x" * 5000, "is 5000 characters long, more than the 64 an integration id may have"),
        ("a" * 65, "is 65 characters long, more than the 64"),
        ("w\x00eb", "holds '\\x00' at position 1"),
        ("web shop", "holds ' ' at position 3"),
        (" web", "starts with ' ', not an ASCII letter or digit"),
        ("-web", "starts with '-', not an ASCII letter or digit"),
        ("acmé", "holds 'é' at position 3"),
        ("", "must not be empty"),
    ],
    ids=[
        "5000-chars",
        "65-chars",
        "nul",
        "space",
        "leading-space",
        "leading-dash",
        "accent",
        "empty",
    ],
)
def test_an_integration_id_outside_the_rule_is_refused_naming_it(
    integration_id: str, words: str
) -> None:
    """An id goes into calls, metric labels, logs and Live Events URLs: refused at load.

    5,000 characters, a NUL or a space loaded, and Live Events then refused the long one.
    """
    [problem] = problems_of({"integrations": [integration(id=integration_id)]})
    assert problem.startswith("integrations[0].id: "), problem
    assert words in problem
    assert (
        "Fix: use 1-64 ASCII letters, digits, '-', '_' or '.', starting with a letter or "
        in problem
    )
    assert "x" * 100 not in problem  # a long id is told by its length, not quoted


@pytest.mark.parametrize(
    "integration_id",
    ["web", "acme-web", "demo", "demo-storefront", "b2b_saas", "shop.eu_2", "7", "A" * 64],
)
def test_identifier_shaped_integration_ids_load(integration_id: str) -> None:
    """The ids of the examples, docs and tests, and any identifier up to 64 characters."""
    settings = settings_from_dict({"integrations": [integration(id=integration_id)]}, {})
    assert settings.integrations[0].id == integration_id
