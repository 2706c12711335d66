"""Vendor-id keys: Datafly's camelCase to the proto's snake_case, alike in the service and clients.

The cases are ``clients/testdata/vendor_keys.json``, which the Node client's suite reads too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amperity_signal.casing import camel_to_snake
from amperity_signal_client.events import vendor_key

CASES: list[list[str]] = json.loads(
    (Path(__file__).parents[2] / "clients" / "testdata" / "vendor_keys.json").read_text("utf-8")
)["cases"]


@pytest.mark.parametrize(("key", "expected"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_the_service_and_the_python_client_name_a_vendor_key_alike(key: str, expected: str) -> None:
    """A camelCase key such as gaClientId becomes ga_client_id; acronyms stay one word."""
    assert camel_to_snake(key) == expected
    assert vendor_key(key) == expected


@given(st.text(alphabet="abcXYZ_019", max_size=12))
def test_converting_twice_changes_nothing_and_both_agree(key: str) -> None:
    """Idempotent, so a snake_case key sent by a client converting already is kept."""
    once = camel_to_snake(key)
    assert camel_to_snake(once) == once
    assert vendor_key(key) == once
