"""Loading errors name the file, the field and the fix; render shows the effective blueprint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from amperity_signal.blueprint import (
    BLUEPRINTS_DIR,
    BlueprintError,
    BlueprintOverrides,
    load_blueprint,
    render_blueprint,
)

GOOD_GLOBAL = """\
version: 1.8.0
default: pass_through
global:
  mappings:
    - source: anonymous_id
      target: cookieid
"""


def _write(directory: Path, preset: str, global_yaml: str = GOOD_GLOBAL) -> Path:
    """Write a global.yaml and a shop.yaml into a fresh directory."""
    (directory / "global.yaml").write_text(global_yaml)
    (directory / "shop.yaml").write_text(preset)
    return directory


def test_unknown_vertical_lists_the_presets() -> None:
    """Asking for a vertical that does not exist names the seven that do."""
    with pytest.raises(BlueprintError, match=r"unknown vertical 'grocery'.*retail, travel"):
        load_blueprint("grocery")


def test_unknown_transform_in_yaml_names_file_mapping_and_allowed_names(tmp_path: Path) -> None:
    """A typo in a transform is a load error naming shop.yaml, the target and the choices."""
    _write(
        tmp_path,
        """\
vertical: shop
handlers:
  buy:
    type: purchase
    events: [purchase]
    mappings:
      - source: properties.currency
        target: currency
        transform: upper
""",
    )
    with pytest.raises(BlueprintError) as caught:
        load_blueprint("shop", directory=tmp_path)
    message = str(caught.value)
    assert message.startswith("shop.yaml: handlers.buy.mappings.0:")
    assert "target 'currency'" in message
    assert "'upper'" in message
    assert "allowed: lowercase, uppercase, trim, sha256" in message


def test_misspelt_key_is_named_with_its_location(tmp_path: Path) -> None:
    """An unknown key (tansform) is refused rather than ignored, with its full location."""
    _write(
        tmp_path,
        """\
vertical: shop
handlers:
  buy:
    type: purchase
    events: [purchase]
    mappings:
      - source: properties.currency
        target: currency
        tansform: uppercase
""",
    )
    with pytest.raises(
        BlueprintError,
        match=r"shop\.yaml: handlers\.buy\.mappings\.0\.tansform: "
        "unknown key",
    ):
        load_blueprint("shop", directory=tmp_path)


def test_broken_yaml_syntax_names_file_and_line(tmp_path: Path) -> None:
    """Invalid YAML is reported with the file name and the line of the problem."""
    _write(tmp_path, "vertical: shop\nhandlers:\n  buy: [unclosed\n")
    with pytest.raises(BlueprintError, match=r"shop\.yaml: invalid YAML at line \d+"):
        load_blueprint("shop", directory=tmp_path)


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    """A handler without a type names the missing field."""
    _write(tmp_path, "vertical: shop\nhandlers:\n  buy:\n    events: [purchase]\n")
    with pytest.raises(BlueprintError, match=r"shop\.yaml: handlers\.buy\.type: Field required"):
        load_blueprint("shop", directory=tmp_path)


@pytest.mark.parametrize("value", ['"yes"', '"false"', "1"])
def test_include_properties_in_yaml_must_be_true_or_false(tmp_path: Path, value: str) -> None:
    """A quoted "yes" or a 1 is refused naming the file, the field and what to write."""
    _write(
        tmp_path,
        "vertical: shop\nhandlers:\n  buy:\n    type: purchase\n    events: [purchase]\n"
        f"    include_properties: {value}\n",
    )
    with pytest.raises(BlueprintError) as caught:
        load_blueprint("shop", directory=tmp_path)
    assert str(caught.value) == (
        "shop.yaml: handlers.buy.include_properties: must be true or false, without quotes, "
        "e.g. include_properties: true"
    )


def test_yaml_mapping_targeting_consent_is_refused(tmp_path: Path) -> None:
    """Consent cannot be mapped from the YAML either."""
    bad_global = GOOD_GLOBAL + "    - source: context.consent\n      target: consent\n"
    _write(tmp_path, "vertical: shop\nhandlers: {}\n", bad_global)
    with pytest.raises(
        BlueprintError,
        match=r"global\.yaml: global\.mappings\.1\.target: "
        "target 'consent' is built into the engine",
    ):
        load_blueprint("shop", directory=tmp_path)


def test_file_named_for_another_vertical_is_refused(tmp_path: Path) -> None:
    """The vertical key must match the file name, so a copied file is caught."""
    _write(tmp_path, "vertical: retail\nhandlers: {}\n")
    with pytest.raises(BlueprintError, match=r"'vertical' is 'retail'.*'shop'"):
        load_blueprint("shop", directory=tmp_path)


def test_two_handlers_claiming_one_event_are_refused(tmp_path: Path) -> None:
    """Event names are unique across handlers, also after snake_case normalisation."""
    _write(
        tmp_path,
        """\
vertical: shop
handlers:
  a: {type: a, events: [Order Completed]}
  b: {type: b, events: [order_completed]}
""",
    )
    with pytest.raises(BlueprintError, match="already claimed by handler 'a'"):
        load_blueprint("shop", directory=tmp_path)


def test_shipped_files_load_from_a_copied_directory(tmp_path: Path) -> None:
    """The directory argument reads a copy of the shipped files the same way."""
    for path in BLUEPRINTS_DIR.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    assert "purchase" in load_blueprint("retail", directory=tmp_path).handlers


def test_render_blueprint_is_yaml_of_the_effective_blueprint() -> None:
    """render_blueprint shows globals, handlers with expanded sets, and applied overrides."""
    overrides = BlueprintOverrides.model_validate(
        {
            "hash_identifiers": "hashed",
            "global_mappings": [
                {"source": "partner_attrs.amperity.LifetimeTier", "target": "user_tier"}
            ],
        }
    )
    data = yaml.safe_load(render_blueprint(load_blueprint("retail", overrides)))
    assert data["version"] == "1.8.0"
    assert data["hash_identifiers"] == "hashed"
    assert data["built_ins"] == ["consent", "source", "type"]
    assert data["global"]["mappings"][-1] == {
        "source": "partner_attrs.amperity.LifetimeTier",
        "target": "user_tier",
    }
    purchase = data["handlers"]["purchase"]
    assert purchase["events"] == ["purchase", "Order Completed"]
    assert {"order_id", "items", "currency"} <= {m["target"] for m in purchase["mappings"]}
    assert data["handlers"]["pageview"]["message_types"] == ["page"]
