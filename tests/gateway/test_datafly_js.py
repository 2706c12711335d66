"""datafly.js (clients/browser/src/datafly.mjs) in Node, with fetch, cookies and timers faked."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import in_ci

MODULE = Path(__file__).resolve().parents[2] / "clients" / "browser" / "src" / "datafly.mjs"

# Runs before each scenario: a document with a cookie jar, a fetch that answers from a
# script of responses and records requests, and timers that fire at once but record
# their delays; timers of a HOLD delay (the enrich timeout) wait for `fireHeld()`, and an
# answer `{hang: true}` never comes (its request records whether it was aborted).
# `scenario` is an async function body; its return value is printed as JSON.
_HARNESS = """
const answers = ANSWERS;
const requests = [];
const delays = [];
const held = [];
globalThis.document = {
  cookie: COOKIE, title: '', referrer: '', visibilityState: 'visible',
  addEventListener() {},
};
globalThis.setTimeout = (fn, ms) => {
  if (HOLD.includes(ms)) held.push(fn);
  else { delays.push(ms); queueMicrotask(fn); }
  return 1;
};
globalThis.clearTimeout = () => {};
globalThis.fireHeld = () => { for (const fn of held.splice(0)) fn(); };
globalThis.fetch = async (url, init) => {
  const request = {
    url: String(url),
    body: init && init.body ? JSON.parse(init.body) : null,
    keepalive: Boolean(init && init.keepalive),
  };
  requests.push(request);
  const answer = answers.shift() || { status: 200, body: {} };
  if (answer.network) throw new TypeError('Failed to fetch');
  if (answer.hang) {
    return new Promise((_, reject) => {
      if (init && init.signal) {
        init.signal.addEventListener('abort', () => {
          request.aborted = true;
          reject(new DOMException('aborted', 'AbortError'));
        });
      }
    });
  }
  return new Response(JSON.stringify(answer.body), {
    status: answer.status, headers: answer.headers || {},
  });
};
const { createDatafly } = await import(MODULE_URL);
const result = await (async () => { SCENARIO })();
console.log(JSON.stringify({ result, requests, delays }));
"""


# datafly.js's default enrich timeout and its batch and consent request timeout, in
# milliseconds: held by the harness (above).
ENRICH_TIMEOUT_MS = 5000
SEND_TIMEOUT_MS = 20000


def run_datafly(
    scenario: str,
    answers: list[dict[str, Any]],
    cookie: str = "",
    hold: tuple[int, ...] = (ENRICH_TIMEOUT_MS, SEND_TIMEOUT_MS),
) -> Any:
    """Run ``scenario`` against datafly.mjs in Node; its result, requests and timer delays."""
    node = shutil.which("node")
    if node is None:
        if in_ci():
            pytest.fail("node is missing; CI must install Node 20.")
        pytest.skip("node is not installed")
    script = (
        _HARNESS.replace("ANSWERS", json.dumps(answers))
        .replace("COOKIE", json.dumps(cookie))
        .replace("HOLD", json.dumps(list(hold)))
        .replace("MODULE_URL", json.dumps(MODULE.as_uri()))
        .replace("SCENARIO", scenario)
    )
    completed = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_init_survives_a_dfid_cookie_that_is_not_percent_encoded() -> None:
    """A malformed _dfid cookie does not make init throw into the page; its value is kept."""
    scenario = """
      const datafly = createDatafly();
      try {
        datafly.init({ pipelineKey: 'pk' });
      } catch (error) {
        return { threw: String(error) };
      }
      return { anonymousId: datafly.anonymousId() };
    """
    run = run_datafly(scenario, [], cookie="other=1; _dfid=%E0%A4%A; x=2")
    assert run["result"] == {"anonymousId": "%E0%A4%A"}


def test_init_warns_of_an_option_it_does_not_take_and_goes_on() -> None:
    """A typo (``enrichTimeout``, ``enrich.timeout``) is named in the console, not thrown."""
    scenario = """
      const warned = [];
      console.warn = (...parts) => warned.push(parts.join(' '));
      const datafly = createDatafly();
      datafly.init({ pipelineKey: 'pk', enrichTimeout: 500, enrich: { timeout: 500 } });
      datafly.init({ pipelineKey: 'pk', enrich: { timeoutMs: 500, providers: ['amperity'] } });
      return { warned, anonymousId: Boolean(datafly.anonymousId()) };
    """
    run = run_datafly(scenario, [{"status": 200, "body": {"attributes": {}}}] * 2)
    assert run["result"] == {
        "warned": [
            "datafly.init: ignored option(s) enrichTimeout; the options are pipelineKey, "
            "endpoint, enrich.",
            "datafly.init: enrich: ignored option(s) timeout; the options are endpoint, "
            "providers, timeoutMs.",
        ],
        "anonymousId": True,
    }


def _results(*codes: str | None) -> dict[str, Any]:
    """A 200 /v1/batch answer: ok for None, else failed with that code."""
    results = [
        {"messageId": f"m{i}", "ok": True}
        if code is None
        else {"messageId": f"m{i}", "ok": False, "error": "x", "code": code}
        for i, code in enumerate(codes)
    ]
    return {"status": 200, "body": {"success": all(c is None for c in codes), "results": results}}


_TRACK_AND_FLUSH = """
  const datafly = createDatafly();
  datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com' });
  for (const name of NAMES) datafly.track(name);
  await datafly.flush();
  return null;
"""


def test_batch_events_that_failed_transiently_are_sent_again() -> None:
    """Events a 200 batch answer reports as rate limited or unavailable are retried alone."""
    names = ["a", "b", "c", "d", "e"]
    answers = [
        _results(None, "SERVICE_UNAVAILABLE", "INVALID_EVENT", "RATE_LIMITED", "UPSTREAM_ERROR"),
        _results(None, "DEADLINE_EXCEEDED", None),
        _results(None),
    ]
    run = run_datafly(_TRACK_AND_FLUSH.replace("NAMES", json.dumps(names)), answers)
    sent = [[event["event"] for event in r["body"]["batch"]] for r in run["requests"]]
    assert sent == [names, ["b", "d", "e"], ["d"]]


_TRACK_AND_FLUSH_TOLD = """
  const warned = [];
  console.warn = (...parts) => warned.push(parts.join(' '));
  const datafly = createDatafly();
  datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com' });
  for (const name of NAMES) datafly.track(name);
  await datafly.flush();
  return { warned };
"""


def _sent(run: Any) -> list[list[str]]:
    """The events' names of each /v1/batch request, in the order they were made."""
    return [[event["event"] for event in r["body"]["batch"]] for r in run["requests"]]


def test_events_not_sent_before_the_batch_deadline_are_sent_again_until_delivered() -> None:
    """NOT_SENT does not count as an attempt while each answer delivers some events.

    A slow Amperity lets the gateway start only a few events of a batch before its deadline;
    as DEADLINE_EXCEEDED the rest used up datafly.js's 3 attempts, and a backlog batch lost
    what its third answer did not deliver ("dropped after 3 attempts").
    """
    names = [f"e{i}" for i in range(10)]
    answers = [
        _results(*[None] * 3, *["NOT_SENT"] * 7),
        _results(*[None] * 3, *["NOT_SENT"] * 4),
        _results(*[None] * 3, "NOT_SENT"),
        _results(None),
    ]
    run = run_datafly(_TRACK_AND_FLUSH_TOLD.replace("NAMES", json.dumps(names)), answers)
    assert _sent(run) == [names, names[3:], names[6:], names[9:]]
    assert run["result"]["warned"] == []
    # Each body says it takes NOT_SENT: a gateway answers DEADLINE_EXCEEDED to one that
    # does not (an older datafly.js, which would drop NOT_SENT as refused).
    assert {tuple(r["body"]["accepts"]) for r in run["requests"]} == {("NOT_SENT",)}


def test_events_not_sent_by_an_answer_that_delivered_none_count_as_attempts() -> None:
    """With nothing delivered, NOT_SENT counts: 3 attempts, then dropped and told once."""
    answers = [_results("NOT_SENT", "NOT_SENT")] * 4
    run = run_datafly(_TRACK_AND_FLUSH_TOLD.replace("NAMES", '["a", "b"]'), answers)
    assert _sent(run) == [["a", "b"]] * 3
    (warning,) = run["result"]["warned"]
    assert "2 event(s) were dropped after 3 attempts" in warning
    assert "(NOT_SENT)" in warning


def test_a_not_sent_event_is_sent_apart_from_one_that_failed() -> None:
    """Beside a delivered one, a NOT_SENT event keeps its attempts; a failed one spends one."""
    answers = [
        _results(None, "SERVICE_UNAVAILABLE", "NOT_SENT"),
        _results("NOT_SENT"),  # the not-sent event, without an attempt spent: made first
        _results("SERVICE_UNAVAILABLE"),  # the failed one, its second attempt
        _results(None),
        _results(None),
    ]
    run = run_datafly(_TRACK_AND_FLUSH.replace("NAMES", '["a", "b", "c"]'), answers)
    assert _sent(run)[:3] == [["a", "b", "c"], ["c"], ["b"]]
    # c: NOT_SENT with nothing delivered counts (its 2nd attempt), then delivered; b: its 3rd.
    assert sorted(map(tuple, _sent(run)[3:])) == [("b",), ("c",)]


def test_batch_retry_waits_at_least_the_retry_after_delay() -> None:
    """A 429 or 503 whole-batch answer is retried no sooner than its Retry-After says."""
    answers = [
        {"status": 429, "headers": {"Retry-After": "3"}, "body": {"error": {}}},
        {"status": 503, "headers": {"Retry-After": "2"}, "body": {"error": {}}},
        _results(None),
    ]
    run = run_datafly(_TRACK_AND_FLUSH.replace("NAMES", '["a"]'), answers)
    assert len(run["requests"]) == 3
    backoff = run["delays"][1:]  # the first is the 200 ms flush delay
    assert backoff == [3000, 2000]


def test_a_rejected_batch_is_not_sent_again() -> None:
    """A 400 answer, or events failing for their content, are not retried."""
    answers = [{"status": 400, "body": {"error": {"code": "INVALID_BATCH"}}}]
    run = run_datafly(_TRACK_AND_FLUSH.replace("NAMES", '["a"]'), answers)
    assert len(run["requests"]) == 1
    run = run_datafly(_TRACK_AND_FLUSH.replace("NAMES", '["a"]'), [_results("INVALID_EVENT")])
    assert len(run["requests"]) == 1


def test_identify_is_sent_when_storage_refuses_to_save_the_user_id() -> None:
    """A full or blocked localStorage makes neither init nor identify throw; the event goes."""
    scenario = """
      globalThis.localStorage = {
        getItem() { throw new DOMException('blocked', 'SecurityError'); },
        setItem() { throw new DOMException('quota', 'QuotaExceededError'); },
      };
      const datafly = createDatafly();
      datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com' });
      try {
        datafly.identify('user-1', { plan: 'gold' });
      } catch (error) {
        return { threw: String(error) };
      }
      await datafly.flush();
      return null;
    """
    run = run_datafly(scenario, [_results(None)])
    assert run["result"] is None
    (request,) = run["requests"]
    (event,) = request["body"]["batch"]
    assert (event["type"], event["userId"]) == ("identify", "user-1")


def test_on_profile_ready_resolves_when_the_enrich_config_is_malformed() -> None:
    """A malformed enrich option (providers not a list) still resolves onProfileReady."""
    scenario = """
      const datafly = createDatafly();
      datafly.init({ pipelineKey: 'pk', enrich: { providers: 'amperity' } });
      const settled = await Promise.race([
        datafly.onProfileReady().then((profile) => ({ profile })),
        new Promise((resolve) => { setImmediate(() => resolve('pending')); }),
      ]);
      return settled;
    """
    run = run_datafly(scenario, [])
    assert run["result"] == {"profile": {}}


_PROFILE = """
  const datafly = createDatafly();
  datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com', enrich: {} });
  const ready = await datafly.onProfileReady();
  return { ready, profile: datafly.profile };
"""


def test_profile_is_hydrated_from_a_200_enrich_answer() -> None:
    """GET /v1/enrich's attributes become profile.amperity and onProfileReady's value."""
    attributes = {"Persona": "Value Hunter"}
    answer = {"status": 200, "body": {"provider": "amperity", "attributes": attributes}}
    run = run_datafly(_PROFILE, [answer])
    assert run["result"] == {"ready": attributes, "profile": {"amperity": attributes}}
    assert run["requests"][0]["url"].startswith(
        "https://collect.example.com/v1/enrich?provider=amperity&anonymous_id="
    )


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 400, "body": {"error": {"code": "INVALID_ANONYMOUS_ID"}}},
        {"status": 404, "body": {"error": {"code": "UNKNOWN_PIPELINE_KEY"}}},
        {"status": 429, "headers": {"Retry-After": "1"}, "body": {"error": {}}},
        {"status": 503, "headers": {"Retry-After": "1"}, "body": {"error": {}}},
        {"status": 504, "body": {"error": {}}},
        {"status": 200, "body": None},
        {"status": 200, "body": {"attributes": "not an object"}},
        {"status": 200, "body": {"provider": "amperity", "attributes": ["Value Hunter"]}},
        {"network": True},
    ],
)
def test_enrich_error_answers_leave_an_empty_profile_without_throwing(
    answer: dict[str, Any],
) -> None:
    """Every gateway error status resolves onProfileReady with {} and throws nothing."""
    run = run_datafly(_PROFILE, [answer])
    assert run["result"] == {"ready": {}, "profile": {}}


def test_keepalive_is_asked_only_for_bodies_under_64_kib_in_bytes() -> None:
    """A batch under 60,000 characters but over 64 KiB of UTF-8 is sent without keepalive."""
    scenario = """
      const datafly = createDatafly();
      datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com' });
      datafly.track('small');
      await datafly.flush();
      datafly.track('big', { title: '\u6f22'.repeat(25000) });
      await datafly.flush();
      return null;
    """
    run = run_datafly(scenario, [_results(None), _results(None)])
    assert [r["keepalive"] for r in run["requests"]] == [True, False]


def test_consent_merges_categories_as_it_merges_google() -> None:
    """Two consent() calls naming different categories keep both on the next event."""
    scenario = """
      const datafly = createDatafly();
      datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com' });
      datafly.consent({
        analytics: true, categories: { C0001: true }, google: { ad_storage: 'denied' },
      });
      datafly.consent({ categories: { C0002: false }, google: { analytics_storage: 'granted' } });
      datafly.track('after consent');
      await datafly.flush();
      return null;
    """
    run = run_datafly(scenario, [_results(None)])
    (event,) = run["requests"][0]["body"]["batch"]
    assert event["context"]["consent"] == {
        "analytics": True,
        "categories": {"C0001": True, "C0002": False},
        "google": {"ad_storage": "denied", "analytics_storage": "granted"},
    }


_ALLOWED = {"status": 200, "body": {"success": True, "profileAllowed": True}}
_DENIED = {"status": 200, "body": {"success": True, "profileAllowed": False}}
_ATTRIBUTES = {"Persona": "Value Hunter"}
_HYDRATED = {"status": 200, "body": {"provider": "amperity", "attributes": _ATTRIBUTES}}
_INIT = """
  const datafly = createDatafly();
  const heard = [];
  datafly.onProfileChange((profile) => heard.push(profile));
  datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com', enrich: {} });
"""


def _paths(run: Any) -> list[str]:
    return [
        r["url"].split("?")[0].removeprefix("https://collect.example.com") for r in run["requests"]
    ]


def test_a_withdrawal_clears_the_profile_at_once_and_tells_the_gateway() -> None:
    """consent() denying clears profile.amperity synchronously, POSTs /v1/consent, no refetch."""
    scenario = (
        _INIT
        + """
      const before = await datafly.onProfileReady();
      datafly.consent({ functional: false, categories: { C0003: false } });
      const cleared = datafly.profile.amperity;
      const refreshed = await datafly.refreshProfile();
      return { before, cleared, refreshed, heard, after: datafly.profile.amperity };
    """
    )
    run = run_datafly(scenario, [_HYDRATED, _DENIED])
    assert run["result"] == {
        "before": _ATTRIBUTES,
        "cleared": {},
        "refreshed": {},
        "heard": [_ATTRIBUTES, {}],
        "after": {},
    }
    assert _paths(run) == ["/v1/enrich", "/v1/consent"]  # no lookup while denied
    consent = run["requests"][1]["body"]
    assert consent["consent"] == {"functional": False, "categories": {"C0003": False}}
    assert consent["anonymousId"]


def test_a_grant_after_a_withdrawal_fetches_the_profile_again() -> None:
    """Re-granting tells the gateway, and the profile is looked up and hydrated again."""
    scenario = (
        _INIT
        + """
      await datafly.onProfileReady();
      datafly.consent({ functional: false });
      await datafly.refreshProfile();
      const restored = await new Promise((resolve) => {
        const stop = datafly.onProfileChange((profile) => { stop(); resolve(profile); });
        datafly.consent({ functional: true });
      });
      return { restored, heard };
    """
    )
    run = run_datafly(scenario, [_HYDRATED, _DENIED, _ALLOWED, _HYDRATED])
    assert run["result"] == {"restored": _ATTRIBUTES, "heard": [_ATTRIBUTES, {}, _ATTRIBUTES]}
    assert _paths(run) == ["/v1/enrich", "/v1/consent", "/v1/consent", "/v1/enrich"]
    assert run["requests"][2]["body"]["consent"] == {"functional": True}


def test_a_lookup_answered_after_a_withdrawal_does_not_reach_the_page() -> None:
    """Consent denied while the first /v1/enrich is on its way: its attributes are dropped."""
    scenario = (
        _INIT
        + """
      datafly.consent({ functional: false });
      const ready = await datafly.onProfileReady();
      return { ready, profile: datafly.profile.amperity, heard };
    """
    )
    run = run_datafly(scenario, [_HYDRATED, _DENIED])
    assert run["result"] == {"ready": {}, "profile": {}, "heard": [{}]}


def test_a_lookup_already_sent_when_consent_is_withdrawn_is_dropped() -> None:
    """The first /v1/enrich answers only after the withdrawal: its attributes never show."""
    scenario = (
        """
      const answered = globalThis.fetch;
      let release;
      const held = new Promise((resolve) => { release = resolve; });
      globalThis.fetch = async (url, init) => {
        const response = await answered(url, init);
        if (String(url).includes('/v1/enrich')) await held;
        return response;
      };
    """
        + _INIT
        + """
      await new Promise((resolve) => { setImmediate(resolve); });
      datafly.consent({ functional: false });
      release();
      const ready = await datafly.onProfileReady();
      return { ready, profile: datafly.profile.amperity, heard };
    """
    )
    run = run_datafly(scenario, [_HYDRATED, _DENIED])
    assert _paths(run) == ["/v1/enrich", "/v1/consent"]
    assert run["result"] == {"ready": {}, "profile": {}, "heard": [{}]}


def test_consent_given_before_init_is_sent_before_the_first_lookup() -> None:
    """A denial set before init reaches the gateway first; no profile is fetched."""
    scenario = """
      const datafly = createDatafly();
      datafly.consent({ functional: false });
      datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com', enrich: {} });
      return await datafly.onProfileReady();
    """
    run = run_datafly(scenario, [_DENIED])
    assert run["result"] == {}
    assert _paths(run) == ["/v1/consent"]


def test_events_queued_before_a_withdrawal_leave_with_it() -> None:
    """An event queued under granted consent but not sent yet carries the withdrawal."""
    scenario = """
      const datafly = createDatafly();
      datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com' });
      datafly.consent({ functional: true });
      datafly.track('queued');
      datafly.consent({ functional: false });
      await datafly.flush();
      return null;
    """
    run = run_datafly(scenario, [])
    (batch,) = [r["body"]["batch"] for r in run["requests"] if r["url"].endswith("/v1/batch")]
    assert [event["context"]["consent"] for event in batch] == [{"functional": False}]


def test_a_consent_the_gateway_could_not_record_is_sent_again_after_retry_after() -> None:
    """A 503 (not recorded) and a network error are retried; the answer that kept it decides."""
    scenario = (
        _INIT
        + """
      await datafly.onProfileReady();
      datafly.consent({ functional: false });
      const refreshed = await datafly.refreshProfile();
      return { refreshed, heard };
    """
    )
    unavailable = {
        "status": 503,
        "headers": {"Retry-After": "2"},
        "body": {"error": {"code": "SERVICE_UNAVAILABLE", "message": "not recorded"}},
    }
    run = run_datafly(scenario, [_HYDRATED, unavailable, {"network": True}, _DENIED])
    assert _paths(run) == ["/v1/enrich", "/v1/consent", "/v1/consent", "/v1/consent"]
    assert [r["body"]["consent"] for r in run["requests"][1:]] == [{"functional": False}] * 3
    assert run["delays"] == [2000, 500]  # Retry-After, then the backoff of a second attempt
    assert run["result"] == {"refreshed": {}, "heard": [_ATTRIBUTES, {}]}


def test_a_grant_the_gateway_never_recorded_gives_the_page_only_what_enrich_answers() -> None:
    """Three 503s: the grant is given up; the lookup's {} (consent not kept) is what shows."""
    scenario = (
        _INIT
        + """
      await datafly.onProfileReady();
      datafly.consent({ functional: false });
      await datafly.refreshProfile();
      datafly.consent({ functional: true });
      await new Promise((resolve) => { setTimeout(resolve, 0); });
      const profile = await datafly.refreshProfile();
      return { profile, heard };
    """
    )
    unavailable = {"status": 503, "headers": {"Retry-After": "1"}, "body": {"error": {}}}
    kept_nothing = {"status": 200, "body": {"provider": "amperity", "attributes": {}}}
    answers = [_HYDRATED, _DENIED, unavailable, unavailable, unavailable, kept_nothing]
    run = run_datafly(scenario, answers)
    assert _paths(run).count("/v1/consent") == 4  # the denial once, the grant three times
    assert run["result"] == {"profile": {}, "heard": [_ATTRIBUTES, {}, {}]}
    rejected = run_datafly(
        _INIT + "await datafly.onProfileReady(); datafly.consent({ functional: false });"
        " await datafly.refreshProfile(); return null;",
        [_HYDRATED, {"status": 400, "body": {"error": {"code": "INVALID_CONSENT"}}}],
    )
    assert _paths(rejected) == ["/v1/enrich", "/v1/consent"]  # a 400 is not sent again


def test_a_document_that_may_not_use_cookies_still_gets_a_profile_and_events() -> None:
    """A sandboxed iframe's document.cookie throws SecurityError: init must not throw.

    Chromium throws on reading and on writing ``document.cookie`` in an iframe sandboxed
    without ``allow-same-origin``; the visitor then gets an id for this page only.
    """
    scenario = """
      Object.defineProperty(globalThis.document, 'cookie', {
        get() { throw new DOMException('sandboxed', 'SecurityError'); },
        set() { throw new DOMException('sandboxed', 'SecurityError'); },
      });
      const datafly = createDatafly();
      try {
        datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com', enrich: {} });
      } catch (error) {
        return { threw: String(error) };
      }
      const ready = await datafly.onProfileReady();
      datafly.page('Home');
      await datafly.flush();
      return { ready, anonymousId: datafly.anonymousId() };
    """
    run = run_datafly(scenario, [_HYDRATED, _results(None)])
    assert run["result"]["ready"] == _ATTRIBUTES
    anonymous_id = run["result"]["anonymousId"]
    assert anonymous_id
    assert f"anonymous_id={anonymous_id}" in run["requests"][0]["url"]
    assert run["requests"][1]["body"]["batch"][0]["anonymousId"] == anonymous_id


_PENDING_OR_READY = """
  const settled = await Promise.race([
    datafly.onProfileReady().then((profile) => ({ profile })),
    new Promise((resolve) => { setImmediate(() => resolve('pending')); }),
  ]);
"""


def test_a_lookup_that_never_answers_is_given_up_after_the_enrich_timeout() -> None:
    """/v1/enrich never answers: once enrich.timeoutMs passes, onProfileReady resolves {}.

    The request is aborted, and ``refreshProfile()`` is bounded the same way.
    """
    scenario = (
        """
      const datafly = createDatafly();
      datafly.init({
        pipelineKey: 'pk', endpoint: 'https://collect.example.com', enrich: { timeoutMs: 1500 },
      });
      await new Promise((resolve) => { setImmediate(resolve); });
      fireHeld();
    """
        + _PENDING_OR_READY
        + """
      const refreshing = datafly.refreshProfile();
      await new Promise((resolve) => { setImmediate(resolve); });
      fireHeld();
      const refreshed = await Promise.race([
        refreshing, new Promise((resolve) => { setImmediate(() => resolve('pending')); }),
      ]);
      return { settled, refreshed, profile: datafly.profile };
    """
    )
    run = run_datafly(scenario, [{"hang": True}, {"hang": True}], hold=(1500,))
    assert run["result"] == {"settled": {"profile": {}}, "refreshed": {}, "profile": {}}
    assert [r.get("aborted") for r in run["requests"]] == [True, True]


def test_the_default_enrich_timeout_applies_without_the_option() -> None:
    """Without enrich.timeoutMs (or with one that is no positive number) 5 s applies."""
    for enrich in ("{}", "{ timeoutMs: 'soon' }", "{ timeoutMs: -1 }"):
        scenario = (
            f"""
          const datafly = createDatafly();
          datafly.init({{ pipelineKey: 'pk', enrich: {enrich} }});
          await new Promise((resolve) => {{ setImmediate(resolve); }});
          fireHeld();
        """
            + _PENDING_OR_READY
            + "return settled;"
        )
        run = run_datafly(scenario, [{"hang": True}])
        assert run["result"] == {"profile": {}}, enrich


def test_a_consent_send_that_never_answers_does_not_hold_on_profile_ready() -> None:
    """A denial before init whose /v1/consent hangs: ready with {} at the timeout, no lookup."""
    scenario = (
        """
      const datafly = createDatafly();
      datafly.consent({ functional: false });
      datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com', enrich: {} });
      await new Promise((resolve) => { setImmediate(resolve); });
      fireHeld();
    """
        + _PENDING_OR_READY
        + "return settled;"
    )
    run = run_datafly(scenario, [{"hang": True}])
    assert run["result"] == {"profile": {}}
    assert "/v1/enrich" not in _paths(run)


def test_refresh_profile_is_bounded_while_a_consent_send_never_answers() -> None:
    """A grant whose /v1/consent hangs: refreshProfile answers at enrich.timeoutMs.

    The docs bound it as onProfileReady is bounded. It waited for the consent send with no
    limit of its own: three attempts of 20 s and their back-off, a minute, for a page that
    calls identify() then refreshProfile() at a login.
    """
    scenario = (
        _INIT
        + """
      await datafly.onProfileReady();
      datafly.consent({ functional: true });
      const refreshing = datafly.refreshProfile();
      await new Promise((resolve) => { setImmediate(resolve); });
      fireHeld();  // one round: the enrich timeout, and the first consent attempt's abort
      const refreshed = await Promise.race([
        refreshing, new Promise((resolve) => { setImmediate(() => resolve('pending')); }),
      ]);
      return { refreshed };
    """
    )
    run = run_datafly(scenario, [_HYDRATED, {"hang": True}, {"hang": True}, {"hang": True}])
    assert run["result"] == {"refreshed": _ATTRIBUTES}
    assert _paths(run)[:2] == ["/v1/enrich", "/v1/consent"]


def test_an_event_json_cannot_carry_is_dropped_alone() -> None:
    """A property holding a cycle or a BigInt drops that event, not its batch, throwing nothing.

    ``JSON.stringify`` of the batch threw: flush() rejected (an unhandled rejection when the
    flush timer sent it) and every other event of the batch was lost.
    """
    scenario = """
      const warned = [];
      console.warn = (...args) => warned.push(args.join(' '));
      const datafly = createDatafly();
      datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com' });
      const cycle = { name: 'x' };
      cycle.self = cycle;
      try {
        datafly.track('before');
        datafly.track('cyclic', { product: cycle });
        datafly.track('big', { value: 10n });
        datafly.track('after');
        await datafly.flush();
      } catch (error) {
        return { threw: String(error) };
      }
      return { warned: warned.length };
    """
    run = run_datafly(scenario, [_results(None, None)])
    assert run["result"] == {"warned": 2}
    (request,) = run["requests"]
    assert [event["event"] for event in request["body"]["batch"]] == ["before", "after"]


def test_values_the_gateway_refuses_are_sent_as_it_takes_them_and_told_once_per_kind() -> None:
    """An integer beyond 2^53 goes as its digits, a lone surrogate as U+FFFD; one warning each.

    The gateway refuses both; one such value made the whole batch a 400 and every event of
    it was dropped. Safe integers, 2^53 itself, numbers written with an exponent, a Date
    and the consent state the queue shares are sent as they were.
    """
    scenario = """
      const warned = [];
      console.warn = (...args) => warned.push(args.join(' '));
      const datafly = createDatafly();
      datafly.init({ pipelineKey: 'pk', endpoint: 'https://collect.example.com' });
      datafly.consent({ analytics: true });
      datafly.track('order', {
        order_id: 9007199254740995, negative: -(2 ** 60), exact: 2 ** 53, huge: 1e21,
        price: 12.5, when: new Date(Date.UTC(2030, 0, 1)),
        title: 'Gift \\uD83C', items: [{ name: '\\uDC00box' }, 'ok \\uD83C\\uDF81'],
        '\\uD800key': 1,
      });
      datafly.track('second', { id: 2 ** 54, note: 'x\\uDFFF' });
      datafly.consent({ analytics: false });
      await datafly.flush();
      return { warned };
    """
    run = run_datafly(scenario, [_ALLOWED, _DENIED, _results(None, None)])
    [batch] = [r for r in run["requests"] if r["url"].endswith("/v1/batch")]
    order, second = batch["body"]["batch"]
    assert order["properties"] == {
        "order_id": "9007199254740996",  # the page's number: JavaScript rounded it
        "negative": "-1152921504606847000",  # as JavaScript writes it
        "exact": 2**53,
        "huge": 1e21,
        "price": 12.5,
        "when": "2030-01-01T00:00:00.000Z",
        "title": "Gift \ufffd",
        "items": [{"name": "\ufffdbox"}, "ok \U0001f381"],
        "\ufffdkey": 1,
    }
    assert second["properties"] == {"id": "18014398509481984", "note": "x\ufffd"}
    # The withdrawal reached the queued events: their consent is still the shared state.
    assert order["context"]["consent"] == second["context"]["consent"] == {"analytics": False}
    once = "(Said once per page: later ones are not reported.)"
    assert run["result"]["warned"] == [
        "datafly: a track event's properties.order_id is an integer beyond 2^53, which "
        "JavaScript holds only rounded; it was sent as a string, the number as JavaScript "
        f"writes it. Keep such ids as strings in the page. {once}",
        "datafly: a track event's properties.title holds a lone surrogate (a string cut "
        "through an emoji or another character of two UTF-16 units); it was sent with U+FFFD "
        f"in its place. Cut text with Array.from(text) or Intl.Segmenter. {once}",
    ]


def test_a_batch_that_never_answers_holds_neither_refresh_nor_a_withdrawal() -> None:
    """/v1/batch never answers: refreshProfile still looks up, a withdrawal still goes out.

    The batch is aborted after 20 s and sent again, as after a network error.
    """
    scenario = (
        _INIT
        + """
      await datafly.onProfileReady();
      datafly.identify('user-1', { email: 'alice@example.com' });
      const refreshing = datafly.refreshProfile();
      await new Promise((resolve) => { setImmediate(resolve); });
      fireHeld();
      const refreshed = await Promise.race([
        refreshing, new Promise((resolve) => { setImmediate(() => resolve('pending')); }),
      ]);
      datafly.consent({ functional: false });
      await new Promise((resolve) => { setImmediate(resolve); });
      fireHeld();
      await new Promise((resolve) => { setImmediate(resolve); });
      return { refreshed };
    """
    )
    answers: list[dict[str, Any]] = [_HYDRATED, {"hang": True}, _HYDRATED, _results(None), _DENIED]
    run = run_datafly(scenario, answers)
    assert run["result"] == {"refreshed": _ATTRIBUTES}
    assert _paths(run) == ["/v1/enrich", "/v1/batch", "/v1/enrich", "/v1/batch", "/v1/consent"]
    assert run["requests"][1].get("aborted") is True


def test_every_request_carries_sent_at_from_the_page_clock_stamped_again_on_a_retry() -> None:
    """/v1/batch (each attempt, and the pagehide beacon) and /v1/consent carry sentAt.

    The page's clock (a second on per reading here) stamps it as it stamps timestamps: the
    gateway counts an event as received less sentAt - timestamp, so a resend must carry a
    new sentAt, or the time it waited would not count in its age.
    """
    scenario = """
      let tick = Date.parse('2030-01-01T00:00:00.000Z');
      const RealDate = Date;
      globalThis.Date = class extends RealDate {
        constructor(...args) { super(...(args.length ? args : [tick += 1000])); }
      };
      const handlers = {};
      globalThis.addEventListener = (name, fn) => { handlers[name] = fn; };
      _INIT
      await datafly.onProfileReady();
      datafly.track('a');
      await datafly.flush();
      datafly.consent({ functional: false });
      await datafly.refreshProfile();
      datafly.track('b');
      handlers.pagehide();
      return null;
    """.replace("_INIT", _INIT)
    unavailable = {"status": 503, "headers": {"Retry-After": "2"}, "body": {"error": {}}}
    answers = [_HYDRATED, unavailable, _results(None), _DENIED, _results(None)]
    run = run_datafly(scenario, answers)
    assert _paths(run) == ["/v1/enrich", "/v1/batch", "/v1/batch", "/v1/consent", "/v1/batch"]
    bodies = [r["body"] for r in run["requests"][1:]]
    sent = [body["sentAt"] for body in bodies]
    assert all(s.startswith("2030-01-01T00:00:") and s.endswith("Z") for s in sent), sent
    assert sent == sorted(set(sent))  # a new reading each time, the retry's included
    (event,) = bodies[0]["batch"]
    assert event["timestamp"] < sent[0]
    assert bodies[1]["batch"] == [event]  # the same event, its timestamp unchanged


def test_consent_carries_consented_at_the_instant_of_the_choice_on_every_attempt() -> None:
    """POST /v1/consent sends consentedAt: when consent() was called, not when it was sent.

    The gateway orders consent states by it (put on its clock with sentAt): a send held
    behind batches or retried after a 503 would otherwise count as chosen when it got
    through, later than events the visitor sent after choosing. Each choice has its own.
    """
    scenario = """
      let tick = Date.parse('2030-01-01T00:00:00.000Z');
      const RealDate = Date;
      globalThis.Date = class extends RealDate {
        constructor(...args) { super(...(args.length ? args : [tick += 1000])); }
      };
      _INIT
      await datafly.onProfileReady();
      datafly.consent({ functional: false });
      const denied = tick;
      await datafly.refreshProfile();
      datafly.consent({ functional: true });
      const granted = tick;
      await datafly.refreshProfile();
      return [new RealDate(denied).toISOString(), new RealDate(granted).toISOString()];
    """.replace("_INIT", _INIT)
    unavailable = {"status": 503, "headers": {"Retry-After": "2"}, "body": {"error": {}}}
    run = run_datafly(scenario, [_HYDRATED, unavailable, _DENIED, _ALLOWED, _HYDRATED])
    assert _paths(run)[:4] == ["/v1/enrich", "/v1/consent", "/v1/consent", "/v1/consent"]
    bodies = [r["body"] for r in run["requests"][1:4]]  # the denial twice, then the grant
    denied_at, granted_at = run["result"]
    assert [body["consentedAt"] for body in bodies] == [denied_at, denied_at, granted_at]
    assert [body["consent"] for body in bodies] == [{"functional": False}] * 2 + [
        {"functional": True}
    ]
    # Stamped at the choice, before any send of it (the retry's sentAt is later still).
    assert all(body["consentedAt"] < body["sentAt"] for body in bodies)
    assert denied_at < granted_at
