'use strict';
// Options objects whose names are checked: an option the client does not know (a typo,
// `timeout` for `timeoutMs`) is refused naming it, not silently ignored, and told the one
// it is a slip from, as the service's check-config and command line do.

/** @param {string} name */
function bare(name) {
  return name.toLowerCase().replace(/[\s_-]+/g, '');
}

/**
 * Levenshtein distance between two short strings.
 * @param {string} a
 * @param {string} b
 */
function distance(a, b) {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j] + 1, current[j - 1] + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length];
}

/**
 * The one of `known` that `name` is a slip from, if any: case, `_` and `-` aside; the
 * start of one name alone (3 characters or more); else one edit per four characters.
 * @param {string} name
 * @param {readonly string[]} known
 * @returns {string|null}
 */
function closest(name, known) {
  const wanted = bare(name);
  const same = known.find((option) => bare(option) === wanted);
  if (same) return same;
  const starting = known.filter((option) => bare(option).startsWith(wanted));
  if (wanted.length >= 3 && starting.length === 1) return starting[0];
  let best = null;
  let bestDistance = Infinity;
  for (const option of known) {
    const apart = distance(wanted, bare(option));
    if (apart < bestDistance) [best, bestDistance] = [option, apart];
  }
  return best !== null && bestDistance <= Math.max(1, Math.floor(bare(best).length / 4))
    ? best : null;
}

/**
 * Refuse an option `options` holds that is not one of `known`.
 * @param {string} where What the options are for, e.g. 'AmperityClient' or 'deliver'.
 * @param {unknown} options What the caller passed (undefined and null: none).
 * @param {readonly string[]} known
 */
function checkOptionNames(where, options, known) {
  if (options === undefined || options === null || typeof options !== 'object') return;
  for (const name of Object.keys(options)) {
    if (!known.includes(name)) {
      const guess = closest(name, known);
      throw new TypeError(`${where}: ${name} is not an option`
        + `${guess ? `; did you mean ${guess}?` : '.'} The options are ${known.join(', ')}.`);
    }
  }
}

module.exports = { checkOptionNames, closest };
