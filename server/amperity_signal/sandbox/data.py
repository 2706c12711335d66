"""The sandbox's world: tenants, tokens, streams and collections, loaded from a data file.

A data file (YAML or JSON) holds one ``signing_secret`` and a list of ``tenants``; each
tenant lists its pre-minted ``tokens``, realtime ``streams`` and profile ``collections``
(with seed ``profiles``). Everything here is immutable: the live, changing state is built
from it by :class:`amperity_signal.sandbox.state.SandboxState` and rebuilt on reset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar, cast

import yaml

from amperity_signal.sandbox.identity import HASHINGS, SHA256

StreamMode = Literal["active", "drop", "reject"]
STREAM_MODES: tuple[StreamMode, ...] = ("active", "drop", "reject")
DEFAULT_DATA_PATH = Path(__file__).with_name("default_data.yaml")
T = TypeVar("T")

_CLAUSE = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*==\s*"([^"]*)"\s*$')


class SandboxDataError(ValueError):
    """The data file is not valid; the message names the offending entry and the fix."""


@dataclass(frozen=True)
class RoutingExpression:
    """A stream's routing expression: ``field == "value"`` clauses joined by ``or``.

    Attributes:
        text: The expression as written in the data file.
        field: The top-level event field compared (in practice always ``source``).
        values: The accepted values; comparison is exact and case-sensitive.
    """

    text: str
    field: str
    values: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> RoutingExpression:
        """Parses ``source == "DATAFLY"`` or ``source == "A" or source == "B"``.

        Raises:
            SandboxDataError: The expression is not of that form.
        """
        fields: set[str] = set()
        values: set[str] = set()
        for clause in text.split(" or "):
            match = _CLAUSE.match(clause)
            if match is None:
                raise SandboxDataError(
                    f'routing expression {text!r}: write clauses like source == "DATAFLY" '
                    "joined by 'or'"
                )
            fields.add(match.group(1))
            values.add(match.group(2))
        if len(fields) != 1:
            raise SandboxDataError(f"routing expression {text!r}: compare a single field")
        return cls(text=text, field=fields.pop(), values=frozenset(values))

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Tells whether an event's field equals one of the expression's values."""
        value = event.get(self.field)
        return isinstance(value, str) and value in self.values


@dataclass(frozen=True)
class Stream:
    """A realtime event stream (``esm-`` id) with its routing and mode."""

    stream_id: str
    name: str
    routing: RoutingExpression
    target: str
    mode: StreamMode


@dataclass(frozen=True)
class SeedProfile:
    """A profile present in a collection when the sandbox starts or resets."""

    profile_id: str
    created_at: float
    attributes: Mapping[str, Any]
    links: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Collection:
    """A profile collection (``apc-`` id) and the identifiers lookups may use."""

    collection_id: str
    name: str
    linking_keys: tuple[str, ...]
    profiles: tuple[SeedProfile, ...]
    hashing: str = SHA256


@dataclass(frozen=True)
class NamedToken:
    """A pre-minted token written in the data file, for demos and configs."""

    name: str
    scopes: tuple[str, ...]
    token: str


@dataclass(frozen=True)
class Tenant:
    """One Amperity tenant: the ``Amperity-Tenant`` header value and what it owns."""

    tenant_id: str
    subdomain: str
    tokens: tuple[NamedToken, ...]
    streams: Mapping[str, Stream]
    collections: Mapping[str, Collection]


@dataclass(frozen=True)
class SandboxData:
    """Everything a data file describes: the signing secret and the tenants by id."""

    signing_secret: str
    tenants: Mapping[str, Tenant]


def load_data(path: str | Path) -> SandboxData:
    """Loads a data file; ``.json`` files are JSON, anything else YAML.

    Raises:
        SandboxDataError: The file's content is not a valid sandbox description.
        OSError: The file cannot be read.
    """
    file = Path(path)
    text = file.read_text(encoding="utf-8")
    raw = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    return parse_data(raw)


def default_data() -> SandboxData:
    """Loads the realistic default world shipped as ``default_data.yaml``."""
    return load_data(DEFAULT_DATA_PATH)


def parse_data(raw: object) -> SandboxData:
    """Builds :class:`SandboxData` from a decoded YAML/JSON document.

    Raises:
        SandboxDataError: A required entry is missing or has the wrong type.
    """
    root = _mapping(raw, "the data file")
    secret = _string(root.get("signing_secret"), "signing_secret")
    tenants: dict[str, Tenant] = {}
    for index, item in enumerate(_list(root.get("tenants"), "tenants")):
        tenant = _tenant(_mapping(item, f"tenants[{index}]"))
        if tenant.tenant_id in tenants:
            raise SandboxDataError(f"tenant {tenant.tenant_id!r} is listed twice")
        tenants[tenant.tenant_id] = tenant
    return SandboxData(signing_secret=secret, tenants=MappingProxyType(tenants))


def _tenant(raw: Mapping[str, Any]) -> Tenant:
    tenant_id = _string(raw.get("id"), "tenant id")
    where = f"tenant {tenant_id!r}"
    tokens = tuple(
        NamedToken(
            name=_string(token.get("name"), f"{where} token name"),
            scopes=tuple(_strings(token.get("scopes"), f"{where} token scopes")),
            token=_string(token.get("token"), f"{where} token"),
        )
        for token in (_mapping(t, where) for t in _list(raw.get("tokens", []), where))
    )
    streams = [_stream(_mapping(s, where), where) for s in _list(raw.get("streams", []), where)]
    collections = [
        _collection(_mapping(c, where), where) for c in _list(raw.get("collections", []), where)
    ]
    return Tenant(
        tenant_id=tenant_id,
        subdomain=_string(raw.get("subdomain", tenant_id), f"{where} subdomain"),
        tokens=tokens,
        streams=_by_id(((s.stream_id, s) for s in streams), f"{where}: stream"),
        collections=_by_id(((c.collection_id, c) for c in collections), f"{where}: collection"),
    )


def _by_id(items: Iterable[tuple[str, T]], what: str) -> Mapping[str, T]:
    """Entries by id; an id listed twice is refused (the first entry was silently lost)."""
    found: dict[str, T] = {}
    for item_id, item in items:
        if item_id in found:
            raise SandboxDataError(f"{what} {item_id!r} is listed twice; give each its own id")
        found[item_id] = item
    return MappingProxyType(found)


def _stream(raw: Mapping[str, Any], where: str) -> Stream:
    stream_id = _string(raw.get("id"), f"{where} stream id")
    if not stream_id.startswith("esm-"):
        raise SandboxDataError(f"{where}: stream id {stream_id!r} must start with 'esm-'")
    mode = raw.get("mode", "active")
    if mode not in STREAM_MODES:
        raise SandboxDataError(f"{where}: stream {stream_id} mode must be one of {STREAM_MODES}")
    return Stream(
        stream_id=stream_id,
        name=_string(raw.get("name", stream_id), f"{stream_id} name"),
        routing=RoutingExpression.parse(_string(raw.get("routing"), f"{stream_id} routing")),
        target=_string(raw.get("target"), f"{stream_id} target"),
        mode=cast("StreamMode", mode),
    )


def _collection(raw: Mapping[str, Any], where: str) -> Collection:
    collection_id = _string(raw.get("id"), f"{where} collection id")
    if not collection_id.startswith("apc-"):
        raise SandboxDataError(f"{where}: collection id {collection_id!r} must start with 'apc-'")
    profiles = []
    for item in _list(raw.get("profiles", []), f"{collection_id} profiles"):
        profile = _mapping(item, f"{collection_id} profile")
        profile_id = _string(profile.get("profile_id"), f"{collection_id} profile_id")
        links = _mapping(profile.get("links", {}), f"{profile_id} links")
        profiles.append(
            SeedProfile(
                profile_id=profile_id,
                created_at=_timestamp(profile.get("created_at"), f"{profile_id} created_at"),
                attributes=MappingProxyType(
                    dict(_mapping(profile.get("attributes", {}), f"{profile_id} attributes"))
                ),
                links=MappingProxyType(
                    {key: tuple(_strings(v, f"{profile_id} {key}")) for key, v in links.items()}
                ),
            )
        )
    hashing = raw.get("hash", SHA256)
    if hashing not in HASHINGS:
        raise SandboxDataError(
            f"{collection_id}: hash {hashing!r} is not one of {', '.join(HASHINGS)}; write "
            "sha256 (lowercase, the default) or sha256_upper (as Amperity's own examples)"
        )
    by_id = _by_id(((p.profile_id, p) for p in profiles), f"{collection_id}: profile")
    return Collection(
        collection_id=collection_id,
        name=_string(raw.get("name", collection_id), f"{collection_id} name"),
        linking_keys=tuple(_strings(raw.get("linking_keys", []), f"{collection_id} keys")),
        profiles=tuple(by_id.values()),
        hashing=hashing,
    )


def _timestamp(raw: object, what: str) -> float:
    """Epoch seconds of an ISO 8601 time; one without a zone (or a bare date) is UTC.

    YAML turns an unquoted time into a ``datetime`` and an unquoted date into a ``date``;
    a quoted one stays text. All three read alike, never in the machine's local zone.
    """
    if isinstance(raw, date) and not isinstance(raw, datetime):
        raw = datetime(raw.year, raw.month, raw.day)
    if not isinstance(raw, datetime):
        if not isinstance(raw, str) or not raw:
            raise SandboxDataError(f"{what}: write an ISO 8601 time like 2026-01-02T03:04:05Z")
        try:
            raw = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as error:
            raise SandboxDataError(
                f"{what}: write an ISO 8601 time like 2026-01-02T03:04:05Z"
            ) from error
    return raw.replace(tzinfo=raw.tzinfo or UTC).timestamp()


def _mapping(raw: object, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise SandboxDataError(f"{what} must be a mapping")
    return cast("Mapping[str, Any]", raw)


def _list(raw: object, what: str) -> list[Any]:
    if not isinstance(raw, list):
        raise SandboxDataError(f"{what} must be a list")
    return raw


def _string(raw: object, what: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise SandboxDataError(f"{what} must be a non-empty string")
    return raw


def _strings(raw: object, what: str) -> list[str]:
    return [_string(item, what) for item in _list(raw, what)]
