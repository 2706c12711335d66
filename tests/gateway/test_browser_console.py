"""What datafly.js tells the page's developer in the console, in Node (test_datafly_js's harness).

Two kinds of line: ``datafly.init:`` names an option of the wrong type and its fix (a
warning when it was coerced, an error when it was refused for its default); ``datafly:``
tells a failure (a profile lookup, dropped events, an unrecorded consent) once per kind and
page. The success path says nothing, and no line quotes the pipeline key.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .test_datafly_js import ENRICH_TIMEOUT_MS, SEND_TIMEOUT_MS, run_datafly

KEY = "pk_console_f1_7d2a"
# The timers the harness holds (they fire only when a scenario says): the timeouts the
# options below set too, so that a lookup answers before them.
HOLD = (ENRICH_TIMEOUT_MS, SEND_TIMEOUT_MS, 2500, 3000)
BASE = "https://collect.example.com"
ONCE = "(Said once per page: later ones are not reported.)"
# Records what datafly.js says: [level, text] for each console.warn and console.error.
_LISTEN = """
  const said = [];
  console.warn = (...parts) => said.push(['warn', parts.join(' ')]);
  console.error = (...parts) => said.push(['error', parts.join(' ')]);
"""
_HYDRATED = {"status": 200, "body": {"provider": "amperity", "attributes": {"Persona": "P"}}}
_ALLOWED = {"status": 200, "body": {"success": True, "profileAllowed": True}}
_BATCH_OK = {"status": 200, "body": {"success": True, "results": [{"messageId": "m", "ok": True}]}}
_UNKNOWN_KEY = {
    "status": 404,
    "body": {
        "error": {
            "code": "UNKNOWN_PIPELINE_KEY",
            "message": "No integration uses this pipeline key.",
            "field": "pipeline_key",
        }
    },
}
_UNAVAILABLE = {
    "status": 503,
    "headers": {"Retry-After": "1"},
    "body": {"error": {"code": "SERVICE_UNAVAILABLE", "message": "The service is unavailable."}},
}


def _said(run: Any) -> list[tuple[str, str]]:
    """The console lines of a run, as (level, text); none of them may quote the key."""
    lines = [(level, text) for level, text in run["result"]["said"]]
    assert all(KEY not in text for _, text in lines), lines
    return lines


def _init(options: str) -> str:
    """A scenario: listen, init with ``options`` (JS), wait for the profile, return the lines."""
    return (
        _LISTEN
        + f"""
      const datafly = createDatafly();
      let threw = null;
      try {{
        datafly.init({options});
      }} catch (error) {{
        threw = String(error);
      }}
      await datafly.onProfileReady();
      return {{ threw, said }};
    """
    )


def test_init_names_each_option_of_the_wrong_type_with_its_fix_and_does_not_throw() -> None:
    """A bad key, endpoints, a lone provider string, a word for timeoutMs: one line each.

    ``enrich.providers: 'amperity'`` meant no lookup at all, and not a word said; it is now
    looked up as ``["amperity"]``. A well-formed config says nothing.
    """
    options = """{
      pipelineKey: 'pk with a space', endpoint: 'collect.example.com',
      enrich: { endpoint: 42, providers: 'amperity', timeoutMs: 'soon' },
    }"""
    run = run_datafly(_init(options), [_HYDRATED])
    assert run["result"]["threw"] is None
    assert "pk with a space" not in json.dumps(run["result"]["said"])
    fix = "must be an http(s) URL like 'https://collect.example.com' or a path like '/'"
    assert run["result"]["said"] == [
        [
            "error",
            "datafly.init: pipelineKey must be 1-200 printable ASCII characters without spaces, "
            "as the integration's pipeline_key is; this one (15 characters) is not, and the "
            "gateway will refuse it.",
        ],
        [
            "error",
            f"datafly.init: endpoint {fix}, got 'collect.example.com': events go to this "
            "page's origin.",
        ],
        ["error", f"datafly.init: enrich.endpoint {fix}, got a number: lookups go to endpoint."],
        [
            "warn",
            'datafly.init: enrich.providers must be an array like ["amperity"], got a string: '
            'looking up ["amperity"].',
        ],
        [
            "error",
            "datafly.init: enrich.timeoutMs must be a number of milliseconds above 0, like "
            "5000, got a string: using the default 5000.",
        ],
    ]
    (lookup,) = run["requests"]
    assert lookup["url"].startswith("/v1/enrich?provider=amperity&anonymous_id=")

    valid = f"""{{
      pipelineKey: '{KEY}', endpoint: '{BASE}/',
      enrich: {{ endpoint: '/gateway', providers: ['amperity'], timeoutMs: 3000 }},
    }}"""
    run = run_datafly(_init(valid), [_HYDRATED], hold=HOLD)
    assert _said(run) == []


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (
            f"{{ pipelineKey: '{KEY}', enrich: 'amperity' }}",
            [
                "error",
                'datafly.init: enrich must be an object like { providers: ["amperity"] }, got a '
                "string: profile lookups use the defaults.",
            ],
        ),
        (
            f"{{ pipelineKey: '{KEY}', enrich: {{ providers: {{ amperity: true }} }} }}",
            [
                "error",
                'datafly.init: enrich.providers must be an array like ["amperity"], got an '
                'object: looking up the default ["amperity"].',
            ],
        ),
        (
            f"{{ pipelineKey: '{KEY}', enrich: {{ providers: ['amperity', 7, ''] }} }}",
            [
                "error",
                'datafly.init: enrich.providers must be an array like ["amperity"] of provider '
                "names; left out 2 that are not a non-empty string.",
            ],
        ),
        (
            f"{{ pipelineKey: '{KEY}', enrich: {{ timeoutMs: '2500' }} }}",
            [
                "warn",
                "datafly.init: enrich.timeoutMs must be a number of milliseconds above 0, like "
                "5000, got a string: using 2500.",
            ],
        ),
        (
            f"{{ pipelineKey: '{KEY}', enrich: {{ timeoutMs: -1 }} }}",
            [
                "error",
                "datafly.init: enrich.timeoutMs must be a number of milliseconds above 0, like "
                "5000, got -1: using the default 5000.",
            ],
        ),
        (
            f"{{ pipelineKey: '{KEY}', endpoint: '{BASE}/?pipeline_key={KEY}' }}",
            [
                "error",
                "datafly.init: endpoint must be an http(s) URL like 'https://collect.example.com'"
                f" or a path like '/', got '{BASE}/' with a query or fragment: events go to this "
                "page's origin.",
            ],
        ),
        (
            "{ pipelineKey: { key: 'pk' } }",
            [
                "error",
                "datafly.init: pipelineKey must be a string like 'pk_live_acme_web', got an "
                "object.",
            ],
        ),
        (
            "{ pipelineKey: 12345 }",
            [
                "warn",
                "datafly.init: pipelineKey must be a string like 'pk_live_acme_web', got a "
                "number: sent as that string.",
            ],
        ),
    ],
)
def test_an_option_of_the_wrong_type_is_named_coerced_or_refused(
    options: str, line: list[str]
) -> None:
    """Each typed option: its console line says the field, the fix and what applies instead."""
    run = run_datafly(_init(options), [_HYDRATED], hold=HOLD)
    assert run["result"]["threw"] is None
    assert _said(run) == [tuple(line)]
    if "enrich" in options:  # every case that asked for lookups still looks amperity up
        assert [r["url"].split("?")[1].split("&")[0] for r in run["requests"]] == [
            "provider=amperity"
        ]
