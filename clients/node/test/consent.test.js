'use strict';
// recordConsent against an in-process grpc-js server of the service. The live test, against
// the real service, is in client.test.js.

const test = require('node:test');
const assert = require('node:assert/strict');

const { AmperityClient, AmperitySignalError } = require('..');
const { detail, failure, startFake } = require('../testing/fake-service');

/**
 * A fake whose RecordConsent records each call and answers `answer(call, calls)`.
 * @param {(call: any, calls: number) => [any, any]} answer [error, response] for the callback.
 */
async function consentFake(answer) {
  const seen = { calls: /** @type {any[]} */ ([]) };
  const { server, target } = await startFake({
    RecordConsent(call, callback) {
      seen.calls.push(call);
      callback(...answer(call, seen.calls.length));
    },
  });
  return { seen, server, target };
}

test('recordConsent sends the client identity and the nested state, resolves the answer',
  async (t) => {
    const { seen, server, target } = await consentFake(() => [null, { profile_allowed: false }]);
    t.after(() => server.forceShutdown());
    const client = new AmperityClient({ target, integrationId: 'web', pipelineKey: 'pk_web' });
    t.after(() => client.close());

    const allowed = await client.recordConsent('anon-1', {
      analytics: true,
      marketing: null,
      categories: { C0003: false },
      google: { adStorage: 'denied', analytics_storage: 'granted' },
    });

    assert.equal(allowed, false);
    assert.equal(seen.calls.length, 1);
    const [{ request, metadata }] = seen.calls;
    assert.equal(request.integration_id, 'web');
    assert.equal(request.pipeline_key, 'pk_web');
    assert.equal(request.anonymous_id, 'anon-1');
    assert.equal(request.consent.analytics, true);
    // proto3 optional: a field sent is named by its synthetic oneof, an absent one is not.
    assert.equal(request.consent._analytics, 'analytics');
    assert.equal(request.consent._marketing, undefined);
    assert.deepEqual(request.consent.categories, { C0003: false });
    assert.equal(request.consent.google.ad_storage, 'denied');
    assert.equal(request.consent.google.analytics_storage, 'granted');
    assert.equal(request.consent.google._ad_user_data, undefined);
    assert.deepEqual(metadata.get('x-pipeline-key'), ['pk_web']);
  });

test('recordConsent is retried on UNAVAILABLE and rejects INVALID_ARGUMENT readably',
  async (t) => {
    const { seen, server, target } = await consentFake((call, calls) => {
      if (calls === 1) {
        return [failure(14, 'The service is restarting.', [
          detail('ErrorInfo', { reason: 'SERVICE_STOPPING', domain: 'amperity-signal.datafly.com' }),
        ]), null];
      }
      if (call.request.anonymous_id === 'too-long') {
        // As the service answers: RecordConsent's field errors are INVALID_CONSENT.
        return [failure(3, 'invalid consent: anonymous_id: is longer than 8192 characters.', [
          detail('ErrorInfo', {
            reason: 'INVALID_CONSENT', domain: 'amperity-signal.datafly.com',
            metadata: { fields: 'anonymous_id' },
          }),
          detail('BadRequest', { field_violations: [
            { field: 'anonymous_id', description: 'is longer than 8192 characters.' }] }),
        ]), null];
      }
      return [null, { profile_allowed: true }];
    });
    t.after(() => server.forceShutdown());
    const waits = [];
    const client = new AmperityClient({
      target, integrationId: 'web', sleep: async (ms) => { waits.push(ms); },
    });
    t.after(() => client.close());

    const allowed = await client.recordConsent('anon-1', { functional: true });
    const error = await client.recordConsent('too-long', {}).then(() => null, (e) => e);

    assert.equal(allowed, true);
    assert.equal(waits.length, 1);
    assert.deepEqual(seen.calls[0].request, seen.calls[1].request);
    assert.ok(error instanceof AmperitySignalError);
    assert.equal(error.code, 3);
    assert.equal(error.reason, 'INVALID_CONSENT');
    assert.deepEqual(error.fieldViolations.map((v) => v.field), ['anonymous_id']);
    assert.equal(seen.calls.length, 3);
  });

test('what the client can check is a TypeError naming it, and nothing is sent', async (t) => {
  const { seen, server, target } = await consentFake(() => [null, { profile_allowed: true }]);
  t.after(() => server.forceShutdown());
  const client = new AmperityClient({ target, pipelineKey: 'pk_web' });
  t.after(() => client.close());

  const refused = [
    ['', {}, /^anonymousId is required: .*_dfid/],
    [undefined, {}, /^anonymousId must be a string, .* not undefined: pass it as text, e\.g\. "anon-1"\.$/],
    [42, {}, /^anonymousId must be a string, .* not number: pass it as text, e\.g\. "anon-1"\.$/],
    ['anon-1', undefined, /^consent must be a JSON object such as/],
    ['anon-1', ['functional'], /^consent must be a JSON object\.$/],
    ['anon-1', { analytics: 'yes' }, /^consent\.analytics must be true or false\.$/],
    ['anon-1', { categories: { C0003: 1 } }, /^consent\.categories\.C0003 must be true or false\.$/],
    ['anon-1', { google: { adStorage: 'maybe' } },
      /^consent\.google\.ad_storage must be "granted" or "denied"\.$/],
  ];
  for (const [anonymousId, consent, message] of refused) {
    // eslint-disable-next-line no-await-in-loop
    await assert.rejects(client.recordConsent(anonymousId, consent),
      (error) => error instanceof TypeError && message.test(error.message),
      `${String(anonymousId)} ${JSON.stringify(consent)}`);
  }
  assert.equal(seen.calls.length, 0);
});

test('recordConsent sends consentedAt as the instant it names, and nothing when left out',
  async (t) => {
    const { seen, server, target } = await consentFake(() => [null, { profile_allowed: true }]);
    t.after(() => server.forceShutdown());
    const client = new AmperityClient({ target, pipelineKey: 'pk_web' });
    t.after(() => client.close());

    await client.recordConsent('anon-1', {}, { consentedAt: new Date('2025-01-31T12:00:00.250Z') });
    await client.recordConsent('anon-1', {}, { consentedAt: '2025-01-31T13:00:00.123456789+01:00' });
    await client.recordConsent('anon-1', {});

    const [date, text, unset] = seen.calls.map((call) => call.request);
    assert.deepEqual(date.consented_at, { seconds: '1738324800', nanos: 250000000 });
    assert.deepEqual(text.consented_at, { seconds: '1738324800', nanos: 123456789 });
    assert.equal(unset.consented_at, null);
  });

test('a consentedAt that names no single instant is a TypeError naming it, and nothing is sent',
  async (t) => {
    const { seen, server, target } = await consentFake(() => [null, { profile_allowed: true }]);
    t.after(() => server.forceShutdown());
    const client = new AmperityClient({ target, pipelineKey: 'pk_web' });
    t.after(() => client.close());

    const refused = [
      // No offset: Date.parse would read it as the machine's local time.
      ['2025-01-31T12:00:00', /^consentedAt must be an RFC 3339 date-time with its offset, /],
      ['2025-01-31', /^consentedAt must be an RFC 3339 date-time with its offset, /],
      ['2025-02-30T12:00:00Z', /^consentedAt must be an RFC 3339 date-time with its offset, /],
      ['yesterday', /^consentedAt must be an RFC 3339 date-time with its offset, /],
      [1738324800000, /^consentedAt must be a Date or an RFC 3339 string .* not number\.$/],
      [new Date(Number.NaN), /^consentedAt is an Invalid Date: /],
    ];
    for (const [consentedAt, message] of refused) {
      // eslint-disable-next-line no-await-in-loop
      await assert.rejects(client.recordConsent('anon-1', {}, { consentedAt }),
        (error) => error instanceof TypeError && message.test(error.message), String(consentedAt));
    }
    assert.equal(seen.calls.length, 0);
  });
