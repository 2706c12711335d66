"""``env:NAME``: the secrets read from the environment, every other field refusing it.

A field that does not read the environment used to take ``"env:TENANT"`` as the text
itself, without a word: a pipeline key of ``env:PK`` that no page ever sends.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from amperity_signal.config import settings_from_dict
from amperity_signal.config_checks import ENV_FIELDS
from amperity_signal.errors import ConfigError
from amperity_signal.logs import JsonFormatter
from tests.unit.cli_support import INGEST, integration, run_cli

PIPELINE_KEY = "pk_live_from_environment_5c1e"
PROFILE = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6InByb2ZpbGUifQ.cHJvZmlsZS1jYW5hcnktNjc4OTA"
# Every field that takes env:NAME, as the messages and the README name them.
ENV_CAPABLE = (
    "[server] admin_token",
    "[cache] redis_url",
    "[[integrations]] api_key, profile_api_key, pipeline_key",
)


def problems_of(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(raw, environ or {})
    return [str(p) for p in caught.value.problems]


def test_a_pipeline_key_written_env_name_is_read_from_the_environment() -> None:
    """pipeline_key = "env:NAME" is the variable's value: the key pages send, and scrubbed."""
    raw = {"integrations": [integration(pipeline_key="env:WEB_PIPELINE_KEY")]}
    settings = settings_from_dict(raw, {"WEB_PIPELINE_KEY": PIPELINE_KEY})
    assert settings.integrations[0].pipeline_key == PIPELINE_KEY
    assert PIPELINE_KEY in settings.secret_values()
    assert PIPELINE_KEY not in repr(settings)
    record = logging.makeLogRecord({"msg": "key %s", "args": (PIPELINE_KEY,)})
    assert PIPELINE_KEY not in JsonFormatter(settings.secret_values()).format(record)


@pytest.mark.parametrize(
    ("environ", "words"),
    [({}, "which is not set"), ({"WEB_PIPELINE_KEY": ""}, "which is empty")],
    ids=["not-set", "empty"],
)
def test_a_pipeline_key_variable_missing_is_the_error_every_secret_gives(
    environ: dict[str, str], words: str
) -> None:
    """An unset or empty variable is named, with what to export, as for api_key."""
    raw = {"integrations": [integration(pipeline_key="env:WEB_PIPELINE_KEY")]}
    [problem] = problems_of(raw, environ)
    assert problem.startswith(
        f"integrations[0].pipeline_key: refers to environment variable WEB_PIPELINE_KEY, {words}"
    )
    assert "export WEB_PIPELINE_KEY with the pipeline key" in problem


def test_a_pipeline_key_env_without_a_name_shows_the_form() -> None:
    """pipeline_key = "env:" asks for env:NAME with an example variable, as the keys do."""
    [problem] = problems_of({"integrations": [integration(pipeline_key="env:")]})
    assert problem.startswith("integrations[0].pipeline_key: starts with env:")
    assert 'pipeline_key = "env:AMPERITY_SIGNAL_PIPELINE_KEY"' in problem


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("pk live " + "s3cr3t-tail", "a space, a control character or a non-ASCII character"),
        ("pk_" + "x" * 250, "characters long, more than the 200"),
    ],
    ids=["space", "too-long"],
)
def test_a_pipeline_key_from_the_environment_must_be_one_the_gateway_takes(
    value: str, words: str
) -> None:
    """The variable's value passes limits.PIPELINE_KEY too, and is never quoted back."""
    raw = {"integrations": [integration(pipeline_key="env:WEB_PIPELINE_KEY")]}
    [problem] = problems_of(raw, {"WEB_PIPELINE_KEY": value})
    assert problem.startswith("integrations[0].pipeline_key: ")
    assert words in problem
    assert "s3cr3t-tail" not in problem and "x" * 20 not in problem


def test_check_config_reads_a_pipeline_key_from_the_environment_and_never_prints_it(
    tmp_path: Path,
) -> None:
    """check-config accepts the file and its output holds no trace of the key."""
    config = tmp_path / "signal.toml"
    table = integration(pipeline_key="env:WEB_PIPELINE_KEY")
    config.write_text(tomli_w.dumps({"integrations": [table]}))
    result = run_cli(
        "check-config", "--config", str(config), env={"WEB_PIPELINE_KEY": PIPELINE_KEY}
    )
    assert result.returncode == 0, result.stderr
    assert PIPELINE_KEY not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("table", "field", "value", "location"),
    [
        ("integrations", "tenant_id", "env:TENANT", "integrations[0].tenant_id"),
        ("integrations", "event_stream_id", "env:STREAM", "integrations[0].event_stream_id"),
        ("integrations", "source_value", "env:SOURCE", "integrations[0].source_value"),
        ("integrations", "allowed_origins", "env:ORIGINS", "integrations[0].allowed_origins"),
        (
            "integrations",
            "allowed_origins",
            ["https://shop.example.com", "env:ORIGIN"],
            "integrations[0].allowed_origins[1]",
        ),
        ("integrations", "vertical", "env:VERTICAL", "integrations[0].vertical"),
        ("server", "grpc_address", "env:GRPC_ADDRESS", "server.grpc_address"),
        ("server", "log_level", "env:LOG_LEVEL", "server.log_level"),
        ("cache", "backend", "env:BACKEND", "cache.backend"),
        ("gateway", "trusted_proxies", ["env:PROXIES"], "gateway.trusted_proxies[0]"),
    ],
)
def test_env_in_a_field_that_is_no_secret_is_refused_naming_the_fields_that_take_it(
    table: str, field: str, value: Any, location: str
) -> None:
    """tenant_id = "env:TENANT" is one clear problem, never the literal text, set or not."""
    raw: dict[str, Any] = {"integrations": [integration()]}
    if table == "integrations":
        raw["integrations"][0][field] = value
    else:
        raw[table] = {field: value}
    # Set, so that a read of the environment would succeed: the field still refuses it.
    environ = dict.fromkeys(
        ("TENANT", "STREAM", "SOURCE", "ORIGINS", "ORIGIN", "VERTICAL", "LOG_LEVEL", "BACKEND"),
        "info",
    )
    environ |= {"GRPC_ADDRESS": "127.0.0.1:50051", "PROXIES": "10.0.0.0/8"}
    [problem] = problems_of(raw, environ)
    assert problem.startswith(f"{location}: starts with env:, but {field} is not read from")
    assert "taken as the text itself" in problem
    for fields in ENV_CAPABLE:
        assert fields in problem


@pytest.mark.parametrize(
    ("table", "field"), [(table, field) for table, names in ENV_FIELDS.items() for field in names]
)
def test_every_field_named_as_taking_env_reads_it(table: str, field: str) -> None:
    """Each field the messages and the README list resolves env:NAME to the variable's value."""
    values = {
        "admin_token": "admin-token-from-environment",
        "redis_url": "redis://127.0.0.1:6379/3",
        "api_key": INGEST,
        "profile_api_key": PROFILE,
        "pipeline_key": PIPELINE_KEY,
    }
    raw: dict[str, Any] = {"integrations": [integration(profile_collection_id="apc-x")]}
    if table == "integrations":
        raw["integrations"][0][field] = "env:SECRET"
        read = getattr(settings_from_dict(raw, {"SECRET": values[field]}).integrations[0], field)
    else:
        raw[table] = {field: "env:SECRET"}
        read = getattr(getattr(settings_from_dict(raw, {"SECRET": values[field]}), table), field)
    shown = read if isinstance(read, str) else read.get_secret_value()
    assert shown == values[field]


def test_env_in_an_unknown_field_is_told_the_known_field_it_is_close_to() -> None:
    """A misspelt field is pydantic's to name ("did you mean"), not refused for its env:."""
    [problem] = problems_of({"integrations": [integration(tenantid="env:TENANT")]})
    assert problem.startswith("integrations[0].tenantid: is not a known field")
    assert "did you mean tenant_id" in problem


def test_the_readme_lists_every_field_that_takes_env() -> None:
    """Where the README says "write secrets as env:NAME", it names each field that reads it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("write secrets as `env:NAME`")
    listed = readme[start : readme.index(")", start)]
    for table, names in ENV_FIELDS.items():
        for name in names:
            written = name if table == "integrations" else f"[{table}] {name}"
            assert f"`{written}`" in listed
