'use strict';
// A lone UTF-16 surrogate (what a "\ud800" JSON escape alone parses to) is not text.
// protobufjs wrote one as bytes that are no UTF-8, or, in a string of 40 characters or
// more, as U+FFFD: the service got another visitor's id. The client refuses it, naming
// the field, as the Python client does.

const test = require('node:test');
const assert = require('node:assert/strict');

const { AmperityClient, toProtoEvent } = require('..');
const { startFake } = require('../testing/fake-service');

/** @param {string} field */
const surrogateAt = (field, at, code = 'd800') => new RegExp(`^TypeError: ${field.replace(/[.[\]]/g, '\\$&')} `
  + `holds '\\\\u${code}' at position ${at}, half of a UTF-16 surrogate pair, which is not text: `
  + 'repair or drop the character\\.$');

test('a lone surrogate in any string of an event is a TypeError naming the field', () => {
  const refused = [
    [{ anonymousId: 'anon-\ud800' }, 'anonymousId', 5],
    [{ user_id: 'u\ud800' }, 'userId', 1],
    [{ context: { page: { title: '\udc00' } } }, 'context.page.title', 0, 'dc00'],
    [{ context: { userAgent: 'UA\ud800' } }, 'context.userAgent', 2],
    [{ context: { session: { id: 's\ud800' } } }, 'context.session.id', 1],
    [{ context: { vendorIds: { fbp: 'fb.\ud800' } } }, 'context.vendorIds.fbp', 3],
    [{ context: { vendorIds: { 'f\ud800': 'fb.1' } } }, 'context.vendorIds.f\ud800', 1],
    [{ context: { consent: { categories: { 'C\ud800': true } } } },
      'context.consent.categories.C\ud800', 1],
    [{ properties: { name: ['ok', 'bad\ud800'] } }, 'properties.name[1]', 3],
    [{ traits: { 'bad\ud800': 1 } }, 'traits.bad\ud800', 3],
    // A pair the wrong way round is two lone halves.
    [{ properties: { emoji: '\ude00\ud83d' } }, 'properties.emoji', 0, 'de00'],
  ];
  for (const [event, field, at, code] of refused) {
    assert.throws(() => toProtoEvent({ type: 'track', ...event }), surrogateAt(field, at, code),
      field);
  }
  // A proper pair is one character, an emoji.
  assert.equal(toProtoEvent({ anonymousId: 'anon-\ud83d\ude00' }).anonymous_id, 'anon-😀');
});

test('a lone surrogate in a call\'s argument is a TypeError naming it, and nothing is sent',
  async (t) => {
    const seen = /** @type {string[]} */ ([]);
    const { server, target } = await startFake({
      BrowserProfile(call, callback) {
        seen.push(call.request.anonymous_id);
        callback(null, { provider: 'amperity', attributes: { fields: {} } });
      },
      RecordConsent(call, callback) {
        seen.push(call.request.anonymous_id);
        callback(null, { profile_allowed: true });
      },
      Deliver(call, callback) {
        seen.push(call.request.event.anonymous_id);
        callback(null, {});
      },
      WatchDeliveries(call) {
        seen.push(call.request.integration_id);
        call.end();
      },
    });
    t.after(() => server.forceShutdown());
    const client = new AmperityClient({ target, integrationId: 'web' });
    t.after(() => client.close());
    // 40 characters or more: protobufjs sent U+FFFD in the surrogate's place.
    const long = `anon-${'0'.repeat(40)}\ud800`;

    await assert.rejects(client.browserProfile('anon-\ud800'), surrogateAt('anonymousId', 5));
    await assert.rejects(client.browserProfile(long), surrogateAt('anonymousId', 45));
    await assert.rejects(client.recordConsent(long, {}), surrogateAt('anonymousId', 45));
    await assert.rejects(client.deliver({ type: 'page', anonymousId: long }),
      surrogateAt('anonymousId', 45));
    await assert.rejects(
      client.watchDeliveries({ integrationId: `${'w'.repeat(40)}\ud800` }).next(),
      surrogateAt('integrationId', 40),
    );
    assert.deepEqual(seen, []);
  });

test('an integrationId with a lone surrogate is refused when the client is built', () => {
  assert.throws(() => new AmperityClient({ target: '127.0.0.1:1', integrationId: 'web-\ud800' }),
    surrogateAt('integrationId', 4));
});
