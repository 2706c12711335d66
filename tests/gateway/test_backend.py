"""The service client reads a response Struct as the generic protobuf printer would.

``ServiceClient.browser_profile`` answers ``struct_to_dict(attributes)``; it used to answer
``struct_number(MessageToDict(attributes))``, and browsers must not see a difference.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from amperity_signal.gateway.backend import struct_number
from amperity_signal.gateway.errors import json_response
from amperity_signal.service.convert import struct_to_dict

TRICKY: dict[str, Any] = {
    "Persona": "Value Hunter",
    "unicode": 'Zoë 北京 🚀 \u2028 \\ "quoted"',
    "empty_string": "",
    "whole": 1.0,
    "negative_whole": -5.0,
    "negative_zero": -0.0,
    "fraction": 0.1,
    "tiny": 5e-324,
    "huge": 1e20,
    "largest_exact": float(2**53 - 1),
    "beyond_exact": float(2**53),
    "far_beyond_exact": float(2**64 + 2**12),
    "negative_beyond_exact": -float(2**60),
    "true": True,
    "false": False,
    "null": None,
    "empty_struct": {},
    "empty_list": [],
    "nested": {"list": [1.0, [2.5, [None, {"deep": [True, "x", {}]}]], []], "n": -0.0},
    "list_of_structs": [{"a": 1.0}, {}, {"b": [{"c": 3e300}]}],
}


def _generic(struct: struct_pb2.Struct) -> Any:
    """What the client answered before: ``MessageToDict`` then ``struct_number``."""
    return struct_number(json_format.MessageToDict(struct))


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    # As the gateway receives it: parsed from the wire.
    return struct_pb2.Struct.FromString(struct.SerializeToString())


def test_struct_json_matches_message_to_dict_on_tricky_values() -> None:
    """Values, types and key order equal the generic printer's, so the JSON bytes do too."""
    struct = _struct(TRICKY)
    ours, theirs = struct_to_dict(struct), _generic(struct)
    assert json.dumps(ours) == json.dumps(theirs)
    assert ours == theirs
    assert isinstance(ours["whole"], int)
    assert isinstance(ours["huge"], float)
    assert ours["negative_zero"] == 0
    assert isinstance(ours["negative_zero"], int)


def test_struct_json_of_an_empty_struct_is_an_empty_dict() -> None:
    """No attributes is ``{}``."""
    assert struct_to_dict(struct_pb2.Struct()) == _generic(struct_pb2.Struct()) == {}


def test_a_value_with_no_kind_set_is_null() -> None:
    """An unset Value reads as JSON null, as the generic printer treats it."""
    struct = struct_pb2.Struct()
    struct.fields["unset"].Clear()
    assert struct_to_dict(struct) == _generic(struct) == {"unset": None}


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numbers_never_become_a_json_body(number: float) -> None:
    """Infinity and NaN have no JSON form: encoding fails (a 500), as MessageToDict did."""
    struct = struct_pb2.Struct()
    struct.fields["n"].list_value.values.add().number_value = number
    with pytest.raises(ValueError, match="JSON"):
        json_response({"provider": "amperity", "attributes": struct_to_dict(struct)})
    with pytest.raises(ValueError, match=r"Infinity|NaN"):
        _generic(struct)
