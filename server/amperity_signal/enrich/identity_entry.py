"""One identity-map entry: its stored form and the merge rule, in Python and in Lua.

An entry is a JSON object of identifier fields (``email:sha256`` → digest, ``user_id`` →
id) plus ``RENEW_AFTER``, the wall-clock time after which less than half its TTL remains.
Merging what an event teaches into it is a read-modify-write, so each store runs it where
no other merge can interleave: the memory store in Python without yielding to the event
loop (``merge_entry``), Redis as one Lua script (``MERGE_SCRIPT``), which Redis runs
atomically. Both follow the same rule, pinned by one test against both stores:

1. The event's fields win. When one differs from the remembered value (another user on
   the same browser, or a new email) the remembered fields are all dropped.
2. The entry is written when the fields changed, or when it is due for renewal (past
   ``RENEW_AFTER``, or without one: an older release's entry) and has fields; a write
   gives it a full TTL and a new ``RENEW_AFTER`` of now + TTL/2.

The stored form is the one earlier releases wrote with GET and SET, so their entries are
read as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import orjson

from amperity_signal.enrich.expiry import expiry_ms
from amperity_signal.limits import MAX_TTL_SECONDS

RENEW_AFTER: Final = "~renew_after"
"""The entry's field holding when a use should rewrite it (epoch seconds).

No identifier field can take this name: they are named after linking-key sources.
"""


class IdentityMerge(NamedTuple):
    """What a merge left in the entry (a NamedTuple: one is built per event, cheaply).

    Attributes:
        fields: The visitor's identifier fields after the merge.
        changed: Whether the fields differ from those stored before.
        found: Whether an entry was stored before (a cache hit, for the metrics).
    """

    fields: dict[str, str]
    changed: bool
    found: bool

    @classmethod
    def unstored(cls, learned: Mapping[str, str]) -> IdentityMerge:
        """The answer while the store is unreachable: the event's fields, as for a miss."""
        return cls(dict(learned), bool(learned), found=False)


def read_entry(stored: Any) -> tuple[dict[str, str], float | None]:
    """The fields of a decoded entry, and its renewal time (None: due now).

    Anything but a JSON object reads as no fields. An object without a renewal time was
    written before renewals existed: it is due at its next use.
    """
    if not isinstance(stored, dict):
        return {}, None
    renew_after = stored.pop(RENEW_AFTER, None)
    fields = {str(name): str(value) for name, value in stored.items()}
    if isinstance(renew_after, bool) or not isinstance(renew_after, int | float):
        return fields, None
    return fields, float(renew_after)


def is_due(renew_after: float | None, now: float) -> bool:
    """Whether an entry with this renewal time (see ``read_entry``) is due at ``now``."""
    return renew_after is None or now >= renew_after


def decode_entry(stored: bytes | None) -> Any:
    """A stored entry's JSON, or None when absent or not JSON (then it is overwritten)."""
    if stored is None:
        return None
    try:
        return orjson.loads(stored)
    except orjson.JSONDecodeError:
        return None


def merge_entry(
    stored: bytes | None, learned: Mapping[str, str], *, now: float, ttl: float
) -> tuple[IdentityMerge, bytes | None]:
    """Merge ``learned`` into a stored entry: the memory store's merge, ``MERGE_SCRIPT``'s twin.

    Args:
        stored: The stored entry's bytes, or None.
        learned: The fields an event teaches (may be empty: a renewal only).
        now: Wall-clock epoch seconds.
        ttl: The (jittered) TTL a write gives the entry.

    Returns:
        The merge, and the entry to store for ``ttl`` seconds (None: nothing to write).
    """
    current, renew_after = read_entry(decode_entry(stored))
    someone_else = any(current.get(name, value) != value for name, value in learned.items())
    merged = dict(learned) if someone_else else {**current, **learned}
    changed = merged != current
    result = IdentityMerge(merged, changed, found=stored is not None)
    if changed or (merged and is_due(renew_after, now)):
        return result, orjson.dumps({**merged, RENEW_AFTER: now + ttl / 2})
    return result, None


MERGE_SCRIPT: Final = """
-- merge_entry in Lua, run by Redis as one atomic step.
-- KEYS[1]: the entry. ARGV[1]: JSON [now (epoch s), the TTL a write gives (s), the same
-- TTL in whole milliseconds, {learned name: value}] (one argument packs faster than many).
-- Returns one string (a single reply parses faster than an array): '1' or '0' for changed,
-- '1' or '0' for found, then the entry written, else the one stored ('' when none).
local request = cjson.decode(ARGV[1])
local now, ttl, ttl_ms, learned = request[1], request[2], request[3], request[4]
local stored = redis.call('GET', KEYS[1])
local current = {}
local due = true
if stored then
  local ok, entry = pcall(cjson.decode, stored)
  if ok and type(entry) == 'table' then
    local renew_after = entry['~renew_after']
    entry['~renew_after'] = nil
    for name, value in pairs(entry) do
      if type(name) == 'string' and (type(value) == 'string' or type(value) == 'number') then
        current[name] = tostring(value)
      end
    end
    due = type(renew_after) ~= 'number' or now >= renew_after
  end
end
local someone_else = false
for name, value in pairs(learned) do
  if current[name] ~= nil and current[name] ~= value then
    someone_else = true
  end
end
local merged = {}
if not someone_else then
  for name, value in pairs(current) do merged[name] = value end
end
for name, value in pairs(learned) do merged[name] = value end
local changed = false
for name, value in pairs(merged) do
  if current[name] ~= value then changed = true end
end
for name in pairs(current) do
  if merged[name] == nil then changed = true end
end
local found = stored and '1' or '0'
if changed or (due and next(merged) ~= nil) then
  merged['~renew_after'] = now + ttl / 2
  local written = cjson.encode(merged)
  redis.call('SET', KEYS[1], written, 'PX', ttl_ms)
  return (changed and '1' or '0') .. found .. written
end
return '0' .. found .. (stored or '')
"""
"""``merge_entry`` as a Redis script (Redis ships the ``cjson`` library to Lua)."""


def script_arguments(learned: Mapping[str, str], *, now: float, ttl: float) -> list[bytes]:
    """``MERGE_SCRIPT``'s ARGV for a merge of ``learned`` at ``now`` with a write TTL.

    A TTL past ``MAX_TTL_SECONDS`` goes as that: JSON has no ``inf`` (orjson writes null,
    which the script cannot halve), and the expiry is capped there anyway.
    """
    sent = ttl if ttl < MAX_TTL_SECONDS else MAX_TTL_SECONDS
    return [orjson.dumps([now, sent, expiry_ms(ttl), dict(learned)])]


def script_result(reply: bytes) -> IdentityMerge:
    """``MERGE_SCRIPT``'s reply (changed flag, found flag, entry) as an ``IdentityMerge``."""
    fields, _ = read_entry(decode_entry(reply[2:] or None))
    return IdentityMerge(fields, reply[:1] == b"1", found=reply[1:2] == b"1")
