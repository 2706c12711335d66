'use strict';
/**
 * An in-process grpc-js server of the AmperityService for the tests, and the
 * google.rpc status details the real service sends with its failures.
 */

const grpc = require('@grpc/grpc-js');
const protobuf = require('protobufjs');

const { loadService } = require('..');

// Written out again rather than taken from lib/status.js: the fake must encode the details
// independently of the schema the client decodes them with, or a wrong field would pass.
const rpcRoot = protobuf.parse(`
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
`, { keepCase: true }).root;

/**
 * One google.rpc detail (ErrorInfo, BadRequest, RetryInfo) packed in an Any.
 * @param {string} name
 * @param {object} value
 */
function detail(name, value) {
  const type = rpcRoot.lookupType(`google.rpc.${name}`);
  return { type_url: `type.googleapis.com/google.rpc.${name}`, value: type.encode(type.create(value)).finish() };
}

/**
 * A grpc-js server error carrying a google.rpc.Status in grpc-status-details-bin.
 * @param {number} code
 * @param {string} message
 * @param {object[]} details
 */
function failure(code, message, details) {
  const Status = rpcRoot.lookupType('google.rpc.Status');
  const metadata = new grpc.Metadata();
  metadata.set('grpc-status-details-bin',
    Buffer.from(Status.encode(Status.create({ code, message, details })).finish()));
  return { code, details: message, metadata };
}

/**
 * Start a server on 127.0.0.1:0 with the given method handlers.
 * @param {grpc.UntypedServiceImplementation} handlers
 * @returns {Promise<{server: grpc.Server, target: string}>}
 */
async function startFake(handlers) {
  const server = new grpc.Server();
  const Service = loadService();
  server.addService(Service.service, handlers);
  const port = await new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(),
      (error, bound) => (error ? reject(error) : resolve(bound)));
  });
  return { server, target: `127.0.0.1:${port}` };
}

module.exports = { detail, failure, startFake };
