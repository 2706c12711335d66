"""Linking-key values: sources, hashing schemes, phone normalisation, candidate order."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, get_args

from hypothesis import given
from hypothesis import strategies as st

from amperity_signal.blueprint import load_blueprint, map_event
from amperity_signal.blueprint.transforms import e164
from amperity_signal.config import LinkingKey
from amperity_signal.enrich.identifiers import (
    LEARNABLE_SOURCES,
    SOURCE_PATHS,
    Candidate,
    candidates,
    event_candidates,
    learnable,
    page_candidates,
    prepare,
    read_identifiers,
    remembers_any,
    slot,
    source_value,
    visitor_id,
)
from amperity_signal.phone import normalise_phone

from .enrich_fakes import event


def sha(text: str) -> str:
    """SHA-256 of a string, lowercase hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def test_sha256_trims_and_lowercases_before_hashing() -> None:
    """The hash of " Alice@Example.COM " is sha256("alice@example.com"), lowercase hex."""
    assert prepare("email", "sha256", " Alice@Example.COM ") == sha("alice@example.com")


def test_sha256_upper_uppercases_the_input_and_the_hex() -> None:
    """sha256_upper is SHA-256 of the trimmed UPPER value, written in upper-case hex."""
    expected = sha("ALICE@EXAMPLE.COM").upper()
    assert prepare("email", "sha256_upper", " Alice@Example.COM ") == expected


def test_phone_is_normalised_to_e164_before_hashing() -> None:
    """A phone number is hashed in its E.164 form, whatever its spacing and prefix."""
    assert normalise_phone("+44 7700 900123") == "+447700900123"
    assert normalise_phone("0044 (7700) 900-123") == "+447700900123"
    assert prepare("phone", "sha256", "+44 7700 900123") == sha("+447700900123")
    assert prepare("phone", None, "+44 7700 900123") == "+447700900123"


def test_a_national_number_keeps_its_digits_and_an_extension_is_not_part_of_it() -> None:
    """No country code is invented ("+0770..." is no number), and "ext 9" is not dialled."""
    assert prepare("phone", None, "07700 900123") == "07700900123"
    assert prepare("phone", None, "+44 7700 900123 ext 9") == "+447700900123"
    assert prepare("phone", None, "+1 (555) 010-0199 x12") == "+15550100199"


def test_a_phone_that_is_not_a_number_makes_no_lookup() -> None:
    """Garbage in traits.phone is skipped, like an empty source, instead of sent as "+"."""
    assert prepare("phone", "sha256", "call me") is None
    keys = (LinkingKey(source="phone", key="phone_sha256", hash="sha256"),)
    visitor = event(traits={"phone": "call me"})
    assert candidates(keys, visitor, {}) == ()
    assert learnable(keys, visitor) == {}


def test_a_value_that_already_is_a_digest_is_not_hashed_again() -> None:
    """A 64-hex value is sent as it is; only its case follows the scheme."""
    digest = sha("alice@example.com")
    assert prepare("email", "sha256", digest.upper()) == digest
    assert prepare("email", "sha256_upper", digest) == digest.upper()


@given(st.text(min_size=1).filter(lambda text: text.strip() != ""))
def test_hashing_is_idempotent(value: str) -> None:
    """Preparing an already prepared value changes nothing (digests are not re-hashed)."""
    for scheme in ("sha256", "sha256_upper"):
        once = prepare("email", scheme, value)
        assert once is not None
        assert prepare("email", scheme, once) == once


def test_candidates_follow_linking_key_order_and_skip_empty_sources() -> None:
    """Entries whose source is empty on the visitor are skipped; the rest keep their order."""
    keys = (
        LinkingKey(source="email", key="email_sha256", hash="sha256"),
        LinkingKey(source="phone", key="phone_sha256", hash="sha256"),
        LinkingKey(source="canonical_id", key="device_cookie"),
        LinkingKey(source="user_id", key="customer_id"),
    )
    anonymous = event("anon_1", canonical_id="")
    assert candidates(keys, anonymous, {}) == (Candidate("device_cookie", "anon_1"),)
    known = event("anon_1", user_id="cust-9", traits={"email": "Bob@Example.com"})
    assert candidates(keys, known, {}) == (
        Candidate("email_sha256", sha("bob@example.com")),
        Candidate("device_cookie", "anon_1"),
        Candidate("customer_id", "cust-9"),
    )


def test_remembered_identifiers_fill_sources_missing_on_the_event() -> None:
    """The identity map supplies email/phone/user_id, stored only in the forms keys send."""
    keys = (LinkingKey(source="email", key="email_sha256", hash="sha256"),)
    learned = learnable(keys, event(traits={"email": "alice@example.com"}))
    assert learned == {"email:sha256": sha("alice@example.com")}
    assert "alice@example.com" not in learned.values()
    assert candidates(keys, event(), learned) == (
        Candidate("email_sha256", sha("alice@example.com")),
    )


def test_a_phone_given_as_a_number_is_looked_up_as_the_blueprint_sends_it() -> None:
    """traits.phone as a Struct number (a float) is looked up as its digits, like e164 maps it."""
    keys = (LinkingKey(source="phone", key="phone_sha256", hash="sha256"),)
    visitor = event(traits={"phone": 447700900123.0})
    digest = sha(e164(447700900123.0))
    assert candidates(keys, visitor, {}) == (Candidate("phone_sha256", digest),)
    assert learnable(keys, visitor) == {"phone:sha256": digest}
    assert candidates(keys, event(traits={"phone": 4477009.5}), {}) == ()


def test_each_source_is_read_where_the_global_blueprint_maps_its_target_from() -> None:
    """SOURCE_PATHS are the global identity mappings' source then fallbacks, in order."""
    mappings = {m.target: m.spec for m in load_blueprint("retail").global_mappings}
    for source, paths in SOURCE_PATHS.items():
        spec = mappings[source]
        read = [field if key is None else f"{field}.{key}" for field, key in paths]
        assert read == [spec.source, *spec.fallbacks], source
    assert set(SOURCE_PATHS) == set(get_args(LinkingKey.model_fields["source"].annotation))


def test_an_email_or_phone_in_properties_is_resolved_and_learned() -> None:
    """properties.email / properties.phone, which the blueprint sends, are looked up too."""
    keys = (
        LinkingKey(source="email", key="email_sha256", hash="sha256"),
        LinkingKey(source="phone", key="phone", hash=None),
        LinkingKey(source="user_id", key="customer_id"),
    )
    visitor = event(
        properties={"email": "Carol@Example.com", "phone": "+44 7700 900123"},
        traits={"user_id": "cust-7"},
    )
    assert candidates(keys, visitor, {}) == (
        Candidate("email_sha256", sha("carol@example.com")),
        Candidate("phone", "+447700900123"),
        Candidate("customer_id", "cust-7"),
    )
    assert learnable(keys, visitor) == {
        "email:sha256": sha("carol@example.com"),
        "phone": "+447700900123",
        "user_id": "cust-7",
    }
    own = event(traits={"email": "own@example.com"}, properties={"email": "p@example.com"})
    assert source_value(own, "email") == "own@example.com"


_EMAILS: st.SearchStrategy[Any] = st.sampled_from([None, "", [], {}, "T@Example.com", " P@x.test "])
_IDS: st.SearchStrategy[Any] = st.sampled_from([None, "", "cust-1", "cust-2", 12.0])
_PHONES: st.SearchStrategy[Any] = st.sampled_from(
    [None, "", "+44 7700 900123", "call me", 447700900124.0]
)
_RETAIL = load_blueprint("retail")


@given(
    st.fixed_dictionaries(
        {
            ("traits", "email"): _EMAILS,
            ("properties", "email"): _EMAILS,
            ("traits", "phone"): _PHONES,
            ("properties", "phone"): _PHONES,
            ("traits", "user_id"): _IDS,
        }
    ),
    _IDS,
)
def test_an_event_is_resolved_by_the_identifiers_it_is_delivered_with(
    given_values: dict[tuple[str, str], Any], user_id: Any
) -> None:
    """Where the payload's email, phone or user_id comes from, the lookup's value does too."""
    visitor = event(user_id=user_id)
    for (field, key), value in given_values.items():
        visitor[field][key] = value
    payload = map_event(_RETAIL, visitor, source_value="S").payload
    for source in ("email", "phone", "user_id"):
        raw = source_value(visitor, source)
        prepared = None if raw is None else prepare(source, None, raw)
        # What is looked up is what is delivered, and nothing when nothing is (the email
        # lower-cased by its transform, as the sha256 scheme lower-cases it to hash it).
        looked_up = prepared.lower() if prepared and source == "email" else prepared
        assert looked_up == payload.get(source), source


_SOURCES = ("canonical_id", "anonymous_id", "user_id", "email", "phone")
_SCHEMES = (None, "sha256", "sha256_upper")
_LINKING_KEYS = st.lists(
    st.builds(
        LinkingKey,
        source=st.sampled_from(_SOURCES),
        key=st.sampled_from(("device_cookie", "email_sha256", "customer_id")),
        hash=st.sampled_from(_SCHEMES),
    ),
    max_size=4,
)
_SLOTS = [slot(source, scheme) for source in ("user_id", "email", "phone") for scheme in _SCHEMES]


@given(
    linking_keys=_LINKING_KEYS,
    anonymous_id=st.sampled_from(("anon_1", " Anon_1 ", "", "  ", "A" * 64, "cust-1")),
    remembered=st.dictionaries(st.sampled_from(_SLOTS), st.sampled_from(("cust-1", "anon_1"))),
)
def test_a_pages_candidates_are_those_of_an_event_carrying_only_its_anonymous_id(
    linking_keys: list[LinkingKey], anonymous_id: str, remembered: dict[str, str]
) -> None:
    """page_candidates gives what candidates gives for {anonymous_id, canonical_id}, in order."""
    visitor = {"anonymous_id": anonymous_id, "canonical_id": anonymous_id}
    expected = candidates(linking_keys, visitor, remembered)
    assert page_candidates(linking_keys, anonymous_id, remembered) == expected
    learnable_sources = {"user_id", "email", "phone"}
    assert remembers_any(linking_keys) == any(lk.source in learnable_sources for lk in linking_keys)


def _candidates_read_three_times(
    linking_keys: Sequence[LinkingKey], event: Mapping[str, Any], remembered: Mapping[str, str]
) -> tuple[Candidate, ...]:
    """``candidates`` as it was before ``read_identifiers``: the reference for the one pass."""
    found: list[Candidate] = []
    for lk in linking_keys:
        raw = source_value(event, lk.source)
        if raw is not None:
            value: str | None = prepare(lk.source, lk.hash, raw)
        elif remembered and lk.source in LEARNABLE_SOURCES:
            value = remembered.get(slot(lk.source, lk.hash))
        else:
            value = None
        if value and Candidate(lk.key, value) not in found:
            found.append(Candidate(lk.key, value))
    return tuple(found)


_VALUES = st.sampled_from(
    ("", "  ", "anon_1", " Cust-1 ", "Bob@Example.com", "+44 7700 900123", "call me", "A" * 64)
)
_TRAIT_VALUES = st.one_of(_VALUES, st.sampled_from((447700900123.0, 4477009.5, 12, True, None)))


@given(
    linking_keys=_LINKING_KEYS,
    fields=st.dictionaries(st.sampled_from(("anonymous_id", "canonical_id", "user_id")), _VALUES),
    traits=st.dictionaries(st.sampled_from(("email", "phone")), _TRAIT_VALUES),
    remembered=st.dictionaries(st.sampled_from(_SLOTS), st.sampled_from(("cust-1", "anon_1"))),
)
def test_one_read_of_an_events_identifiers_gives_what_the_separate_reads_gave(
    linking_keys: list[LinkingKey],
    fields: dict[str, str],
    traits: dict[str, Any],
    remembered: dict[str, str],
) -> None:
    """read_identifiers and event_candidates agree with visitor_id, learnable and candidates."""
    visitor = {**fields, "traits": traits}
    ids = read_identifiers(linking_keys, visitor)
    assert ids.visitor == visitor_id(visitor)
    assert ids.learned == learnable(linking_keys, visitor)
    assert ids.lacking == any(
        lk.source in LEARNABLE_SOURCES and source_value(visitor, lk.source) is None
        for lk in linking_keys
    )
    expected = _candidates_read_three_times(linking_keys, visitor, remembered)
    assert event_candidates(linking_keys, ids.prepared, remembered) == expected
    assert candidates(linking_keys, visitor, remembered) == expected
