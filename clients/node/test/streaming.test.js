'use strict';
// deliverMany and watchDeliveries against an in-process grpc-js server of the service.

const net = require('node:net');
const test = require('node:test');
const assert = require('node:assert/strict');

const grpc = require('@grpc/grpc-js');

const { AmperityClient, AmperitySignalError, toStruct } = require('..');
const { detail, failure, startFake } = require('../testing/fake-service');

// Guards against a hang (a missed answer or cancellation), not a timing assertion.
const GUARD = { timeout: 20000 };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/**
 * The DeliverStreamResponse of a delivered event, its payload naming the event.
 * @param {object} request
 */
function delivered(request) {
  return {
    message_id: request.event.message_id,
    result: {
      message_id: request.event.message_id,
      amperity_type: 'view_item',
      payload: toStruct({ event: request.event.event }),
      vendor_request: { status_code: 202 },
    },
  };
}

/** @param {number} count */
function events(count) {
  return Array.from({ length: count }, (_, i) => ({
    type: 'track', event: `Event ${i}`, anonymousId: 'anon-1', messageId: `m-${i}`,
  }));
}

/**
 * Start a fake whose DeliverStream hands each call and request to `onRequest`.
 * @param {(request: any, call: any, calls: number) => void} onRequest
 * @param {object} [more] Other method handlers.
 */
async function streamFake(onRequest, more = {}) {
  const fake = { calls: 0, received: /** @type {any[][]} */ ([]) };
  const { server, target } = await startFake({
    DeliverStream(call) {
      fake.calls += 1;
      const number = fake.calls;
      fake.received.push([]);
      call.on('data', (request) => {
        fake.received[number - 1].push(request.event.message_id);
        onRequest(request, call, number);
      });
      call.on('end', () => call.end());
    },
    ...more,
  });
  return { ...fake, fake, server, target };
}

/**
 * @param {import('node:test').TestContext} t
 * @param {object} fake
 * @param {object} [options]
 */
function clientFor(t, { server, target }, options = {}) {
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({ target, integrationId: 'web', sleep: async () => {}, ...options });
  t.after(() => client.close());
  return client;
}

/** @param {AsyncIterable<any>} iterator */
async function collect(iterator) {
  const items = [];
  for await (const item of iterator) items.push(item);
  return items;
}

test('deliverMany yields each result under its message_id, as they finish', GUARD, async (t) => {
  const held = [];
  const fake = await streamFake((request, call) => {
    held.push(request);
    // Answer in reverse once all four are in, so order cannot stand in for matching.
    if (held.length === 4) for (const r of held.reverse()) call.write(delivered(r));
  });
  const client = clientFor(t, fake);
  const input = [
    { type: 'track', event: 'First', anonymousId: 'a', messageId: 'given-1' },
    { type: 'track', event: 'Second', anonymousId: 'a' },
    { type: 'track', event: 'Third', anonymousId: 'a', message_id: 'given-3' },
    { type: 'track', event: 'Fourth', anonymousId: 'a' },
  ];

  const outcomes = await collect(client.deliverMany(input));

  assert.deepEqual(outcomes.map((o) => o.result.payload.event), ['Fourth', 'Third', 'Second', 'First']);
  for (const outcome of outcomes) {
    assert.equal(outcome.error, undefined);
    assert.equal(outcome.result.message_id, outcome.messageId);
    assert.equal(outcome.result.amperity_type, 'view_item');
  }
  assert.equal(outcomes[1].messageId, 'given-3');
  assert.equal(outcomes[3].messageId, 'given-1');
  assert.match(outcomes[0].messageId, UUID);
  assert.match(outcomes[2].messageId, UUID);
  assert.notEqual(outcomes[0].messageId, outcomes[2].messageId);
  assert.equal(fake.fake.calls, 1);
});

test('per-event errors are the AmperitySignalErrors unary calls raise', GUARD, async (t) => {
  const attempts = new Map();
  const fake = await streamFake((request, call) => {
    const id = request.event.message_id;
    attempts.set(id, (attempts.get(id) || 0) + 1);
    if (id === 'm-0') {
      call.write({ message_id: id, error: { code: 3, message: 'anonymous_id is required.',
        reason: 'INVALID_EVENT', metadata: { field: 'event.anonymous_id' },
        field_violations: [{ field: 'event.anonymous_id', description: 'is required.' }] } });
    } else if (id === 'm-1' && attempts.get(id) === 1) {
      call.write({ message_id: id, error: { code: 14, message: 'Amperity is unavailable.',
        reason: 'AMPERITY_UNAVAILABLE', retry_after_seconds: 2.5 } });
    } else if (id === 'm-2') {
      call.write({ message_id: id, error: { code: 8, message: 'Amperity rate limited.',
        reason: 'AMPERITY_RATE_LIMITED', retry_after_seconds: 1 } });
    } else {
      call.write(delivered(request));
    }
  });
  const waits = [];
  const client = clientFor(t, fake, {
    retry: { maxAttempts: 3 }, sleep: async (ms) => { waits.push(ms); },
  });

  const outcomes = await collect(client.deliverMany(events(4)));
  const byId = Object.fromEntries(outcomes.map((o) => [o.messageId, o]));

  assert.equal(outcomes.length, 4);
  const invalid = byId['m-0'].error;
  assert.ok(invalid instanceof AmperitySignalError);
  assert.equal(invalid.code, 3);
  assert.equal(invalid.message, 'INVALID_EVENT: anonymous_id is required.');
  assert.deepEqual(invalid.metadata, { field: 'event.anonymous_id' });
  assert.deepEqual(invalid.fieldViolations, [{ field: 'event.anonymous_id', description: 'is required.' }]);
  assert.equal(invalid.domain, 'amperity-signal.datafly.com');
  assert.equal(invalid.retryable, false);
  assert.equal(attempts.get('m-0'), 1);
  // UNAVAILABLE once, then delivered: sent again after at least its RetryInfo delay.
  assert.equal(byId['m-1'].result.payload.event, 'Event 1');
  assert.equal(attempts.get('m-1'), 2);
  assert.ok(waits.some((ms) => ms >= 2500));
  // RESOURCE_EXHAUSTED every time: yielded after maxAttempts sends.
  const limited = byId['m-2'].error;
  assert.ok(limited instanceof AmperitySignalError);
  assert.equal(limited.code, 8);
  assert.equal(limited.retryAfter, 1);
  assert.equal(limited.retryable, true);
  assert.equal(attempts.get('m-2'), 3);
  assert.equal(byId['m-3'].result.payload.event, 'Event 3');
});

test('deliverMany keeps at most `concurrency` events unanswered or read', GUARD, async (t) => {
  const total = 40;
  const concurrency = 4;
  const held = [];
  let received = 0;
  let maxInFlight = 0;
  const fake = await streamFake((request, call) => {
    received += 1;
    held.push(request);
    maxInFlight = Math.max(maxInFlight, held.length);
    // Hold answers until the window is full (or the last events are in), so a client
    // that sends past its window is seen doing so.
    if (held.length >= concurrency || received === total) call.write(delivered(held.shift()));
    if (received === total) for (const r of held.splice(0)) call.write(delivered(r));
  });
  const client = clientFor(t, fake);
  let pulled = 0;
  async function* source() {
    for (const event of events(total)) {
      pulled += 1;
      yield event;
    }
  }

  let taken = 0;
  for await (const outcome of client.deliverMany(source(), { concurrency })) {
    taken += 1;
    assert.ok(outcome.result);
    assert.ok(pulled - taken <= concurrency, `read ${pulled} events with ${taken} taken`);
    // A slow consumer: the client must not read on meanwhile.
    await new Promise((resolve) => { setImmediate(resolve); });
  }

  assert.equal(taken, total);
  assert.equal(maxInFlight, concurrency);
});

test('two events with one message_id are never in flight together', GUARD, async (t) => {
  const inFlight = new Set();
  let overlapped = false;
  const fake = await streamFake((request, call) => {
    const id = request.event.message_id;
    if (inFlight.has(id)) overlapped = true;
    inFlight.add(id);
    setImmediate(() => { inFlight.delete(id); call.write(delivered(request)); });
  });
  const client = clientFor(t, fake);
  const input = [...events(2), { ...events(1)[0], event: 'Again' }];

  const outcomes = await collect(client.deliverMany(input));

  assert.equal(overlapped, false);
  assert.deepEqual(outcomes.map((o) => o.messageId).sort(), ['m-0', 'm-0', 'm-1']);
  assert.equal(fake.fake.received[0].filter((id) => id === 'm-0').length, 2);
});

test('a stream broken by UNAVAILABLE is reopened with the unanswered events', GUARD, async (t) => {
  const fake = await streamFake((request, call, number) => {
    if (number > 1) {
      call.write(delivered(request));
    } else if (request.event.message_id === 'm-2') {
      call.write(delivered({ event: { message_id: 'm-0', event: 'Event 0' } }));
      call.emit('error', failure(14, 'The service is shutting down.', [
        detail('ErrorInfo', { reason: 'SHUTTING_DOWN', domain: 'amperity-signal.datafly.com' }),
        detail('RetryInfo', { retry_delay: { seconds: 3 } }),
      ]));
    }
  });
  const waits = [];
  const client = clientFor(t, fake, { sleep: async (ms) => { waits.push(ms); } });

  const outcomes = await collect(client.deliverMany(events(3)));

  assert.deepEqual(outcomes.map((o) => o.messageId).sort(), ['m-0', 'm-1', 'm-2']);
  assert.ok(outcomes.every((o) => o.result));
  assert.deepEqual(fake.fake.received, [['m-0', 'm-1', 'm-2'], ['m-1', 'm-2']]);
  assert.ok(waits.some((ms) => ms >= 3000));
});

/**
 * A grpc-js client interceptor calling `seen` once a call's non-OK status reached the client.
 * @param {() => void} seen
 */
function onFailedStatus(seen) {
  return (/** @type {any} */ options, /** @type {any} */ nextCall) => new grpc.InterceptingCall(
    nextCall(options), {
      start(metadata, listener, next) {
        next(metadata, {
          onReceiveStatus(/** @type {any} */ status, /** @type {any} */ nextStatus) {
            nextStatus(status);
            if (status.code !== grpc.status.OK) seen();
          },
        });
      },
    },
  );
}

test('answers sent before the stream ended count, however slowly the caller takes them', GUARD, async (t) => {
  // A stopping service answers the events it took, then ends the stream UNAVAILABLE. The
  // Python client once lost such answers (its read raised the status first) and sent those
  // events again. Here the caller takes its first answer only once the status is in, so
  // the other answers and the end of the call all wait for the client at once.
  const taken = [];
  const fake = await streamFake((request, call, number) => {
    if (number > 1) {
      call.write(delivered(request));
      return;
    }
    taken.push(request);
    if (taken.length < 4) return;
    // Three answers, then the end, with m-3 still unanswered.
    for (const answered of taken.slice(0, 3)) call.write(delivered(answered));
    call.emit('error', failure(14, 'The service is shutting down.', [
      detail('ErrorInfo', { reason: 'SHUTTING_DOWN', domain: 'amperity-signal.datafly.com' }),
    ]));
  });
  let statusSeen;
  const ended = new Promise((resolve) => { statusSeen = resolve; });
  const client = clientFor(t, fake, { channelOptions: { interceptors: [onFailedStatus(statusSeen)] } });

  const outcomes = [];
  for await (const outcome of client.deliverMany(events(5), { concurrency: 4 })) {
    outcomes.push(outcome);
    if (outcomes.length === 1) {
      await ended;
      // And the call's 'status' and 'end' events, which follow it before the next turn.
      await new Promise((resolve) => { setImmediate(resolve); });
    }
  }

  assert.deepEqual(outcomes.map((o) => o.messageId).sort(), ['m-0', 'm-1', 'm-2', 'm-3', 'm-4']);
  assert.ok(outcomes.every((o) => o.result), JSON.stringify(outcomes));
  // Only the unanswered event is sent again, then the one read after the stream ended.
  assert.deepEqual(fake.fake.received, [['m-0', 'm-1', 'm-2', 'm-3'], ['m-3', 'm-4']]);
});

test('a stream with no answer for the idle timeout is reopened', GUARD, async (t) => {
  // The first call swallows everything, as a hung service would.
  const fake = await streamFake((request, call, number) => {
    if (number > 1) call.write(delivered(request));
  });
  const client = clientFor(t, fake, { streamIdleTimeoutMs: 50 });

  const outcomes = await collect(client.deliverMany(events(2)));

  assert.equal(outcomes.length, 2);
  assert.ok(outcomes.every((o) => o.result));
  // The first call answered nothing, so the second re-sends both (a loaded machine may
  // time out a later call too, so only the first two are pinned).
  assert.deepEqual(fake.fake.received.slice(0, 2), [['m-0', 'm-1'], ['m-0', 'm-1']]);
});

test('a non-retryable stream failure throws, after the answers before it', GUARD, async (t) => {
  const fake = await streamFake((request, call) => {
    if (request.event.message_id === 'm-0') {
      call.write(delivered(request));
      return;
    }
    call.emit('error', failure(7, 'The Amperity key lacks the stream scope.', [
      detail('ErrorInfo', { reason: 'AMPERITY_FORBIDDEN', domain: 'amperity-signal.datafly.com' }),
    ]));
  });
  const client = clientFor(t, fake);
  const outcomes = [];

  const error = await (async () => {
    for await (const outcome of client.deliverMany(events(3), { concurrency: 1 })) outcomes.push(outcome);
  })().then(() => null, (e) => e);

  assert.deepEqual(outcomes.map((o) => o.messageId), ['m-0']);
  assert.ok(error instanceof AmperitySignalError);
  assert.equal(error.code, 7);
  assert.equal(error.reason, 'AMPERITY_FORBIDDEN');
  assert.equal(fake.fake.calls, 1);
});

test('an event over the size limit ends deliverMany without reopening', GUARD, async (t) => {
  const fake = await streamFake((request, call) => call.write(delivered(request)));
  const client = clientFor(t, fake);
  const oversized = { ...events(1)[0], properties: { blob: 'x'.repeat(4 * 1024 * 1024 + 1000) } };

  const error = await (async () => {
    for await (const outcome of client.deliverMany([oversized])) assert.fail(outcome);
  })().then(() => null, (e) => e);

  assert.ok(error instanceof AmperitySignalError);
  assert.equal(error.reason, 'MESSAGE_TOO_LARGE');
  assert.equal(fake.fake.calls, 1);
});

test('deliverMany refuses a bad concurrency and a bad event', GUARD, async (t) => {
  const fake = await streamFake((request, call) => call.write(delivered(request)));
  const client = clientFor(t, fake);

  const refused = /^concurrency must be a whole number, 1 or more\.$/;
  assert.throws(() => client.deliverMany(events(1), { concurrency: 0 }),
    (e) => e instanceof RangeError && refused.test(e.message));
  // Another type is a TypeError, as documented and as the Python client refuses it.
  for (const concurrency of ['4', 1.5, true]) {
    assert.throws(() => client.deliverMany(events(1), { concurrency }),
      (e) => e instanceof TypeError && refused.test(e.message), String(concurrency));
  }
  assert.throws(() => client.deliverMany(42), /iterable/);
  await assert.rejects(collect(client.deliverMany([{ type: 'shout' }])), /type must be one of/);
  assert.deepEqual(await collect(client.deliverMany([])), []);
  assert.equal(fake.fake.calls, 0);
});

test('stopping a deliverMany early cancels its call', GUARD, async (t) => {
  let cancelled;
  const seen = new Promise((resolve) => { cancelled = resolve; });
  const fake = await streamFake((request, call) => {
    call.on('cancelled', cancelled);
    call.write(delivered(request));
  });
  const client = clientFor(t, fake);

  for await (const outcome of client.deliverMany(events(10), { concurrency: 1 })) {
    assert.equal(outcome.messageId, 'm-0');
    break;
  }

  await seen;
  assert.equal(fake.fake.calls, 1);
});

/**
 * A WatchDeliveriesResponse as the service sends it.
 * @param {string} messageId
 */
function record(messageId) {
  return {
    integration_id: 'web',
    message_id: messageId,
    delivered_at: { seconds: 1738324800, nanos: 0 },
    event: { message_id: messageId, type: 'track', properties: toStruct({ sku: 'S1' }) },
    amperity_type: 'view_item',
    payload: toStruct({ event_type: 'view_item', items: [{ sku: 'S1' }] }),
    vendor_request: { status_code: 202, headers: { Authorization: 'Bearer [REDACTED]' } },
    outcome: 'delivered',
  };
}

/** A 127.0.0.1 address nothing listens on: every connection is refused. */
async function closedPort() {
  const probe = net.createServer();
  await new Promise((resolve) => { probe.listen(0, '127.0.0.1', resolve); });
  const { port } = /** @type {net.AddressInfo} */ (probe.address());
  await new Promise((resolve) => { probe.close(resolve); });
  return `127.0.0.1:${port}`;
}

/**
 * A 127.0.0.1 address that takes connections and never speaks: a hung host.
 * @param {import('node:test').TestContext} t
 */
async function silentPort(t) {
  const sockets = new Set();
  const listener = net.createServer((socket) => { sockets.add(socket); });
  await new Promise((resolve) => { listener.listen(0, '127.0.0.1', resolve); });
  t.after(() => { for (const socket of sockets) socket.destroy(); listener.close(); });
  const { port } = /** @type {net.AddressInfo} */ (listener.address());
  return `127.0.0.1:${port}`;
}

// Bounds the old behaviour (wait for the idle timeout, reopen under streamRetry) would
// also reach quickly, so a regression fails an assertion, not the clock.
const DOWN_OPTIONS = { streamIdleTimeoutMs: 400, streamRetry: { maxAttempts: 2 } };

/**
 * deliverMany of one event with a client of `target`; resolves to the error it threw.
 * @param {import('node:test').TestContext} t
 * @param {string} target
 * @param {object} options
 */
async function deliverManyError(t, target, options) {
  const client = new AmperityClient({ target, integrationId: 'web', ...DOWN_OPTIONS, ...options });
  t.after(() => client.close());
  return collect(client.deliverMany(events(1))).then(
    () => assert.fail('deliverMany ended without an error'), (error) => error,
  );
}

test('deliverMany to a closed port fails under the retry policy, naming the target', GUARD, async (t) => {
  const target = await closedPort();
  const waits = [];
  const error = await deliverManyError(t, target, {
    retry: { maxAttempts: 3 }, sleep: async (ms) => { waits.push(ms); },
  });

  assert.ok(error instanceof AmperitySignalError);
  assert.equal(error.code, 14);
  assert.equal(error.reason, 'SERVICE_UNREACHABLE');
  assert.equal(error.metadata.target, target);
  assert.match(error.message, new RegExp(`service at ${target} \\(the connection failed\\)`));
  assert.equal(waits.length, 3 - 1);
});

test('deliverMany to a hung host waits timeoutMs per attempt', GUARD, async (t) => {
  const target = await silentPort(t);
  const waits = [];
  const error = await deliverManyError(t, target, {
    timeoutMs: 200, retry: { maxAttempts: 2 }, sleep: async (ms) => { waits.push(ms); },
  });

  assert.equal(error.reason, 'SERVICE_UNREACHABLE');
  assert.match(error.message, new RegExp(`service at ${target} \\(not connected within 200 ms\\)`));
  assert.equal(waits.length, 2 - 1);
});

test('deliverMany that lost the service reopens under streamRetry, then names the target', GUARD, async (t) => {
  // The second event finds the service going away for good: UNAVAILABLE, then gone.
  const fake = await streamFake((request, call) => {
    if (request.event.message_id === 'm-0') {
      call.write(delivered(request));
      return;
    }
    call.emit('error', failure(14, 'The service is shutting down.', []));
    fake.server.tryShutdown(() => {});
  });
  const waits = [];
  const client = clientFor(t, fake, {
    ...DOWN_OPTIONS, timeoutMs: 200, sleep: async (ms) => { waits.push(ms); },
  });
  let release = () => {};
  const answered = new Promise((resolve) => { release = resolve; });
  async function* source() {
    yield events(1)[0];
    await answered;
    yield { type: 'track', event: 'Later', anonymousId: 'anon-1', messageId: 'm-later' };
  }

  const outcomes = [];
  const error = await (async () => {
    for await (const outcome of client.deliverMany(source())) {
      outcomes.push(outcome.messageId);
      release();
    }
  })().then(() => assert.fail('deliverMany ended without an error'), (rejected) => rejected);

  assert.deepEqual(outcomes, ['m-0']);
  assert.equal(error.reason, 'SERVICE_UNREACHABLE');
  assert.match(error.message, new RegExp(`service at ${fake.target} \\(not connected within 200 ms\\)`));
  assert.equal(waits.length, DOWN_OPTIONS.streamRetry.maxAttempts - 1);
});

test('watchDeliveries yields plain records and a break cancels the call', GUARD, async (t) => {
  let request;
  let pipelineKey;
  let cancelled;
  const seen = new Promise((resolve) => { cancelled = resolve; });
  const { server, target } = await startFake({
    WatchDeliveries(call) {
      request = call.request;
      pipelineKey = call.metadata.get('x-pipeline-key')[0];
      call.on('cancelled', cancelled);
      call.write(record('m-1'));
      call.write({ ...record('m-2'), missed_before: 4 }); // the watch fell behind before it
      // Then stays open, as the live stream does.
    },
  });
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({ target, integrationId: 'web', pipelineKey: 'pk_web' });
  t.after(() => client.close());

  const records = [];
  for await (const item of client.watchDeliveries({ replay: 10 })) {
    records.push(item);
    if (records.length === 2) break;
  }
  await seen;

  assert.deepEqual(request, { integration_id: 'web', replay: 10 });
  assert.equal(pipelineKey, 'pk_web');
  assert.deepEqual(records.map((r) => r.message_id), ['m-1', 'm-2']);
  assert.deepEqual(records.map((r) => r.missed_before), [0, 4]);
  assert.deepEqual(records[0].payload, { event_type: 'view_item', items: [{ sku: 'S1' }] });
  assert.deepEqual(records[0].event.properties, { sku: 'S1' });
  assert.equal(records[0].vendor_request.status_code, 202);
  assert.equal(records[0].outcome, 'delivered');
});

test('aborting its signal ends a watch waiting for a record, and cancels the call', GUARD, async (t) => {
  let cancelled;
  const seen = new Promise((resolve) => { cancelled = resolve; });
  let opened;
  const open = new Promise((resolve) => { opened = resolve; });
  const { server, target } = await startFake({
    WatchDeliveries(call) {
      call.on('cancelled', cancelled);
      call.write(record('m-1'));
      opened();
      // Then nothing: a quiet live stream.
    },
  });
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({ target, integrationId: 'web' });
  t.after(() => client.close());
  const controller = new AbortController();

  const records = [];
  const watching = (async () => {
    for await (const item of client.watchDeliveries({ signal: controller.signal })) {
      records.push(item);
    }
  })();
  await open;
  while (records.length === 0) await new Promise((resolve) => setImmediate(resolve));
  controller.abort();
  await watching; // ends, no error
  await seen;
  assert.deepEqual(records.map((r) => r.message_id), ['m-1']);

  const ended = await client.watchDeliveries({ signal: controller.signal }).next();
  assert.equal(ended.done, true); // already aborted: no call
  const error = await client.watchDeliveries({ signal: 'stop' }).next().then(() => null, (e) => e);
  assert.ok(error instanceof TypeError);
  assert.match(error.message, /^signal must be an AbortSignal/);
});

test('a failing watch throws the mapped error after its records', GUARD, async (t) => {
  let request;
  const { server, target } = await startFake({
    WatchDeliveries(call) {
      request = call.request;
      call.write(record('m-1'));
      call.emit('error', failure(5, 'No integration "nope"; configured: web.', [
        detail('ErrorInfo', { reason: 'INTEGRATION_NOT_FOUND', domain: 'amperity-signal.datafly.com',
          metadata: { integration_id: 'nope' } }),
      ]));
    },
  });
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({ target, integrationId: 'web' });
  t.after(() => client.close());
  const records = [];

  const error = await (async () => {
    for await (const item of client.watchDeliveries({ integrationId: 'nope' })) records.push(item);
  })().then(() => null, (e) => e);

  assert.equal(request.integration_id, 'nope');
  assert.deepEqual(records.map((r) => r.message_id), ['m-1']);
  assert.ok(error instanceof AmperitySignalError);
  assert.equal(error.code, 5);
  assert.equal(error.reason, 'INTEGRATION_NOT_FOUND');
  assert.deepEqual(error.metadata, { integration_id: 'nope' });
});

test('watchDeliveries refuses a replay that is no record count, naming it, before any call', GUARD, async (t) => {
  let calls = 0;
  const { server, target } = await startFake({
    WatchDeliveries(call) { calls += 1; call.end(); },
  });
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({ target, integrationId: 'web' });
  t.after(() => client.close());

  // protobufjs sent '2' as 2, 1.5 as 1 and 2 ** 33 as 0; the Python client refuses them.
  for (const [replay, Error, says] of [
    [1.5, TypeError, 'got 1.5'], ['2', TypeError, 'not string'], [true, TypeError, 'not boolean'],
    [-1, RangeError, 'got -1'], [2 ** 33, RangeError, 'got 8589934592'],
  ]) {
    const error = await client.watchDeliveries({ replay }).next().then(() => null, (e) => e);
    assert.ok(error instanceof Error, `${replay}: ${error}`);
    assert.match(error.message, new RegExp(`^replay must be a whole number .*${says}`));
  }
  assert.equal(calls, 0);
  const ended = await client.watchDeliveries({ replay: null }).next(); // null: the default
  assert.equal(ended.done, true);
  assert.equal(calls, 1);
});
