'use strict';
/**
 * @datafly/amperity-signal-client: a Promise-based Node.js client of the amperity-signal
 * gRPC service. Deadlines by default (10 s per attempt); UNAVAILABLE and
 * RESOURCE_EXHAUSTED retried with exponential backoff and full jitter, RetryInfo's delay
 * the least wait; a call a stopping service dropped unstarted (CANCELLED) sent again by
 * gRPC itself (RETRY_DROPPED_CALLS); failures rejected as AmperitySignalError
 * ("REASON: message", with `code`, `details`, `reason`, `fieldViolations`, `retryAfter`).
 * Struct fields go in and come out as plain objects. deliverMany and watchDeliveries are async iterators over
 * the two streaming RPCs.
 */

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const {
  DEFAULT_RETRY, DEFAULT_STREAM_RETRY, backoffMs, checkMs, nextDelayMs, resolvePolicy,
} = require('./lib/retry');
const { AmperitySignalError, fromDeliveryError, fromServiceError } = require('./lib/status');
const { toStruct, fromStruct, toValue, fromValue } = require('./lib/struct');
const {
  toConsentRequest, toProtoEvent, plainDelivery, plainEvent, plainRecord, withMessageId,
} = require('./lib/events');
const { DeliverStreamRun } = require('./lib/stream');
const { checkOptionNames } = require('./lib/options');
const { checkString, requireString } = require('./lib/text');
const { pipelineKeyProblem } = require('./lib/pipeline_key');

const DEFAULT_PROTO_PATH = path.resolve(
  __dirname, '..', '..', 'proto', 'datafly', 'amperity', 'v1', 'amperity_service.proto',
);
const DEFAULT_TIMEOUT_MS = 10000;
const DEFAULT_CONCURRENCY = 64;
const DEFAULT_STREAM_IDLE_TIMEOUT_MS = 30000;
const PIPELINE_KEY_METADATA = 'x-pipeline-key';
// gRPC's own retry of a call a stopping service dropped before handling it (CANCELLED:
// grpc core drops the calls it received but had not started when a server stops, as the
// old process of a handoff does). gRPC resends a call only while nothing of its answer
// has arrived and never one the caller cancelled. A call the stop's grace period cut off
// mid-handling is resent too, under the same messageId (every event gets one), which
// Amperity deduplicates. README, "Rotating keys and certificates". The Python client and
// the gateway hold the same config (tests/unit/test_retry_dropped_calls_parity.py).
const RETRY_DROPPED_CALLS = JSON.stringify({
  methodConfig: [{
    name: [{ service: 'datafly.amperity.v1.AmperityService' }],
    retryPolicy: {
      maxAttempts: 3,
      initialBackoff: '0.05s',
      maxBackoff: '0.5s',
      backoffMultiplier: 2,
      retryableStatusCodes: ['CANCELLED'],
    },
  }],
});
const LOADER_OPTIONS = Object.freeze({
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});

/**
 * The client's options. Settings that cannot work (a NaN, zero or negative timeout, a
 * retry setting out of range or unknown) throw a TypeError or RangeError naming them
 * when the client is built.
 * @typedef {object} ClientOptions
 * @property {string} target The service address, e.g. "localhost:50051".
 * @property {string} [integrationId] The integration to use (an [[integrations]] id).
 * @property {string} [pipelineKey] Or the Datafly pipeline key (sent as x-pipeline-key):
 *   1-200 printable ASCII characters, no space, as the service takes it; another is a
 *   TypeError naming it, its length and the first character's position, never the key.
 * @property {string} [protoPath] amperity_service.proto; default: $AMPERITY_SIGNAL_PROTO_PATH
 *   or the repository's proto/datafly/amperity/v1/amperity_service.proto.
 * @property {grpc.ChannelCredentials} [credentials] Default: insecure (plaintext).
 * @property {Object<string, string|number>} [channelOptions] grpc-js channel options.
 * @property {number} [timeoutMs] The deadline of each attempt (default 10000): finite, more
 *   than 0.
 * @property {Partial<import('./lib/retry').RetryPolicy>} [retry] Overrides of the retry policy
 *   of unary calls and of retryable per-event DeliverStream errors.
 * @property {Partial<import('./lib/retry').RetryPolicy>} [streamRetry] Overrides of the policy
 *   reopening a broken DeliverStream, counted from the last answer.
 * @property {number} [streamIdleTimeoutMs] No answer for this long while events are
 *   unanswered: the DeliverStream is treated as broken and reopened (default 30000): more
 *   than 0, at most 2147483647 (Node's longest timer).
 * @property {(ms: number) => Promise<void>} [sleep] Waits between retries (fake in tests).
 * @property {() => number} [random] The jitter's random source.
 */

/**
 * The service definition loaded from the proto.
 * @param {string} [protoPath]
 * @returns {grpc.ServiceClientConstructor}
 */
function loadService(protoPath) {
  const file = protoPath || process.env.AMPERITY_SIGNAL_PROTO_PATH || DEFAULT_PROTO_PATH;
  // The proto root (three levels above datafly/amperity/v1/) resolves its imports;
  // proto-loader ships the google/protobuf well-known types itself.
  const protoRoot = path.resolve(path.dirname(file), '..', '..', '..');
  const definition = protoLoader.loadSync(file, { ...LOADER_OPTIONS, includeDirs: [protoRoot] });
  const loaded = /** @type {any} */ (grpc.loadPackageDefinition(definition));
  return loaded.datafly.amperity.v1.AmperityService;
}

const MAX_REPLAY = 2 ** 31 - 1; // WatchDeliveriesRequest.replay is an int32
// The names each options object takes (checkOptionNames): a typo is refused, not ignored.
const CLIENT_OPTIONS = Object.freeze([
  'target', 'integrationId', 'pipelineKey', 'protoPath', 'credentials', 'channelOptions',
  'timeoutMs', 'retry', 'streamRetry', 'streamIdleTimeoutMs', 'sleep', 'random',
]);
const CALL_OPTIONS = Object.freeze(['timeoutMs']);

/**
 * Refuse a `replay` a WatchDeliveriesRequest cannot hold, naming it; protobufjs converted
 * it instead ("2" to 2, 1.5 to 1, 2 ** 33 to 0), and the Python client refuses it.
 * @param {unknown} replay
 * @returns {number}
 */
function checkReplay(replay) {
  const wanted = `a whole number of records, 0 to ${MAX_REPLAY}, e.g. 10`;
  if (typeof replay !== 'number' || !Number.isInteger(replay)) {
    const shown = typeof replay === 'number' ? `; got ${replay}` : `, not ${typeof replay}`;
    throw new TypeError(`replay must be ${wanted}${shown}.`);
  }
  if (replay < 0 || replay > MAX_REPLAY) {
    throw new RangeError(`replay must be ${wanted}; got ${replay}.`);
  }
  return replay;
}

/** @param {number} ms */
const realSleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

class AmperityClient {
  // A private field: util.inspect (console.log) and JSON.stringify of a client show
  // neither it nor the key, which is a secret.
  #pipelineKey = '';

  /** @param {ClientOptions} options */
  constructor(options) {
    checkOptionNames('AmperityClient', options, CLIENT_OPTIONS);
    const { target, integrationId = '', pipelineKey = '' } = options || /** @type {any} */ ({});
    if (target === undefined || target === null || target === '') {
      throw new TypeError('target is required, e.g. "localhost:50051".');
    }
    checkString(target, 'target');
    // null is "not given", as undefined is; any other value must be a string.
    if (integrationId !== null) checkString(integrationId, 'integrationId');
    // Its type only: checkText would quote the character, and the key is secret.
    if (pipelineKey !== null) requireString(pipelineKey, 'pipelineKey');
    if (!integrationId && !pipelineKey) {
      throw new TypeError(
        'Pass integrationId (the [[integrations]] id in the service config) or pipelineKey '
        + '(the Datafly pipeline key) so the service knows which integration to use.',
      );
    }
    // A key the service's rule refuses would fail every call NOT_FOUND (and one with a
    // non-ASCII character, grpc-js with an error quoting the whole key).
    const problem = typeof pipelineKey === 'string' ? pipelineKeyProblem(pipelineKey) : null;
    if (problem) throw new TypeError(`pipelineKey ${problem}`);
    // Checked before the channel exists: a refused client leaves nothing open.
    const timeoutMs = checkMs('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS, {
      example: DEFAULT_TIMEOUT_MS,
    });
    const streamIdleTimeoutMs = checkMs(
      'streamIdleTimeoutMs',
      options.streamIdleTimeoutMs ?? DEFAULT_STREAM_IDLE_TIMEOUT_MS,
      { example: DEFAULT_STREAM_IDLE_TIMEOUT_MS, timer: true },
    );
    const retry = resolvePolicy('retry', options.retry, DEFAULT_RETRY);
    const streamRetry = resolvePolicy('streamRetry', options.streamRetry, DEFAULT_STREAM_RETRY);
    const Service = loadService(options.protoPath);
    /** @private */
    this._client = new Service(
      target,
      options.credentials || grpc.credentials.createInsecure(),
      {
        'grpc.primary_user_agent': 'amperity-signal-client-node/0.1.0',
        'grpc.max_reconnect_backoff_ms': 5000,
        'grpc.service_config': RETRY_DROPPED_CALLS,
        ...(options.channelOptions || {}),
      },
    );
    /** @private */
    this._target = target;
    /** @private */
    this._integrationId = integrationId ?? '';
    this.#pipelineKey = pipelineKey ?? '';
    /** @private */
    this._timeoutMs = timeoutMs;
    /** @private @type {import('./lib/retry').RetryPolicy} */
    this._retry = retry;
    /** @private @type {import('./lib/retry').RetryPolicy} */
    this._streamRetry = streamRetry;
    /** @private */
    this._streamIdleTimeoutMs = streamIdleTimeoutMs;
    /** @private */
    this._sleep = options.sleep || realSleep;
    /** @private */
    this._random = options.random || Math.random;
  }

  /**
   * Deliver one event to Amperity; resolves once Amperity accepted it.
   * @param {Object<string, any>} event A Datafly JSON event (camelCase, or snake_case).
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<Object<string, any>>} The DeliverResponse, `payload` a plain object.
   */
  async deliver(event, options = {}) {
    checkOptionNames('deliver', options, CALL_OPTIONS);
    const response = await this._unary('Deliver', {
      integration_id: this._integrationId, event: withMessageId(toProtoEvent(event)),
    }, options);
    return plainDelivery(response);
  }

  /**
   * Deliver many events over one DeliverStream, at least once each. Reads `events` only
   * while fewer than `concurrency` are unanswered (or answered but not yet taken from the
   * iterator). Yields one outcome per event, in the order they finish: `result` (as
   * deliver resolves it) or `error` (an AmperitySignalError) for a failed event.
   * Retryable per-event errors are sent again under the retry policy; a broken stream is
   * reopened under the stream retry policy and every unanswered event sent again, so an
   * event may reach the service twice, always under the same message_id. Events without
   * a message_id get a UUID.
   * @param {Iterable<Object<string, any>>|AsyncIterable<Object<string, any>>} events
   *   Datafly JSON events, as deliver takes them.
   * @param {{concurrency?: number}} [options] concurrency: default 64 (undefined or null:
   *   the default, as for every option).
   * @returns {AsyncGenerator<import('./lib/stream').DeliveryOutcome>} Throws
   *   AmperitySignalError when the stream fails with a non-retryable status or cannot be
   *   reopened (outcomes yielded before are final; events without one were not
   *   confirmed), TypeError for a malformed event.
   */
  deliverMany(events, options = {}) {
    // null means "the default", as undefined does, for every option of every method (a
    // destructuring default takes the place of undefined only, so null threw here).
    checkOptionNames('deliverMany', options, ['concurrency']);
    const concurrency = options?.concurrency ?? DEFAULT_CONCURRENCY;
    if (!events || (typeof (/** @type {any} */ (events))[Symbol.iterator] !== 'function'
      && typeof (/** @type {any} */ (events))[Symbol.asyncIterator] !== 'function')) {
      throw new TypeError('events must be an iterable or async iterable of events.');
    }
    // Another type (a fraction included, as for replay and in the Python client) is a
    // TypeError, a whole number below 1 a RangeError.
    if (!Number.isInteger(concurrency)) {
      throw new TypeError('concurrency must be a whole number, 1 or more.');
    }
    if (concurrency < 1) {
      throw new RangeError('concurrency must be a whole number, 1 or more.');
    }
    const run = new DeliverStreamRun({
      // waitForReady (a metadata option in grpc-js, ignored among the call options): a
      // reopened stream waits for a restarting service to come back instead of failing
      // at once; `connect` bounds the wait by timeoutMs.
      openCall: () => {
        const metadata = this._metadata();
        metadata.setOptions({ waitForReady: true });
        return this._client.DeliverStream(metadata);
      },
      connect: (waitMs, failFast, done) => this._connect(waitMs, failFast, done),
      target: this._target,
      connectTimeoutMs: this._timeoutMs,
      requestFor: (event) => ({ integration_id: this._integrationId, event }),
      concurrency,
      retry: this._retry,
      streamRetry: this._streamRetry,
      idleTimeoutMs: this._streamIdleTimeoutMs,
      sleep: this._sleep,
      random: this._random,
    });
    return run.run(events);
  }

  /**
   * Resolve the event's visitor against the Profile API.
   * @param {Object<string, any>} event A Datafly JSON event.
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<Object<string, any>>} The EnrichResponse, Structs as plain objects.
   */
  async enrich(event, options = {}) {
    checkOptionNames('enrich', options, CALL_OPTIONS);
    const response = await this._unary('Enrich', {
      integration_id: this._integrationId, event: toProtoEvent(event),
    }, options);
    return {
      ...response,
      attributes: fromStruct(response.attributes),
      personalized_attributes: fromStruct(response.personalized_attributes),
      event: plainEvent(response.event),
    };
  }

  /**
   * The allowlisted attributes a page may see for one visitor.
   * @param {string} anonymousId The visitor's anonymous id (the _dfid cookie).
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<{provider: string, attributes: Object<string, any>}>} Rejects with a
   *   TypeError naming anonymousId when it is not a string or holds a lone UTF-16
   *   surrogate, before any call.
   */
  async browserProfile(anonymousId, options = {}) {
    checkOptionNames('browserProfile', options, CALL_OPTIONS);
    checkString(anonymousId, 'anonymousId');
    const response = await this._unary('BrowserProfile', {
      integration_id: this._integrationId,
      pipeline_key: this.#pipelineKey,
      anonymous_id: anonymousId,
    }, options);
    return { provider: response.provider, attributes: fromStruct(response.attributes) };
  }

  /**
   * Keep a visitor's consent state without an event. The service keeps the newest state by
   * time (consentedAt, an event's timestamp), so a withdrawal stops browserProfile at once
   * rather than with the visitor's next event, and a state older than the one kept is
   * ignored. Retried like the other calls (the state is the same on every attempt).
   * @param {string} anonymousId The visitor's anonymous id (the _dfid cookie).
   * @param {Object<string, any>} consent Their whole consent state, in the nested shape
   *   events carry: { analytics, marketing, functional, categories: { C0003: true },
   *   google: { adStorage: 'denied' } }; absent means "no consent given".
   * @param {{timeoutMs?: number, consentedAt?: Date|string}} [options] consentedAt: when
   *   the visitor made this choice, a Date or an RFC 3339 string with its offset
   *   ('2025-01-31T12:00:00Z'); left out, when the service receives it. Pass it when the
   *   call may be late (queued, replayed). More than 5 minutes ahead of the service's
   *   clock, or before 2000, is refused (INVALID_ARGUMENT, reason INVALID_CONSENT).
   * @returns {Promise<boolean>} Whether browserProfile answers attributes for the visitor
   *   under the state the service keeps: false when that state does not meet the
   *   integration's browser_consent condition (when consentedAt is older than the kept
   *   state, the answer is for the kept one). Rejects with a TypeError naming anonymousId,
   *   the consent field or consentedAt before any call, or an AmperitySignalError from the
   *   service: UNAVAILABLE with reason CACHE_UNAVAILABLE (after the retries) when the service
   *   could not keep the state (its consent store unreachable); send it again later.
   */
  async recordConsent(anonymousId, consent, options = {}) {
    checkOptionNames('recordConsent', options, ['timeoutMs', 'consentedAt']);
    const request = toConsentRequest(
      { integrationId: this._integrationId, pipelineKey: this.#pipelineKey },
      anonymousId, consent, options?.consentedAt,
    );
    const response = await this._unary('RecordConsent', request, options);
    return response.profile_allowed;
  }

  /**
   * Live delivery records, after replaying up to `replay` recent ones. Stopping the
   * iteration (`break`, `return()`) cancels the call; so does aborting `signal`, which also
   * ends a watch that is waiting for its next record (the iteration then ends without an
   * error). Not retried: a failed watch throws.
   * @param {{replay?: number, integrationId?: string, signal?: AbortSignal}} [options]
   *   integrationId: whose records; the client's integration by default, '' for all (a
   *   client with a pipelineKey sees only its key's integration: the service scopes the
   *   watch by the key).
   * @returns {AsyncGenerator<Object<string, any>>} WatchDeliveriesResponse records, Structs
   *   as plain objects. Throws AmperitySignalError when the watch fails.
   */
  async *watchDeliveries(options = {}) {
    checkOptionNames('watchDeliveries', options, ['replay', 'integrationId', 'signal']);
    const { replay, integrationId, signal } = options ?? {};
    const whose = integrationId ?? this._integrationId;
    checkString(whose, 'integrationId');
    const replayed = checkReplay(replay ?? 0); // null keeps the default, as options do
    if (signal != null && !(signal instanceof AbortSignal)) {
      throw new TypeError(`signal must be an AbortSignal, got ${typeof signal}`);
    }
    if (signal?.aborted) return;
    const call = this._client.WatchDeliveries(
      { integration_id: whose, replay: replayed }, this._metadata(),
    );
    // The iterator hears failures itself. This listener keeps the CANCELLED status a
    // break causes from ever being an unhandled 'error' event (an uncaught exception):
    // that the stream iterator leaves a listener behind after it returns is not promised.
    call.on('error', () => {});
    const stop = () => call.cancel();
    signal?.addEventListener('abort', stop, { once: true });
    try {
      for await (const record of call) {
        if (signal?.aborted) return;
        yield plainRecord(record);
      }
    } catch (error) {
      if (signal?.aborted) return; // the CANCELLED status the abort caused
      throw fromServiceError(error);
    } finally {
      signal?.removeEventListener('abort', stop);
      call.cancel();
    }
  }

  /** Close the channel. */
  close() {
    this._client.close();
  }

  /**
   * @private
   * @param {string} method
   * @param {object} request
   * @param {{timeoutMs?: number}|null|undefined} options The call's; null or undefined
   *   (the options or their timeoutMs): the client's.
   * @returns {Promise<any>}
   */
  async _unary(method, request, options) {
    const wanted = options?.timeoutMs;
    // A NaN deadline would not just fail the call: grpc-js throws it out of a callback
    // once the channel is connected, an uncaught exception that ends the process.
    const perAttemptMs = wanted === undefined || wanted === null
      ? this._timeoutMs
      : checkMs('timeoutMs', wanted, {
        example: 2500, otherwise: ', or leave it out for the client\'s timeoutMs',
      });
    const { totalTimeoutMs } = this._retry;
    const started = Date.now();
    let timeoutMs = Math.min(perAttemptMs, totalTimeoutMs);
    for (let attempt = 1; ; attempt += 1) {
      try {
        // eslint-disable-next-line no-await-in-loop
        return await this._call(method, request, timeoutMs);
      } catch (error) {
        const failure = error instanceof AmperitySignalError ? error : fromServiceError(error);
        const delay = failure.permanent ? null : nextDelayMs(this._retry, {
          code: failure.code,
          attempt,
          elapsedMs: Date.now() - started,
          retryAfterMs: failure.retryAfter === null ? null : failure.retryAfter * 1000,
          random: this._random,
        });
        if (delay === null) throw failure;
        // eslint-disable-next-line no-await-in-loop
        await this._sleep(delay);
        // totalTimeoutMs is the call's overall deadline: a wait that overran it (a busy
        // event loop) ends the retries too, and the last attempt gets what is left.
        const remainingMs = totalTimeoutMs - (Date.now() - started);
        if (remainingMs <= 0) throw failure;
        timeoutMs = Math.min(perAttemptMs, remainingMs);
      }
    }
  }

  /**
   * @private
   * @param {string} method
   * @param {object} request
   * @param {number} timeoutMs
   * @returns {Promise<any>}
   */
  _call(method, request, timeoutMs) {
    return new Promise((resolve, reject) => {
      /** @type {any} */ (this._client)[method](
        request,
        this._metadata(),
        { deadline: new Date(Date.now() + timeoutMs) },
        (/** @type {any} */ error, /** @type {any} */ response) => {
          if (error) reject(fromServiceError(error));
          else resolve(response);
        },
      );
    });
  }

  /**
   * Wait up to `waitMs` for the channel to be connected, then call `done` once.
   * @private
   * @param {number} waitMs
   * @param {boolean} failFast End the wait when a connection attempt fails.
   * @param {(how: import('./lib/stream').Connection) => void} done
   * @returns {() => void} Cancels the wait; `done` is not called after it.
   */
  _connect(waitMs, failFast, done) {
    const channel = this._client.getChannel();
    const deadline = Date.now() + waitMs;
    let cancelled = false;
    const check = () => {
      if (cancelled) return;
      const state = channel.getConnectivityState(true);
      if (state === grpc.connectivityState.READY) {
        done('ready');
      } else if (state === grpc.connectivityState.SHUTDOWN
        || (failFast && state === grpc.connectivityState.TRANSIENT_FAILURE)) {
        done('failed');
      } else if (Date.now() >= deadline) {
        done('timeout');
      } else {
        // Short slices: a cancelled wait keeps no timer (and no process) alive for long.
        channel.watchConnectivityState(state, Math.min(deadline, Date.now() + 250), check);
      }
    };
    check();
    return () => { cancelled = true; };
  }

  /**
   * The metadata every call carries: the pipeline key, when the client has one.
   * @private
   * @returns {grpc.Metadata}
   */
  _metadata() {
    const metadata = new grpc.Metadata();
    if (this.#pipelineKey) metadata.set(PIPELINE_KEY_METADATA, this.#pipelineKey);
    return metadata;
  }
}

module.exports = {
  AmperityClient,
  AmperitySignalError,
  DEFAULT_PROTO_PATH,
  DEFAULT_RETRY,
  DEFAULT_STREAM_RETRY,
  DEFAULT_TIMEOUT_MS,
  RETRY_DROPPED_CALLS,
  backoffMs,
  fromDeliveryError,
  fromServiceError,
  fromStruct,
  fromValue,
  loadService,
  nextDelayMs,
  toProtoEvent,
  toStruct,
  toValue,
};
