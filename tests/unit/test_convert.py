"""``context_to_dict``, ``consent_to_dict`` and ``fill_struct`` against independent references.

``context_to_dict`` walks ``ListFields`` (set fields only, in field-number order); the
reference asks every field of the descriptor in turn, as the converter once did. Both must
give the same dict, key order included (it becomes the order of pass-through fields).
Consent is not converted by the reference: the strategy that sets its fields writes down
the dict they must become (a field left unset is no key; one set to false or "" is).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from amperity_signal.service.convert import consent_to_dict, context_to_dict, fill_struct
from datafly.amperity.v1 import amperity_service_pb2 as pb

TEXT = st.sampled_from(["", "x", "en-GB", "é", "0"])
CONSENT_FLAGS = ("analytics", "marketing", "functional")
GOOGLE_MODES = ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage")


@st.composite
def consents(draw: st.DrawFn) -> tuple[pb.Consent, dict[str, Any]]:
    """Any mix of set and unset consent fields, and the dict they must convert to."""
    consent = pb.Consent()
    expected: dict[str, Any] = {}
    for name in CONSENT_FLAGS:
        if draw(st.booleans()):
            flag = draw(st.booleans())
            setattr(consent, name, flag)
            expected[name] = flag
    codes = st.sampled_from(["C0001", "C0004", "ads"])
    categories = draw(st.dictionaries(codes, st.booleans(), max_size=3))
    if categories:
        consent.categories.update(categories)
        expected["categories"] = categories
    if draw(st.booleans()):
        consent.google.SetInParent()  # present, possibly with every mode unset
        google: dict[str, str] = {}
        for name in GOOGLE_MODES:
            if draw(st.booleans()):
                mode = draw(st.sampled_from(["granted", "denied", ""]))
                setattr(consent.google, name, mode)
                google[name] = mode
        if google:
            expected["google"] = google
    return consent, expected


def reference(context: pb.Context, consent: dict[str, Any]) -> dict[str, Any]:
    """Every descriptor field in order: truthy scalars, non-empty parts, maps and consent."""
    out: dict[str, Any] = {}
    for field in pb.Context.DESCRIPTOR.fields:
        name = field.name
        value = getattr(context, name)
        if name == "consent":
            if context.HasField("consent"):
                out[name] = consent
        elif name == "vendor_ids":
            if value:
                out[name] = dict(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if context.HasField(name):  # type: ignore[arg-type]
                parts = {f.name: getattr(value, f.name) for f in value.DESCRIPTOR.fields}
                parts = {k: v for k, v in parts.items() if v}
                if parts:
                    out[name] = parts
        elif value:
            out[name] = value
    return out


@st.composite
def contexts(draw: st.DrawFn) -> tuple[pb.Context, dict[str, Any]]:
    """A Context with any of its fields set, and the consent dict its consent must become."""
    context = pb.Context()
    consent: dict[str, Any] = {}
    for field in pb.Context.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        name = field.name
        if name == "vendor_ids":
            keys = draw(st.lists(st.sampled_from(["ga", "fbp", "gclid"]), max_size=3))
            context.vendor_ids.update({key: draw(TEXT) for key in keys})
        elif name == "consent":
            drawn, consent = draw(consents())
            context.consent.CopyFrom(drawn)
            context.consent.SetInParent()  # present even when nothing in it is set
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            part = getattr(context, name)
            part.SetInParent()  # present, possibly with every field empty
            for sub in part.DESCRIPTOR.fields:
                if draw(st.booleans()):
                    if sub.type == FieldDescriptor.TYPE_STRING:
                        setattr(part, sub.name, draw(TEXT))
                    else:
                        setattr(part, sub.name, draw(st.integers(0, 3)))
        else:
            setattr(context, name, draw(TEXT))
    return context, consent


@settings(max_examples=300, deadline=None)
@given(contexts())
def test_context_to_dict_matches_the_field_by_field_reference(
    drawn: tuple[pb.Context, dict[str, Any]],
) -> None:
    """Set fields only, in field-number order; consent as its strategy wrote it down."""
    context, consent = drawn
    converted = context_to_dict(context)
    expected = reference(context, consent)
    assert converted == expected
    assert list(converted) == list(expected)
    for name, part in expected.items():
        if isinstance(part, dict):
            assert list(converted[name]) == list(part)


@settings(max_examples=300, deadline=None)
@given(consents())
def test_consent_to_dict_keeps_what_was_set_and_leaves_the_unset_out(
    drawn: tuple[pb.Consent, dict[str, Any]],
) -> None:
    """A set boolean or Google mode is a key even when false or ""; an unset one is none."""
    consent, expected = drawn
    converted = consent_to_dict(consent)
    assert converted == expected
    assert list(converted) == list(expected)


def test_the_consent_expectation_names_every_consent_field() -> None:
    """A field added to Consent or GoogleConsent fails here until ``consents`` draws it."""
    consent_fields = [field.name for field in pb.Consent.DESCRIPTOR.fields]
    assert consent_fields == [*CONSENT_FLAGS, "categories", "google"]
    assert [field.name for field in pb.GoogleConsent.DESCRIPTOR.fields] == list(GOOGLE_MODES)


VALUES: list[Any] = ["text", "", 0, 1, -2.5, 1e20, True, False, None, {"a": "b", "n": 1}, ["x", 2]]


def test_fill_struct_sets_every_kind_of_value_as_before() -> None:
    data = {f"k{n}": value for n, value in enumerate(VALUES)}
    struct = struct_pb2.Struct()
    fill_struct(struct, data)
    expected = struct_pb2.Struct()
    expected.update(data)
    assert struct == expected
