'use strict';
// An event's timestamp means one instant on every machine. node --test runs each file in a
// process of its own, so the zone set here, before any Date is used, holds for this file
// alone: a machine west of UTC, where Date.parse read an offset-less timestamp 5 hours late.
process.env.TZ = 'America/New_York';

const test = require('node:test');
const assert = require('node:assert/strict');

const { toProtoEvent } = require('..');

/** @param {unknown} timestamp */
const timestampOf = (timestamp) => toProtoEvent({ type: 'page', timestamp }).timestamp;

test('this file runs in New York, 5 hours behind UTC in January', () => {
  assert.equal(new Date(2025, 0, 31, 12).getTimezoneOffset(), 300);
});

test('a timestamp without an offset is UTC, as the Python client, the gateway and the service read it',
  () => {
    const noon = { seconds: '1738324800', nanos: 0 }; // 2025-01-31T12:00:00Z
    assert.deepEqual(timestampOf('2025-01-31T12:00:00'), noon);
    assert.deepEqual(timestampOf('2025-01-31 12:00'), noon);
    assert.deepEqual(timestampOf('2025-01-31T12:00:00.250'), { seconds: '1738324800', nanos: 250000000 });
    assert.deepEqual(timestampOf('2025-01-31'), { seconds: '1738281600', nanos: 0 });
    // Summer too, when New York is 4 hours behind.
    assert.deepEqual(timestampOf('2025-07-01T00:00:00'), { seconds: '1751328000', nanos: 0 });
    // With an offset, the offset decides, as before.
    assert.deepEqual(timestampOf('2025-01-31T12:00:00Z'), noon);
    assert.deepEqual(timestampOf('2025-01-31T07:00:00-05:00'), noon);
    assert.deepEqual(timestampOf('2025-01-31T13:00:00.123456789+0100'),
      { seconds: '1738324800', nanos: 123456789 });
    // Dates and epoch milliseconds are instants already.
    assert.deepEqual(timestampOf(new Date(Date.UTC(2025, 0, 31, 12))), noon);
    assert.deepEqual(timestampOf(1738324800250), { seconds: '1738324800', nanos: 250000000 });
  });

test('a date that does not exist is a TypeError naming timestamp and why, not the next month',
  () => {
    const refused = [
      // Date.parse rolled these over to March 2, March 1 and February 1.
      ['2025-02-30T12:00:00Z', 'day is out of range for month'],
      ['2025-02-29', 'day is out of range for month'],
      ['2025-01-31T24:00:00', 'hour must be in 0..23'],
      ['2025-04-31T12:00:00', 'day is out of range for month'],
      ['2025-13-01T00:00:00Z', 'month must be in 1..12'],
    ];
    for (const [timestamp, why] of refused) {
      assert.throws(() => timestampOf(timestamp), (error) => error instanceof TypeError
        && error.message === 'timestamp is not an ISO 8601 date-time such as '
          + `2025-01-31T12:00:00.000Z (${why}).`, timestamp);
    }
    assert.deepEqual(timestampOf('2024-02-29'), { seconds: '1709164800', nanos: 0 });
  });

test('a string that is not ISO 8601 is refused, as the Python client and the gateway refuse it',
  () => {
    // Date.parse took these, in the machine's zone where they name none.
    for (const timestamp of ['Jan 31 2025 12:00', '2025/01/31 12:00:00', '2025', 'yesterday']) {
      assert.throws(() => timestampOf(timestamp),
        /^TypeError: timestamp is not an ISO 8601 date-time such as 2025-01-31T12:00:00\.000Z\.$/,
        timestamp);
    }
    assert.throws(() => timestampOf('2025-01-31T12:00:00+24:00'),
      /^TypeError: timestamp has an offset out of range \(\+24:00\)/);
    assert.throws(() => timestampOf(new Date(Number.NaN)),
      /^TypeError: timestamp must be an ISO 8601 string .*, a Date or epoch milliseconds\.$/);
  });
