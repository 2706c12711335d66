"""What datafly.js tells the page's developer in the console, in Node (test_datafly_js's harness).

Two kinds of line: ``datafly.init:`` names an option of the wrong type and its fix (a
warning when it was coerced, an error when it was refused for its default); ``datafly:``
tells a failure (a profile lookup, dropped events, an unrecorded consent) once per kind and
page. The success path says nothing, and no line quotes the pipeline key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .test_datafly_js import ENRICH_TIMEOUT_MS, SEND_TIMEOUT_MS, run_datafly

CLIENT_TESTDATA = Path(__file__).parents[2] / "clients" / "testdata"
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


_SUCCESS_THEN = (
    _LISTEN
    + f"""
  const datafly = createDatafly();
  datafly.init({{ pipelineKey: '{KEY}', endpoint: '{BASE}', enrich: {{}} }});
  await datafly.onProfileReady();
  datafly.track('ok');
  await datafly.flush();
  datafly.consent({{ analytics: true }});
  await datafly.refreshProfile();
  const quiet = said.length;
  THEN
  return {{ quiet, said }};
"""
)


def _then(steps: str) -> str:
    """The success path, then ``steps``; the result says how many lines came before them."""
    return _SUCCESS_THEN.replace("THEN", steps)


# What the success path is answered: the first lookup, the batch, the consent, then the
# lookup the grant starts and refreshProfile's.
_OK = [_HYDRATED, _BATCH_OK, _ALLOWED, _HYDRATED, _HYDRATED]
_LOOKUP = "the amperity profile lookup (GET https://collect.example.com/v1/enrich)"


@pytest.mark.parametrize(
    ("failed", "told"),
    [
        (
            _UNKNOWN_KEY,
            "answered 404 UNKNOWN_PIPELINE_KEY: No integration uses this pipeline key; check "
            "pipelineKey in datafly.init: it must be an integration's pipeline_key",
        ),
        (
            _UNAVAILABLE,
            "answered 503 SERVICE_UNAVAILABLE: The service is unavailable; the gateway or the "
            "service behind it is overloaded or down: see their logs",
        ),
        (
            {"network": True},
            "had no answer (a network error, a request the browser refused, such as one the "
            "gateway's CORS does not allow, or none within 20 s); check enrich.endpoint (or "
            "endpoint)",
        ),
        (
            {"status": 200, "body": {"attributes": ["Value Hunter"]}},
            "answered 200 without an attributes object; check that enrich.endpoint (or "
            "endpoint) is the gateway",
        ),
    ],
)
def test_a_failed_profile_lookup_is_told_once_with_what_to_check(
    failed: dict[str, Any], told: str
) -> None:
    """The success path says nothing; two failed lookups after it, one warning naming why."""
    steps = "await datafly.refreshProfile(); await datafly.refreshProfile();"
    run = run_datafly(_then(steps), [*_OK, failed, failed])
    assert run["result"]["quiet"] == 0
    assert _said(run) == [
        ("warn", f"datafly: {_LOOKUP} {told}; profile.amperity stays as it was. {ONCE}")
    ]


def test_a_lookup_given_up_at_the_timeout_is_told_once() -> None:
    """/v1/enrich never answers, twice: one warning naming enrich.timeoutMs and its value."""
    steps = """
      for (let i = 0; i < 2; i += 1) {
        const refreshing = datafly.refreshProfile();
        await new Promise((resolve) => { setImmediate(resolve); });
        fireHeld();
        await refreshing;
      }
    """
    run = run_datafly(_then(steps), [*_OK, {"hang": True}, {"hang": True}])
    assert run["result"]["quiet"] == 0
    assert _said(run) == [
        (
            "warn",
            f"datafly: {_LOOKUP} had no answer within enrich.timeoutMs ({ENRICH_TIMEOUT_MS} ms) "
            "and was given up; the page went on without it. Check that the gateway answers "
            f"there, or raise enrich.timeoutMs. {ONCE}",
        )
    ]


def test_events_dropped_after_their_retries_are_told_once() -> None:
    """Two batches each answered 503 three times: one warning, naming the last answer."""
    steps = """
      datafly.track('a'); await datafly.flush();
      datafly.track('b'); await datafly.flush();
    """
    run = run_datafly(_then(steps), [*_OK, *[_UNAVAILABLE] * 6])
    assert run["result"]["quiet"] == 0
    assert len(run["requests"]) == len(_OK) + 6
    assert _said(run) == [
        (
            "warn",
            "datafly: 1 event(s) were dropped after 3 attempts: POST "
            "https://collect.example.com/v1/batch last answered 503 SERVICE_UNAVAILABLE: The "
            "service is unavailable; the gateway or the service behind it is overloaded or "
            f"down: see their logs. Check endpoint (and that the gateway is up). {ONCE}",
        )
    ]


def _refused_event(**result: str) -> dict[str, Any]:
    """A 200 /v1/batch answer failing its one event with this code, error and field."""
    failed = {"messageId": "m", "ok": False, **result}
    return {"status": 200, "body": {"success": False, "results": [failed]}}


def test_events_the_gateway_refuses_are_told_once_per_kind() -> None:
    """A 404 batch and per-event refusals: a warning each, naming the code and the field."""
    refused = _refused_event(
        code="INVALID_EVENT",
        error="batch[0].context.page.url must be a URL.",
        field="batch[0].context.page.url",
    )
    steps = """
      for (const name of ['a', 'b', 'c', 'd']) { datafly.track(name); await datafly.flush(); }
    """
    run = run_datafly(_then(steps), [*_OK, _UNKNOWN_KEY, _UNKNOWN_KEY, refused, refused])
    assert run["result"]["quiet"] == 0
    assert len(run["requests"]) == len(_OK) + 4  # neither is sent again
    batch = "https://collect.example.com/v1/batch"
    assert _said(run) == [
        (
            "warn",
            f"datafly: POST {batch} answered 404 UNKNOWN_PIPELINE_KEY: No integration uses this "
            "pipeline key; 1 event(s) were dropped, not sent again; check pipelineKey in "
            f"datafly.init: it must be an integration's pipeline_key. {ONCE}",
        ),
        (
            "warn",
            f"datafly: POST {batch} refused 1 event(s), which are not sent again; the first: "
            "INVALID_EVENT (field batch[0].context.page.url): batch[0].context.page.url must be "
            f"a URL; the gateway's message says what to change. {ONCE}",
        ),
    ]


def test_events_amperity_refuses_for_the_integration_are_told_once_not_sent_again() -> None:
    """UPSTREAM_REFUSED results: not resent, one warning pointing at the service's log.

    It was UPSTREAM_ERROR, resent twice; its hint said the gateway's message told the fix,
    which no message that reaches a browser does.
    """
    refused = _refused_event(
        code="UPSTREAM_REFUSED", error="Amperity refused the service's call for this integration."
    )
    steps = """
      for (const name of ['a', 'b']) { datafly.track(name); await datafly.flush(); }
    """
    run = run_datafly(_then(steps), [*_OK, refused, refused])
    assert run["result"]["quiet"] == 0
    assert len(run["requests"]) == len(_OK) + 2
    batch = "https://collect.example.com/v1/batch"
    assert _said(run) == [
        (
            "warn",
            f"datafly: POST {batch} refused 1 event(s), which are not sent again; the first: "
            "UPSTREAM_REFUSED: Amperity refused the service's call for this integration; "
            "Amperity refuses it (for the integration, or the request itself, as the message "
            f"says): the service's log names the fix. {ONCE}",
        ),
    ]


def test_events_past_the_queue_limit_are_dropped_and_told_once() -> None:
    """The gateway takes nothing: 1,000 events wait, later ones are dropped, one warning.

    The limit was dead code: flush() empties the queue at every 10th event, so the queue
    never held more than 10 while sends without an answer held every event for ever.
    """
    scenario = (
        _LISTEN
        + f"""
      const datafly = createDatafly();
      datafly.init({{ pipelineKey: '{KEY}', endpoint: '{BASE}' }});
      for (let i = 0; i < 1005; i += 1) datafly.track(`e${{i}}`);
      await new Promise((resolve) => {{ setImmediate(resolve); }});
      return {{ said }};
    """
    )
    run = run_datafly(scenario, [{"hang": True}] * 101)
    sent = [event["event"] for r in run["requests"] for event in r["body"]["batch"]]
    assert sent == [f"e{i}" for i in range(1000)]
    assert _said(run) == [
        (
            "warn",
            "datafly: a track event was dropped: 1000 events already wait to be sent, as the "
            "gateway is not taking them (see the warnings before this one); events are dropped "
            f"while it stays so. {ONCE}",
        )
    ]


def test_a_consent_the_gateway_never_recorded_is_told_once() -> None:
    """/v1/consent answered 503 three times, for two choices: one warning saying what holds."""
    steps = """
      datafly.consent({ analytics: false }); await datafly.refreshProfile();
      datafly.consent({ analytics: true }); await datafly.refreshProfile();
    """
    answers = [*_OK, *[_UNAVAILABLE] * 6, _HYDRATED, _HYDRATED]
    run = run_datafly(_then(steps), answers)
    assert run["result"]["quiet"] == 0
    paths = [r["url"].split("?")[0].removeprefix(BASE) for r in run["requests"]]
    assert paths.count("/v1/consent") == 7  # the success path's, then 3 for each choice
    assert _said(run) == [
        (
            "warn",
            "datafly: the gateway did not record the visitor's consent: POST "
            "https://collect.example.com/v1/consent answered 503 SERVICE_UNAVAILABLE: The "
            "service is unavailable; the gateway or the service behind it is overloaded or "
            "down: see their logs. It keeps the state it had: a denial holds on this page "
            f"only, a grant not at all. {ONCE}",
        )
    ]


def test_init_takes_and_refuses_the_pipeline_keys_the_clients_do() -> None:
    """The shared cases (clients/testdata/pipeline_keys.json), as the Python and Node clients.

    The gateway's rule, checked a fourth time in the page: a key the clients take says
    nothing, one they refuse gets the error line, its length counted in characters as the
    clients count it (a character outside the BMP is one, not two UTF-16 units).
    """
    cases = json.loads((CLIENT_TESTDATA / "pipeline_keys.json").read_text("utf-8"))["cases"]
    keys = [case["key"] * case.get("times", 1) for case in cases]
    scenario = (
        _LISTEN
        + f"""
      const told = [];
      for (const key of {json.dumps(keys)}) {{
        said.length = 0;
        createDatafly().init({{ pipelineKey: key, endpoint: {json.dumps(BASE)} }});
        told.push(said.filter(([, text]) => text.includes('pipelineKey')));
      }}
      return told;
    """
    )
    told = run_datafly(scenario, [])["result"]
    assert len(told) == len(cases)
    for case, key, lines in zip(cases, keys, told, strict=True):
        if case["refused"] is None:
            assert lines == [], case["name"]
        else:
            ((level, text),) = lines
            assert level == "error", case["name"]
            assert f"this one ({len(key)} characters) is not" in text, case["name"]
