'use strict';
/**
 * Strings the client sends must be text. A lone UTF-16 surrogate (what a "\ud800" JSON
 * escape alone parses to) is not: protobufjs writes it, in a string shorter than 40
 * characters, as bytes that are no UTF-8 (the service cannot parse the request), and in a
 * longer one as U+FFFD, silently changing the identifier. The Python client refuses the
 * same strings (protobuf cannot encode them), so both refuse them naming the field.
 */

/**
 * The position of the first lone surrogate in `value`, or -1.
 * @param {string} value
 * @returns {number}
 */
function loneSurrogateAt(value) {
  for (let i = 0; i < value.length; i += 1) {
    const code = value.charCodeAt(i);
    if (code >= 0xd800 && code <= 0xdbff) {
      const next = value.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i += 1;
      else return i;
    } else if (code >= 0xdc00 && code <= 0xdfff) {
      return i;
    }
  }
  return -1;
}

/**
 * The TypeError for a `value` that holds a lone surrogate, naming `field`. Hot paths test
 * `value.isWellFormed()` (native, allocates nothing) themselves and build the field's
 * name only for this error.
 * @param {string} value
 * @param {string} field The path errors name it by, e.g. "anonymousId".
 * @returns {TypeError}
 */
function notText(value, field) {
  const at = loneSurrogateAt(value);
  return new TypeError(`${field} holds '\\u${value.charCodeAt(at).toString(16)}' at position `
    + `${at}, half of a UTF-16 surrogate pair, which is not text: repair or drop the character.`);
}

/**
 * `value`, or a TypeError naming `field` when it holds a lone surrogate.
 * @param {string} value
 * @param {string} field
 * @returns {string}
 */
function checkText(value, field) {
  if (!value.isWellFormed()) throw notText(value, field);
  return value;
}

// What each string argument holds and an example, for the error refusing another type: the
// Python client's words, under its snake_case names.
const ARGUMENTS = {
  target: ['the service\'s address', '"localhost:50051"'],
  integrationId: ['an [[integrations]] id of the service\'s config', '"acme-web"'],
  pipelineKey: ['the Datafly pipeline key', '"pk_live_..."'],
  anonymousId: ['the visitor\'s anonymous id (the _dfid cookie)', '"anon-1"'],
};

/**
 * What an error calls the type of `value`: null, undefined, number, boolean, Array,
 * Buffer, Object...
 * @param {unknown} value
 * @returns {string}
 */
function typeName(value) {
  if (value === null) return 'null';
  if (typeof value !== 'object') return typeof value;
  return Object.getPrototypeOf(value)?.constructor?.name || 'object';
}

/**
 * `value`, when it is a string; a TypeError naming the argument and what to pass otherwise.
 * Never converted: protobufjs would send String(value), so 1.0 went out as "1" (the Python
 * client's str(1.0) is "1.0") and an object as "[object Object]": another visitor's id.
 * @param {unknown} value
 * @param {keyof typeof ARGUMENTS} field
 * @returns {string}
 */
function requireString(value, field) {
  if (typeof value !== 'string') {
    const [what, example] = ARGUMENTS[field];
    throw new TypeError(`${field} must be a string, ${what}, not ${typeName(value)}: pass it `
      + `as text, e.g. ${example}.`);
  }
  return value;
}

/**
 * `value` when it is a string that is text; a TypeError naming the argument otherwise.
 * @param {unknown} value
 * @param {keyof typeof ARGUMENTS} field
 * @returns {string}
 */
function checkString(value, field) {
  return checkText(requireString(value, field), field);
}

/**
 * Why a field of an event refuses `value` (not a string), in the Python client's words.
 * @param {unknown} value
 * @returns {string}
 */
const notAString = (value) => `must be a string, not ${typeName(value)}: send it as a JSON string.`;

module.exports = {
  checkString, checkText, notAString, notText, requireString, typeName,
};
