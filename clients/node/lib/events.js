'use strict';
/**
 * Datafly's camelCase JSON events -> the proto-loader shape of datafly.amperity.v1.Event
 * (snake_case keys, Structs, Timestamps), and responses' Structs -> plain objects.
 * Absent consent fields stay absent. snake_case input keys are accepted as aliases.
 * context.traits (Segment-style identity) is folded into traits, whose own keys win.
 */

const crypto = require('node:crypto');
const { toStruct, fromStruct } = require('./struct');
const {
  checkString, checkText, notAString, notText, typeName,
} = require('./text');

const EVENT_TYPES = ['track', 'page', 'identify', 'screen', 'group', 'alias'];
const SUBMESSAGES = {
  page: ['url', 'path', 'referrer', 'title', 'search'],
  campaign: ['source', 'medium', 'name', 'term', 'content'],
  geo: ['country', 'region', 'city', 'postal_code'],
  device: ['type', 'os', 'browser'],
};
const GOOGLE = ['ad_storage', 'ad_user_data', 'ad_personalization', 'analytics_storage'];

/** @param {string} name */
const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
/**
 * A vendor id's key as the proto names it: gaClientId -> ga_client_id. A new word starts
 * after a lower-case letter or digit, or at the last capital of an acronym (GCLID stays
 * one word), as in the service's amperity_signal/casing.py.
 */
const vendorKey = (name) =>
  name.replace(/(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])/g, '_').toLowerCase();

/**
 * @param {Object<string, any>} data
 * @param {string} name snake_case
 */
function get(data, name) {
  const value = data[camel(name)];
  return value === undefined || value === null ? data[name] : value;
}

/**
 * @param {Object<string, any>} data
 * @param {string} name
 * @param {string} path
 * @returns {string|undefined}
 */
function string(data, name, path) {
  const value = get(data, name);
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new TypeError(`${path}${camel(name)} ${notAString(value)}`);
  if (!value.isWellFormed()) throw notText(value, `${path}${camel(name)}`);
  return value;
}

/**
 * @param {unknown} value
 * @param {string} field
 * @returns {Object<string, any>|undefined}
 */
function object(value, field) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(`${field} must be a JSON object.`);
  }
  return /** @type {Object<string, any>} */ (value);
}

// An RFC 3339 date-time (section 5.6): date, 'T' (or 't', or a space, as its note allows),
// time with seconds, a fraction of any length, then 'Z' (or 'z') or +hh:mm / -hh:mm. One
// extension: without an offset it is UTC. The Python client reads the same strings (the
// cases in clients/testdata/timestamps.json); Date.parse's other forms ('Jan 31 2025
// 12:00'), dates alone, ISO 8601 week dates and +0100 offsets are refused.
const RFC_3339_TIMESTAMP = new RegExp('^(\\d{4})-(\\d{2})-(\\d{2})[Tt ](\\d{2}):(\\d{2}):(\\d{2})'
  + '(?:\\.(\\d+))?([Zz]|([+-])(\\d{2}):(\\d{2}))?$');
const EXAMPLE = 'such as 2025-01-31T12:00:00.000Z';
const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
// The seconds of 0001-01-01T00:00:00Z and of 9999-12-31T23:59:59Z: a Timestamp's range.
const MIN_SECONDS = -62135596800;
const MAX_SECONDS = 253402300799;

/** @param {number} year */
const isLeap = (year) => year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);

/**
 * Why a date and time name no moment of the calendar (datetime's words, so both clients
 * say the same), or null when they do. A leap second (:60) is refused: a Timestamp, which
 * smears leap seconds, has no such instant.
 * @param {number} year
 * @param {number} month
 * @param {number} day
 * @param {number} hour
 * @param {number} minute
 * @param {number} second
 * @returns {string|null}
 */
function impossible(year, month, day, hour, minute, second) {
  if (year < 1) return `year ${year} is out of range`;
  if (month < 1 || month > 12) return 'month must be in 1..12';
  const days = month === 2 && isLeap(year) ? 29 : DAYS_IN_MONTH[month - 1];
  if (day < 1 || day > days) return 'day is out of range for month';
  if (hour > 23) return 'hour must be in 0..23';
  if (minute > 59) return 'minute must be in 0..59';
  if (second > 59) return 'second must be in 0..59';
  return null;
}

/**
 * An RFC 3339 string as a google.protobuf.Timestamp, the fraction kept to nanoseconds
 * (further digits cut); one without an offset is UTC, as the Python client, the gateway
 * and the service read it (Date.parse would read it in the machine's time zone, and roll
 * Feb 30 over to Mar 2).
 * @param {string} value
 * @param {string} field
 * @returns {{seconds: string, nanos: number}}
 */
function parseTimestamp(value, field) {
  const match = RFC_3339_TIMESTAMP.exec(value);
  if (!match) throw new TypeError(`${field} is not an RFC 3339 date-time ${EXAMPLE}.`);
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number);
  const problem = impossible(year, month, day, hour, minute, second);
  if (problem) {
    throw new TypeError(`${field} is not an RFC 3339 date-time ${EXAMPLE} (${problem}).`);
  }
  const offsetHours = match[10] ? Number(match[10]) : 0;
  const offsetMinutes = match[11] ? Number(match[11]) : 0;
  if (offsetHours > 23 || offsetMinutes > 59) {
    throw new TypeError(`${field} has an offset out of range (${match[8]}): send one `
      + `between -23:59 and +23:59, ${EXAMPLE}.`);
  }
  let millis = Date.UTC(year, month - 1, day, hour, minute, second);
  // Date.UTC reads years 0 to 99 as 1900 to 1999.
  if (year < 100) millis = new Date(millis).setUTCFullYear(year);
  const offset = (match[9] === '-' ? -1 : 1) * (offsetHours * 3600 + offsetMinutes * 60);
  const seconds = millis / 1000 - offset;
  if (seconds < MIN_SECONDS || seconds > MAX_SECONDS) {
    throw new TypeError(`${field} is out of the range a Timestamp holds, 0001-01-01T00:00:00Z `
      + 'to 9999-12-31T23:59:59.999999999Z in UTC.');
  }
  // Up to nanoseconds; further digits are cut, as a Timestamp holds no more.
  const nanos = match[7] ? Number(match[7].slice(0, 9).padEnd(9, '0')) : 0;
  return { seconds: String(seconds), nanos };
}

/**
 * An RFC 3339 string, Date or epoch milliseconds as a google.protobuf.Timestamp.
 * @param {string|Date|number} value
 * @param {string} [field] The path errors name it by.
 * @returns {{seconds: string, nanos: number}}
 */
function toTimestamp(value, field = 'timestamp') {
  if (typeof value === 'string') return parseTimestamp(value, field);
  const millis = value instanceof Date ? value.getTime() : typeof value === 'number' ? value : NaN;
  if (!Number.isFinite(millis)) {
    throw new TypeError(`${field} must be an RFC 3339 string ${EXAMPLE}, a Date or epoch `
      + 'milliseconds.');
  }
  const seconds = Math.floor(millis / 1000);
  const nanos = Math.round((millis - seconds * 1000) * 1e6);
  return { seconds: String(seconds), nanos };
}

// An RFC 3339 date-time: date, time and an offset. consentedAt takes no string without
// one: unlike an event's timestamp, it is not read as UTC (see toConsentedAt).
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$/;

/**
 * RecordConsent's consented_at as a google.protobuf.Timestamp, or undefined when unset.
 * Unlike an event's timestamp it takes no epoch number and no string without an offset:
 * a consent placed hours off (local time read as UTC) would silently lose to, or outrank,
 * the state the service keeps.
 * @param {unknown} value A Date or an RFC 3339 string; undefined or null means unset.
 * @returns {{seconds: string, nanos: number}|undefined}
 */
function toConsentedAt(value) {
  if (value === undefined || value === null) return undefined;
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) {
      throw new TypeError('consentedAt is an Invalid Date: pass the Date the visitor made the '
        + 'choice, or leave it out for when the service receives it.');
    }
    return toTimestamp(value, 'consentedAt');
  }
  if (typeof value !== 'string') {
    throw new TypeError('consentedAt must be a Date or an RFC 3339 string such as '
      + '2025-01-31T12:00:00Z (new Date(ms) for epoch milliseconds), or left out for when the '
      + `service receives it; not ${Array.isArray(value) ? 'an array' : typeof value}.`);
  }
  const match = RFC3339.exec(value);
  const day = match && new Date(Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])));
  if (!match || !day || day.getUTCMonth() !== Number(match[2]) - 1
    || day.getUTCDate() !== Number(match[3])) {
    throw new TypeError('consentedAt must be an RFC 3339 date-time with its offset, such as '
      + '2025-01-31T12:00:00Z or 2025-01-31T13:00:00+01:00: without one the instant is unknown.');
  }
  return toTimestamp(value, 'consentedAt');
}

/**
 * One Datafly event (camelCase JSON) in the proto-loader shape of Event.
 * @param {Object<string, any>} data
 * @returns {Object<string, any>}
 */
function toProtoEvent(data) {
  const input = object(data, 'event');
  if (!input) throw new TypeError('event must be a JSON object.');
  /** @type {Object<string, any>} */
  const event = {};
  const type = string(input, 'type', '');
  if (type !== undefined) {
    if (!EVENT_TYPES.includes(type)) throw new TypeError(`type must be one of ${EVENT_TYPES.join(', ')}.`);
    event.type = type;
  }
  for (const name of ['event', 'message_id', 'anonymous_id', 'canonical_id', 'user_id']) {
    const value = string(input, name, '');
    if (value !== undefined) event[name] = value;
  }
  if (input.timestamp !== undefined && input.timestamp !== null) {
    event.timestamp = toTimestamp(input.timestamp);
  }
  for (const name of ['properties', 'traits', 'partner_attrs']) {
    const value = object(get(input, name), camel(name));
    if (value) event[name] = toStruct(value, camel(name));
  }
  const context = object(input.context, 'context');
  if (context) {
    event.context = toProtoContext(context);
    const identity = object(context.traits, 'context.traits');
    if (identity) foldTraits(event, toStruct(identity, 'context.traits'));
  }
  return event;
}

/**
 * Fold an event's context.traits into its traits; the event's own traits win. Segment-style
 * calls carry the visitor's identity in context.traits, which the proto's Context has no
 * field for; the service reads identity from traits. A key traits holds, not null, is
 * kept; any other is taken from context.traits, as the gateway and the Python client fold it.
 * @param {Object<string, any>} event The proto-shaped event, changed in place.
 * @param {{fields: Object<string, any>}} identity context.traits as a Struct.
 */
function foldTraits(event, identity) {
  const keys = Object.keys(identity.fields);
  if (!event.traits && keys.length === 0) return;
  const own = event.traits ? event.traits.fields : {};
  const fields = { ...own };
  for (const key of keys) {
    if (!Object.hasOwn(own, key) || 'nullValue' in own[key]) fields[key] = identity.fields[key];
  }
  event.traits = { fields };
}

/**
 * @param {Object<string, any>} data
 * @returns {Object<string, any>}
 */
function toProtoContext(data) {
  /** @type {Object<string, any>} */
  const context = {};
  for (const name of ['ip', 'user_agent', 'locale', 'timezone']) {
    const value = string(data, name, 'context.');
    if (value !== undefined) context[name] = value;
  }
  for (const [name, fields] of Object.entries(SUBMESSAGES)) {
    const sub = object(data[name], `context.${name}`);
    if (!sub) continue;
    /** @type {Object<string, string>} */
    const target = {};
    for (const field of fields) {
      const value = string(sub, field, `context.${name}.`);
      if (value !== undefined) target[field] = value;
    }
    context[name] = target;
  }
  const session = object(data.session, 'context.session');
  if (session) {
    const number = session.number;
    if (number !== undefined && number !== null && (!Number.isInteger(number) || number < 0)) {
      throw new TypeError('context.session.number must be a whole number, 0 or more.');
    }
    // Past 2**53 a number is not exact, and past int64 it would wrap on the wire.
    if (number > Number.MAX_SAFE_INTEGER) {
      throw new TypeError('context.session.number is too large (at most 2**53 - 1).');
    }
    context.session = {
      id: sessionId(session.id),
      number: number === undefined || number === null ? '0' : String(number),
    };
  }
  const vendorIds = object(get(data, 'vendor_ids'), 'context.vendorIds');
  if (vendorIds) {
    for (const [key, value] of Object.entries(vendorIds)) {
      if (typeof value !== 'string') throw new TypeError(`context.vendorIds.${key} ${notAString(value)}`);
      if (!key.isWellFormed()) throw notText(key, `context.vendorIds.${key}`);
      if (!value.isWellFormed()) throw notText(value, `context.vendorIds.${key}`);
    }
    context.vendor_ids = Object.fromEntries(
      Object.entries(vendorIds).map(([key, value]) => [vendorKey(key), value]),
    );
  }
  const consent = object(data.consent, 'context.consent');
  if (consent) context.consent = toProtoConsent(consent, 'context.consent');
  return context;
}

/**
 * context.session.id: a string, or a whole number (datafly.js's are epoch milliseconds) as
 * its decimal digits, as the Python client reads it. Anything else is refused rather than
 * sent as String(value): "[object Object]", "true".
 * @param {unknown} id
 * @returns {string}
 */
function sessionId(id) {
  if (id === undefined || id === null) return '';
  if (typeof id === 'string') return checkText(id, 'context.session.id');
  if (Number.isInteger(id)) {
    if (!Number.isSafeInteger(id)) {
      throw new TypeError('context.session.id is a whole number too large to be exact in '
        + 'JavaScript (over 2**53 - 1): send it as a JSON string.');
    }
    return String(id);
  }
  throw new TypeError(`context.session.id must be a string or a whole number, not ${typeName(id)}: `
    + 'send it as a JSON string.');
}

/**
 * A consent state in the nested shape events carry, in the proto-loader shape of Consent.
 * @param {Object<string, any>} data analytics, marketing, functional (booleans),
 *   categories (CMP code -> boolean), google (Consent Mode v2: "granted" or "denied").
 * @param {string} field The path errors name the state by.
 * @returns {Object<string, any>}
 */
function toProtoConsent(data, field) {
  /** @type {Object<string, any>} */
  const consent = {};
  for (const name of ['analytics', 'marketing', 'functional']) {
    const flag = data[name];
    if (flag === undefined || flag === null) continue;
    if (typeof flag !== 'boolean') throw new TypeError(`${field}.${name} must be true or false.`);
    consent[name] = flag;
  }
  const categories = object(data.categories, `${field}.categories`);
  if (categories) {
    for (const [code, granted] of Object.entries(categories)) {
      if (typeof granted !== 'boolean') {
        throw new TypeError(`${field}.categories.${code} must be true or false.`);
      }
      if (!code.isWellFormed()) throw notText(code, `${field}.categories.${code}`);
    }
    consent.categories = { ...categories };
  }
  const google = object(data.google, `${field}.google`);
  if (google) {
    /** @type {Object<string, string>} */
    const modes = {};
    for (const name of GOOGLE) {
      // Consent Mode's own spelling (ad_storage, the spec's) is read first, the camelCase
      // alias after it, as the gateway and the Python client read them.
      const mode = google[name] === undefined || google[name] === null
        ? google[camel(name)] : google[name];
      if (mode === undefined || mode === null) continue;
      if (mode !== 'granted' && mode !== 'denied') {
        throw new TypeError(`${field}.google.${name} must be "granted" or "denied".`);
      }
      modes[name] = mode;
    }
    consent.google = modes;
  }
  return consent;
}

/**
 * The RecordConsentRequest of recordConsent, checked as far as the client can. It is
 * built only here, so a new field of the request is one more line below.
 * @param {{integrationId: string, pipelineKey: string}} identity The client's integration.
 * @param {unknown} anonymousId The visitor's anonymous id (the _dfid cookie).
 * @param {unknown} consent Their consent state, as events carry it.
 * @param {unknown} [consentedAt] When the visitor chose it: a Date or an RFC 3339 string.
 * @returns {Object<string, any>}
 */
function toConsentRequest({ integrationId, pipelineKey }, anonymousId, consent, consentedAt) {
  checkString(anonymousId, 'anonymousId');
  if (!anonymousId) {
    throw new TypeError('anonymousId is required: consent is kept per visitor; pass the '
      + 'visitor\'s anonymous id (the _dfid cookie datafly.js sets, or their events\' anonymousId).');
  }
  const state = object(consent, 'consent');
  if (!state) {
    throw new TypeError('consent must be a JSON object such as { analytics: true }; {} means '
      + 'no consent given.');
  }
  /** @type {Object<string, any>} */
  const request = {
    integration_id: integrationId,
    pipeline_key: pipelineKey,
    anonymous_id: anonymousId,
    consent: toProtoConsent(state, 'consent'),
  };
  const at = toConsentedAt(consentedAt);
  if (at) request.consented_at = at;
  return request;
}

/**
 * The event with a message_id, a fresh UUID when it had none. Retries and re-sends must
 * carry one id so the service and Amperity can tell a re-sent event from a new one.
 * @param {Object<string, any>} event A proto-shaped event (from toProtoEvent), changed in place.
 * @returns {Object<string, any>}
 */
function withMessageId(event) {
  if (!event.message_id) event.message_id = crypto.randomUUID();
  return event;
}

/**
 * A decoded Event with its Structs as plain objects.
 * @param {Object<string, any>|null|undefined} event
 */
function plainEvent(event) {
  if (!event) return event;
  return {
    ...event,
    properties: fromStruct(event.properties),
    traits: fromStruct(event.traits),
    partner_attrs: fromStruct(event.partner_attrs),
  };
}

/**
 * A decoded DeliverResponse with its payload as a plain object.
 * @param {Object<string, any>|null|undefined} response
 */
function plainDelivery(response) {
  if (!response) return response;
  return { ...response, payload: fromStruct(response.payload) };
}

/**
 * A decoded WatchDeliveriesResponse with its payload and event's Structs as plain objects.
 * @param {Object<string, any>} record
 */
function plainRecord(record) {
  return { ...plainDelivery(record), event: plainEvent(record.event) };
}

module.exports = {
  EVENT_TYPES,
  plainDelivery,
  plainEvent,
  plainRecord,
  toConsentRequest,
  toProtoEvent,
  toTimestamp,
  withMessageId,
};
