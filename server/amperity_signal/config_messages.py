"""pydantic's validation errors, said in the words of the TOML file, each with its fix.

pydantic describes its own types ("a valid tuple", "instance of LinkingKey"); the person
editing the file needs the TOML shape (an array, a table) and, for the fields with a
structure of their own (linking keys, allowlists, context mappings), an example to copy.
Values are never quoted back: only their TOML type, so no secret can end up in a message.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from amperity_signal.blueprint.spec import HANDLER_NAME_PATTERN
from amperity_signal.config_values import closest, did_you_mean, holds_key
from amperity_signal.errors import ConfigProblem
from amperity_signal.limits import (
    INTEGRATION_ID_RULE,
    MAX_GATEWAY_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_TTL_SECONDS,
    MAX_WAIT_SECONDS,
    PIPELINE_KEY_RULE,
)

MISSING_FIX = "add it; see the Configuration table of the integration guide."
UNKNOWN_FIX = "remove it, or check its spelling against the Configuration table."

_TOML_TYPES = {
    datetime: "a date-time",
    date: "a date",
    time: "a time",
    bool: "true or false",
    int: "a number",
    float: "a decimal number",
    str: "a string",
    list: "an array",
    dict: "a table",
}

# What each kind of value must be, by pydantic error type.
_SHAPES = {
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "tuple_type": "an array",
    "list_type": "an array",
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}

_SHAPE_FIXES = {
    "a table": "write it as a table of key = value settings.",
    "an array": 'write it as an array, e.g. ["a", "b"].',
    "a string": 'write it in double quotes, e.g. "value".',
    "a whole number": "write a whole number without quotes, e.g. {example}.",
    "a number": "write a number without quotes, e.g. {example}.",
    "true or false": "write true or false, without quotes, e.g. {field} = true.",
}

# The mistakes whose description needs nothing from the error.
_PLAIN = {
    "finite_number": ("must be a finite number, not inf or nan.", "write a number, e.g. 10."),
    "string_too_short": ("must not be empty.", "set a value."),
    "string_pattern_mismatch": (
        "has characters that are not allowed.",
        "use only the allowed characters.",
    ),
}

_LINKING_KEY = '{"source": "email", "key": "email_sha256", "hash": "sha256"}'
_CONTEXT_MAPPING = '{"source": "properties.category", "target": "pageCategory"}'
_BLUEPRINT_TARGET_FIX = (
    "it is a key of the flat JSON payload sent to Amperity: use letters, digits and _, not "
    "starting with a digit, e.g. page_url; not source, type or consent, which the blueprint "
    "engine writes itself."
)

# Fixes for the fields whose value has a structure of its own, by the field's name.
_FIELD_FIXES = {
    "server": "write a [server] table: the line [server], then key = value settings.",
    "cache": "write a [cache] table: the line [cache], then key = value settings.",
    "gateway": "write a [gateway] table: the line [gateway], then key = value settings.",
    "integrations[]": "write each integration as an [[integrations]] table.",
    "linking_keys": (
        f"write a JSON array of linking keys, e.g. '[{_LINKING_KEY}]' (as text or as a "
        "TOML array of tables); see Linking keys in the integration guide."
    ),
    "linking_keys[]": f"write each linking key as an object, e.g. {_LINKING_KEY}.",
    "personalisation_context_mappings": (
        f"write a JSON array of source/target pairs, e.g. '[{_CONTEXT_MAPPING}]' (as text "
        "or as a TOML array of tables)."
    ),
    "personalisation_context_mappings[]": (
        f"write each mapping as an object, e.g. {_CONTEXT_MAPPING}."
    ),
    # A personalisation target is a query parameter name; a blueprint target is a key of
    # the flat payload: one field name, two rules, so these are keyed by their array too.
    "personalisation_context_mappings[].target": (
        "it is sent as a query parameter name: use letters, digits and _, not starting with "
        "a digit, at most 64 characters, e.g. pageCategory."
    ),
    "global_mappings[].target": _BLUEPRINT_TARGET_FIX,
    "mappings[].target": _BLUEPRINT_TARGET_FIX,
    "integrations[].id": (
        f'use {INTEGRATION_ID_RULE}, e.g. id = "acme-web": the id names the integration in '
        "calls (integration_id), metric labels, log lines and Live Events URLs."
    ),
    "pipeline_key": (
        f"use a key of {PIPELINE_KEY_RULE} (e.g. pk_live_acme_web), the one your pages and "
        "callers send; if it was pasted, copy it again from Datafly."
    ),
    "admin_token": (
        "set a long random token of visible ASCII, e.g. the output of `openssl rand -hex 16`; "
        "if it was pasted, copy it again without spaces or line breaks."
    ),
    "browser_attribute_allowlist": (
        'write the attribute names as CSV, e.g. "Persona,LifetimeTier", or as an array of '
        'strings, e.g. ["Persona", "LifetimeTier"].'
    ),
    "allowed_origins": (
        'write the origins as an array, e.g. ["https://shop.example.com"], or as CSV.'
    ),
    "rate_limit_ipv6_prefix": (
        "write a prefix length from 48 to 128, e.g. 64: every address of one IPv6 /64 (the "
        "network one subscriber is given) shares one limit; 128 limits each address alone."
    ),
    "trusted_proxies": 'write an array of addresses or networks, e.g. ["10.0.0.0/8"].',
    "default": 'write one value, e.g. default = "unknown" or default = 0.',
    "blueprint": ("write an [integrations.blueprint] table of overrides; see docs/blueprint.md."),
}


_MIB = 1024 * 1024
_GATEWAY_BODY_CEILING = (
    f"{MAX_GATEWAY_BODY_BYTES // _MIB} MiB at most: the gateway's gRPC message limit to the "
    "service is 4 times max_batch_body_bytes, which gRPC takes as a 32-bit integer, and a "
    "body is read into memory whole"
)

_TTL_CEILING = (
    f"{MAX_TTL_SECONDS // (365 * 86_400)} years at most, in seconds: a longer TTL is in "
    "effect forever, and Redis refuses an expiry past its integer range, which fails every "
    "cache write"
)
_WAIT_CEILING = f"{MAX_WAIT_SECONDS // 60} minutes at most: a longer wait is in effect no limit"
_DEADLINE_CEILING = (
    f"{_WAIT_CEILING}, and a gRPC deadline far past it wraps around and fails every call at once"
)
_TTLS = ("resolution", "attribute", "personalized", "not_found", "error", "identity", "stale")

# Why a field's ceiling is where it is, by its table and name (rate_limit_per_second is a
# field of [gateway] and of [[integrations]], with two ranges). Told with the range when
# a value is out of it.
_LIMIT_REASONS = {
    "server.max_message_bytes": (
        f"{MAX_MESSAGE_BYTES // _MIB} MiB at most: gRPC's own receive limit is 4 times this, "
        "and gRPC takes it as a 32-bit integer; an event is a few KiB"
    ),
    "gateway.max_body_bytes": _GATEWAY_BODY_CEILING,
    "gateway.max_batch_body_bytes": _GATEWAY_BODY_CEILING,
    "gateway.max_header_bytes": (
        f"{MAX_HEADER_BYTES // _MIB} MiB at most: the HTTP parser buffers up to 4 times this "
        "of every connection's request head"
    ),
    "gateway.live_replay": "the most a Live Events page may ask for with ?replay=",
    **{f"cache.{name}_ttl": _TTL_CEILING for name in _TTLS},
    "server.grace_period": _WAIT_CEILING,
    "cache.breaker_cooldown": _WAIT_CEILING,
    "gateway.rpc_timeout": _DEADLINE_CEILING,
    "gateway.deliver_timeout": _DEADLINE_CEILING,
    "gateway.request_read_timeout": _WAIT_CEILING,
    "integrations.request_timeout": _WAIT_CEILING,
}


def translate(
    exc: ValidationError, reported: set[str], root: type[BaseModel]
) -> list[ConfigProblem]:
    """Turn pydantic's errors into problems with fixes, skipping locations already reported.

    ``root`` is the model the file was validated as: an unknown key is told the known one
    it is closest to, from the table it is in.
    """
    problems = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if loc and loc[-1] == "[key]":  # a table's key is at fault, not its value
            location = _location(loc[:-1])
            if location not in reported:
                problems.append(ConfigProblem(location, *_name_problem(error)))
            continue
        location = _location(loc)
        if location in reported:
            continue
        if location.endswith((".source", ".hash")) and ".linking_keys[" in location:
            continue  # already reported with the allowed values by _check_linking_keys
        if location.endswith(".vertical"):
            continue
        kind = error["type"]
        if kind == "missing":
            problems.append(ConfigProblem(location, "is required.", MISSING_FIX))
        elif kind == "extra_forbidden":
            problems.append(
                ConfigProblem(location, "is not a known field.", _unknown_fix(root, error["loc"]))
            )
        elif kind in _BOUNDS:
            field_fix = _field_fix(error["loc"])
            problem, fix = _out_of_range(kind, error, _field_info(root, error["loc"]))
            problems.append(ConfigProblem(location, problem, field_fix or fix))
        else:
            problem, fix = _describe(
                kind,
                error,
                _field(error["loc"]).removesuffix("[]"),
                _field_info(root, error["loc"]),
            )
            field_fix = _field_fix(error["loc"])
            problems.append(ConfigProblem(location, problem, field_fix or fix))
    return problems


# pydantic's error type for a value past a bound: its words, and its context's key.
_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("greater than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}


def _out_of_range(kind: str, error: Any, field: FieldInfo | None) -> tuple[str, str]:
    """A value past a bound: the bound it broke, the whole range, and why the ceiling is there.

    The fix offers the default, which is always within the range.
    """
    words, key = _BOUNDS[kind]
    problem = f"must be {words} {_number((error.get('ctx') or {}).get(key))}"
    allowed = _allowed_range(field) if field is not None else None
    if allowed is not None:
        problem += f"; the allowed range is {allowed}"
    reason = _LIMIT_REASONS.get(".".join(p for p in error["loc"] if isinstance(p, str)))
    fix = f"set a value within that {'range' if allowed else 'limit'}"
    fix += f" ({reason})" if reason else ""
    default = field.default if field is not None else None
    if isinstance(default, int | float) and not isinstance(default, bool):
        return f"{problem}.", f"{fix}, or remove the line to use the default ({default})."
    return f"{problem}.", f"{fix}, or remove the line to use the default."


def _number(value: Any) -> Any:
    """A bound as written in the field: ``3600``, not the ``3600.0`` of a float field."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _allowed_range(field: FieldInfo) -> str | None:
    """``65536 to 268435456``, or ``more than 0, up to 60``: both bounds; None without both."""
    lowest = highest = None
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Ge):
            lowest = f"{_number(bound.ge)}"
        elif isinstance(bound, annotated_types.Gt):
            lowest = f"more than {_number(bound.gt)},"
        elif isinstance(bound, annotated_types.Le):
            highest = f"{_number(bound.le)}"
        elif isinstance(bound, annotated_types.Lt):
            highest = f"less than {_number(bound.lt)}"
    if lowest is None or highest is None:
        return None
    return f"{lowest} {'up ' if lowest.endswith(',') else ''}to {highest}"


def _name_problem(error: Any) -> tuple[str, str]:
    """What is wrong with a table's key (a handler's name), and how to name it."""
    if (error.get("ctx") or {}).get("pattern") == HANDLER_NAME_PATTERN:
        return (
            "is not a handler name: a name has lowercase letters, digits and _, and starts "
            "with a letter.",
            "rename the table, e.g. [integrations.blueprint.handlers.add_to_wishlist].",
        )
    return _describe(error["type"], error, "name")


def _unknown_fix(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The fix for an unknown key: the known field of its table it is a slip from, if any."""
    key = loc[-1]
    if not isinstance(key, str) or holds_key(key):
        return UNKNOWN_FIX
    close = closest(key, tuple(_fields_at(root, loc[:-1])))
    return f"did you mean {close}? If not, {UNKNOWN_FIX}" if close else UNKNOWN_FIX


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the table at ``loc`` under ``model`` (none if it is no model)."""
    table = _model_at(model, loc)
    if table is None:
        return []
    return [field.alias or name for name, field in table.model_fields.items()]


def _field_info(model: type[BaseModel], loc: tuple[int | str, ...]) -> FieldInfo | None:
    """The field at ``loc`` under ``model`` (its bounds and default), if it is one."""
    if not loc or not isinstance(loc[-1], str):
        return None
    table = _model_at(model, loc[:-1])
    return None if table is None else table.model_fields.get(loc[-1])


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model of the table at ``loc`` under ``model``, or None if it is no model."""
    for part in loc:
        if isinstance(part, int):
            continue  # an item of an array of tables: its type was taken with the array's
        field = model.model_fields.get(part)
        if field is None:
            return None
        kind = field.annotation
        if get_origin(kind) in (tuple, list):
            kind = get_args(kind)[0]
        if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
            return None
        model = kind
    return model


def _describe(kind: str, error: Any, field: str, info: FieldInfo | None = None) -> tuple[str, str]:
    """What is wrong with the value and the generic fix for its kind of mistake.

    A true or false wanted gets the field's own line as the example to copy, and so does a
    number with a default of its own (``info``): ``workers = 1``, never the value given.
    """
    context = error.get("ctx") or {}
    if kind in _SHAPES:
        shape = _SHAPES[kind]
        given = _TOML_TYPES.get(type(error.get("input")), "something else")
        if given == shape or kind in ("int_from_float", "int_parsing", "float_parsing"):
            given = "that value"
        fix = _SHAPE_FIXES[shape].format(field=field, example=_number_example(shape, field, info))
        return f"must be {shape}, not {given}.", fix
    if kind in _BOUNDS:
        return _out_of_range(kind, error, None)
    if kind == "literal_error":
        expected = tuple(re.findall(r"'([^']*)'", str(context.get("expected", ""))))
        guess = did_you_mean(error.get("input"), expected)
        return f"must be {context.get('expected')}.", f"{guess}use one of those values."
    if kind in _PLAIN:
        return _PLAIN[kind]
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{message.rstrip('.')}.", "correct the value as the message says."


def _number_example(shape: str, field: str, info: FieldInfo | None) -> str:
    """The line to copy for a number field: ``grace_period = 10``, its default, if it has one.

    Without one, a plain number (which the field's range may yet refuse).
    """
    default = info.default if info is not None else None
    if isinstance(default, int | float) and not isinstance(default, bool):
        return f"{field} = {_number(default)}"
    return "10" if shape == "a whole number" else "10 or 2.5"


def _field_fix(loc: tuple[int | str, ...]) -> str | None:
    """The fix written for the field at ``loc``, if any.

    A field of an array's item is looked up by its array and name first
    (``mappings[].target``), then by its name alone.
    """
    names = [part for part in loc if isinstance(part, str)]
    if len(loc) >= 2 and isinstance(loc[-2], int) and isinstance(loc[-1], str) and len(names) > 1:
        fix = _FIELD_FIXES.get(f"{names[-2]}[].{names[-1]}")
        if fix is not None:
            return fix
    return _FIELD_FIXES.get(_field(loc))


def _field(loc: tuple[int | str, ...]) -> str:
    """The name a fix is looked up by: the last name, with ``[]`` when an item is at fault."""
    names = [part for part in loc if isinstance(part, str)]
    if not names:
        return ""
    return names[-1] + ("[]" if isinstance(loc[-1], int) else "")


def _location(loc: tuple[int | str, ...]) -> str:
    """Where the error is, in the file's words; a key name shaped like an API key is described.

    An unknown field is named by its key, and a key pasted where a name goes is still a key.
    """
    text = ""
    for part in loc:
        name = "<a name shaped like an API key>" if holds_key(part) else str(part)
        text += f"[{part}]" if isinstance(part, int) else (f".{name}" if text else name)
    return text
