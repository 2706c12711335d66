'use strict';
/**
 * The bookkeeping of an at-least-once DeliverStream: which events still need an answer.
 * An event stays in the ledger from the moment it is handed to the stream until its
 * *final* answer: a success, a non-retryable error, or a retryable error after its last
 * attempt. Everything still in the ledger when a stream breaks is sent again on the next.
 * Pure logic, no I/O (the Python client's ledger.py, in JavaScript).
 */

const { backoffMs } = require('./retry');

/**
 * What to do with one response of the stream.
 * @typedef {object} Answer
 * @property {Object<string, any>} [final] The response to hand to the caller: the event
 *   is finished.
 * @property {Object<string, any>} [retry] The event to send again after `retryDelayMs`.
 * @property {number} [retryDelayMs] The wait before re-sending `retry`.
 * @property {Object<string, any>} [release] A held event with the same message_id, now
 *   free to be sent.
 */

/**
 * The events of one deliverMany that have no final answer yet, in send order. Two events
 * with the same message_id are never in flight together (their answers could not be told
 * apart): the second is held until the first is finished.
 */
class Ledger {
  /**
   * @param {import('./retry').RetryPolicy} policy Which per-event errors to retry, how often.
   * @param {() => number} [random] The jitter's random source.
   */
  constructor(policy, random = Math.random) {
    /** @private */
    this._policy = policy;
    /** @private */
    this._random = random;
    /** @private @type {Map<string, {event: Object<string, any>, failures: number}>} */
    this._pending = new Map();
    /** @private @type {Map<string, Object<string, any>[]>} */
    this._held = new Map();
    /** @private */
    this._heldCount = 0;
  }

  /** How many events wait for their final answer, held ones included. */
  get size() {
    return this._pending.size + this._heldCount;
  }

  /**
   * Take an event (with a message_id) in.
   * @param {Object<string, any>} event
   * @returns {Object<string, any>|null} The event when it may be sent now, null when held.
   */
  admit(event) {
    const id = event.message_id;
    if (this._pending.has(id)) {
      const queue = this._held.get(id) || [];
      queue.push(event);
      this._held.set(id, queue);
      this._heldCount += 1;
      return null;
    }
    this._pending.set(id, { event, failures: 0 });
    return event;
  }

  /** @param {string} messageId Whether that event still waits for its final answer. */
  isPending(messageId) {
    return this._pending.has(messageId);
  }

  /** The events to send again on a new stream, oldest first (held ones excluded). */
  unacknowledged() {
    return [...this._pending.values()].map((entry) => entry.event);
  }

  /**
   * Record one response and say what follows from it. A response for an event not in
   * flight (a second answer after a re-send) is ignored: one final answer per event.
   * @param {Object<string, any>} response A proto-loader DeliverStreamResponse.
   * @returns {Answer}
   */
  answer(response) {
    const id = response.message_id;
    const entry = this._pending.get(id);
    if (!entry) return {};
    const error = response.error;
    if (error && error.code) {
      entry.failures += 1;
      if (this._policy.retryableCodes.includes(error.code)
        && entry.failures < this._policy.maxAttempts) {
        const minimumMs = error.retry_after_seconds ? error.retry_after_seconds * 1000 : null;
        return {
          retry: entry.event,
          retryDelayMs: backoffMs(this._policy, entry.failures, minimumMs, this._random),
        };
      }
    }
    this._pending.delete(id);
    return { final: response, release: this._release(id) };
  }

  /**
   * @private
   * @param {string} messageId
   * @returns {Object<string, any>|undefined}
   */
  _release(messageId) {
    const queue = this._held.get(messageId);
    if (!queue) return undefined;
    const event = /** @type {Object<string, any>} */ (queue.shift());
    this._heldCount -= 1;
    if (!queue.length) this._held.delete(messageId);
    this._pending.set(messageId, { event, failures: 0 });
    return event;
  }
}

module.exports = { Ledger };
