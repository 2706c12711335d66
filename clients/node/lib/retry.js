'use strict';
/**
 * When to retry and how long to wait: bounded attempts, exponential backoff with full
 * jitter, the server's RetryInfo delay as the least wait. Only UNAVAILABLE (14) and
 * RESOURCE_EXHAUSTED (8) are retried: the event was not delivered and may be later.
 */

const RETRYABLE_CODES = Object.freeze([14, 8]);
// Node's timers take at most 2**31 - 1 ms (about 24.8 days): a longer delay fires after
// 1 ms instead, so a wait or idle timeout above it would end at once, every time.
const MAX_TIMER_MS = 2147483647;

/**
 * @typedef {object} RetryPolicy
 * @property {number} maxAttempts How many calls at most, the first included (1 or more).
 * @property {number} initialBackoffMs The backoff cap before the first retry.
 * @property {number} maxBackoffMs The largest backoff cap (at most MAX_TIMER_MS).
 * @property {number} multiplier How much the cap grows per retry (1 or more).
 * @property {number} totalTimeoutMs No retry starts after this long since the first call;
 *   Infinity for no overall deadline.
 * @property {number[]} retryableCodes The gRPC status codes worth retrying.
 */

/** @type {RetryPolicy} */
const DEFAULT_RETRY = Object.freeze({
  maxAttempts: 5,
  initialBackoffMs: 100,
  maxBackoffMs: 5000,
  multiplier: 2,
  totalTimeoutMs: 30000,
  retryableCodes: RETRYABLE_CODES,
});

// Reopening a DeliverStream must outlive a service restart: more attempts and a longer
// budget, counted from the last answer rather than from the first attempt.
/** @type {RetryPolicy} */
const DEFAULT_STREAM_RETRY = Object.freeze({
  ...DEFAULT_RETRY,
  maxAttempts: 12,
  initialBackoffMs: 200,
  totalTimeoutMs: 120000,
});

/**
 * Milliseconds to wait before retry number `retry` (1 for the first retry).
 * @param {RetryPolicy} policy
 * @param {number} retry
 * @param {number|null} [minimumMs] The server's RetryInfo delay.
 * @param {() => number} [random] A source of [0, 1) numbers.
 * @returns {number}
 */
function backoffMs(policy, retry, minimumMs = null, random = Math.random) {
  const cap = Math.min(
    policy.maxBackoffMs,
    policy.initialBackoffMs * policy.multiplier ** Math.max(retry - 1, 0),
  );
  return Math.max(random() * cap, minimumMs || 0);
}

/**
 * The wait before another attempt, or null when the call must not be retried.
 * @param {RetryPolicy} policy
 * @param {{code: number, attempt: number, elapsedMs: number, retryAfterMs?: number|null,
 *   random?: () => number}} failure
 * @returns {number|null}
 */
function nextDelayMs(policy, { code, attempt, elapsedMs, retryAfterMs = null, random }) {
  if (!policy.retryableCodes.includes(code) || attempt >= policy.maxAttempts) return null;
  const delay = backoffMs(policy, attempt, retryAfterMs, random);
  if (elapsedMs + delay >= policy.totalTimeoutMs) return null;
  return delay;
}

/**
 * Refuse a number of milliseconds that cannot work as `option`.
 * @param {string} option The option's name as the caller spells it, e.g. 'timeoutMs'.
 * @param {unknown} value What the caller passed.
 * @param {{example: number, zero?: boolean, infinite?: string,
 *   timer?: boolean, otherwise?: string}} rules `zero`: 0 is allowed; `infinite`: what
 *   Infinity means, when it is allowed; `timer`: it becomes a Node timer, so at most
 *   MAX_TIMER_MS; `otherwise`: what else the option takes, for the message.
 * @returns {number}
 */
function checkMs(option, value, {
  example, zero = false, infinite = '', timer = false, otherwise = '',
}) {
  const wanted = `a ${infinite ? '' : 'finite '}number of milliseconds ${zero ? '0 or more' : 'more than 0'}`
    + `${timer ? `, at most ${MAX_TIMER_MS} (Node's longest timer, about 24.8 days)` : ''}`
    + `, e.g. ${example}${infinite ? `, or Infinity ${infinite}` : ''}${otherwise}`;
  if (typeof value !== 'number') {
    throw new TypeError(`${option} must be ${wanted}; got ${describe(value)}.`);
  }
  const finiteOrAllowed = Number.isFinite(value) || (infinite !== '' && value === Infinity);
  if (!finiteOrAllowed || value < 0 || (!zero && value === 0) || (timer && value > MAX_TIMER_MS)) {
    throw new RangeError(`${option} must be ${wanted}; got ${value}.`);
  }
  return value;
}

/** @param {unknown} value */
function describe(value) {
  return typeof value === 'string' ? `the string ${JSON.stringify(value)}` : String(value);
}

/**
 * The policy `option` names: `defaults` with the caller's overrides, each checked so a
 * policy that cannot work is refused when the client is built, not at the first retry.
 * An override of undefined or null keeps the default.
 * @param {string} option 'retry' or 'streamRetry'.
 * @param {unknown} overrides What the caller passed.
 * @param {RetryPolicy} defaults
 * @returns {RetryPolicy}
 */
function resolvePolicy(option, overrides, defaults) {
  if (overrides === undefined || overrides === null) return defaults;
  if (typeof overrides !== 'object' || Array.isArray(overrides)) {
    throw new TypeError(`${option} must be an object of retry settings such as `
      + `{ maxAttempts: 3, totalTimeoutMs: 10000 }; got ${describe(overrides)}.`);
  }
  /** @type {Object<string, any>} */
  const policy = { ...defaults };
  for (const [name, value] of Object.entries(overrides)) {
    if (!Object.hasOwn(defaults, name)) {
      throw new TypeError(`${option}.${name} is not a retry setting; the settings are `
        + `${Object.keys(defaults).join(', ')}.`);
    }
    if (value !== undefined && value !== null) policy[name] = value;
  }
  const { maxAttempts, multiplier, retryableCodes } = policy;
  // Not a number is a TypeError, a number out of range a RangeError, as documented.
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
    const Refusal = typeof maxAttempts === 'number' ? RangeError : TypeError;
    throw new Refusal(`${option}.maxAttempts must be a whole number, 1 or more (1: no `
      + `retries), e.g. ${defaults.maxAttempts}; got ${describe(maxAttempts)}.`);
  }
  for (const name of ['initialBackoffMs', 'maxBackoffMs']) {
    checkMs(`${option}.${name}`, policy[name], {
      example: /** @type {any} */ (defaults)[name], zero: true, timer: true,
    });
  }
  if (typeof multiplier !== 'number' || !Number.isFinite(multiplier) || multiplier < 1) {
    const Refusal = typeof multiplier === 'number' ? RangeError : TypeError;
    throw new Refusal(`${option}.multiplier must be a finite number, 1 or more (1: no `
      + `growth), e.g. ${defaults.multiplier}; got ${describe(multiplier)}.`);
  }
  checkMs(`${option}.totalTimeoutMs`, policy.totalTimeoutMs, {
    example: defaults.totalTimeoutMs, infinite: 'for no overall deadline',
  });
  const codesWanted = 'an array of gRPC status code numbers, 0 to 16, e.g. [14, 8]';
  if (!Array.isArray(retryableCodes) || !retryableCodes.every(Number.isInteger)) {
    throw new TypeError(`${option}.retryableCodes must be ${codesWanted}; `
      + `got ${describe(retryableCodes)}.`);
  }
  // A number no status has would never match, as the Python client refuses it.
  const unknown = retryableCodes.find((code) => code < 0 || code > 16);
  if (unknown !== undefined) {
    throw new RangeError(`${option}.retryableCodes must be ${codesWanted}; got ${unknown} in it.`);
  }
  return Object.freeze(/** @type {RetryPolicy} */ (policy));
}

module.exports = {
  DEFAULT_RETRY,
  DEFAULT_STREAM_RETRY,
  MAX_TIMER_MS,
  RETRYABLE_CODES,
  backoffMs,
  checkMs,
  nextDelayMs,
  resolvePolicy,
};
