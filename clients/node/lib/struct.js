'use strict';
/**
 * google.protobuf.Struct <-> plain JavaScript values, in the shape @grpc/proto-loader
 * gives them: the well-known types come from protobufjs's bundled descriptors, whose
 * field names are camelCase even with `keepCase: true`
 * (`{fields: {k: {kind: 'stringValue', stringValue: 'v'}}}`). snake_case is read too.
 */

/**
 * @typedef {null | boolean | number | string | JsonValue[] | {[key: string]: JsonValue}} JsonValue
 * @typedef {{fields: Object<string, ProtoValue>}} ProtoStruct
 * @typedef {Object<string, any>} ProtoValue One google.protobuf.Value: `kind` and its member.
 */

const { notText } = require('./text');

/**
 * Refuse an object or array that contains itself (JSON cannot carry it; the walk would
 * overflow the stack), naming the field where the cycle closes.
 * @param {object} container
 * @param {string} field
 * @param {Set<object>} enclosing The objects and arrays the walk is inside.
 */
function enter(container, field, enclosing) {
  if (enclosing.has(container)) {
    throw new TypeError(`${field} contains itself (a circular reference), which JSON cannot carry.`);
  }
  enclosing.add(container);
}

/**
 * A plain object as a Struct message.
 * @param {Object<string, JsonValue>} object
 * @param {string} [field] The field's path, named in errors.
 * @param {Set<object>} [enclosing] The objects the walk is inside (cycle detection).
 * @returns {ProtoStruct}
 */
function toStruct(object, field = 'struct', enclosing = new Set()) {
  if (object === null || typeof object !== 'object' || Array.isArray(object)) {
    throw new TypeError(`${field} must be a plain object.`);
  }
  enter(object, field, enclosing);
  /** @type {Object<string, ProtoValue>} */
  const fields = {};
  for (const [key, value] of Object.entries(object)) {
    if (value === undefined) continue;
    if (!key.isWellFormed()) throw notText(key, `${field}.${key}`);
    fields[key] = toValue(value, `${field}.${key}`, enclosing);
  }
  enclosing.delete(object);
  return { fields };
}

/**
 * One JSON value as a google.protobuf.Value message.
 * @param {JsonValue} value
 * @param {string} [field]
 * @param {Set<object>} [enclosing] The objects the walk is inside (cycle detection).
 * @returns {ProtoValue}
 */
function toValue(value, field = 'value', enclosing = new Set()) {
  if (value === null) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'boolean') return { boolValue: value };
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) {
      throw new TypeError(`${field} must be a finite number (JSON has no NaN or Infinity).`);
    }
    return { numberValue: value };
  }
  if (typeof value === 'string') {
    if (!value.isWellFormed()) throw notText(value, field);
    return { stringValue: value };
  }
  if (Array.isArray(value)) {
    enter(value, field, enclosing);
    const values = value.map((item, i) => toValue(item, `${field}[${i}]`, enclosing));
    enclosing.delete(value);
    return { listValue: { values } };
  }
  if (value instanceof Date) return { stringValue: value.toISOString() };
  if (typeof value === 'object') return { structValue: toStruct(value, field, enclosing) };
  throw new TypeError(`${field} is a ${typeof value}, which JSON cannot carry.`);
}

/**
 * A Struct message as a plain object; a missing Struct is an empty object.
 * @param {ProtoStruct|null|undefined} struct
 * @returns {Object<string, JsonValue>}
 */
function fromStruct(struct) {
  /** @type {Object<string, JsonValue>} */
  const out = {};
  if (!struct || !struct.fields) return out;
  for (const [key, value] of Object.entries(struct.fields)) out[key] = fromValue(value);
  return out;
}

const KINDS = ['nullValue', 'numberValue', 'stringValue', 'boolValue', 'structValue', 'listValue'];
/** @param {string} name */
const snake = (name) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * One google.protobuf.Value message as plain JavaScript.
 * @param {ProtoValue|null|undefined} value
 * @returns {JsonValue}
 */
function fromValue(value) {
  if (!value) return null;
  /** @param {string} name */
  const member = (name) => (value[name] !== undefined ? value[name] : value[snake(name)]);
  const kind = value.kind
    ? KINDS.find((name) => name === value.kind || snake(name) === value.kind)
    : KINDS.find((name) => member(name) !== undefined && member(name) !== null);
  switch (kind) {
    case 'numberValue':
      return Number(member(kind));
    case 'stringValue':
      return String(member(kind));
    case 'boolValue':
      return Boolean(member(kind));
    case 'structValue':
      return fromStruct(member(kind));
    case 'listValue':
      return ((member(kind) && member(kind).values) || []).map(fromValue);
    default:
      return null;
  }
}

module.exports = { toStruct, toValue, fromStruct, fromValue };
