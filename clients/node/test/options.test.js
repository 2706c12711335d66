'use strict';
// Timeouts and retry settings that cannot work are refused when the client is built (a
// per-call timeoutMs when the call is made), naming the setting and what to pass.

const test = require('node:test');
const assert = require('node:assert/strict');

const { AmperityClient, DEFAULT_RETRY } = require('..');
const { startFake } = require('../testing/fake-service');

/**
 * Build a client with `options` (the target and integration filled in).
 * @param {object} options
 */
function build(options) {
  return new AmperityClient({ target: '127.0.0.1:1', integrationId: 'web', ...options });
}

/**
 * Assert that building with `options` throws `type` with a message matching `message`.
 * @param {object} options
 * @param {Function} type
 * @param {RegExp} message
 */
function assertRefused(options, type, message) {
  assert.throws(() => build(options).close(), (error) => {
    assert.ok(error instanceof type, `${error.name}: ${error.message}`);
    assert.match(error.message, message);
    return true;
  }, JSON.stringify(options));
}

/** A fake whose BrowserProfile answers at once and counts its calls. */
async function profileFake() {
  const seen = { calls: 0 };
  const { server, target } = await startFake({
    BrowserProfile(call, callback) {
      seen.calls += 1;
      callback(null, { provider: 'amperity' });
    },
  });
  return { seen, server, target };
}

test('a timeoutMs or streamIdleTimeoutMs that cannot work is refused', () => {
  for (const value of [0, -1, NaN, Infinity, -Infinity]) {
    assertRefused({ timeoutMs: value }, RangeError, new RegExp(
      `^timeoutMs must be a finite number of milliseconds more than 0, e.g. 10000; got ${value}\\.$`,
    ));
    assertRefused({ streamIdleTimeoutMs: value }, RangeError,
      /^streamIdleTimeoutMs must be a finite number of milliseconds more than 0, at most 2147483647 \(Node's longest timer, about 24\.8 days\), e\.g\. 30000; got /);
  }
  // A longer timer fires after 1 ms: the stream would be "idle" at once, every time.
  assertRefused({ streamIdleTimeoutMs: 2 ** 31 }, RangeError, /got 2147483648\.$/);
  assertRefused({ timeoutMs: '10000' }, TypeError, /^timeoutMs must be .*; got the string "10000"\.$/);
});

test('each retry and streamRetry setting that cannot work is refused, naming it', () => {
  const refused = [
    [{ maxAttempts: 0 }, RangeError, /^\w+\.maxAttempts must be a whole number, 1 or more .*; got 0\.$/],
    [{ maxAttempts: 2.5 }, RangeError, /^\w+\.maxAttempts must be a whole number/],
    [{ maxAttempts: NaN }, RangeError, /^\w+\.maxAttempts must be a whole number.*got NaN\.$/],
    // Not a number is a TypeError, as documented (these were RangeErrors).
    [{ maxAttempts: '3' }, TypeError,
      /^\w+\.maxAttempts must be a whole number, 1 or more \(1: no retries\), e\.g\. \d+; got the string "3"\.$/],
    [{ maxAttempts: true }, TypeError, /^\w+\.maxAttempts must be a whole number.*; got true\.$/],
    [{ initialBackoffMs: -1 }, RangeError, /^\w+\.initialBackoffMs must be a finite number of milliseconds 0 or more/],
    [{ initialBackoffMs: NaN }, RangeError, /^\w+\.initialBackoffMs must be .*; got NaN\.$/],
    [{ maxBackoffMs: Infinity }, RangeError, /^\w+\.maxBackoffMs must be a finite number/],
    [{ maxBackoffMs: 2 ** 31 }, RangeError, /^\w+\.maxBackoffMs must be .* at most 2147483647/],
    [{ multiplier: 0.5 }, RangeError, /^\w+\.multiplier must be a finite number, 1 or more/],
    [{ multiplier: NaN }, RangeError, /^\w+\.multiplier must be .*; got NaN\.$/],
    [{ multiplier: '2' }, TypeError,
      /^\w+\.multiplier must be a finite number, 1 or more \(1: no growth\), e\.g\. 2; got the string "2"\.$/],
    [{ totalTimeoutMs: 0 }, RangeError,
      /^\w+\.totalTimeoutMs must be a number of milliseconds more than 0, e\.g\. \d+, or Infinity for no overall deadline; got 0\.$/],
    [{ totalTimeoutMs: NaN }, RangeError, /^\w+\.totalTimeoutMs must be .*; got NaN\.$/],
    [{ totalTimeoutMs: -5 }, RangeError, /^\w+\.totalTimeoutMs must be .*; got -5\.$/],
    [{ totalTimeoutMs: '30000' }, TypeError, /^\w+\.totalTimeoutMs must be .*; got the string "30000"\.$/],
    [{ retryableCodes: 14 }, TypeError, /^\w+\.retryableCodes must be an array of gRPC status code numbers/],
    // The Python client cannot take a number no status has: both refuse it.
    [{ retryableCodes: [14, 99] }, RangeError,
      /^\w+\.retryableCodes must be an array of gRPC status code numbers, 0 to 16, e\.g\. \[14, 8\]; got 99 in it\.$/],
    // A misspelt setting would leave the default in force without a word.
    [{ totalTimeout: 5000 }, TypeError,
      /^\w+\.totalTimeout is not a retry setting; the settings are maxAttempts, initialBackoffMs, maxBackoffMs, multiplier, totalTimeoutMs, retryableCodes\.$/],
  ];
  for (const option of ['retry', 'streamRetry']) {
    for (const [settings, type, message] of refused) {
      assertRefused({ [option]: settings }, type, message);
    }
    assertRefused({ [option]: 5 }, TypeError, new RegExp(`^${option} must be an object of retry settings`));
    // The message names the option it came from.
    assertRefused({ [option]: { multiplier: 0 } }, RangeError, new RegExp(`^${option}\\.multiplier `));
  }
});

test('a setting left undefined or null keeps its default', async (t) => {
  // retry: { totalTimeoutMs: undefined } used to give a NaN deadline, which grpc-js throws
  // out of a callback once the channel is connected: the process ended.
  const { seen, server, target } = await profileFake();
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({
    target,
    integrationId: 'web',
    timeoutMs: undefined,
    streamIdleTimeoutMs: null,
    retry: { totalTimeoutMs: undefined, maxAttempts: null },
    streamRetry: { initialBackoffMs: undefined },
  });
  t.after(() => client.close());

  await client.browserProfile('anon-1');
  await client.browserProfile('anon-1');

  assert.equal(seen.calls, 2);
});

test('Infinity as totalTimeoutMs means no overall deadline; calls still work', async (t) => {
  const { seen, server, target } = await profileFake();
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({
    target, integrationId: 'web', retry: { totalTimeoutMs: Infinity },
  });
  t.after(() => client.close());

  const profile = await client.browserProfile('anon-1');

  assert.equal(profile.provider, 'amperity');
  assert.equal(seen.calls, 1);
  assert.equal(DEFAULT_RETRY.totalTimeoutMs, 30000);
});

test('a per-call timeoutMs that cannot work rejects before anything is sent', async (t) => {
  const { seen, server, target } = await profileFake();
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({ target, integrationId: 'web' });
  t.after(() => client.close());
  // A connected channel: there, a NaN deadline used to end the process.
  await client.browserProfile('anon-1');

  for (const timeoutMs of [NaN, 0, -1, Infinity]) {
    // eslint-disable-next-line no-await-in-loop
    await assert.rejects(client.browserProfile('anon-1', { timeoutMs }), (error) => {
      assert.ok(error instanceof RangeError, String(error));
      assert.match(error.message,
        /^timeoutMs must be a finite number of milliseconds more than 0, e\.g\. 2500, or leave it out for the client's timeoutMs; got /);
      return true;
    });
  }
  await assert.rejects(client.recordConsent('anon-1', {}, { timeoutMs: NaN }), RangeError);

  assert.equal(seen.calls, 1);
});

test('null options, or an option of null, mean the defaults on every method', async (t) => {
  // deliverMany(events, { concurrency: null }) threw a RangeError, and a null options
  // object threw a TypeError out of every method, where the client's own options and
  // watchDeliveries' replay already took null for "the default".
  const seen = /** @type {string[]} */ ([]);
  const event = { type: 'page', anonymousId: 'anon-1', messageId: 'm-1' };
  const { server, target } = await startFake({
    Deliver(call, callback) {
      seen.push('Deliver');
      callback(null, { message_id: call.request.event.message_id });
    },
    DeliverStream(call) {
      call.on('data', (request) => {
        seen.push('DeliverStream');
        const messageId = request.event.message_id;
        call.write({ message_id: messageId, result: { message_id: messageId } });
      });
      call.on('end', () => call.end());
    },
    Enrich(call, callback) {
      seen.push('Enrich');
      callback(null, { event: call.request.event });
    },
    BrowserProfile(call, callback) {
      seen.push('BrowserProfile');
      callback(null, { provider: 'amperity' });
    },
    RecordConsent(call, callback) {
      seen.push(`RecordConsent ${call.request.consented_at ? 'at' : 'now'}`);
      callback(null, { profile_allowed: true });
    },
    WatchDeliveries(call) {
      seen.push(`WatchDeliveries ${call.request.integration_id} ${call.request.replay}`);
      call.end();
    },
  });
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({ target, integrationId: 'web' });
  t.after(() => client.close());

  for (const options of [null, { timeoutMs: null }]) {
    /* eslint-disable no-await-in-loop */
    await client.deliver(event, /** @type {any} */ (options));
    await client.enrich(event, /** @type {any} */ (options));
    await client.browserProfile('anon-1', /** @type {any} */ (options));
    await client.recordConsent('anon-1', {}, /** @type {any} */ (options));
    /* eslint-enable no-await-in-loop */
  }
  await client.recordConsent('anon-1', {}, { timeoutMs: null, consentedAt: null });
  for (const options of [null, { concurrency: null }]) {
    const outcomes = [];
    // eslint-disable-next-line no-await-in-loop
    for await (const outcome of client.deliverMany([event], /** @type {any} */ (options))) {
      outcomes.push(outcome);
    }
    assert.deepEqual(outcomes.map((o) => [o.messageId, o.error]), [['m-1', undefined]]);
  }
  for (const options of [null, { replay: null, integrationId: null, signal: null }]) {
    // eslint-disable-next-line no-await-in-loop, no-empty, no-unused-vars
    for await (const _ of client.watchDeliveries(/** @type {any} */ (options))) {}
  }

  assert.deepEqual(seen, [
    'Deliver', 'Enrich', 'BrowserProfile', 'RecordConsent now',
    'Deliver', 'Enrich', 'BrowserProfile', 'RecordConsent now',
    'RecordConsent now',
    'DeliverStream', 'DeliverStream',
    'WatchDeliveries web 0', 'WatchDeliveries web 0',
  ]);
});

test('an option the client does not know is refused, naming the one it is a slip from', () => {
  assertRefused(
    { timeout: 2000 },
    TypeError,
    /^AmperityClient: timeout is not an option; did you mean timeoutMs\? The options are target, /,
  );
  assertRefused({ integrationID: 'web' }, TypeError, /integrationID is not an option; did you mean integrationId\?/);
  assertRefused({ streamIdleTimoutMs: 5 }, TypeError, /did you mean streamIdleTimeoutMs\?/);
  assertRefused({ colour: 'red' }, TypeError, /^AmperityClient: colour is not an option\. The options are /);
});

test('a call option the method does not know is refused before any call', async () => {
  const { server, target, seen } = await profileFake();
  const client = new AmperityClient({ target, integrationId: 'web' });
  try {
    await assert.rejects(
      client.browserProfile('anon_1', { timeout: 50 }),
      /^TypeError: browserProfile: timeout is not an option; did you mean timeoutMs\? The options are timeoutMs\.$/,
    );
    await assert.rejects(
      client.recordConsent('anon_1', {}, { consentAt: '2025-01-31T12:00:00Z' }),
      /recordConsent: consentAt is not an option; did you mean consentedAt\?/,
    );
    assert.throws(
      () => client.deliverMany([], { concurency: 4 }),
      /deliverMany: concurency is not an option; did you mean concurrency\?/,
    );
    await assert.rejects(
      client.watchDeliveries({ replays: 3 }).next(),
      /watchDeliveries: replays is not an option; did you mean replay\?/,
    );
    assert.equal(seen.calls, 0);
    assert.deepEqual(await client.browserProfile('anon_1', { timeoutMs: 500 }), {
      provider: 'amperity', attributes: {},
    });
  } finally {
    client.close();
    server.forceShutdown();
  }
});
