"""Configuration checks that name the fix: the spec's troubleshooting advice, before start.

These run on the raw TOML (after ``env:`` secrets are resolved), independently of pydantic's
type checks, so that one run reports every mistake at once rather than the first.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from amperity_signal.blueprint.loader import VERTICALS
from amperity_signal.blueprint.paths import EVENT_ROOTS, root_advice
from amperity_signal.config_values import (
    check_cache,
    check_integration_values,
    check_server,
    closest,
    did_you_mean,
    holds_configured_secret,
    holds_key,
    quoted,
)
from amperity_signal.errors import ConfigProblem
from amperity_signal.listener_tls import check_tls
from amperity_signal.logs import SCRUB_MIN_LENGTH

LINKING_SOURCES = ("canonical_id", "anonymous_id", "user_id", "email", "phone")
HASHES = ("sha256", "sha256_upper")
SECRET_FIELDS = ("api_key", "profile_api_key", "admin_token")
# The fields that may be written as env:NAME, by table: the secrets. redis_url is one: it
# carries the Redis password (redis://:PASSWORD@host), which has no place in a
# configuration file; pipeline_key another, as it lets its holder send events in.
ENV_FIELDS = {
    "server": ("admin_token",),
    "cache": ("redis_url",),
    "integrations": ("api_key", "profile_api_key", "pipeline_key"),
}
ENV_EXAMPLES = {
    "api_key": "AMPERITY_INGEST_KEY",
    "profile_api_key": "AMPERITY_PROFILE_KEY",
    "pipeline_key": "AMPERITY_SIGNAL_PIPELINE_KEY",
    "admin_token": "AMPERITY_SIGNAL_ADMIN_TOKEN",
    "redis_url": "AMPERITY_SIGNAL_REDIS_URL",
}
# What the variable holds, for "export NAME with ...": a key, unless named here.
ENV_VALUES = {
    "admin_token": "the token",
    "redis_url": "the Redis URL",
    "pipeline_key": "the pipeline key",
}
# How each table is written in the file, for messages naming a field by its table.
TABLE_HEADINGS = {
    "server": "[server]",
    "cache": "[cache]",
    "gateway": "[gateway]",
    "integrations": "[[integrations]]",
}
ENV_CAPABLE = "; ".join(
    f"{TABLE_HEADINGS[table]} {', '.join(names)}" for table, names in ENV_FIELDS.items()
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STREAM_ID = re.compile(r"esm-[A-Za-z0-9_-]+")
COLLECTION_ID = re.compile(r"apc-[A-Za-z0-9_-]+")
SUBDOMAIN = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
MINIMAL_INTEGRATION = "\n".join(
    f"      {line}"
    for line in (
        "[[integrations]]",
        'id = "web"',
        'pipeline_key = "pk_web"',
        'tenant_subdomain = "acme"',
        'tenant_id = "acme"',
        'api_key = "env:AMPERITY_INGEST_KEY"',
        'event_stream_id = "esm-..."',
        'source_value = "DATAFLY"',
    )
)


def configured_secrets(raw: dict[str, Any]) -> list[str]:
    """The keys and tokens a configuration sets: what no problem of it may quote back."""
    server = raw.get("server")
    integrations = raw.get("integrations")
    tables = [server, *(integrations if isinstance(integrations, list) else ())]
    names = (*SECRET_FIELDS, "pipeline_key")
    return [
        value
        for table in tables
        if isinstance(table, dict)
        for name in names
        if isinstance(value := table.get(name), str)
    ]


def resolve_secrets(
    raw: dict[str, Any],
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
    known: Mapping[str, Collection[str]],
) -> dict[str, Any]:
    """Return a copy of ``raw`` with every ``env:NAME`` secret replaced by its value.

    ``known``: each table's field names. A known field that does not take ``env:``
    (``tenant_id = "env:TENANT"``) is refused rather than taken as the text itself, and
    dropped, so that no other check reports it again; an unknown one is pydantic's to name.
    """
    resolved = copy.deepcopy(raw)
    tables = [(section, section, resolved.get(section)) for section in ("server", "cache")]
    tables.append(("gateway", "gateway", resolved.get("gateway")))
    integrations = resolved.get("integrations")
    if isinstance(integrations, list):
        tables += [(f"integrations[{i}]", "integrations", t) for i, t in enumerate(integrations)]
    for where, section, table in tables:
        if not isinstance(table, dict):
            continue
        for name in ENV_FIELDS.get(section, ()):
            _resolve(f"{where}.{name}", name, table, environ, problems)
        for name in [n for n in known.get(section, ()) if n not in ENV_FIELDS.get(section, ())]:
            if (at := _env_reference(table.get(name))) is not None:
                table.pop(name)
                problems.append(_not_from_environment(f"{where}.{name}{at}", name))
    return resolved


def _env_reference(value: Any) -> str | None:
    """Where ``value`` is written ``env:...``: "" for the value, "[i]" for an item; else None."""
    if isinstance(value, str):
        return "" if value.startswith("env:") else None
    if isinstance(value, list):
        return next(
            (
                f"[{i}]"
                for i, item in enumerate(value)
                if isinstance(item, str) and item.startswith("env:")
            ),
            None,
        )
    return None


def _not_from_environment(location: str, name: str) -> ConfigProblem:
    """A field other than a secret written ``env:NAME``: it would be taken as that text."""
    return ConfigProblem(
        location,
        f"starts with env:, but {name} is not read from the environment, so it would be "
        f"taken as the text itself. Only the secrets are: {ENV_CAPABLE}.",
        f"write the value itself here: {name} is not a secret, so the file may hold it.",
    )


def _resolve(
    location: str,
    name: str,
    table: dict[str, Any],
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> None:
    """Replace ``table[name]``, if written ``env:NAME``, by the variable's value (or drop it)."""
    value = table.get(name)
    if not (isinstance(value, str) and value.startswith("env:")):
        return
    variable = value[4:]
    if environ.get(variable) and ENV_NAME.fullmatch(variable):
        table[name] = environ[variable]
        return
    table.pop(name)
    if not ENV_NAME.fullmatch(variable):
        problems.append(
            ConfigProblem(
                location,
                "starts with env: but no environment variable name follows it "
                "(letters, digits and _, not starting with a digit).",
                f'write env:NAME, e.g. {name} = "env:{ENV_EXAMPLES[name]}", or '
                "write the value inline.",
            )
        )
        return
    state = "is empty" if variable in environ else "is not set"
    problems.append(
        ConfigProblem(
            location,
            f"refers to environment variable {variable}, which {state}.",
            f"export {variable} with {ENV_VALUES.get(name, 'the key')} before starting, or "
            "write the value inline.",
        )
    )


def check_raw(raw: dict[str, Any], reported: frozenset[str] = frozenset()) -> list[ConfigProblem]:
    """Every semantic problem of the configuration, each with its fix.

    ``reported``: the locations already refused (an ``env:NAME`` that is not set), whose
    consequences are not refused again.
    """
    problems = check_server(raw.get("server")) + check_cache(raw.get("cache"))
    problems += check_tls("server", raw.get("server")) + check_tls("gateway", raw.get("gateway"))
    problems.extend(_check_blank_secrets("server", raw.get("server"), ("admin_token",)))
    problems.extend(_check_short_secrets("server", raw.get("server"), ("admin_token",)))
    integrations = raw.get("integrations", [])
    if not isinstance(integrations, list):
        return [
            *problems,
            ConfigProblem(
                "integrations",
                "must be an array of tables.",
                "write each integration as an [[integrations]] table.",
            ),
        ]
    if not integrations:
        problems.append(
            ConfigProblem(
                "integrations",
                "is empty: without an [[integrations]] table there is nothing to deliver "
                "events to, and every call would answer that the integration is unknown.",
                f"add one per Amperity integration; the smallest is:\n{MINIMAL_INTEGRATION}",
            )
        )
    seen: dict[str, dict[str, int]] = {"id": {}, "pipeline_key": {}}
    rates: dict[str, tuple[int, Any]] = {}
    for index, table in enumerate(integrations):
        if isinstance(table, dict):
            problems.extend(_check_integration(f"integrations[{index}]", table, reported))
            problems.extend(_check_unique(index, table, seen))
            problems.extend(_check_tenant_rate(index, table, rates))
    return problems


def _check_tenant_rate(
    index: int, table: dict[str, Any], rates: dict[str, tuple[int, Any]]
) -> list[ConfigProblem]:
    """Integrations of one tenant share Amperity's limit, so they must agree on its rate."""
    tenant = table.get("tenant_id")
    if not isinstance(tenant, str) or not tenant:
        return []
    rate = table.get("rate_limit_per_second", 500)
    first, first_rate = rates.setdefault(tenant, (index, rate))
    # `first == index`: nan is not equal to itself, and the field check already refuses it.
    if first == index or first_rate == rate:
        return []
    return [
        ConfigProblem(
            f"integrations[{index}].rate_limit_per_second",
            f"is {quoted(rate)} but integrations[{first}], on the same tenant {quoted(tenant)}, "
            f"uses {quoted(first_rate)}; Amperity's limit is one per tenant, shared by both.",
            "set the same rate_limit_per_second on every integration of a tenant.",
        )
    ]


def _check_unique(
    index: int, table: dict[str, Any], seen: dict[str, dict[str, int]]
) -> list[ConfigProblem]:
    problems = []
    for field in ("id", "pipeline_key"):
        value = table.get(field)
        if not isinstance(value, str) or not value:
            continue
        if value in seen[field]:
            # A pipeline key is only ever named, never quoted (as the service's errors do).
            shown = "the same value" if field == "pipeline_key" else quoted(value)
            problems.append(
                ConfigProblem(
                    f"integrations[{index}].{field}",
                    f"{shown} is also used by integrations[{seen[field][value]}].",
                    f"give every integration its own {field}.",
                )
            )
        else:
            seen[field][value] = index
    return problems


def _check_integration(
    where: str, table: dict[str, Any], reported: frozenset[str]
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []

    def add(field: str, problem: str, fix: str) -> None:
        problems.append(ConfigProblem(f"{where}.{field}", problem, fix))

    vertical = table.get("vertical", "retail")
    if vertical not in VERTICALS:
        add(
            "vertical",
            f"{quoted(vertical)} is not a vertical preset.",
            f"{did_you_mean(vertical, VERTICALS)}use one of {_list(VERTICALS)}.",
        )
    blueprint = table.get("blueprint")
    if isinstance(blueprint, str):
        # A preset's name where a table of overrides goes: the preset is picked by vertical.
        guess = closest(blueprint, VERTICALS)
        add(
            "blueprint",
            "must be a table of overrides, not a string.",
            (f'to use the {guess} preset, write vertical = "{guess}" instead; ' if guess else "")
            + "overrides go in an [integrations.blueprint] table (docs/blueprint.md).",
        )
    stream = table.get("event_stream_id")
    if isinstance(stream, str) and stream.startswith("is-"):
        add(
            "event_stream_id",
            f"{quoted(stream)} is a batch ingest stream (is-): it accepts events but does not "
            "update profiles in real time.",
            "use the realtime esm- stream id from Sources > Streams in Amperity.",
        )
    elif isinstance(stream, str) and not STREAM_ID.fullmatch(stream):
        add(
            "event_stream_id",
            f"{quoted(stream)} is not a realtime stream id: esm- followed by letters, digits, "
            "- or _.",
            "use the realtime esm- stream id from Sources > Streams in Amperity.",
        )
    source_value = table.get("source_value")
    if isinstance(source_value, str) and not source_value.strip():
        add(
            "source_value",
            "is empty, so no event would match your stream's routing expression "
            "(they would be accepted with 202 but silently routed to _unknown).",
            "set it to the exact, case-sensitive value your stream routes on, e.g. DATAFLY.",
        )
    subdomain = table.get("tenant_subdomain")
    if isinstance(subdomain, str) and not SUBDOMAIN.fullmatch(subdomain):
        add(
            "tenant_subdomain",
            f"{quoted(subdomain)} is not a subdomain: one DNS label of letters, digits and hyphens "
            "(not first or last), at most 63 characters.",
            "use the subdomain portion of your Amperity dashboard URL "
            "(acme for https://acme.amperity.com), not the Amperity-Tenant value or a URL.",
        )
    problems.extend(_check_blank_secrets(where, table, ("api_key", "profile_api_key")))
    problems.extend(_check_short_secrets(where, table, ("api_key", "profile_api_key")))
    problems.extend(_check_keys_out_of_place(where, table))
    problems.extend(_check_header_values(where, table))
    problems.extend(_check_profile(where, table, reported | {p.location for p in problems}))
    problems.extend(check_integration_values(where, table))
    problems.extend(_check_linking_keys(where, table.get("linking_keys")))
    problems.extend(_check_context_targets(where, table.get("personalisation_context_mappings")))
    problems.extend(
        _check_context_sources(
            where, table.get("personalisation_context_mappings"), table.get("id")
        )
    )
    return problems


# Fields whose values are sent in the clear (headers, URLs), shown in responses, Live Events
# and error messages, or handed to browsers (pipeline_key): never a place for an API key.
PLAIN_FIELDS = (
    "id",
    "pipeline_key",
    "tenant_subdomain",
    "tenant_id",
    "event_stream_id",
    "source_value",
    "profile_collection_id",
    "api_base_url",
)


_SHOWN_IN_CLEAR = (
    "this field is not secret: its value is sent in headers or URLs and shown in "
    "responses, Live Events and logs."
)


def _check_keys_out_of_place(where: str, table: dict[str, Any]) -> list[ConfigProblem]:
    """A key pasted into a field that is not secret would be sent and shown in the clear.

    An API key is known by its look (a JWT); a pipeline key or the admin token by being
    one this configuration sets (``unquotable``): a pipeline key in tenant_id would go to
    Amperity in every request's Amperity-Tenant header.
    """
    problems = []
    for name in PLAIN_FIELDS:
        value = table.get(name)
        if holds_key(value):
            problems.append(
                ConfigProblem(
                    f"{where}.{name}",
                    f"holds an API key (a JWT); {_SHOWN_IN_CLEAR}",
                    f"write the {name} itself here, and put the key in api_key (Streaming "
                    "Ingest) or profile_api_key (Profile API); then regenerate that key in "
                    "Amperity if this configuration was shared.",
                )
            )
        elif name != "pipeline_key" and holds_configured_secret(value):
            problems.append(
                ConfigProblem(
                    f"{where}.{name}",
                    "holds a pipeline key or token this configuration sets for another "
                    f"field; {_SHOWN_IN_CLEAR}",
                    f"write the {name} itself here (a pasted value may have landed in the "
                    "wrong field); keep pipeline keys in pipeline_key.",
                )
            )
    return problems


HEADER_FIELDS = {
    "tenant_id": "the Amperity-Tenant header",
    "api_key": "the Authorization header of every event POST",
    "profile_api_key": "the Authorization header of every Profile API call",
}


def _check_header_values(where: str, table: dict[str, Any]) -> list[ConfigProblem]:
    """Values sent as HTTP headers must be visible ASCII: anything else cannot be sent.

    Secrets are described, never quoted.
    """
    problems: list[ConfigProblem] = []
    for name, header in HEADER_FIELDS.items():
        value = table.get(name)
        if name in SECRET_FIELDS and isinstance(value, str) and not value.strip():
            continue  # reported as blank by _check_blank_secrets
        if isinstance(value, str) and value and not _visible_ascii(value):
            shown = "the value" if name in SECRET_FIELDS else quoted(value)
            problems.append(
                ConfigProblem(
                    f"{where}.{name}",
                    f"{shown} holds spaces, control or non-ASCII characters, which "
                    f"{header} cannot carry.",
                    "copy it again from Amperity without surrounding spaces or line breaks "
                    "(tenant ids and API keys are plain ASCII).",
                )
            )
    return problems


BLANK_SECRET_ADVICE = {
    "api_key": (
        "is blank, so every event would be sent with a bare 'Bearer' and refused with 401.",
        "paste the Streaming Ingest key (Settings > Security > API Keys), or write env:NAME "
        "to read it from the environment.",
    ),
    "profile_api_key": (
        "is blank, which would turn profile enrichment off without a word.",
        "remove it to turn enrichment off, or paste the Profile API key.",
    ),
    "admin_token": (
        "is blank, so nobody could open Live Events with it.",
        "remove it to keep Live Events off, or set a long random token.",
    ),
}


def _check_blank_secrets(where: str, table: Any, names: tuple[str, ...]) -> list[ConfigProblem]:
    """A secret written as "" or spaces is a mistake, never a way to turn a feature off."""
    if not isinstance(table, dict):
        return []
    return [
        ConfigProblem(f"{where}.{name}", *BLANK_SECRET_ADVICE[name])
        for name in names
        if isinstance(table.get(name), str) and not table[name].strip()
    ]


_JWT_LOOKS = (
    "Amperity API keys are JWTs of a few hundred characters, starting eyJ; this looks like "
    "a placeholder or a truncated paste, and logs could not scrub a value this short."
)
SHORT_SECRET_ADVICE = {
    "api_key": (
        f"is shorter than {SCRUB_MIN_LENGTH} characters. {_JWT_LOOKS}",
        "paste the whole Streaming Ingest key (Settings > Security > API Keys), or write "
        "env:NAME to read it from the environment.",
    ),
    "profile_api_key": (
        f"is shorter than {SCRUB_MIN_LENGTH} characters. {_JWT_LOOKS}",
        "paste the whole Profile API key (Settings > Security > API Keys), or remove it to "
        "turn enrichment off.",
    ),
    "admin_token": (
        f"is shorter than {SCRUB_MIN_LENGTH} characters: easy to guess, and logs could not "
        "scrub a value this short.",
        "set a long random token, e.g. the output of `openssl rand -hex 16`, or remove it "
        "to keep Live Events off.",
    ),
}


def _check_short_secrets(where: str, table: Any, names: tuple[str, ...]) -> list[ConfigProblem]:
    """A key or token too short for the log scrubber to see is a mistake: refused by name.

    The value is never quoted, nor its exact length given.
    """
    if not isinstance(table, dict):
        return []
    return [
        ConfigProblem(f"{where}.{name}", *SHORT_SECRET_ADVICE[name])
        for name in names
        if isinstance(table.get(name), str)
        and 0 < len(table[name].strip()) < SCRUB_MIN_LENGTH  # blank: _check_blank_secrets
    ]


def _visible_ascii(value: str) -> bool:
    return value.isascii() and value.isprintable() and " " not in value


def _check_profile(
    where: str, table: dict[str, Any], reported: frozenset[str]
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    profile_key = table.get("profile_api_key")
    if isinstance(profile_key, str):
        profile_key = profile_key.strip()  # a blank key is reported by _check_blank_secrets
    collection = table.get("profile_collection_id")
    if profile_key and not collection:
        problems.append(
            ConfigProblem(
                f"{where}.profile_collection_id",
                "is required when profile_api_key is set.",
                "set it to the apc- id of the profile collection to query.",
            )
        )
    if isinstance(collection, str) and collection and not COLLECTION_ID.fullmatch(collection):
        problems.append(
            ConfigProblem(
                f"{where}.profile_collection_id",
                f"{quoted(collection)} is not a profile collection id: apc- followed by letters, "
                "digits, - or _.",
                "use the collection's id from the dashboard, prefixed apc-.",
            )
        )
    if profile_key and profile_key == table.get("api_key"):
        problems.append(
            ConfigProblem(
                f"{where}.profile_api_key",
                "is the same JWT as api_key; Amperity rejects cross-scope usage with 403.",
                "they are distinct tokens with distinct scopes: generate a Profile API key "
                "with Profile Read Access under Settings > Security > API Keys.",
            )
        )
    # `is True`: "yes" or 1 is refused as not a boolean, not read as turning it on. A key
    # already refused (blank, or env:NAME not set) is the one fix: not asked for twice.
    key_refused = f"{where}.profile_api_key" in reported
    if table.get("personalisation_enabled") is True and not profile_key and not key_refused:
        problems.append(
            ConfigProblem(
                f"{where}.personalisation_enabled",
                "needs profile_api_key and profile_collection_id.",
                "set both, or turn personalisation off.",
            )
        )
    return problems


def _json_array(value: Any) -> list[Any]:
    """A textarea field's entries, from JSON text or a TOML array; [] for anything else.

    Invalid JSON and a value that is no array are pydantic's to report, with the position.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except (json.JSONDecodeError, RecursionError):
            return []
    return value if isinstance(value, list) else []


def _check_context_targets(where: str, value: Any) -> list[ConfigProblem]:
    """Two context mappings with one target: one value goes, the other is dropped silently."""
    problems = []
    first: dict[str, int] = {}
    for index, entry in enumerate(_json_array(value)):
        target = entry.get("target") if isinstance(entry, dict) else None
        if not isinstance(target, str):
            continue
        if target not in first:
            first[target] = index
            continue
        problems.append(
            ConfigProblem(
                f"{where}.personalisation_context_mappings[{index}].target",
                f"{quoted(target)} is also the target of "
                f"personalisation_context_mappings[{first[target]}]; each call sends one value "
                "per target, so one of the two would be dropped without a word.",
                "give each mapping its own target, or remove one of the two.",
            )
        )
    return problems


# Fields that identify the visitor, by name (lower case, without _ and -), and what each
# holds: the spec's Identity table, the linking-key sources (enrich/identifiers.SOURCE_PATHS)
# and the global blueprint's identity and vendor id mappings. tests/unit/test_context_sources.py
# holds them together.
_IDENTITY_NAMES = {
    **dict.fromkeys(("email", "emailaddress"), "an email address"),
    # A bare "mobile" too, but not under "device" (identity_field): context.device.mobile
    # is a flag, no number.
    **dict.fromkeys(
        ("phone", "phonenumber", "mobile", "mobilenumber", "mobilephone", "cellphone"),
        "a phone number",
    ),
    # Segment's traits.id (context.traits.id) is the user's id: traits describe the user.
    **dict.fromkeys(("userid", "customerid", "traitsid"), "a user id"),
    **dict.fromkeys(
        ("anonymousid", "canonicalid", "cookieid", "devicecookie", "deviceid", "visitorid"),
        "a device or anonymous id",
    ),
    # A session id names one visit of one visitor: joined up, the visits are the visitor.
    **dict.fromkeys(("sessionid",), "a session id"),
    **dict.fromkeys(("amperityid", "profileid"), "an Amperity profile id"),
    **dict.fromkeys(("ip", "ipaddress"), "an IP address"),
    # The spec's Identity table forwards it; with the IP it fingerprints a browser.
    **dict.fromkeys(("useragent",), "the browser's user agent"),
    **dict.fromkeys(("firstname", "lastname"), "the visitor's name"),
    **dict.fromkeys(
        (
            "vendorids",
            "gclid",
            "gbraid",
            "wbraid",
            "fbclid",
            "ttclid",
            "msclkid",
            "gaclientid",
            "fbp",
            "fbc",
            "ttp",
        ),
        "an advertising click id or cookie (a vendor id)",
    ),
    **dict.fromkeys(("advertisingid", "idfa", "gaid"), "a device's advertising id"),
}
# How a hashed form of an identifier is named: email_sha256, hashed_email, phoneHash...
_HASH_AFFIXES = ("sha256upper", "sha256", "sha1", "md5", "hashed", "hash")


def identity_field(source: str) -> str | None:
    """What identifier a context source reads (``an email address``), or None for none.

    Any part of the path counts (``properties.user.email``, ``context.vendor_ids.gclid``),
    in any case and spelling (``userId``, ``user_id``), and so does a hashed form
    (``traits.email_sha256``): a digest identifies the visitor as well as the value.
    An ``id`` is named by its parent: ``context.device.id`` is ``context.deviceId`` and
    refused, as are a user's (``traits.id`` too), customer's, anonymous, visitor's,
    session's or profile's id; ``properties.id`` and ``properties.product.id`` (a
    product's) stay context sources.
    """
    parent = ""
    for part in source.split("."):
        name = part.lower().replace("_", "").replace("-", "")
        if name == "mobile" and parent == "device":
            continue  # Segment's context.device.mobile: whether the device is a phone
        names = [name]
        names += [name.removeprefix(a) for a in _HASH_AFFIXES if name.startswith(a)]
        names += [name.removesuffix(a) for a in _HASH_AFFIXES if name.endswith(a)]
        names += [parent + candidate for candidate in names if candidate == "id"]
        parent = name
        for candidate in names:
            if candidate in _IDENTITY_NAMES:
                return _IDENTITY_NAMES[candidate]
    return None


IDENTITY_SOURCE_FIX = (
    "personalise by a page or context attribute of few values instead (e.g. "
    "properties.category or partner_attrs.amperity.LifetimeTier); identifiers go in "
    "linking_keys only, which Signal sends in lookup bodies."
)


def _check_context_sources(where: str, value: Any, integration_id: Any) -> list[ConfigProblem]:
    """A context source that finds nothing, or that would put an identifier in URLs.

    ``propertes.category`` is a valid path that finds nothing on any event, so no context
    is ever sent. ``traits.email`` finds the visitor's email, which would go into the query
    string of every profile GET (``endpoints.profile_params``), kept by access logs: the
    API notes keep identifiers, even hashed, out of URLs. A path that is no path at all
    (``a..b``) is pydantic's to report.
    """
    problems = []
    for index, entry in enumerate(_json_array(value)):
        source = entry.get("source") if isinstance(entry, dict) else None
        if not isinstance(source, str) or any(not part for part in source.split(".")):
            continue
        location = f"{where}.personalisation_context_mappings[{index}].source"
        root = source.split(".", 1)[0]
        if root not in EVENT_ROOTS:
            # The root is not quoted alone: a pasted key's first part would be; quoted()
            # knows the whole source for one.
            problems.append(
                ConfigProblem(
                    location,
                    f"{quoted(source)} does not start with a part of the event, so it never "
                    "finds a value and personalisation never applies.",
                    f"{root_advice(root)}.",
                )
            )
        elif what := identity_field(source):
            target = entry.get("target")
            named = (
                f"integration {quoted(integration_id)}"
                if isinstance(integration_id, str) and integration_id
                else "the integration"
            )
            maps = f" to {quoted(target)}" if isinstance(target, str) else ""
            problems.append(
                ConfigProblem(
                    location,
                    f"{quoted(source)} is {what}, an identifier of the visitor: mapping it"
                    f"{maps}, {named} would send it in the query string of every profile "
                    "call, where URLs and access logs keep it (identifiers stay out of URLs, "
                    "even hashed). A context source is what the visitor is looking at or "
                    "doing (a page category, a cart value), not who they are.",
                    IDENTITY_SOURCE_FIX,
                )
            )
    return problems


def _check_linking_keys(where: str, value: Any) -> list[ConfigProblem]:
    problems = []
    for index, entry in enumerate(_json_array(value)):
        if not isinstance(entry, dict):
            continue
        location = f"{where}.linking_keys[{index}]"
        source = entry.get("source")
        if source not in LINKING_SOURCES:
            problems.append(
                ConfigProblem(
                    f"{location}.source",
                    f"{quoted(source)} is not a linking-key source.",
                    f"{did_you_mean(source, LINKING_SOURCES)}use one of {_list(LINKING_SOURCES)}.",
                )
            )
        hash_name = entry.get("hash")
        if hash_name is not None and hash_name not in HASHES:
            problems.append(
                ConfigProblem(
                    f"{location}.hash",
                    f"{quoted(hash_name)} is not a supported hash.",
                    f"{did_you_mean(hash_name, HASHES)}use {_list(HASHES)}, or leave hash "
                    "out to send the value as it is.",
                )
            )
    return problems


def _list(names: tuple[str, ...]) -> str:
    return ", ".join(names)


def deliver_timeout_warnings(deliver_timeout: float, batch_deadline: float) -> list[str]:
    """A ``[gateway] deliver_timeout`` the ``/v1/batch`` deadline can cut, with the fix.

    A batch's event starts only when its whole ``deliver_timeout`` fits before the batch's
    deadline, or, for one above half of it, while half is left, with only what is left: its
    Deliver may then be cut after it reached Amperity, and datafly.js sends the event again.
    """
    half = batch_deadline / 2
    if deliver_timeout <= half:
        return []
    return [
        f"[gateway] deliver_timeout = {deliver_timeout:g} is over half of the gateway's "
        f"{batch_deadline:g} s /v1/batch deadline: a batch's later events start with less "
        "than their deliver_timeout, so the batch's deadline can cut a Deliver that already "
        "reached Amperity, and datafly.js sends that event again (a duplicate). Set "
        f"deliver_timeout to {half:g} or less."
    ]
