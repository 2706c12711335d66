'use strict';
/**
 * When to retry and how long to wait: bounded attempts, exponential backoff with full
 * jitter, the server's RetryInfo delay as the least wait. Only UNAVAILABLE (14) and
 * RESOURCE_EXHAUSTED (8) are retried: the event was not delivered and may be later.
 */

const RETRYABLE_CODES = Object.freeze([14, 8]);

/**
 * @typedef {object} RetryPolicy
 * @property {number} maxAttempts How many calls at most, the first included.
 * @property {number} initialBackoffMs The backoff cap before the first retry.
 * @property {number} maxBackoffMs The largest backoff cap.
 * @property {number} multiplier How much the cap grows per retry.
 * @property {number} totalTimeoutMs No retry starts after this long since the first call.
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

module.exports = {
  DEFAULT_RETRY, DEFAULT_STREAM_RETRY, RETRYABLE_CODES, backoffMs, nextDelayMs,
};
