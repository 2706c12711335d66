'use strict';
/**
 * deliverMany: at-least-once delivery over DeliverStream. One run owns a Ledger and a
 * succession of calls. It takes events from the caller's iterable only while fewer than
 * `concurrency` are admitted and not yet handed back, writes them, and yields one final
 * answer per event. Retryable per-event errors are sent again after their delay; when the
 * stream breaks (UNAVAILABLE, a killed service, the call ending before every answer, no
 * answer for `idleTimeoutMs`) a new call is opened after a backoff and every unanswered
 * event is sent again, under the same message_id.
 *
 * Each call must be connected within `connectTimeoutMs`, or it is broken. Until the run
 * has reached the service once, a failed connection attempt breaks it at once and the
 * reopening follows the unary `retry` policy from the first call, so a service that is
 * down fails deliverMany as it fails deliver; after that, `streamRetry` reopens it, each
 * reopen waiting for a restarting service.
 */

const { nextDelayMs } = require('./retry');
const {
  AmperitySignalError, fromDeliveryError, fromServiceError, serviceUnreachable,
} = require('./status');
const { plainDelivery, toProtoEvent, withMessageId } = require('./events');
const { Ledger } = require('./ledger');

const UNAVAILABLE = 14;

/**
 * @typedef {{messageId: string, result?: Object<string, any>,
 *   error?: import('./status').AmperitySignalError}} DeliveryOutcome
 */

/** What happened (call events, source items, timers), taken one at a time by the run. */
class Inbox {
  constructor() {
    /** @private @type {Object<string, any>[]} */
    this._items = [];
    /** @private @type {((item: Object<string, any>) => void)|null} */
    this._waiter = null;
  }

  /** @param {Object<string, any>} item */
  push(item) {
    const waiter = this._waiter;
    this._waiter = null;
    if (waiter) waiter(item);
    else this._items.push(item);
  }

  /** @returns {Promise<Object<string, any>>} The oldest item, once there is one. */
  take() {
    if (this._items.length) return Promise.resolve(/** @type {any} */ (this._items.shift()));
    return new Promise((resolve) => { this._waiter = resolve; });
  }
}

/**
 * @param {Iterable<any>|AsyncIterable<any>} events
 * @returns {AsyncGenerator<any>}
 */
async function* iterate(events) {
  for await (const event of events) yield event;
}

/**
 * The caller's view of one final DeliverStreamResponse.
 * @param {Object<string, any>} response
 * @returns {DeliveryOutcome}
 */
function outcome(response) {
  const messageId = response.message_id;
  if (response.error && response.error.code) {
    return { messageId, error: fromDeliveryError(response.error) };
  }
  return { messageId, result: plainDelivery(response.result) };
}

/**
 * @typedef {'ready'|'failed'|'timeout'} Connection How a wait for the channel ended:
 *   connected, a connection attempt failed, or the wait ran out.
 * @typedef {(waitMs: number, failFast: boolean, done: (how: Connection) => void) => () => void}
 *   Connect Waits up to `waitMs` for the channel to be connected (with `failFast`, only
 *   until a connection attempt fails), then calls `done` once; returns a cancel function.
 */

/**
 * @typedef {object} StreamRunOptions
 * @property {() => any} openCall Starts a DeliverStream call (a grpc-js ClientDuplexStream).
 * @property {Connect} connect Waits for the channel to be connected.
 * @property {string} target The service's address, for the error when it is unreachable.
 * @property {number} connectTimeoutMs The longest wait for a connection per call.
 * @property {(event: Object<string, any>) => object} requestFor The request carrying an event.
 * @property {number} concurrency How many events may be unanswered at once.
 * @property {import('./retry').RetryPolicy} retry Re-sends of retryable per-event errors.
 * @property {import('./retry').RetryPolicy} streamRetry Reopening a broken stream.
 * @property {number} idleTimeoutMs No answer for this long, events unanswered: broken.
 * @property {(ms: number) => Promise<void>} sleep Waits between retries.
 * @property {() => number} random The jitter's random source.
 */

/** One deliverMany: feeds, sends, re-sends and yields until every event is answered. */
class DeliverStreamRun {
  /** @param {StreamRunOptions} options */
  constructor(options) {
    /** @private */
    this._options = options;
    /** @private */
    this._ledger = new Ledger(options.retry, options.random);
    /** @private */
    this._inbox = new Inbox();
    /** @private */
    this._epoch = 0;
    /** @private @type {any} */
    this._call = null;
    /** @private Events written on the current call and not answered yet. */
    this._onWire = 0;
    /** @private @type {NodeJS.Timeout|undefined} */
    this._idleTimer = undefined;
    /** @private Tells the current idle timer's item from one a later answer made stale. */
    this._idleToken = {};
    /** @private */
    this._finished = false;
    /** @private Whether a call of this run was ever connected. */
    this._reached = false;
    /** @private When the first call was opened. */
    this._started = 0;
    /** @private @type {(() => void)|null} */
    this._cancelConnect = null;
  }

  /**
   * Yield one outcome per event, in the order they finish.
   * @param {Iterable<Object<string, any>>|AsyncIterable<Object<string, any>>} events
   * @returns {AsyncGenerator<DeliveryOutcome>}
   */
  async *run(events) {
    const {
      concurrency, retry, streamRetry, sleep, random,
    } = this._options;
    const source = iterate(events);
    let sourceDone = false;
    let pulling = false;
    let halfClosed = false;
    // Admitted events whose outcome the caller has not taken: the window. Counting up to
    // the hand-over, not the answer, keeps a slow consumer from buffering without bound.
    let unreturned = 0;
    /** @type {DeliveryOutcome[]} */
    const outcomes = [];
    let failures = 0;
    let failingSince = 0;
    try {
      for (;;) {
        while (outcomes.length) {
          unreturned -= 1;
          yield /** @type {DeliveryOutcome} */ (outcomes.shift());
        }
        if (sourceDone && !this._ledger.size && !halfClosed) {
          // No event, no call: nothing waits for a service that may be down.
          if (!this._call) return;
          halfClosed = true;
          this._call.end();
        }
        if (!sourceDone && !pulling && unreturned < concurrency) {
          pulling = true;
          source.next().then(
            (step) => this._inbox.push({ kind: 'source', step }),
            (error) => this._inbox.push({ kind: 'source failed', error }),
          );
        }
        // eslint-disable-next-line no-await-in-loop
        const item = await this._inbox.take();
        if (item.epoch !== undefined && item.epoch !== this._epoch) continue;
        /** @type {{code: number, details: string, metadata?: any}|null} */
        let broken = null;
        if (item.kind === 'source') {
          pulling = false;
          if (item.step.done) {
            sourceDone = true;
          } else {
            const event = withMessageId(toProtoEvent(item.step.value));
            unreturned += 1;
            if (!this._call) this._open();
            const admitted = this._ledger.admit(event);
            if (admitted) this._write(admitted);
          }
        } else if (item.kind === 'source failed') {
          throw item.error;
        } else if (item.kind === 'answer') {
          failures = 0;
          const final = this._answer(item.response);
          if (final) outcomes.push(final);
        } else if (item.kind === 'resend') {
          if (this._ledger.isPending(item.event.message_id)) this._write(item.event);
        } else if (item.kind === 'unreachable') {
          broken = item.error;
        } else if (item.kind === 'idle' && item.token === this._idleToken) {
          broken = {
            code: UNAVAILABLE,
            details: `No answer from the service for ${this._options.idleTimeoutMs} ms.`,
          };
        } else if (item.kind === 'closed') {
          // Every event has its final answer: how the call ended changes nothing.
          if (sourceDone && !this._ledger.size) return;
          broken = item.status.code !== 0 ? item.status : {
            code: UNAVAILABLE,
            details: 'The service ended the stream before answering every event.',
          };
        }
        if (broken) {
          const failure = broken instanceof AmperitySignalError ? broken : fromServiceError(broken);
          if (failures === 0) failingSince = Date.now();
          failures += 1;
          // Never reached: one call to a service that may be down, bounded like deliver.
          const policy = this._reached ? streamRetry : retry;
          const since = this._reached ? failingSince : this._started;
          const delay = failure.permanent ? null : nextDelayMs(policy, {
            code: failure.code,
            attempt: failures,
            elapsedMs: Date.now() - since,
            retryAfterMs: failure.retryAfter === null ? null : failure.retryAfter * 1000,
            random,
          });
          if (delay === null) throw failure;
          // eslint-disable-next-line no-await-in-loop
          await sleep(delay);
          halfClosed = false;
          this._open();
        }
      }
    } finally {
      this._finished = true;
      this._disarmIdleTimer();
      if (this._cancelConnect) this._cancelConnect();
      // A no-op once the call has its status; otherwise the service sees CANCELLED.
      if (this._call) this._call.cancel();
      if (!sourceDone) source.return(undefined).catch(() => {});
    }
  }

  /**
   * Start a new call (cancelling the old one) and send every unanswered event on it.
   * @private
   */
  _open() {
    if (this._call) this._call.cancel();
    this._epoch += 1;
    this._onWire = 0;
    this._disarmIdleTimer();
    const epoch = this._epoch;
    const call = this._options.openCall();
    this._watchConnection(epoch);
    /** @type {any} */
    let status = null;
    let ended = false;
    // 'status' can come before the last 'data' is delivered; closed means both are in.
    const closed = () => {
      if (status && ended) this._inbox.push({ kind: 'closed', status, epoch });
    };
    call.on('data', (/** @type {any} */ response) => {
      this._inbox.push({ kind: 'answer', response, epoch });
    });
    // The 'status' event carries the same failure; an unheard 'error' would be thrown.
    call.on('error', () => {});
    call.on('status', (/** @type {any} */ received) => { status = received; closed(); });
    call.on('end', () => { ended = true; closed(); });
    this._call = call;
    for (const event of this._ledger.unacknowledged()) this._write(event);
  }

  /**
   * Break the call of `epoch` unless the channel connects within the connect timeout
   * (cut, before the service was reached, to what the retry budget leaves).
   * @private
   * @param {number} epoch
   */
  _watchConnection(epoch) {
    const {
      connect, connectTimeoutMs, retry, target,
    } = this._options;
    if (this._cancelConnect) this._cancelConnect();
    if (!this._started) this._started = Date.now();
    const failFast = !this._reached;
    const waitMs = this._reached ? connectTimeoutMs : Math.max(0, Math.min(
      connectTimeoutMs, retry.totalTimeoutMs - (Date.now() - this._started),
    ));
    this._cancelConnect = connect(waitMs, failFast, (how) => {
      if (how === 'ready') {
        this._reached = true;
        return;
      }
      const error = serviceUnreachable(target, how === 'failed' && failFast ? null : waitMs);
      this._inbox.push({ kind: 'unreachable', error, epoch });
    });
  }

  /**
   * @private
   * @param {Object<string, any>} event
   */
  _write(event) {
    if (!this._onWire) this._armIdleTimer();
    this._onWire += 1;
    // At most `concurrency` writes are outstanding, so write()'s buffer stays bounded
    // without waiting for 'drain'.
    this._call.write(this._options.requestFor(event));
  }

  /**
   * @private
   * @param {Object<string, any>} response
   * @returns {DeliveryOutcome|null} The outcome when the event is finished.
   */
  _answer(response) {
    this._onWire = Math.max(this._onWire - 1, 0);
    if (this._onWire) this._armIdleTimer();
    else this._disarmIdleTimer();
    const answer = this._ledger.answer(response);
    if (answer.retry) this._resendLater(answer.retry, answer.retryDelayMs || 0);
    if (answer.release) this._write(answer.release);
    return answer.final ? outcome(answer.final) : null;
  }

  /** @private */
  _armIdleTimer() {
    this._disarmIdleTimer();
    const token = {};
    this._idleToken = token;
    this._idleTimer = setTimeout(() => {
      this._inbox.push({ kind: 'idle', token });
    }, this._options.idleTimeoutMs);
  }

  /** @private */
  _disarmIdleTimer() {
    clearTimeout(this._idleTimer);
    this._idleToken = {};
  }

  /**
   * @private
   * @param {Object<string, any>} event
   * @param {number} delayMs
   */
  _resendLater(event, delayMs) {
    // A reopened stream re-sends it anyway, so the epoch is kept and checked.
    const epoch = this._epoch;
    this._options.sleep(delayMs).then(() => {
      if (!this._finished) this._inbox.push({ kind: 'resend', event, epoch });
    });
  }
}

module.exports = { DeliverStreamRun };
