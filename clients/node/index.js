'use strict';
/**
 * @datafly/amperity-signal-client: a Promise-based Node.js client of the amperity-signal
 * gRPC service. Deadlines by default (10 s per attempt); UNAVAILABLE and
 * RESOURCE_EXHAUSTED retried with exponential backoff and full jitter, RetryInfo's delay
 * the least wait; failures rejected as AmperitySignalError ("REASON: message", with
 * `code`, `details`, `reason`, `fieldViolations`, `retryAfter`). Struct fields go in and
 * come out as plain objects.
 */

const crypto = require('node:crypto');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const { DEFAULT_RETRY, backoffMs, nextDelayMs } = require('./lib/retry');
const { AmperitySignalError, fromServiceError } = require('./lib/status');
const { toStruct, fromStruct, toValue, fromValue } = require('./lib/struct');
const { toProtoEvent, plainEvent } = require('./lib/events');

const DEFAULT_PROTO_PATH = path.resolve(
  __dirname, '..', '..', 'proto', 'datafly', 'amperity', 'v1', 'amperity_service.proto',
);
const DEFAULT_TIMEOUT_MS = 10000;
const PIPELINE_KEY_METADATA = 'x-pipeline-key';
const LOADER_OPTIONS = Object.freeze({
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});

/**
 * @typedef {object} ClientOptions
 * @property {string} target The service address, e.g. "localhost:50051".
 * @property {string} [integrationId] The integration to use (an [[integrations]] id).
 * @property {string} [pipelineKey] Or the Datafly pipeline key (sent as x-pipeline-key).
 * @property {string} [protoPath] amperity_service.proto; default: $AMPERITY_SIGNAL_PROTO_PATH
 *   or the repository's proto/datafly/amperity/v1/amperity_service.proto.
 * @property {grpc.ChannelCredentials} [credentials] Default: insecure (plaintext).
 * @property {Object<string, string|number>} [channelOptions] grpc-js channel options.
 * @property {number} [timeoutMs] The deadline of each attempt (default 10000).
 * @property {Partial<import('./lib/retry').RetryPolicy>} [retry] Overrides of the retry policy.
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

/** @param {number} ms */
const realSleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

class AmperityClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    const { target, integrationId = '', pipelineKey = '' } = options || /** @type {any} */ ({});
    if (!target) throw new TypeError('target is required, e.g. "localhost:50051".');
    if (!integrationId && !pipelineKey) {
      throw new TypeError(
        'Pass integrationId (the [[integrations]] id in the service config) or pipelineKey '
        + '(the Datafly pipeline key) so the service knows which integration to use.',
      );
    }
    const Service = loadService(options.protoPath);
    /** @private */
    this._client = new Service(
      target,
      options.credentials || grpc.credentials.createInsecure(),
      {
        'grpc.primary_user_agent': 'amperity-signal-client-node/0.1.0',
        'grpc.max_reconnect_backoff_ms': 5000,
        ...(options.channelOptions || {}),
      },
    );
    /** @private */
    this._integrationId = integrationId;
    /** @private */
    this._pipelineKey = pipelineKey;
    /** @private */
    this._timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    /** @private @type {import('./lib/retry').RetryPolicy} */
    this._retry = { ...DEFAULT_RETRY, ...(options.retry || {}) };
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
    const proto = toProtoEvent(event);
    // Retries must carry one id so the service and Amperity see one event.
    if (!proto.message_id) proto.message_id = crypto.randomUUID();
    const response = await this._unary('Deliver', {
      integration_id: this._integrationId, event: proto,
    }, options);
    return { ...response, payload: fromStruct(response.payload) };
  }

  /**
   * Resolve the event's visitor against the Profile API.
   * @param {Object<string, any>} event A Datafly JSON event.
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<Object<string, any>>} The EnrichResponse, Structs as plain objects.
   */
  async enrich(event, options = {}) {
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
   * @returns {Promise<{provider: string, attributes: Object<string, any>}>}
   */
  async browserProfile(anonymousId, options = {}) {
    const response = await this._unary('BrowserProfile', {
      integration_id: this._integrationId,
      pipeline_key: this._pipelineKey,
      anonymous_id: anonymousId,
    }, options);
    return { provider: response.provider, attributes: fromStruct(response.attributes) };
  }

  /** Close the channel. */
  close() {
    this._client.close();
  }

  /**
   * @private
   * @param {string} method
   * @param {object} request
   * @param {{timeoutMs?: number}} options
   * @returns {Promise<any>}
   */
  async _unary(method, request, options) {
    const perAttemptMs = options.timeoutMs ?? this._timeoutMs;
    const started = Date.now();
    for (let attempt = 1; ; attempt += 1) {
      const remainingMs = this._retry.totalTimeoutMs - (Date.now() - started);
      try {
        // eslint-disable-next-line no-await-in-loop
        return await this._call(method, request, Math.max(Math.min(perAttemptMs, remainingMs), 1));
      } catch (error) {
        const failure = error instanceof AmperitySignalError ? error : fromServiceError(error);
        const delay = nextDelayMs(this._retry, {
          code: failure.code,
          attempt,
          elapsedMs: Date.now() - started,
          retryAfterMs: failure.retryAfter === null ? null : failure.retryAfter * 1000,
          random: this._random,
        });
        if (delay === null) throw failure;
        // eslint-disable-next-line no-await-in-loop
        await this._sleep(delay);
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
    const metadata = new grpc.Metadata();
    if (this._pipelineKey) metadata.set(PIPELINE_KEY_METADATA, this._pipelineKey);
    return new Promise((resolve, reject) => {
      /** @type {any} */ (this._client)[method](
        request,
        metadata,
        { deadline: new Date(Date.now() + timeoutMs) },
        (/** @type {any} */ error, /** @type {any} */ response) => {
          if (error) reject(fromServiceError(error));
          else resolve(response);
        },
      );
    });
  }
}

module.exports = {
  AmperityClient,
  AmperitySignalError,
  DEFAULT_PROTO_PATH,
  DEFAULT_RETRY,
  DEFAULT_TIMEOUT_MS,
  backoffMs,
  fromServiceError,
  fromStruct,
  fromValue,
  loadService,
  nextDelayMs,
  toProtoEvent,
  toStruct,
  toValue,
};
