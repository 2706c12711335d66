'use strict';
// A pipelineKey the service would refuse (it answered NOT_FOUND) is refused when the client
// is built, by length or by the position and kind of a character, never quoted: the cases
// are shared with the Python client's suite (tests/clients/test_client_pipeline_key.py),
// which also checks them against the service's own rule.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { AmperityClient } = require('..');

const { cases } = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', '..', 'testdata', 'pipeline_keys.json'), 'utf8'),
);

for (const testCase of cases) {
  test(`pipelineKey: ${testCase.name}`, () => {
    const pipelineKey = testCase.key.repeat(testCase.times ?? 1);
    const build = () => new AmperityClient({ target: '127.0.0.1:1', integrationId: 'web', pipelineKey });
    if (testCase.refused === null) {
      build().close();
      return;
    }
    assert.throws(build, (error) => {
      assert.ok(error instanceof TypeError, String(error));
      assert.equal(error.message, testCase.refused.replace('{field}', 'pipelineKey'));
      assert.ok(!error.message.includes(pipelineKey), error.message);
      return true;
    });
  });
}
