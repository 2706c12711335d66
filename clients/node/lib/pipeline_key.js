'use strict';
/**
 * The service's rule for a pipeline key, checked when a client is built. The service and
 * its gateway take a pipeline key of 1-200 printable ASCII characters, no space
 * (limits.PIPELINE_KEY in the service). Another key matches no integration: every call
 * would fail NOT_FOUND, which says nothing of the stray space or newline a copy brought
 * along. The Python client refuses the same keys in the same words (the cases of
 * clients/testdata/pipeline_keys.json).
 */

const MAX_PIPELINE_KEY = 200;
const PIPELINE_KEY_RULE = `1-${MAX_PIPELINE_KEY} printable ASCII characters, with no spaces`;

/**
 * What an error calls a character a pipeline key cannot hold.
 * @param {string} char
 * @returns {string}
 */
function kind(char) {
  if (char === ' ') return 'a space';
  if (char < ' ' || char === '\x7f') return 'a control character';
  return 'a non-ASCII character';
}

/**
 * Why the service would refuse `key` (after the field's name), or null. The key is never
 * quoted, it is a secret: the message says its length, and the position and kind of its
 * first character outside the rule. Lengths and positions count characters (code points),
 * as the Python client does: a character outside the BMP is one. An empty key is no key
 * (the client then names its integration by id), so it is the caller's to refuse.
 * @param {string} key
 * @returns {string|null}
 */
function pipelineKeyProblem(key) {
  const chars = Array.from(key);
  let found;
  if (chars.length > MAX_PIPELINE_KEY) {
    found = `is ${chars.length} characters long`;
  } else {
    const at = chars.findIndex((char) => char < '\x21' || char > '\x7e');
    if (at === -1) return null;
    found = `holds ${kind(chars[at])} at position ${at} of its ${chars.length} characters`;
  }
  return `${found}; a pipeline key is ${PIPELINE_KEY_RULE} (the service and its gateway take `
    + 'no other): copy the key again from Datafly.';
}

module.exports = { MAX_PIPELINE_KEY, PIPELINE_KEY_RULE, pipelineKeyProblem };
