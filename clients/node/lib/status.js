'use strict';
/**
 * Readable errors from the `grpc-status-details-bin` trailer (a google.rpc.Status with
 * ErrorInfo, BadRequest and RetryInfo details), decoded with protobufjs.
 */

const protobuf = require('protobufjs');

const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
const DOMAIN = 'amperity-signal.datafly.com';
const CODE_NAMES = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
  'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION',
  'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS',
  'UNAUTHENTICATED',
];

// The few google.rpc messages the service sends, so no googleapis checkout is needed.
const RPC_PROTO = `
syntax = "proto3";
package google.rpc;
message Any { string type_url = 1; bytes value = 2; }
message Duration { int64 seconds = 1; int32 nanos = 2; }
message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
message BadRequest {
  message FieldViolation { string field = 1; string description = 2; }
  repeated FieldViolation field_violations = 1;
}
message RetryInfo { Duration retry_delay = 1; }
`;
const root = protobuf.parse(RPC_PROTO, { keepCase: true }).root;
const Status = root.lookupType('google.rpc.Status');
const ErrorInfo = root.lookupType('google.rpc.ErrorInfo');
const BadRequest = root.lookupType('google.rpc.BadRequest');
const RetryInfo = root.lookupType('google.rpc.RetryInfo');
const TYPE_PREFIX = 'type.googleapis.com/google.rpc.';

/**
 * @typedef {{field: string, description: string}} FieldViolation
 */

/** A failed call to the amperity-signal service; `message` is "REASON: what to fix". */
class AmperitySignalError extends Error {
  /**
   * @param {object} init
   * @param {number} init.code The gRPC status code number.
   * @param {string} init.details The service's message.
   * @param {string} [init.reason] The ErrorInfo reason (UPPER_SNAKE).
   * @param {string} [init.domain] The ErrorInfo domain.
   * @param {Object<string, string>} [init.metadata] The ErrorInfo metadata.
   * @param {FieldViolation[]} [init.fieldViolations] The BadRequest field violations.
   * @param {number|null} [init.retryAfter] The RetryInfo delay, in seconds.
   * @param {unknown} [init.cause] The original grpc-js error.
   * @param {boolean} [init.permanent] Retrying the same request cannot help.
   */
  constructor({ code, details, reason = '', domain = '', metadata = {}, fieldViolations = [],
    retryAfter = null, cause, permanent = false }) {
    const codeName = CODE_NAMES[code] || 'UNKNOWN';
    super(`${reason || codeName}: ${details}`, cause === undefined ? undefined : { cause });
    this.name = 'AmperitySignalError';
    /** @type {number} */
    this.code = code;
    /** @type {string} */
    this.codeName = codeName;
    /** @type {string} */
    this.details = details;
    /** @type {string} */
    this.reason = reason;
    /** @type {string} */
    this.domain = domain;
    /** @type {Object<string, string>} */
    this.metadata = metadata;
    /** @type {FieldViolation[]} */
    this.fieldViolations = fieldViolations;
    /** @type {number|null} */
    this.retryAfter = retryAfter;
    /** @type {boolean} Retrying the same request cannot help, whatever its code. */
    this.permanent = permanent;
  }

  /** Whether retrying later can help (UNAVAILABLE or RESOURCE_EXHAUSTED, not too large). */
  get retryable() {
    return !this.permanent && (this.code === 14 || this.code === 8);
  }
}

/**
 * Decode a serialized google.rpc.Status into reason, metadata, violations and delay.
 * @param {Buffer|Uint8Array} bytes
 */
function decodeStatus(bytes) {
  const status = /** @type {any} */ (Status.toObject(Status.decode(bytes), { longs: Number }));
  const out = {
    code: Number(status.code || 0),
    message: String(status.message || ''),
    reason: '',
    domain: '',
    /** @type {Object<string, string>} */
    metadata: {},
    /** @type {FieldViolation[]} */
    fieldViolations: [],
    /** @type {number|null} */
    retryAfter: null,
  };
  for (const detail of status.details || []) {
    const type = String(detail.type_url || '');
    if (!type.startsWith(TYPE_PREFIX)) continue;
    const name = type.slice(TYPE_PREFIX.length);
    if (name === 'ErrorInfo') {
      const info = /** @type {any} */ (ErrorInfo.toObject(ErrorInfo.decode(detail.value)));
      out.reason = info.reason || '';
      out.domain = info.domain || '';
      out.metadata = info.metadata || {};
    } else if (name === 'BadRequest') {
      const bad = /** @type {any} */ (BadRequest.toObject(BadRequest.decode(detail.value)));
      for (const v of bad.field_violations || []) {
        out.fieldViolations.push({ field: v.field || '', description: v.description || '' });
      }
    } else if (name === 'RetryInfo') {
      const retry = /** @type {any} */ (
        RetryInfo.toObject(RetryInfo.decode(detail.value), { longs: Number })
      );
      const delay = retry.retry_delay || {};
      out.retryAfter = Number(delay.seconds || 0) + Number(delay.nanos || 0) / 1e9;
    }
  }
  return out;
}

const MESSAGE_TOO_LARGE = 'MESSAGE_TOO_LARGE';
const TOO_LARGE = /(SERVER: )?(Received|Sent) message larger than max \((\d+) vs\.? (\d+)\)/;

/**
 * gRPC's own refusal of a message over its size limit (RESOURCE_EXHAUSTED, no details),
 * told apart from rate limiting: the same request would be refused again, and a refused
 * answer means the call already ran, so it is permanent.
 * @param {string} details The status details.
 * @param {unknown} cause The grpc-js error.
 * @returns {AmperitySignalError|null}
 */
function messageTooLarge(details, cause) {
  const found = TOO_LARGE.exec(details);
  if (!found) return null;
  const [, server, direction, size, limit] = found;
  // The service (gRPC core) prefixes its refusal of a request with "SERVER: "; "Sent" is
  // this client refusing to send; a bare "Received" is this client refusing an answer.
  let refusedBy = 'client';
  let text = `The request was ${size} bytes, more than the ${limit} bytes this client may `
    + 'send (channel option grpc.max_send_message_length): send smaller events or raise it.';
  if (server) {
    refusedBy = 'service';
    text = `The request was ${size} bytes, more than the ${limit} bytes the service accepts: `
      + 'send smaller events (drop or shorten the largest properties or traits).';
  } else if (direction === 'Received') {
    text = `The answer was ${size} bytes, more than the ${limit} bytes this client accepts: `
      + 'raise the channel option grpc.max_receive_message_length. The call ran on the '
      + 'service, so it is not retried.';
  }
  return new AmperitySignalError({
    code: 8,
    details: text,
    reason: MESSAGE_TOO_LARGE,
    metadata: { size, limit, refused_by: refusedBy },
    cause,
    permanent: true,
  });
}

const SERVICE_UNREACHABLE = 'SERVICE_UNREACHABLE';

/**
 * The error for a service this client could not connect to.
 * @param {string} target The address the client was given.
 * @param {number|null} waitedMs How long it waited for the connection; null when the
 *   connection attempt failed at once.
 * @returns {AmperitySignalError}
 */
function serviceUnreachable(target, waitedMs) {
  const why = waitedMs === null ? 'the connection failed' : `not connected within ${waitedMs} ms`;
  return new AmperitySignalError({
    code: 14,
    details: `Could not reach the amperity-signal service at ${target} (${why}): check that it `
      + 'is running and that the target (host:port) is right.',
    reason: SERVICE_UNREACHABLE,
    metadata: { target, waited_ms: String(waitedMs ?? 0) },
  });
}

/**
 * The readable error for a failed grpc-js call.
 * @param {any} error A grpc-js ServiceError (code, details, metadata).
 * @returns {AmperitySignalError}
 */
function fromServiceError(error) {
  const code = typeof error.code === 'number' ? error.code : 2;
  const details = error.details || error.message || CODE_NAMES[code] || 'unknown error';
  const raw = error.metadata && typeof error.metadata.get === 'function'
    ? error.metadata.get(STATUS_DETAILS_KEY)[0]
    : undefined;
  if (raw) {
    try {
      const status = decodeStatus(Buffer.isBuffer(raw) ? raw : Buffer.from(String(raw), 'base64'));
      return new AmperitySignalError({ ...status, code, details: status.message || details,
        cause: error });
    } catch {
      // A garbled trailer must still give a readable error.
    }
  }
  return (code === 8 && messageTooLarge(details, error))
    || new AmperitySignalError({ code, details, cause: error });
}

/**
 * The readable error for one failed event of a DeliverStream (a DeliveryError, which
 * carries the ErrorInfo and RetryInfo fields inline instead of as status details).
 * @param {Object<string, any>} error The proto-loader DeliveryError.
 * @returns {AmperitySignalError}
 */
function fromDeliveryError(error) {
  const code = Number(error.code || 0);
  return new AmperitySignalError({
    code,
    details: error.message || CODE_NAMES[code] || 'unknown error',
    reason: error.reason || '',
    domain: error.reason ? DOMAIN : '',
    metadata: { ...(error.metadata || {}) },
    fieldViolations: (error.field_violations || []).map((v) => ({
      field: v.field || '', description: v.description || '',
    })),
    retryAfter: error.retry_after_seconds ? Number(error.retry_after_seconds) : null,
  });
}

module.exports = {
  AmperitySignalError, CODE_NAMES, DOMAIN, MESSAGE_TOO_LARGE, SERVICE_UNREACHABLE,
  STATUS_DETAILS_KEY, decodeStatus, fromDeliveryError, fromServiceError, serviceUnreachable,
};
