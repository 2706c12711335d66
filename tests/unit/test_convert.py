"""``context_to_dict`` and ``fill_struct`` against field-by-field references.

``context_to_dict`` walks ``ListFields`` (set fields only, in field-number order); the
reference asks every field of the descriptor in turn, as the converter once did. Both must
give the same dict, key order included (it becomes the order of pass-through fields).
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


def reference(context: pb.Context) -> dict[str, Any]:
    """Every descriptor field in order: truthy scalars, non-empty parts, maps and consent."""
    out: dict[str, Any] = {}
    for field in pb.Context.DESCRIPTOR.fields:
        name = field.name
        value = getattr(context, name)
        if name == "consent":
            if context.HasField("consent"):
                out[name] = consent_to_dict(value)
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
def contexts(draw: st.DrawFn) -> pb.Context:
    context = pb.Context()
    for field in pb.Context.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        name = field.name
        if name == "vendor_ids":
            keys = draw(st.lists(st.sampled_from(["ga", "fbp", "gclid"]), max_size=3))
            context.vendor_ids.update({key: draw(TEXT) for key in keys})
        elif name == "consent":
            context.consent.SetInParent()
            if draw(st.booleans()):
                context.consent.analytics = draw(st.booleans())
            if draw(st.booleans()):
                context.consent.categories["ads"] = draw(st.booleans())
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
    return context


@settings(max_examples=300, deadline=None)
@given(contexts())
def test_context_to_dict_matches_the_field_by_field_reference(context: pb.Context) -> None:
    converted = context_to_dict(context)
    expected = reference(context)
    assert converted == expected
    assert list(converted) == list(expected)
    for name, part in expected.items():
        if isinstance(part, dict):
            assert list(converted[name]) == list(part)


VALUES: list[Any] = ["text", "", 0, 1, -2.5, 1e20, True, False, None, {"a": "b", "n": 1}, ["x", 2]]


def test_fill_struct_sets_every_kind_of_value_as_before() -> None:
    data = {f"k{n}": value for n, value in enumerate(VALUES)}
    struct = struct_pb2.Struct()
    fill_struct(struct, data)
    expected = struct_pb2.Struct()
    expected.update(data)
    assert struct == expected
