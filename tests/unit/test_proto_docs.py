"""The contract's documentation rule: every type, field and value has a sentence above it."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
CONTRACT = "datafly/amperity/v1/amperity_service.proto"
# Numbers of FileDescriptorProto's and its parts' fields, as SourceCodeInfo paths use them.
_MESSAGES, _ENUMS, _SERVICES = 4, 5, 6
_FIELDS = _VALUES = _METHODS = 2
_NESTED_MESSAGES, _NESTED_ENUMS = 3, 4


def _contract() -> descriptor_pb2.FileDescriptorProto:
    """The contract as protoc reads it (as ``make gen`` runs it), with its comments."""
    with tempfile.TemporaryDirectory() as temporary:
        out = Path(temporary) / "contract.pb"
        protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}"]
        subprocess.run(
            [*protoc, "--include_source_info", f"--descriptor_set_out={out}", CONTRACT],
            cwd=PROTO_ROOT,
            check=True,
            timeout=60,
        )
        (file,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return file


def _comments() -> dict[str, str]:
    """Every service, method, message, field, enum and value by name: its leading comment."""
    file = _contract()
    found: list[tuple[str, tuple[int, ...]]] = []

    def enum(e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...]) -> None:
        found.append((e.name, path))
        for j, value in enumerate(e.value):
            found.append((value.name, (*path, _VALUES, j)))

    def message(m: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str) -> None:
        found.append((name, path))
        for j, field in enumerate(m.field):
            found.append((f"{name}.{field.name}", (*path, _FIELDS, j)))
        for j, nested in enumerate(m.nested_type):
            if not nested.options.map_entry:  # a map field's entry is not written out
                message(nested, (*path, _NESTED_MESSAGES, j), f"{name}.{nested.name}")
        for j, nested_enum in enumerate(m.enum_type):
            enum(nested_enum, (*path, _NESTED_ENUMS, j))

    for i, service in enumerate(file.service):
        found.append((service.name, (_SERVICES, i)))
        for j, method in enumerate(service.method):
            found.append((f"{service.name}.{method.name}", (_SERVICES, i, _METHODS, j)))
    for i, m in enumerate(file.message_type):
        message(m, (_MESSAGES, i), m.name)
    for i, e in enumerate(file.enum_type):
        enum(e, (_ENUMS, i))
    by_path = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
    return {name: " ".join(by_path.get(path, "").split()) for name, path in found}


COMMENTS = _comments()


@pytest.mark.parametrize("name", sorted(COMMENTS))
def test_every_type_field_and_value_is_documented_in_a_full_sentence_above_it(name: str) -> None:
    """A capitalised sentence of three words or more, ending with a period (STYLE.md: Buf)."""
    comment = COMMENTS[name]
    assert re.fullmatch(r"[A-Z].*\.", comment), f"{name}: {comment!r}"
    assert len(comment.split()) >= 3, f"{name}: {comment!r}"
