"""The Python client reads a ``Struct`` as the service does: the same values, the same types.

The two packages cannot share the converter (the client installs without the server), so
``amperity_signal_client.events.struct_to_dict`` repeats ``service.convert``'s. Whole
numbers below 2**53 come back as ``int`` in both, the rest as ``float``; nesting, lists,
booleans and nulls as themselves. A difference in either copy fails here.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2
from hypothesis import example, given
from hypothesis import strategies as st

from amperity_signal.service import convert as service
from amperity_signal_client import events as client

# JSON values as a Struct holds them: numbers are doubles, so ints beyond 2**53 lose digits.
_SCALARS = (
    st.none()
    | st.booleans()
    | st.text(max_size=8)
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=20,
)


def _typed(value: Any) -> Any:
    """``value`` with each leaf's type beside it: ``1 == 1.0`` must not hide a difference."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return (type(value).__name__, value)


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


@given(st.dictionaries(st.text(max_size=6), _JSON, max_size=6))
@example({"whole": 1.0, "edge": float(2**53), "below": float(2**53 - 1), "neg": -0.0})
@example({"nested": {"list": [1, 2.5, None, True, {"deep": "x"}]}, "empty": {}, "none": []})
def test_the_client_reads_a_struct_as_the_service_does(data: dict[str, Any]) -> None:
    struct = _struct(data)
    assert _typed(client.struct_to_dict(struct)) == _typed(service.struct_to_dict(struct))


def test_whole_numbers_below_2_to_the_53_come_back_as_int_in_both() -> None:
    struct = _struct({"count": 3.0, "big": float(2**53), "half": 0.5, "flag": True})
    for convert in (client.struct_to_dict, service.struct_to_dict):
        assert _typed(convert(struct)) == {
            "count": ("int", 3),
            "big": ("float", float(2**53)),
            "half": ("float", 0.5),
            "flag": ("bool", True),
        }
