'use strict';
// context.vendorIds keys become the proto's snake_case names (gaClientId -> ga_client_id),
// as the gateway and the Python client read them: the cases are shared with both suites.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { toProtoEvent } = require('..');

const { cases } = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', '..', 'testdata', 'vendor_keys.json'), 'utf8'),
);

test('vendorIds keys are named as the proto names them', () => {
  for (const [key, expected] of cases) {
    const event = toProtoEvent({ type: 'page', anonymousId: 'a-1', context: { vendorIds: { [key]: 'v' } } });
    assert.deepEqual(event.context.vendor_ids, { [expected]: 'v' }, `vendorIds.${key}`);
  }
});
