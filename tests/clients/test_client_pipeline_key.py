"""A pipeline key the service would refuse is refused when the client is built: shared cases.

``clients/testdata/pipeline_keys.json`` holds each key and the whole message refusing it;
``clients/node/test/pipeline_key.test.js`` runs the same file. The service's gateway and
config hold the rule (``limits.PIPELINE_KEY``); the service answers any other key
``NotFound``, which hid the stray space a copy brought along.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from amperity_signal.limits import MAX_PIPELINE_KEY, PIPELINE_KEY, PIPELINE_KEY_RULE
from amperity_signal_client import AmperityClient, AsyncAmperityClient
from amperity_signal_client import pipeline_key as client_rule

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[2] / "clients" / "testdata" / "pipeline_keys.json").read_text("utf-8")
)["cases"]


def _key(case: dict[str, Any]) -> str:
    """The case's key, repeated ``times`` times when the case says so."""
    return str(case["key"]) * int(case.get("times", 1))


@pytest.mark.parametrize("client_class", [AsyncAmperityClient, AmperityClient])
@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
async def test_a_pipeline_key_is_taken_or_refused_as_the_shared_case_says(
    client_class: type[AsyncAmperityClient | AmperityClient], case: dict[str, Any]
) -> None:
    """Refused by length or by the position and kind of a character, the key unquoted."""
    key = _key(case)
    if case["refused"] is None:
        client = client_class("127.0.0.1:1", pipeline_key=key)
        if isinstance(client, AmperityClient):
            client.close()
        else:
            await client.aclose()
        return
    with pytest.raises(ValueError, match=r"^pipeline_key ") as raised:
        client_class("127.0.0.1:1", integration_id="web", pipeline_key=key)

    assert str(raised.value) == case["refused"].format(field="pipeline_key")
    assert key not in str(raised.value)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_the_clients_take_the_keys_the_service_takes(case: dict[str, Any]) -> None:
    """The cases agree with the service's rule, so the clients refuse no key it takes."""
    assert (PIPELINE_KEY.fullmatch(_key(case)) is None) == (case["refused"] is not None)


def test_the_clients_say_the_rule_as_the_service_says_it() -> None:
    """One rule, one wording: the gateway's INVALID_PIPELINE_KEY names it the same way."""
    assert client_rule.MAX_PIPELINE_KEY == MAX_PIPELINE_KEY
    assert client_rule.PIPELINE_KEY_RULE == PIPELINE_KEY_RULE
