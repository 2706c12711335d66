'use strict';
// A string argument or event field of another type is refused naming it, never converted.
// protobufjs sent String(value): 1.0 went out as "1" (the Python client's str(1.0) is
// "1.0"), an object as "[object Object]", a Buffer as its bytes read as text: another
// visitor's id. Both clients refuse in the same words (their own names and type names).

const test = require('node:test');
const assert = require('node:assert/strict');

const { AmperityClient, toProtoEvent } = require('..');
const { startFake } = require('../testing/fake-service');

/** @type {Array<[unknown, string]>} */
const NOT_STRINGS = [
  [1, 'number'], [1.0, 'number'], [Buffer.from('anon-1'), 'Buffer'], [true, 'boolean'],
  [['a'], 'Array'], [{ id: 'anon-1' }, 'Object'], [null, 'null'], [10n, 'bigint'],
];

/**
 * @param {string} field
 * @param {string} typeName
 * @param {string} example
 */
const notAString = (field, typeName, example) => (/** @type {any} */ error) => error instanceof TypeError
  && new RegExp(`^${field} must be a string, .*, not ${typeName}: pass it as text, `
    + `e\\.g\\. "${example}"\\.$`).test(error.message);

test('a non-string argument is a TypeError naming it and what to pass, and nothing is sent',
  async (t) => {
    const seen = /** @type {unknown[]} */ ([]);
    const { server, target } = await startFake({
      BrowserProfile(call, callback) {
        seen.push(call.request.anonymous_id);
        callback(null, { provider: 'amperity', attributes: { fields: {} } });
      },
      RecordConsent(call, callback) {
        seen.push(call.request.anonymous_id);
        callback(null, { profile_allowed: true });
      },
      WatchDeliveries(call) {
        seen.push(call.request.integration_id);
        call.end();
      },
    });
    t.after(() => server.forceShutdown());
    const client = new AmperityClient({ target, integrationId: 'web' });
    t.after(() => client.close());

    for (const [value, typeName] of NOT_STRINGS) {
      const what = `${typeName} ${String(value)}`;
      // eslint-disable-next-line no-await-in-loop
      await assert.rejects(client.browserProfile(/** @type {any} */ (value)),
        notAString('anonymousId', typeName, 'anon-1'), what);
      // eslint-disable-next-line no-await-in-loop
      await assert.rejects(client.recordConsent(/** @type {any} */ (value), {}),
        notAString('anonymousId', typeName, 'anon-1'), what);
      if (value !== null) { // null, like undefined, means the client's integration
        // eslint-disable-next-line no-await-in-loop
        await assert.rejects(
          client.watchDeliveries({ integrationId: /** @type {any} */ (value) }).next(),
          notAString('integrationId', typeName, 'acme-web'), what,
        );
      }
    }
    await assert.rejects(client.browserProfile(/** @type {any} */ (undefined)),
      notAString('anonymousId', 'undefined', 'anon-1'));
    assert.deepEqual(seen, []);
  });

test('a non-string target, integrationId or pipelineKey is refused when the client is built',
  () => {
    const refused = [
      [{ target: 50051, integrationId: 'web' }, 'target', 'number', 'localhost:50051'],
      [{ target: '127.0.0.1:1', integrationId: 7 }, 'integrationId', 'number', 'acme-web'],
      [{ target: '127.0.0.1:1', integrationId: Buffer.from('web') }, 'integrationId', 'Buffer',
        'acme-web'],
      [{ target: '127.0.0.1:1', pipelineKey: Buffer.from('pk_s3cret') }, 'pipelineKey', 'Buffer',
        'pk_live_...'],
      [{ target: '127.0.0.1:1', pipelineKey: 12345 }, 'pipelineKey', 'number', 'pk_live_...'],
    ];
    for (const [options, field, typeName, example] of refused) {
      assert.throws(() => new AmperityClient(/** @type {any} */ (options)), (error) => {
        assert.ok(notAString(String(field), String(typeName), String(example).replace(/\./g, '\\.'))(error),
          /** @type {Error} */ (error).message);
        assert.ok(!/** @type {Error} */ (error).message.includes('s3cret'));
        return true;
      }, JSON.stringify(options));
    }
  });

test('a non-string event field is refused naming it, in the Python client\'s words', () => {
  const refused = [
    [{ anonymousId: 1.5 }, 'anonymousId', 'number'],
    [{ anonymousId: Buffer.from('anon-1') }, 'anonymousId', 'Buffer'],
    [{ userId: 42 }, 'userId', 'number'],
    [{ event: ['Product Viewed'] }, 'event', 'Array'],
    [{ messageId: 7 }, 'messageId', 'number'],
    [{ canonical_id: true }, 'canonicalId', 'boolean'],
    [{ context: { ip: 127 } }, 'context.ip', 'number'],
    [{ context: { page: { url: 1 } } }, 'context.page.url', 'number'],
    [{ context: { vendorIds: { fbp: 1.5 } } }, 'context.vendorIds.fbp', 'number'],
  ];
  for (const [event, field, typeName] of refused) {
    assert.throws(() => toProtoEvent({ type: 'track', ...(/** @type {object} */ (event)) }), {
      name: 'TypeError',
      message: `${field} must be a string, not ${typeName}: send it as a JSON string.`,
    }, String(field));
  }
});

test('a session id is a string or a whole number, as in the Python client', () => {
  const sessionOf = (/** @type {unknown} */ id) => toProtoEvent({ context: { session: { id } } })
    .context.session.id;
  assert.equal(sessionOf(7), '7');
  assert.equal(sessionOf('s-1'), 's-1');
  for (const [id, problem] of /** @type {Array<[unknown, string]>} */ ([
    [1.5, 'must be a string or a whole number, not number: send it as a JSON string.'],
    [true, 'must be a string or a whole number, not boolean: send it as a JSON string.'],
    [{ id: 1 }, 'must be a string or a whole number, not Object: send it as a JSON string.'],
    [2 ** 53, 'is a whole number too large to be exact in JavaScript (over 2**53 - 1): send it '
      + 'as a JSON string.'],
  ])) {
    assert.throws(() => sessionOf(id), { name: 'TypeError', message: `context.session.id ${problem}` },
      String(id));
  }
});
