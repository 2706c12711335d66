'use strict';
// An event's timestamp means one instant on every machine. node --test runs each file in a
// process of its own, so the zone set here, before any Date is used, holds for this file
// alone: a machine west of UTC, where Date.parse read an offset-less timestamp 5 hours late.
process.env.TZ = 'America/New_York';

const test = require('node:test');
const assert = require('node:assert/strict');

const { toProtoEvent } = require('..');
// The cases both clients read, so they cannot drift apart: tests/clients/
// test_client_timestamps.py runs the same file against the Python client.
const { cases: CASES } = require('../../testdata/timestamps.json');

/** @param {unknown} timestamp */
const timestampOf = (timestamp) => toProtoEvent({ type: 'page', timestamp }).timestamp;

test('this file runs in New York, 5 hours behind UTC in January', () => {
  assert.equal(new Date(2025, 0, 31, 12).getTimezoneOffset(), 300);
});

test('the shared cases: RFC 3339 date-times, to nanoseconds, and the errors word for word',
  () => {
    assert.ok(CASES.length > 50);
    for (const { name, input, seconds, nanos, error } of CASES) {
      if (error === undefined) {
        assert.deepEqual(timestampOf(input), { seconds, nanos }, `${name}: ${input}`);
      } else {
        assert.throws(() => timestampOf(input), { name: 'TypeError', message: error },
          `${name}: ${input}`);
      }
    }
  });

test('a timestamp without an offset is UTC, in summer too', () => {
  // New York is 4 hours behind in July.
  assert.deepEqual(timestampOf('2025-07-01T00:00:00'), { seconds: '1751328000', nanos: 0 });
});

test('Dates and epoch milliseconds are instants already', () => {
  const noon = { seconds: '1738324800', nanos: 0 }; // 2025-01-31T12:00:00Z
  assert.deepEqual(timestampOf(new Date(Date.UTC(2025, 0, 31, 12))), noon);
  assert.deepEqual(timestampOf(1738324800250), { seconds: '1738324800', nanos: 250000000 });
  assert.throws(() => timestampOf(new Date(Number.NaN)),
    /^TypeError: timestamp must be an RFC 3339 string .*, a Date or epoch milliseconds\.$/);
});
