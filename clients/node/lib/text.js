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

module.exports = { checkText, notText };
