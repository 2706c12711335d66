"""datafly.js (clients/browser/src/datafly.mjs) in Node, with fetch, cookies and timers faked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

MODULE = Path(__file__).resolve().parents[2] / "clients" / "browser" / "src" / "datafly.mjs"

# Runs before each scenario: a document with a cookie jar, a fetch that answers from a
# script of responses and records requests, and timers that fire at once but record
# their delays. `scenario` is an async function body; its return value is printed as JSON.
_HARNESS = """
const answers = ANSWERS;
const requests = [];
const delays = [];
globalThis.document = {
  cookie: COOKIE, title: '', referrer: '', visibilityState: 'visible',
  addEventListener() {},
};
globalThis.setTimeout = (fn, ms) => { delays.push(ms); queueMicrotask(fn); return 1; };
globalThis.clearTimeout = () => {};
globalThis.fetch = async (url, init) => {
  requests.push({ url: String(url), body: init && init.body ? JSON.parse(init.body) : null });
  const answer = answers.shift() || { status: 200, body: {} };
  return new Response(JSON.stringify(answer.body), {
    status: answer.status, headers: answer.headers || {},
  });
};
const { createDatafly } = await import(MODULE_URL);
const result = await (async () => { SCENARIO })();
console.log(JSON.stringify({ result, requests, delays }));
"""


def run_datafly(scenario: str, answers: list[dict[str, Any]], cookie: str = "") -> Any:
    """Run ``scenario`` against datafly.mjs in Node; its result, requests and timer delays."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is missing; CI must install Node 20.")
        pytest.skip("node is not installed")
    script = (
        _HARNESS.replace("ANSWERS", json.dumps(answers))
        .replace("COOKIE", json.dumps(cookie))
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
