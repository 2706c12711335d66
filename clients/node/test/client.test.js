'use strict';
// Unit tests always run; the live tests need a running service:
//   AMPERITY_SIGNAL_GRPC_TARGET=localhost:50051 AMPERITY_SIGNAL_INTEGRATION_ID=web \
//   AMPERITY_SIGNAL_PIPELINE_KEY=pk_... npm test
// and, when the integration has a browser_consent condition, AMPERITY_SIGNAL_BROWSER_CONSENT
// naming it (e.g. functional). Without the target they are skipped locally and fail in CI
// (inCI: the rule of tests/support.py's in_ci).

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const util = require('node:util');

const {
  AmperityClient, AmperitySignalError, fromStruct, toStruct, nextDelayMs, backoffMs,
  DEFAULT_RETRY, toProtoEvent,
} = require('..');
const { detail, failure, startFake } = require('../testing/fake-service');

// --- pure units --------------------------------------------------------------------

test('Struct conversion round-trips plain objects', () => {
  const value = { s: 'a', n: 2.5, b: true, none: null, list: [1, 'x', { k: 'v' }], nested: { d: 1 } };
  const struct = toStruct(value);
  assert.deepEqual(struct.fields.s, { stringValue: 'a' });
  assert.deepEqual(struct.fields.none, { nullValue: 'NULL_VALUE' });
  assert.deepEqual(fromStruct(struct), value);
});

test('Struct conversion reads proto-loader oneof output and refuses NaN', () => {
  const decoded = {
    fields: {
      a: { kind: 'numberValue', numberValue: 3 },
      b: { kind: 'listValue', listValue: { values: [{ kind: 'boolValue', boolValue: false }] } },
      c: { string_value: 'snake' },
    },
  };
  assert.deepEqual(fromStruct(decoded), { a: 3, b: [false], c: 'snake' });
  assert.deepEqual(fromStruct(null), {});
  assert.throws(() => toStruct({ price: NaN }), /price must be a finite number/);
});

test('only UNAVAILABLE and RESOURCE_EXHAUSTED are retried, within attempts and budget', () => {
  for (let code = 0; code <= 16; code += 1) {
    const delay = nextDelayMs(DEFAULT_RETRY, { code, attempt: 1, elapsedMs: 0 });
    assert.equal(delay !== null, code === 14 || code === 8, `code ${code}`);
  }
  assert.equal(nextDelayMs(DEFAULT_RETRY, { code: 14, attempt: 5, elapsedMs: 0 }), null);
  assert.equal(nextDelayMs(DEFAULT_RETRY, { code: 14, attempt: 1, elapsedMs: 29999,
    retryAfterMs: 10 }), null);
});

test('backoff is full jitter under a doubling cap with RetryInfo as the floor', () => {
  assert.equal(backoffMs(DEFAULT_RETRY, 3, null, () => 0.999999) < 400, true);
  assert.equal(backoffMs(DEFAULT_RETRY, 3, null, () => 0), 0);
  assert.equal(backoffMs(DEFAULT_RETRY, 20, null, () => 0.5), 2500);
  assert.equal(backoffMs(DEFAULT_RETRY, 1, 1500, () => 0.5), 1500);
});

test('a circular object or an oversized session number is a TypeError naming the field', () => {
  const looped = { a: { list: [] } };
  looped.a.list.push(looped.a);
  assert.throws(() => toProtoEvent({ type: 'track', properties: looped }),
    (error) => error instanceof TypeError && /^properties\.a\.list\[0\] contains itself/.test(error.message));
  // The same object twice, side by side, is no cycle.
  const shared = { k: 'v' };
  assert.deepEqual(fromStruct(toStruct({ x: shared, y: [shared] })), { x: shared, y: [shared] });
  // 2**64 and 1e21 went on the wire as int64 384 and 1.
  for (const number of [2 ** 64, 1e21]) {
    assert.throws(() => toProtoEvent({ type: 'page', context: { session: { number } } }),
      /^TypeError: context\.session\.number is too large/);
  }
});

test('Datafly JSON events convert to the proto shape, absent consent absent', () => {
  const event = toProtoEvent({
    type: 'track', event: 'Product Viewed', anonymousId: 'a-1', messageId: 'm-1',
    timestamp: '2025-01-31T12:00:00.250Z', properties: { sku: 'S1' },
    context: { geo: { postalCode: 'SW1A' }, consent: { marketing: false, google: { adStorage: 'denied' } } },
  });
  assert.equal(event.anonymous_id, 'a-1');
  assert.deepEqual(event.timestamp, { seconds: '1738324800', nanos: 250000000 });
  assert.equal(event.context.geo.postal_code, 'SW1A');
  assert.deepEqual(event.context.consent, { marketing: false, google: { ad_storage: 'denied' } });
  assert.equal(toProtoEvent({ type: 'page' }).context, undefined);
  assert.throws(() => toProtoEvent({ context: { consent: { analytics: 'yes' } } }),
    /context\.consent\.analytics/);
});

test('a google signal sent in both spellings is read by Consent Mode\'s, as the gateway reads it', () => {
  // Until session 23 adStorage was read first: the opposite signal to the gateway's.
  const google = { ad_storage: 'granted', adStorage: 'denied', adUserData: 'denied' };
  const event = toProtoEvent({ type: 'page', context: { consent: { google } } });
  assert.deepEqual(event.context.consent.google, { ad_storage: 'granted', ad_user_data: 'denied' });
  const wrongAlias = { ad_storage: 'denied', adStorage: 5 };
  const consent = toProtoEvent({ type: 'page', context: { consent: { google: wrongAlias } } });
  assert.deepEqual(consent.context.consent.google, { ad_storage: 'denied' });
});

// --- against an in-process grpc-js server with google.rpc details ---------------------

test('UNAVAILABLE with RetryInfo is retried, waiting at least the delay', async (t) => {
  let calls = 0;
  const seen = [];
  const { server, target } = await startFake({
    Deliver(call, callback) {
      calls += 1;
      seen.push(call.request.event.message_id);
      if (calls <= 2) {
        callback(failure(14, 'Amperity is unavailable.', [
          detail('ErrorInfo', { reason: 'AMPERITY_UNAVAILABLE', domain: 'amperity-signal.datafly.com' }),
          detail('RetryInfo', { retry_delay: { seconds: 1, nanos: 500000000 } }),
        ]));
        return;
      }
      callback(null, {
        message_id: call.request.event.message_id,
        amperity_type: 'view_item',
        payload: toStruct({ event_type: 'view_item' }),
        vendor_request: { status_code: 202 },
      });
    },
  });
  t.after(() => server.forceShutdown());
  const waits = [];
  const client = new AmperityClient({
    target, integrationId: 'web', sleep: async (ms) => { waits.push(ms); },
  });
  t.after(() => client.close());

  const response = await client.deliver({ type: 'track', event: 'Product Viewed', anonymousId: 'a-1' });

  assert.equal(calls, 3);
  assert.equal(new Set(seen).size, 1);
  assert.equal(waits.length, 2);
  assert.ok(waits.every((ms) => ms >= 1500));
  assert.equal(response.amperity_type, 'view_item');
  assert.deepEqual(response.payload, { event_type: 'view_item' });
});

test('no attempt starts after totalTimeoutMs, even when a wait overran it', async (t) => {
  const arrivals = [];
  const { server, target } = await startFake({
    Deliver(call, callback) {
      arrivals.push(Date.now());
      callback(failure(14, 'Amperity is unavailable.', [
        detail('ErrorInfo', { reason: 'AMPERITY_UNAVAILABLE', domain: 'amperity-signal.datafly.com' }),
        detail('RetryInfo', { retry_delay: { nanos: 100000000 } }),
      ]));
    },
  });
  t.after(() => server.forceShutdown());
  const waits = [];
  const retry = { maxAttempts: 10, totalTimeoutMs: 300 };
  // Each wait lasts 500 ms longer than asked (a busy event loop): the first one ends
  // past the 300 ms budget, so no second attempt may start.
  const sleep = (ms) => new Promise((resolve) => { waits.push(ms); setTimeout(resolve, ms + 500); });
  const client = new AmperityClient({ target, integrationId: 'web', retry, sleep });
  t.after(() => client.close());

  const started = Date.now();
  const error = await client.deliver({ type: 'track', anonymousId: 'a-1' }).then(
    () => assert.fail('deliver resolved'), (rejected) => rejected,
  );

  assert.equal(error.code, 14);
  assert.equal(error.reason, 'AMPERITY_UNAVAILABLE');
  assert.equal(waits.length, 1);
  assert.ok(arrivals.every((at) => at - started < retry.totalTimeoutMs), String(arrivals));
});

test('INVALID_ARGUMENT rejects at once with reason and field violations', async (t) => {
  let calls = 0;
  const { server, target } = await startFake({
    Enrich(call, callback) {
      calls += 1;
      callback(failure(3, 'The event is invalid.', [
        detail('ErrorInfo', { reason: 'INVALID_EVENT', domain: 'amperity-signal.datafly.com',
          metadata: { field: 'event.anonymous_id' } }),
        detail('BadRequest', { field_violations: [{ field: 'event.anonymous_id', description: 'is required.' }] }),
      ]));
    },
  });
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({ target, pipelineKey: 'pk_test', sleep: async () => {} });
  t.after(() => client.close());

  const error = await client.enrich({ type: 'page' }).then(() => null, (e) => e);

  assert.ok(error instanceof AmperitySignalError);
  assert.equal(calls, 1);
  assert.equal(error.code, 3);
  assert.equal(error.details, 'The event is invalid.');
  assert.equal(error.reason, 'INVALID_EVENT');
  assert.equal(error.message, 'INVALID_EVENT: The event is invalid.');
  assert.deepEqual(error.metadata, { field: 'event.anonymous_id' });
  assert.deepEqual(error.fieldViolations, [{ field: 'event.anonymous_id', description: 'is required.' }]);
  assert.equal(error.retryable, false);
});

test('a call a stopping service dropped unstarted (CANCELLED) is sent again by gRPC', async (t) => {
  let calls = 0;
  const { server, target } = await startFake({
    Deliver(call, callback) {
      calls += 1;
      if (calls === 1) {
        callback(failure(1, 'CANCELLED', []));
        return;
      }
      callback(null, { message_id: call.request.event.message_id, amperity_type: 'view_item' });
    },
  });
  t.after(() => server.forceShutdown());
  const waits = [];
  const client = new AmperityClient({
    target, pipelineKey: 'pk_test', sleep: async (ms) => { waits.push(ms); },
  });
  t.after(() => client.close());

  const answer = await client.deliver({ type: 'page', anonymousId: 'a-1', messageId: 'm-1' });

  assert.equal(answer.amperity_type, 'view_item');
  assert.equal(calls, 2);
  assert.deepEqual(waits, []); // gRPC's retry (RETRY_DROPPED_CALLS), not the client's policy
});

test('the pipeline key travels as x-pipeline-key and in BrowserProfile', async (t) => {
  const { server, target } = await startFake({
    BrowserProfile(call, callback) {
      callback(null, {
        provider: 'amperity',
        attributes: toStruct({
          key: call.metadata.get('x-pipeline-key')[0],
          field: call.request.pipeline_key,
          visitor: call.request.anonymous_id,
        }),
      });
    },
  });
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({ target, pipelineKey: 'pk_test' });
  t.after(() => client.close());

  const profile = await client.browserProfile('anon-1');

  assert.deepEqual(profile, {
    provider: 'amperity', attributes: { key: 'pk_test', field: 'pk_test', visitor: 'anon-1' },
  });
});

test('the pipeline key shows in neither console.log nor JSON of a client', (t) => {
  const client = new AmperityClient({ target: '127.0.0.1:1', pipelineKey: 'pk_live_secret_9f2' });
  t.after(() => client.close());

  for (const shown of [
    util.inspect(client, { depth: 8, showHidden: true }), JSON.stringify(client),
  ]) {
    assert.equal(shown.includes('pk_live_secret_9f2'), false, shown);
  }
});

test('a message over a gRPC size limit rejects at once, never sent again', async (t) => {
  let calls = 0;
  const { server, target } = await startFake({
    Deliver(call, callback) {
      calls += 1;
      callback(null, { message_id: 'm-1', amperity_type: 'view_item', payload: toStruct({ a: 'b' }) });
    },
  });
  t.after(() => server.forceShutdown());
  const waits = [];
  const sleep = async (ms) => { waits.push(ms); };
  const client = new AmperityClient({ target, integrationId: 'web', sleep });
  const strict = new AmperityClient({
    target, integrationId: 'web', sleep, channelOptions: { 'grpc.max_receive_message_length': 8 },
  });
  t.after(() => { client.close(); strict.close(); });

  const oversized = { type: 'track', event: 'x', anonymousId: 'a-1',
    properties: { blob: 'x'.repeat(4 * 1024 * 1024 + 1000) } };
  const refused = await client.deliver(oversized).then(() => null, (e) => e);
  // An answer over this client's limit: the call ran, so a retry would deliver it again.
  const unread = await strict.deliver({ type: 'page', anonymousId: 'a-1' }).then(() => null, (e) => e);

  for (const error of [refused, unread]) {
    assert.ok(error instanceof AmperitySignalError);
    assert.equal(error.code, 8);
    assert.equal(error.reason, 'MESSAGE_TOO_LARGE');
    assert.equal(error.retryable, false);
  }
  assert.match(unread.message, /grpc\.max_receive_message_length/);
  assert.equal(calls, 1);
  assert.deepEqual(waits, []);
});

// --- live, against a running service -------------------------------------------------

const liveTarget = process.env.AMPERITY_SIGNAL_GRPC_TARGET;
// The sandbox's alice (default_data.yaml), and the Personas its rules give a profile.
const ALICE = 'p-a11ce0000001';
const PERSONAS = ['Value Hunter', 'Loyal Big Spender', 'Window Shopper'];
const liveOptions = {};
if (!liveTarget) {
  liveOptions.skip = 'set AMPERITY_SIGNAL_GRPC_TARGET (and _INTEGRATION_ID / _PIPELINE_KEY) to run';
}

// Whether this run is CI's, where a missing service fails instead of skipping: as
// tests/support.py's in_ci, any non-empty CI other than 0, false or no (in any case, spaces
// aside), so CI=True or CI=1 cannot turn the live tests into a silent skip.
function inCI(value) {
  return !['', '0', 'false', 'no'].includes(String(value ?? '').trim().toLowerCase());
}

test('CI counts as on for any value but empty, 0, false or no, as in_ci does', () => {
  for (const on of ['true', 'True', '1', 'yes', ' TRUE ']) assert.equal(inCI(on), true, on);
  for (const off of [undefined, '', ' ', '0', 'false', 'False', 'NO']) {
    assert.equal(inCI(off), false, String(off));
  }
});

test('live service is configured when CI runs', () => {
  if (inCI(process.env.CI)) {
    assert.ok(liveTarget, `CI=${process.env.CI} but AMPERITY_SIGNAL_GRPC_TARGET is not set: `
      + 'start the stack and export AMPERITY_SIGNAL_GRPC_TARGET, AMPERITY_SIGNAL_INTEGRATION_ID and '
      + 'AMPERITY_SIGNAL_PIPELINE_KEY.');
  }
});

test('live: the client against the running service', liveOptions, async (t) => {
  const liveIntegrationId = process.env.AMPERITY_SIGNAL_INTEGRATION_ID || '';
  const client = new AmperityClient({
    target: liveTarget,
    integrationId: liveIntegrationId,
    pipelineKey: process.env.AMPERITY_SIGNAL_PIPELINE_KEY || '',
  });
  t.after(() => client.close());
  const visitor = `node-test-${crypto.randomUUID()}`;

  await t.test('Deliver maps Product Viewed to view_item and Amperity answers 202', async () => {
    const response = await client.deliver({
      type: 'track',
      event: 'Product Viewed',
      anonymousId: visitor,
      timestamp: new Date().toISOString(),
      properties: { product_id: 'SKU-1', name: 'Trail Jacket', price: 129.99, currency: 'USD' },
      context: { page: { url: 'https://shop.example.com/p/sku-1', path: '/p/sku-1' } },
    });
    assert.equal(response.amperity_type, 'view_item');
    assert.equal(response.vendor_request.status_code, 202);
    assert.equal(typeof response.payload, 'object');
  });

  // alice's Persona as Amperity holds it now: the sandbox seeds 'Value Hunter', and events
  // sent for her before this run (the README's walkthrough, the demo) may have changed it.
  let alicePersona = '';
  await t.test('Enrich resolves the visitor identified as alice@example.com', async () => {
    const response = await client.enrich({
      type: 'identify', anonymousId: visitor, traits: { email: 'alice@example.com' },
    });
    assert.equal(response.resolved, true);
    assert.equal(response.amperity_id, ALICE);
    assert.equal(response.matched_key, 'email_sha256');
    assert.ok(PERSONAS.includes(response.attributes.Persona), response.attributes.Persona);
    alicePersona = response.attributes.Persona;
  });

  await t.test('BrowserProfile answers for the amperity provider', async () => {
    const response = await client.browserProfile(visitor);
    assert.equal(response.provider, 'amperity');
    assert.equal(typeof response.attributes, 'object');
  });

  await t.test('RecordConsent: granting shows the profile, withdrawing hides it at once',
    async () => {
      const condition = process.env.AMPERITY_SIGNAL_BROWSER_CONSENT || '';
      if (!condition) {
        // No condition: every state allows the profile, and the service keeps none.
        assert.equal(await client.recordConsent(visitor, {}), true,
          'the integration has a browser_consent condition: set AMPERITY_SIGNAL_BROWSER_CONSENT');
        return;
      }
      // The condition is a path into the state, e.g. functional or categories.C0003.
      const state = (/** @type {boolean} */ granted) => condition.split('.').reduceRight(
        (/** @type {any} */ inner, key) => ({ [key]: inner }),
        condition.startsWith('google.') ? (granted ? 'granted' : 'denied') : granted,
      );
      assert.equal(await client.recordConsent(visitor, state(true)), true);
      assert.equal((await client.browserProfile(visitor)).attributes.Persona, alicePersona);
      assert.equal(await client.recordConsent(visitor, state(false)), false);
      assert.deepEqual((await client.browserProfile(visitor)).attributes, {});
      // A grant from before the withdrawal (a late or replayed call) is ignored, and the
      // answer is for the withdrawal kept.
      const anHourAgo = new Date(Date.now() - 3600 * 1000);
      assert.equal(await client.recordConsent(visitor, state(true), { consentedAt: anHourAgo }),
        false);
      assert.deepEqual((await client.browserProfile(visitor)).attributes, {});
    });

  await t.test('RecordConsent refuses a consentedAt an hour ahead, naming consented_at',
    async () => {
      const anHourAhead = new Date(Date.now() + 3600 * 1000).toISOString();
      const error = await client.recordConsent(visitor, {}, { consentedAt: anHourAhead })
        .then(() => null, (e) => e);
      assert.ok(error instanceof AmperitySignalError, String(error));
      assert.equal(error.code, 3);
      assert.equal(error.reason, 'INVALID_CONSENT');
      assert.deepEqual(error.fieldViolations.map((v) => v.field), ['consented_at']);
    });

  // The timeout guards against a record that never comes; it asserts nothing about speed.
  await t.test('deliverMany delivers over one stream and watchDeliveries sees each delivery',
    { timeout: 60000 }, async () => {
      const viewed = (sku) => ({
        type: 'track',
        event: 'Product Viewed',
        anonymousId: visitor,
        properties: { product_id: sku, name: 'Trail Jacket', price: 129.99, currency: 'USD' },
      });
      // Replaying the latest record first proves the watch is subscribed before the rest.
      const first = await client.deliver(viewed('SKU-0'));
      const watch = client.watchDeliveries({ replay: 1 });
      const replayed = await watch.next();
      assert.equal(replayed.value.message_id, first.message_id);

      const outcomes = [];
      for await (const outcome of client.deliverMany(['SKU-1', 'SKU-2', 'SKU-3'].map(viewed),
        { concurrency: 2 })) {
        outcomes.push(outcome);
      }
      assert.equal(outcomes.length, 3);
      for (const outcome of outcomes) {
        assert.equal(outcome.error, undefined, outcome.error && outcome.error.message);
        assert.equal(outcome.result.message_id, outcome.messageId);
        assert.equal(outcome.result.amperity_type, 'view_item');
        assert.equal(outcome.result.vendor_request.status_code, 202);
      }

      const unseen = new Set(outcomes.map((outcome) => outcome.messageId));
      for await (const record of watch) {
        if (!unseen.delete(record.message_id)) continue;
        if (liveIntegrationId) assert.equal(record.integration_id, liveIntegrationId);
        assert.equal(record.outcome, 'delivered');
        assert.equal(record.amperity_type, 'view_item');
        assert.equal(record.event.anonymous_id, visitor);
        assert.equal(typeof record.payload, 'object');
        if (!unseen.size) break;
      }
      assert.equal(unseen.size, 0);
    });
});
