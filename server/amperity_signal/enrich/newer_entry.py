"""An entry stamped with when it was true: kept only against an older one, in Python and Lua.

The browser consent ledger stores each visitor's consent state as a JSON object of its
keys plus ``at`` (epoch seconds, the instant the state was true), and an offered state
replaces the stored one only when it is not older. That is a read, a comparison and a
write, so each store runs it where no other write of the same key can come in between: the
memory store in Python without yielding to the event loop (``keep_newer_entry``), Redis as
one Lua script (``KEEP_NEWER_SCRIPT``), which Redis runs atomically. Both follow one rule,
pinned by one test against both stores:

1. A stored entry whose ``at`` is newer than the offered one's stays; the caller is
   answered with it. A stored ``at`` past the writer's clock (``now``) counts as ``now``,
   as the ledger reads an offered one: it was stamped by a clock that ran ahead (another
   replica's, or this one's before it was stepped back), and believed as it is it would
   outrank every state offered until then, a withdrawal made now included.
2. A stored entry byte for byte equal to the offered one (a retried event: same state,
   same instant) stays as it is: there is nothing to change.
3. Otherwise the offered entry is written, with a full TTL: when nothing is stored, when
   what is stored is not a JSON object with a numeric ``at`` (an older release's state,
   which is older than any), or when it is older, or as old with other content (of two
   states of one instant the later arrival wins).

The bytes written are the caller's, unchanged, so the stored form is the one the earlier
GET/SET releases wrote and read: replicas of either version read each other's entries.
"""

from __future__ import annotations

from typing import Final

import orjson

from amperity_signal.enrich.expiry import expiry_ms

AT: Final = "at"
"""The entry's key for the instant it was true (epoch seconds)."""


def stored_at(stored: bytes) -> float | None:
    """The ``at`` of a stored entry; None when it has none or is not a JSON object."""
    try:
        entry = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return None
    moment = entry.get(AT) if isinstance(entry, dict) else None
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        return None
    return float(moment)


def keep_newer_entry(
    stored: bytes | None, value: bytes, at: float, now: float
) -> tuple[bytes | None, bool]:
    """The rule above, over what is stored: the memory store's twin of the script.

    Args:
        stored: The stored entry's bytes, or None.
        value: The offered entry (a JSON object whose ``at`` is ``at``).
        at: When the offered entry was true, in epoch seconds.
        now: The writer's clock, in epoch seconds: no stored ``at`` counts as later.

    Returns:
        The stored entry when it is newer and stays (else None: ``value`` is in force),
        and whether ``value`` must be written.
    """
    if stored is None:
        return None, True
    if stored == value:
        return None, False
    kept_at = stored_at(stored)
    if kept_at is not None and min(kept_at, now) > at:
        return stored, False
    return None, True


KEEP_NEWER_SCRIPT: Final = """
-- keep_newer_entry in Lua, run by Redis as one atomic step.
-- KEYS[1]: the entry. ARGV[1]: the offered entry (a JSON object with "at"), ARGV[2]: its
-- "at" (epoch seconds, as Python's repr writes a float), ARGV[3]: the TTL in milliseconds,
-- ARGV[4]: the writer's clock (epoch seconds, as ARGV[2]): a stored "at" past it counts as it.
-- Returns the stored entry when it is newer and stays, else '' (the offered one is in force).
local stored = redis.call('GET', KEYS[1])
if stored == ARGV[1] then
  return ''
end
if stored then
  local ok, entry = pcall(cjson.decode, stored)
  if ok and type(entry) == 'table' and type(entry['at']) == 'number'
      and math.min(entry['at'], tonumber(ARGV[4])) > tonumber(ARGV[2]) then
    return stored
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return ''
"""
"""``keep_newer_entry`` as a Redis script (Redis ships the ``cjson`` library to Lua)."""


def script_arguments(value: bytes, at: float, ttl: float, now: float) -> list[bytes | str | int]:
    """``KEEP_NEWER_SCRIPT``'s ARGV: the entry, its ``at`` exactly, the TTL in ms, ``now``.

    ``repr`` writes the shortest decimal that reads back as the same float, so Lua's
    ``tonumber`` compares exactly the instants Python compares.
    """
    return [value, repr(float(at)), expiry_ms(ttl), repr(float(now))]
