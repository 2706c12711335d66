// datafly.js: the browser piece of Datafly Signal with Amperity personalisation.
//
// Collects page/track/identify events into batches for the gateway's /v1/batch, keeps the
// visitor's anonymous id in the first-party _dfid cookie, and hydrates profile.amperity
// from GET /v1/enrich?provider=amperity. A consent change goes to POST /v1/consent at once,
// so a withdrawal stops the profile everywhere without waiting for the next event; while
// the gateway says the profile is not allowed, none is fetched. A failed lookup, dropped
// events or an unrecorded consent are told in the console, once each per page; success
// says nothing. Dependency-free; no build
// step is needed for the ES module, and build.mjs wraps this same source into dist/datafly.js for <script> tags.

const COOKIE_NAME = '_dfid';
const COOKIE_MAX_AGE = 365 * 24 * 60 * 60;
const USER_ID_KEY = '_dfuid';
const FLUSH_DELAY_MS = 200;
const FLUSH_SIZE = 10;
const MAX_BATCH = 100;
// At most this many events wait in the page: queued, or in a send not answered yet (its
// retries included). A gateway that takes none must not let a busy page's grow for ever;
// past it a new event is dropped, and the console says so.
const MAX_QUEUE = 1000;
const MAX_ATTEMPTS = 3;
const KEEPALIVE_LIMIT = 60000;
const MAX_RETRY_AFTER_MS = 30000;
// How long the page waits for its profile: the gateway answers within its own 2 s
// deadline, so this leaves room for a slow network, not for a gateway that never answers.
const ENRICH_TIMEOUT_MS = 5000;
const MAX_TIMER_MS = 2147483647; // a longer setTimeout fires at once
// How long a /v1/batch or /v1/consent request may go unanswered before it is given up and
// sent again, as after a network error: the gateway answers a batch within its 15 s batch
// deadline (settings.DATAFLY_SEND_TIMEOUT is this figure; a test holds them equal), so
// only a network fault or a stalled gateway gets here, not a slow Amperity.
const SEND_TIMEOUT_MS = 20000;
// /v1/batch answers 200 with a result per event; these codes fail an event for reasons
// that can pass (the 429/5xx of a single request), so the event is sent again. Not
// UPSTREAM_REFUSED: Amperity refused the integration itself, which no resend mends.
const RETRYABLE_CODES = new Set([
  'RATE_LIMITED', 'SERVICE_UNAVAILABLE', 'DEADLINE_EXCEEDED', 'UPSTREAM_ERROR', 'INTERNAL',
]);
// An event the gateway did not start before its batch deadline (a slow Amperity): it did
// not fail, so it is sent again without counting an attempt, as long as the answer
// delivered some event (the batch then shrinks with every such send, so it cannot go on
// for ever). A /v1/batch body lists it in `accepts`: a gateway answers DEADLINE_EXCEEDED
// to a datafly.js that does not, since one older than NOT_SENT would drop it as refused.
const NOT_SENT = 'NOT_SENT';
// The gateway refuses an integer beyond 2^53 (a double holds it only rounded) and a lone
// surrogate (not Unicode): an event holding one failed, and until session 27 its batch.
// JSON.stringify writes an integer in digits below 1e21, in an exponent from there.
const MAX_EXACT_INTEGER = 2 ** 53;
const EXPONENT_FROM = 1e21;
// A surrogate pair (kept) or a lone surrogate (replaced): one pass, no lookbehind.
const SURROGATES = /[\uD800-\uDBFF][\uDC00-\uDFFF]|[\uD800-\uDFFF]/g;
const UTM = ['source', 'medium', 'campaign', 'term', 'content'];
const CONSENT_MAPS = ['categories', 'google'];

function isGranted(value) {
  return value === true || value === 'granted';
}

// Each consent signal as "name" or "categories.CODE" / "google.PARAMETER", with its value.
function consentSignals(consent) {
  const signals = new Map();
  for (const [key, value] of Object.entries(consent || {})) {
    if (CONSENT_MAPS.includes(key) && value && typeof value === 'object') {
      for (const [name, inner] of Object.entries(value)) signals.set(`${key}.${name}`, inner);
    } else {
      signals.set(key, value);
    }
  }
  return signals;
}

// What a consent update changed: whether some signal now denies (a withdrawal, or a first
// report that is not a grant) and whether some signal is newly granted.
function consentChange(previous, next) {
  const before = consentSignals(previous);
  const change = { denied: false, granted: false };
  for (const [name, value] of consentSignals(next)) {
    if (before.has(name) && before.get(name) === value) continue;
    if (isGranted(value)) change.granted = true;
    else change.denied = true;
  }
  return change;
}

function uuid() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && c.getRandomValues) c.getRandomValues(b);
  else for (let i = 0; i < 16; i += 1) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function readCookie(name) {
  let jar = '';
  try {
    jar = globalThis.document ? document.cookie : '';
  } catch {
    return null; // a sandboxed document (an iframe without allow-same-origin) has no cookies
  }
  for (const part of jar.split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key !== name) continue;
    const value = rest.join('=');
    try {
      return decodeURIComponent(value);
    } catch {
      return value; // set by something that did not percent-encode it: keep it as it is
    }
  }
  return null;
}

function writeCookie(name, value) {
  if (!globalThis.document) return;
  const secure = globalThis.location && location.protocol === 'https:' ? '; Secure' : '';
  try {
    document.cookie =
      `${name}=${encodeURIComponent(value)}; Max-Age=${COOKIE_MAX_AGE}; Path=/; SameSite=Lax${secure}`;
  } catch {
    // a sandboxed document may not set cookies: the id holds for this page only
  }
}

function storage() {
  try {
    return globalThis.localStorage || null;
  } catch {
    return null; // storage can throw when disabled by the browser
  }
}

// keepalive requests may carry at most 64 KiB in all, counted in bytes, not characters.
function fitsKeepalive(body) {
  const bytes = typeof TextEncoder === 'function' ? new TextEncoder().encode(body).length : body.length * 3;
  return bytes < KEEPALIVE_LIMIT;
}

// `text` with each lone surrogate replaced by U+FFFD, as TextEncoder writes it.
function wellFormed(text) {
  return text.replace(SURROGATES, (unit) => (unit.length === 2 ? unit : '\uFFFD'));
}

// `value` as the gateway takes it. An integer beyond 2^53 becomes a string, the number as
// JavaScript writes it (JSON.stringify's digits): JavaScript rounded it when the page made
// it (an order id 9007199254740995 is already ...996 in the page), so the exact id is lost
// before datafly.js sees it, and as a number the gateway would refuse it (and, until
// session 27, its whole batch). Dropping the field would lose what the page still has. A lone surrogate (a string cut through an emoji) becomes U+FFFD.
// The same value when nothing changed (queued events keep sharing state.consent), else
// a copy; `fixed(kind, path)` hears of each change. Walks what JSON.stringify writes
// (toJSON's result, own enumerable keys), after it found no cycle.
function screened(value, path, fixed) {
  if (typeof value === 'number') {
    const size = Math.abs(value);
    if (!Number.isInteger(value) || size <= MAX_EXACT_INTEGER || size >= EXPONENT_FROM) {
      return value;
    }
    fixed('unsafe-integer', path);
    return String(value);
  }
  if (typeof value === 'string') {
    const text = wellFormed(value);
    if (text !== value) fixed('lone-surrogate', path);
    return text;
  }
  if (!value || typeof value !== 'object') return value;
  if (typeof value.toJSON === 'function') {
    const json = value.toJSON();
    const fit = screened(json, path, fixed);
    return fit === json ? value : fit;
  }
  if (Array.isArray(value)) {
    const items = value.map((item, index) => screened(item, `${path}[${index}]`, fixed));
    return items.some((item, index) => item !== value[index]) ? items : value;
  }
  let changed = false;
  const entries = Object.entries(value).map(([key, item]) => {
    const name = wellFormed(key);
    if (name !== key) fixed('lone-surrogate', path ? `${path}.${name}` : name);
    const fit = screened(item, path ? `${path}.${name}` : name, fixed);
    changed = changed || name !== key || fit !== item;
    return [name, fit];
  });
  return changed ? Object.fromEntries(entries) : value;
}

// The options init takes. Another one is a typo whose setting never applies (enrichTimeout
// for enrich.timeoutMs): the console says so, and init goes on (a page must not break).
const INIT_OPTIONS = ['pipelineKey', 'endpoint', 'enrich'];
const ENRICH_OPTIONS = ['endpoint', 'providers', 'timeoutMs'];

function warnUnknown(where, options, known) {
  const unknown = Object.keys(options).filter((name) => !known.includes(name));
  if (unknown.length && globalThis.console) {
    console.warn(`${where}: ignored option(s) ${unknown.join(', ')}; the options are `
      + `${known.join(', ')}.`);
  }
}

// What init was given, as a message names it: "a string", "an array", "null".
function kindOf(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return /^[aeiou]/.test(typeof value) ? `an ${typeof value}` : `a ${typeof value}`;
}

// datafly.init's console line about one option: console.warn when the value was coerced
// to what it meant, console.error when it was refused for the default.
function tellInit(level, message) {
  if (globalThis.console) console[level](`datafly.init: ${message}.`);
}

// The key as the gateway takes it (1-200 printable ASCII characters, no spaces); the
// message says what is wrong with it, never the key. Another is used as given: the
// gateway's refusals are then told, once, in the console.
function checkedKey(value) {
  if (typeof value === 'number') {
    tellInit('warn', "pipelineKey must be a string like 'pk_live_acme_web', got a number: "
      + 'sent as that string');
    return String(value);
  }
  if (typeof value !== 'string') {
    tellInit('error', `pipelineKey must be a string like 'pk_live_acme_web', got ${kindOf(value)}`);
    return String(value);
  }
  if (!/^[\x21-\x7e]{1,200}$/.test(value)) {
    tellInit('error', `pipelineKey must be 1-200 printable ASCII characters without spaces, as `
      + `the integration's pipeline_key is; this one (${[...value].length} characters) is not, and `
      + 'the gateway will refuse it');
  }
  return value;
}

// An endpoint: an http(s) URL or a path from the page's root ('/', '/gateway'), with no
// query or fragment (the client adds /v1/...); else null, for the default. A host without
// a scheme ('collect.example.com') would be read as a path of the page: refused too.
function checkedEndpoint(name, value, fallback) {
  if (value === undefined || value === null || value === '') return null;
  const fix = `${name} must be an http(s) URL like 'https://collect.example.com' or a path `
    + "like '/'";
  if (typeof value !== 'string') {
    tellInit('error', `${fix}, got ${kindOf(value)}: ${fallback}`);
    return null;
  }
  let url = null;
  try {
    url = value.startsWith('/') ? new URL(value, 'https://page.invalid') : new URL(value);
  } catch {
    // not a URL: refused below
  }
  const query = /[?#]/.test(value);
  if (url && /^https?:$/.test(url.protocol) && !query) return value;
  // Up to a query or fragment only: one may carry the pipeline key.
  const shown = value.split(/[?#]/)[0].slice(0, 100);
  const extra = query ? ' with a query or fragment' : '';
  tellInit('error', `${fix}, got '${shown}'${extra}: ${fallback}`);
  return null;
}

// enrich.providers: a list of provider names. A lone name is coerced to a list of it.
function checkedProviders(value) {
  if (value === undefined || value === null) return ['amperity'];
  const fix = 'enrich.providers must be an array like ["amperity"]';
  if (typeof value === 'string' && value) {
    tellInit('warn', `${fix}, got a string: looking up ${JSON.stringify([value])}`);
    return [value];
  }
  if (!Array.isArray(value)) {
    tellInit('error', `${fix}, got ${kindOf(value)}: looking up the default ["amperity"]`);
    return ['amperity'];
  }
  const named = value.filter((provider) => typeof provider === 'string' && provider);
  if (named.length < value.length) {
    tellInit('error', `${fix} of provider names; left out ${value.length - named.length} `
      + 'that are not a non-empty string');
  }
  return [...new Set(named)];
}

// enrich.timeoutMs: milliseconds above 0 (a string of digits is read as its number).
function checkedTimeout(value) {
  if (value === undefined || value === null) return ENRICH_TIMEOUT_MS;
  const fix = 'enrich.timeoutMs must be a number of milliseconds above 0, like 5000';
  let ms = value;
  if (typeof value === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(value)) {
    ms = Number(value);
    if (ms > 0) tellInit('warn', `${fix}, got a string: using ${ms}`);
  }
  if (typeof ms !== 'number' || !(ms > 0)) {
    const got = typeof value === 'number' ? String(value) : kindOf(value);
    tellInit('error', `${fix}, got ${got}: using the default ${ENRICH_TIMEOUT_MS}`);
    return ENRICH_TIMEOUT_MS;
  }
  return Math.min(ms, MAX_TIMER_MS);
}

// The enrich option, each field checked: off when absent or false; `true` means the
// defaults. Another value that is not an object is refused for the defaults, since the
// page asked for lookups.
function checkedEnrich(value) {
  if (!value) return null;
  let options = value;
  if (value === true) options = {};
  else if (typeof value !== 'object' || Array.isArray(value)) {
    tellInit('error', `enrich must be an object like { providers: ["amperity"] }, got `
      + `${kindOf(value)}: profile lookups use the defaults`);
    options = {};
  }
  warnUnknown('datafly.init: enrich', options, ENRICH_OPTIONS);
  return {
    endpoint: checkedEndpoint('enrich.endpoint', options.endpoint, 'lookups go to endpoint'),
    providers: checkedProviders(options.providers),
    timeoutMs: checkedTimeout(options.timeoutMs),
  };
}

// The init options, each checked: a value of the wrong type is named in the console with
// its fix, and coerced when its meaning is plain or refused for the default. Only a
// missing pipelineKey throws: the page must not break over the rest.
function checkedConfig(options) {
  if (!options || typeof options !== 'object' || !options.pipelineKey) {
    throw new Error("datafly.init: pipelineKey is required: { pipelineKey: 'pk_live_acme_web' }");
  }
  warnUnknown('datafly.init', options, INIT_OPTIONS);
  const origin = globalThis.location ? location.origin : '';
  return {
    pipelineKey: checkedKey(options.pipelineKey),
    endpoint: checkedEndpoint('endpoint', options.endpoint, `events go to this page's origin`)
      || origin,
    enrich: checkedEnrich(options.enrich),
  };
}

// enrich.timeoutMs as checked, or the default when lookups are off.
function enrichTimeout(enrich) {
  return enrich ? enrich.timeoutMs : ENRICH_TIMEOUT_MS;
}

// `promise`, or `fallback()` when it has not settled within `ms` (it runs, and is
// dropped, the moment the time is up).
function within(promise, ms, fallback) {
  let timer;
  const expired = new Promise((resolve) => {
    timer = setTimeout(() => resolve(fallback()), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

// fetch, aborted after SEND_TIMEOUT_MS; resolves null for no answer (a network error, or
// none in time), so a request never holds what waits on it for ever.
function fetchWithin(url, init) {
  const controller = typeof AbortController === 'function' ? new AbortController() : null;
  const request = fetch(url, controller ? { ...init, signal: controller.signal } : init)
    .catch(() => null);
  return within(request, SEND_TIMEOUT_MS, () => {
    if (controller) controller.abort();
    return null;
  });
}

// Why a request had no answer, for the console: fetch tells a page no more than that.
const NO_ANSWER = 'had no answer (a network error, a request the browser refused, such as '
  + "one the gateway's CORS does not allow, or none within 20 s)";

// A gateway answer for the console: "404 UNKNOWN_PIPELINE_KEY: No integration uses this
// pipeline key." from its {"error": {"code", "message"}}, the status alone from another.
async function describeAnswer(response) {
  let error = null;
  try {
    const data = await response.json();
    error = data && typeof data.error === 'object' ? data.error : null;
  } catch {
    // not JSON (a proxy's page): the status alone
  }
  const code = error && typeof error.code === 'string' ? ` ${error.code.slice(0, 60)}` : '';
  const message = error && typeof error.message === 'string'
    ? `: ${error.message.slice(0, 300).replace(/[.\s]+$/, '')}` : '';
  return { text: `${response.status}${code}${message}`, code: code.trim() };
}

// What the page's developer should check after a gateway's refusal or failure.
function hintFor(status, code) {
  if (code === 'UNKNOWN_PIPELINE_KEY') {
    return "check pipelineKey in datafly.init: it must be an integration's pipeline_key";
  }
  if (code === 'UPSTREAM_REFUSED') {
    return 'Amperity refuses it (for the integration, or the request itself, as the message '
      + "says): the service's log names the fix";
  }
  if (code === 'ORIGIN_NOT_ALLOWED' || status === 403) {
    return "check the integration's allowed_origins: it must hold this page's origin";
  }
  if (status === 404) return "check the endpoint: it must be the gateway's base URL";
  if (status === 429 || status >= 500) {
    return 'the gateway or the service behind it is overloaded or down: see their logs';
  }
  return "the gateway's message says what to change";
}

// The page's clock now, as an event's timestamp reads it. Every request carries it as
// sentAt: the gateway counts an event as received less its age on this same clock
// (sentAt - timestamp), so a page clock minutes ahead or behind cannot make an event (or
// the consent state it carries) newer than a later withdrawal.
function sentAt() {
  return new Date().toISOString();
}

function trimSlash(url) {
  return (url || '').replace(/\/+$/, '');
}

function sameOrigin(url) {
  if (!globalThis.location) return true;
  try {
    return new URL(url, location.href).origin === location.origin;
  } catch {
    return false;
  }
}

function pageContext() {
  if (!globalThis.location) return {};
  const page = {
    url: location.href,
    path: location.pathname,
    referrer: globalThis.document ? document.referrer : '',
    title: globalThis.document ? document.title : '',
    search: location.search,
  };
  const params = new URLSearchParams(location.search);
  const campaign = {};
  for (const key of UTM) {
    const value = params.get(`utm_${key}`);
    if (value) campaign[key === 'campaign' ? 'name' : key] = value;
  }
  const context = { page };
  if (Object.keys(campaign).length) context.campaign = campaign;
  if (globalThis.navigator && navigator.language) context.locale = navigator.language;
  try {
    context.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch {
    // no Intl time zone support: leave it out
  }
  return context;
}

/**
 * Create an independent datafly instance (the exported `datafly` is one of these).
 * @returns {object} The instance: init, page, track, identify, consent, flush,
 *   onProfileReady, onProfileChange, refreshProfile and profile.
 */
export function createDatafly() {
  const state = {
    config: null,
    queue: [],
    timer: null,
    inFlight: new Set(),
    anonymousId: null,
    userId: null,
    consent: null,
    profileReady: null,
    resolveReady: null,
    // Whether the gateway last said the page may see the profile (POST /v1/consent).
    profileAllowed: true,
    // Bumped when consent is denied: a profile lookup started before is thrown away.
    consentGeneration: 0,
    // The consent sends, one after the other, so the gateway keeps the latest state.
    consentSync: Promise.resolve(),
    // When the visitor made the choice that state.consent holds (RFC 3339, the page's
    // clock): sent as consentedAt, so the gateway orders it by when it was true, not by
    // when a send (held behind batches, or retried) got through.
    consentedAt: null,
    profileListeners: new Set(),
    // How many events are in sends not answered yet (retries included): with the queue,
    // at most MAX_QUEUE.
    held: 0,
    // The kinds of failure the console was told of: each once, not once per event.
    reported: new Set(),
  };
  const api = { profile: {} };
  state.profileReady = new Promise((resolve) => {
    state.resolveReady = resolve;
  });

  // A failure the page's developer should hear of, once per kind and instance: a page
  // whose every lookup or batch fails gets one line for it. Success says nothing.
  function warnOnce(kind, message) {
    if (state.reported.has(kind) || !globalThis.console) return;
    state.reported.add(kind);
    console.warn(`datafly: ${message}. (Said once per page: later ones are not reported.)`);
  }

  function collectorUrl(path, withKey) {
    const base = trimSlash(state.config.endpoint);
    const key = withKey ? `?pipeline_key=${encodeURIComponent(state.config.pipelineKey)}` : '';
    return `${base}${path}${key}`;
  }

  function enqueue(event) {
    if (!state.config) throw new Error('datafly: call datafly.init({...}) first');
    const context = pageContext();
    if (state.consent) context.consent = state.consent;
    let full = {
      messageId: uuid(),
      timestamp: new Date().toISOString(),
      anonymousId: state.anonymousId,
      ...event,
      context: { ...context, ...(event.context || {}) },
    };
    if (state.userId) full.userId = state.userId;
    try {
      JSON.stringify(full);
    } catch (error) {
      // A value JSON cannot carry (a cycle, a BigInt) would fail the whole batch it rides in.
      if (globalThis.console) console.warn('datafly: event dropped, not JSON:', error);
      return;
    }
    // A value the gateway would refuse fails only its event there, and the event is
    // worth more than the value as it stands: it is sent as the gateway can take it.
    full = screened(full, '', (kind, path) => {
      warnOnce(kind, kind === 'unsafe-integer'
        ? `a ${event.type} event's ${path} is an integer beyond 2^53, which JavaScript `
          + 'holds only rounded; it was sent as a string, the number as JavaScript writes '
          + 'it. Keep such ids as strings in the page'
        : `a ${event.type} event's ${path} holds a lone surrogate (a string cut through an `
          + 'emoji or another character of two UTF-16 units); it was sent with U+FFFD in '
          + 'its place. Cut text with Array.from(text) or Intl.Segmenter');
    });
    if (state.queue.length + state.held >= MAX_QUEUE) {
      warnOnce('queue-full', `a ${event.type} event was dropped: ${MAX_QUEUE} events already `
        + 'wait to be sent, as the gateway is not taking them (see the warnings before this '
        + 'one); events are dropped while it stays so');
      return;
    }
    state.queue.push(full);
    if (state.queue.length >= FLUSH_SIZE) api.flush();
    else if (!state.timer) state.timer = setTimeout(() => api.flush(), FLUSH_DELAY_MS);
  }

  function retryAfterMs(response) {
    const seconds = Number(response.headers.get('Retry-After'));
    return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds * 1000, MAX_RETRY_AFTER_MS) : 0;
  }

  // Of a 200 /v1/batch answer, the events that failed for reasons that can pass (sent
  // again), and the gateway's refusals of the others, which are told in the console.
  async function failedTransiently(events, response, url) {
    let data;
    try {
      data = await response.json();
    } catch {
      // an unreadable 200: nothing says which events failed
      return { again: [], free: [], codes: [] };
    }
    const results = data && Array.isArray(data.results) ? data.results : [];
    // results come in the order of the batch
    const failed = (result) => result && result.ok === false;
    const refused = results.filter((result) => failed(result)
      && !RETRYABLE_CODES.has(result.code) && result.code !== NOT_SENT);
    if (refused.length) {
      const [first] = refused;
      const field = typeof first.field === 'string' ? ` (field ${first.field})` : '';
      const error = String(first.error).slice(0, 300).replace(/[.\s]+$/, '');
      warnOnce('events-refused', `POST ${url} refused ${refused.length} event(s), which are not `
        + `sent again; the first: ${first.code}${field}: ${error}; ${hintFor(400, first.code)}`);
    }
    const answered = events.map((event, index) => [event, results[index]]);
    const passing = answered
      .filter(([, result]) => failed(result) && RETRYABLE_CODES.has(result.code));
    const notSent = answered.filter(([, result]) => failed(result) && result.code === NOT_SENT);
    // Not sent, and nothing delivered: the gateway is making no way, so it counts.
    const delivered = results.some((result) => result && result.ok === true);
    const counted = delivered ? passing : [...passing, ...notSent];
    return {
      again: counted.map(([event]) => event),
      free: delivered ? notSent.map(([event]) => event) : [],
      codes: [...new Set(counted.map(([, result]) => result.code))],
    };
  }

  // `attempt`: how many sends of these events failed before (a NOT_SENT one is no failure).
  async function send(events, attempt) {
    // Stamped again on each attempt: the gateway puts the events' ages on its own clock.
    const body = JSON.stringify({ batch: events, sentAt: sentAt(), accepts: [NOT_SENT] });
    const url = collectorUrl('/v1/batch', false);
    let again = events;
    let free = []; // sent again as they are, their attempt not counted
    let wait = 0;
    let failure = NO_ANSWER; // a network error or no answer in time: the whole batch again
    const response = await fetchWithin(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Pipeline-Key': state.config.pipelineKey },
      body,
      credentials: 'include',
      keepalive: fitsKeepalive(body),
    });
    if (response && response.ok) {
      const transient = await failedTransiently(events, response, url);
      again = transient.again;
      free = transient.free;
      failure = `answered 200 with them failed (${transient.codes.join(', ')}); `
        + hintFor(503, transient.codes[0]);
    } else if (response) {
      const { text, code } = await describeAnswer(response);
      const hint = hintFor(response.status, code);
      if (response.status !== 429 && response.status < 500) {
        // another 4xx: the request itself is wrong, resending cannot help
        warnOnce('batch-refused', `POST ${url} answered ${text}; ${events.length} event(s) `
          + `were dropped, not sent again; ${hint}`);
        return;
      }
      wait = retryAfterMs(response);
      failure = `answered ${text}; ${hint}`;
    }
    if (again.length && attempt + 1 >= MAX_ATTEMPTS) {
      warnOnce('batch-dropped', `${again.length} event(s) were dropped after ${MAX_ATTEMPTS} `
        + `attempts: POST ${url} last ${failure}. Check endpoint (and that the gateway is up)`);
      again = [];
    }
    if (!again.length && !free.length) return;
    await new Promise((resolve) => setTimeout(resolve, Math.max(wait, 250 * 2 ** attempt)));
    await Promise.all([
      free.length ? send(free, attempt) : null,
      again.length ? send(again, attempt + 1) : null,
    ]);
  }

  function beacon() {
    if (!state.config || !state.queue.length) return;
    clearTimeout(state.timer);
    state.timer = null;
    while (state.queue.length) {
      const events = state.queue.splice(0, MAX_BATCH);
      const body = JSON.stringify({ batch: events, sentAt: sentAt() });
      const url = collectorUrl('/v1/batch', true);
      // Cross-origin beacons must use a CORS-safelisted type; the gateway reads both as JSON.
      const type = sameOrigin(url) ? 'application/json' : 'text/plain;charset=UTF-8';
      const sent = globalThis.navigator && typeof navigator.sendBeacon === 'function'
        && navigator.sendBeacon(url, new Blob([body], { type }));
      if (!sent) {
        fetch(url, {
          method: 'POST',
          headers: { 'Content-Type': type },
          body,
          credentials: 'include',
          keepalive: fitsKeepalive(body),
        }).catch(() => {});
      }
    }
  }

  function setProfile(provider, attributes) {
    api.profile[provider] = attributes;
    if (provider !== 'amperity') return;
    for (const listener of [...state.profileListeners]) {
      try {
        listener(attributes);
      } catch {
        // one page callback failing must not stop the others, nor the client
      }
    }
  }

  function providers() {
    const enrich = state.config && state.config.enrich;
    const named = enrich ? enrich.providers : ['amperity'];
    return [...new Set([...named, ...Object.keys(api.profile)])];
  }

  // Consent was denied: nothing the page held from the profile stays visible.
  function clearProfile() {
    for (const provider of providers()) {
      const current = api.profile[provider];
      if (current === undefined || (current && Object.keys(current).length)) {
        setProfile(provider, {});
      }
    }
  }

  // One GET /v1/enrich: { attributes } from a usable answer, else { failure } saying
  // what went wrong and what to check.
  async function askEnrich(url, provider, signal) {
    const query = new URLSearchParams({ provider, anonymous_id: state.anonymousId });
    let response;
    try {
      response = await fetch(`${url}?${query}`, {
        headers: { 'X-Pipeline-Key': state.config.pipelineKey },
        credentials: 'include',
        cache: 'no-store',
        signal,
      });
    } catch {
      return { failure: `${NO_ANSWER}; check enrich.endpoint (or endpoint)` };
    }
    if (!response.ok) {
      const { text, code } = await describeAnswer(response);
      return { failure: `answered ${text}; ${hintFor(response.status, code)}` };
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      // not JSON: told below
    }
    // Only an object of attributes: a list (a proxy's or a broken gateway's answer)
    // would give the page profile.amperity[0] instead of named attributes.
    const { attributes } = data || {};
    if (attributes && typeof attributes === 'object' && !Array.isArray(attributes)) {
      return { attributes };
    }
    return {
      failure: 'answered 200 without an attributes object; check that enrich.endpoint (or '
        + 'endpoint) is the gateway',
    };
  }

  // GET /v1/enrich for one provider, given up (and aborted) after enrich.timeoutMs: a
  // gateway or network that never answers, or a failed lookup, leaves the profile as it
  // was (the page renders its default), and the console says why.
  async function lookUp(base, provider, timeoutMs) {
    const generation = state.consentGeneration;
    const controller = typeof AbortController === 'function' ? new AbortController() : null;
    const url = `${base}/v1/enrich`;
    const answer = askEnrich(url, provider, controller ? controller.signal : undefined)
      .catch((error) => ({ failure: `failed in datafly.js (${error})` }));
    const outcome = await within(answer, timeoutMs, () => {
      if (controller) controller.abort();
      return { timedOut: true };
    });
    // Consent denied while the answer was on its way: it must not reach the page.
    if (generation !== state.consentGeneration || !state.profileAllowed) return;
    if (outcome.attributes) {
      setProfile(provider, outcome.attributes);
    } else if (outcome.timedOut) {
      warnOnce('enrich-timeout', `the ${provider} profile lookup (GET ${url}) had no answer `
        + `within enrich.timeoutMs (${timeoutMs} ms) and was given up; the page went on without `
        + 'it. Check that the gateway answers there, or raise enrich.timeoutMs');
    } else {
      warnOnce('enrich-failed', `the ${provider} profile lookup (GET ${url}) ${outcome.failure}; `
        + `profile.${provider} stays as it was`);
    }
  }

  async function fetchProfile() {
    const enrich = state.config.enrich;
    if (!enrich) return api.profile.amperity || {};
    // A consent change on its way to the gateway decides first, also one made meanwhile.
    let sync;
    do {
      sync = state.consentSync;
      await sync;
    } while (sync !== state.consentSync);
    if (!state.profileAllowed) {
      clearProfile();
      return {};
    }
    const base = trimSlash(enrich.endpoint || state.config.endpoint);
    await Promise.all(enrich.providers.map((provider) => lookUp(base, provider, enrich.timeoutMs)));
    return api.profile.amperity || {};
  }

  // Tell the gateway the visitor's whole consent state now (POST /v1/consent). Batches
  // already sent carry the state before it, so they are let finish first: the gateway keeps
  // the last state it hears. A 429 or 5xx (a 503 when the service could not record it) or a
  // network error means the state was not kept: it is sent again, after Retry-After, as
  // batches are. A send that never succeeds decides nothing: after a denial the profile
  // stays off, and a grant only lets the page ask /v1/enrich, which answers by what the
  // gateway kept.
  function sendConsent(denied) {
    const sending = state.consentSync.then(async () => {
      await within(Promise.all([...state.inFlight]), SEND_TIMEOUT_MS, () => undefined);
      let allowed = !denied;
      const url = collectorUrl('/v1/consent', false);
      let failure = null; // why the state was not kept, when it was not
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt += 1) {
        // Built for each attempt: a resend carries the visitor's choice as it is by then.
        const body = JSON.stringify({
          anonymousId: state.anonymousId,
          consent: state.consent,
          consentedAt: state.consentedAt,
          sentAt: sentAt(),
        });
        let wait = 0;
        // null: unreachable gateway, or no answer in time: send again
        const response = await fetchWithin(url, {
          method: 'POST',
          headers: {
            'Content-Type': 'application/json', 'X-Pipeline-Key': state.config.pipelineKey,
          },
          body,
          credentials: 'include',
          keepalive: fitsKeepalive(body),
        });
        failure = NO_ANSWER;
        if (response && response.ok) {
          failure = null;
          try {
            const data = await response.json();
            allowed = !(data && data.profileAllowed === false);
          } catch {
            // an unreadable 200: the state was kept; decided as above
          }
          break;
        }
        if (response) {
          const { text, code } = await describeAnswer(response);
          failure = `answered ${text}; ${hintFor(response.status, code)}`;
        }
        // Another 4xx: the request itself is wrong, resending cannot help.
        if (response && response.status !== 429 && response.status < 500) break;
        if (response) wait = retryAfterMs(response);
        if (attempt + 1 < MAX_ATTEMPTS) {
          await new Promise((resolve) => setTimeout(resolve, Math.max(wait, 250 * 2 ** attempt)));
        }
      }
      if (failure) {
        warnOnce('consent-failed', `the gateway did not record the visitor's consent: POST `
          + `${url} ${failure}. It keeps the state it had: a denial holds on this page only, `
          + 'a grant not at all');
      }
      state.profileAllowed = allowed;
      if (!allowed) clearProfile();
    });
    state.consentSync = sending.catch(() => {});
    return state.consentSync;
  }

  /**
   * Configure the instance, set the _dfid cookie and start the first profile fetch.
   * @param {{pipelineKey: string, endpoint?: string,
   *   enrich?: {endpoint?: string, providers?: string[], timeoutMs?: number}}} options
   *   enrich.timeoutMs: how long a profile lookup may take before it is given up
   *   (default 5000); onProfileReady resolves by then at the latest. An option of the
   *   wrong type is named in the console with its fix (coerced or left at its default);
   *   only a missing pipelineKey throws.
   * @returns {object} This instance.
   */
  api.init = (options) => {
    state.config = checkedConfig(options || {});
    state.anonymousId = readCookie(COOKIE_NAME) || uuid();
    writeCookie(COOKIE_NAME, state.anonymousId); // refreshes the one-year expiry
    const store = storage();
    try {
      state.userId = store ? store.getItem(USER_ID_KEY) : null;
    } catch {
      state.userId = null;
    }
    if (globalThis.addEventListener) {
      globalThis.addEventListener('pagehide', beacon);
      if (globalThis.document) {
        document.addEventListener('visibilitychange', () => {
          if (document.visibilityState === 'hidden') beacon();
        });
      }
    }
    // Consent given before init is told first: the first lookup waits for it.
    if (state.consent) sendConsent(consentChange({}, state.consent).denied);
    // Ready within enrich.timeoutMs also when a consent send before the lookup hangs: the
    // page renders with the profile it has ({} then), and nothing is fetched meanwhile.
    const ready = state.config.enrich
      ? within(fetchProfile(), enrichTimeout(state.config.enrich), () => api.profile.amperity || {})
      : fetchProfile();
    ready.then(state.resolveReady);
    return api;
  };

  /** Record a page view. */
  api.page = (name, properties) => {
    const props = { ...(properties || {}) };
    if (name && props.name === undefined) props.name = name;
    enqueue({ type: 'page', properties: props });
  };

  /** Record a named event. */
  api.track = (event, properties) => {
    enqueue({ type: 'track', event, properties: { ...(properties || {}) } });
  };

  /** Attach a user id (kept for later visits) and send the traits. */
  api.identify = (userId, traits) => {
    if (userId) {
      state.userId = String(userId);
      const store = storage();
      try {
        if (store) store.setItem(USER_ID_KEY, state.userId);
      } catch {
        // storage full or blocked: the id holds for this page, later visits start without it
      }
    }
    enqueue({ type: 'identify', traits: { ...(traits || {}) } });
  };

  /**
   * Set (merge) the visitor's consent; it rides on every later event's context and is
   * sent to the gateway at once. When a signal is denied, profile.amperity is cleared at
   * once (onProfileChange listeners hear {}) and no profile is fetched while the gateway
   * says it is not allowed; a grant fetches it again.
   */
  api.consent = (consent) => {
    const previous = state.consent || {};
    const merged = { ...previous, ...(consent || {}) };
    // Nested maps merge too: a CMP reporting one category (or Google parameter) at a time
    // must not erase the others, since every event carries the full consent state.
    for (const key of ['categories', 'google']) {
      if (consent && consent[key]) merged[key] = { ...(previous[key] || {}), ...consent[key] };
    }
    const before = state.consent;
    state.consent = merged;
    // Events not sent yet leave with the visitor's current choice, not the one they
    // were queued under (a withdrawal must not be undone by an older batch).
    for (const event of state.queue) {
      if (event.context && event.context.consent === before) event.context.consent = merged;
    }
    const change = consentChange(previous, merged);
    if (!change.denied && !change.granted) return;
    state.consentedAt = sentAt(); // the page's clock, as sentAt reads it
    if (change.denied) {
      state.consentGeneration += 1;
      clearProfile();
    }
    if (!state.config) return; // init sends it
    sendConsent(change.denied).then(() => {
      if (state.profileAllowed && state.config.enrich) return fetchProfile();
      return undefined;
    });
  };

  /** Send every queued event now; resolves when they (and earlier sends) are answered. */
  api.flush = () => {
    clearTimeout(state.timer);
    state.timer = null;
    while (state.queue.length) {
      const events = state.queue.splice(0, MAX_BATCH);
      state.held += events.length;
      const sending = send(events, 0);
      state.inFlight.add(sending);
      sending.finally(() => {
        state.held -= events.length;
        state.inFlight.delete(sending);
      });
    }
    return Promise.all([...state.inFlight]).then(() => undefined);
  };

  /**
   * Call `listener(profile.amperity)` each time profile.amperity is replaced: by a
   * lookup, or by {} when consent is denied.
   * @returns {() => void} Stops the calls.
   */
  api.onProfileChange = (listener) => {
    if (typeof listener !== 'function') throw new Error('datafly.onProfileChange: pass a function');
    state.profileListeners.add(listener);
    return () => state.profileListeners.delete(listener);
  };

  /**
   * Resolves with profile.amperity ({} when none) once the first lookup is done, even a
   * failed one, and at the latest after enrich.timeoutMs.
   */
  api.onProfileReady = () => state.profileReady;

  /**
   * Flush pending events (so an identify reaches the server), then fetch the profile again.
   * The flush is waited for at most enrich.timeoutMs: a batch still unanswered then does
   * not hold the lookup. The fetch is bounded as onProfileReady is: a consent send still
   * unanswered (up to three attempts of 20 s) does not hold it either; the profile as it
   * stands is the answer then.
   */
  api.refreshProfile = async () => {
    if (!state.config) throw new Error('datafly: call datafly.init({...}) first');
    const timeoutMs = enrichTimeout(state.config.enrich);
    await within(api.flush(), timeoutMs, () => undefined);
    return within(fetchProfile(), timeoutMs, () => api.profile.amperity || {});
  };

  /** The visitor's anonymous id (the _dfid cookie), after init. */
  api.anonymousId = () => state.anonymousId;

  return api;
}

export const datafly = createDatafly();
export default datafly;
