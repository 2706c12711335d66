'use strict';
// context.traits (Segment-style identity; the proto's Context has no such field) is folded
// into traits, the event's own keys winning, as the gateway and the Python client fold it:
// the cases are shared with both suites (clients/testdata/context_traits.json).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { toProtoEvent } = require('..');
const { fromStruct } = require('../lib/struct');

const { cases } = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', '..', 'testdata', 'context_traits.json'), 'utf8'),
);

/** @param {Object<string, any>} item */
function eventOf(item) {
  /** @type {Object<string, any>} */
  const event = { type: 'track', event: 'x', anonymousId: 'a' };
  if (item.traits !== null) event.traits = item.traits;
  event.context = { locale: 'en-GB', traits: item.context_traits };
  return event;
}

for (const item of cases) {
  test(`context.traits: ${item.name}`, () => {
    const event = eventOf(item);
    if (item.refused) {
      assert.throws(() => toProtoEvent(event), (error) => {
        assert.ok(error instanceof TypeError);
        assert.ok(error.message.startsWith(`${item.refused} `), error.message);
        return true;
      });
      return;
    }
    const converted = toProtoEvent(event);
    assert.deepEqual(converted.traits ? fromStruct(converted.traits) : null, item.expected);
    assert.equal(converted.context.traits, undefined);
  });
}

test('context.traits does not change the event it was given', () => {
  const event = { type: 'track', anonymousId: 'a', traits: { plan: 'gold' },
    context: { traits: { email: 'c@x.test' } } };
  const before = structuredClone(event);
  toProtoEvent(event);
  assert.deepEqual(event, before);
});

test('a context.traits key named like an Object property is folded too', () => {
  const converted = toProtoEvent({ type: 'track', anonymousId: 'a',
    context: { traits: { constructor: 'c', toString: 't' } } });
  assert.deepEqual(fromStruct(converted.traits), { constructor: 'c', toString: 't' });
});
