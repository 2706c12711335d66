"""grpc.reflection.v1 is served with v1alpha's messages: the two must stay wire-identical."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2

from amperity_signal.service.reflection import add_v1_file, v1_file


def _wire(file: descriptor_pb2.FileDescriptorProto) -> list[tuple[object, ...]]:
    """What decides the bytes of each message: its fields' names, numbers, kinds and oneofs."""
    return [
        (
            m.name,
            [
                (
                    f.name,
                    f.number,
                    f.type,
                    f.label,
                    f.type_name.rsplit(".", 1)[-1],
                    f.HasField("oneof_index"),
                )
                for f in m.field
            ],
        )
        for m in file.message_type
    ]


def test_v1_file_has_v1alphas_messages_under_v1s_package() -> None:
    """Same messages, fields and numbers; only the package (and the file options) differ."""
    v1alpha = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1alpha)
    v1 = v1_file()

    assert (v1.name, v1.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    assert _wire(v1) == _wire(v1alpha)
    assert all(
        f.type_name.startswith(".grpc.reflection.v1.")
        for m in v1.message_type
        for f in m.field
        if f.type_name
    )
    method = v1.service[0].method[0]
    assert (v1.service[0].name, method.name) == ("ServerReflection", "ServerReflectionInfo")
    assert (method.input_type, method.output_type) == (
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )
    assert method.client_streaming and method.server_streaming


def test_a_pool_that_has_a_v1_file_keeps_it() -> None:
    """A v1 reflection.proto added before (by a later grpcio-reflection) is left as it is.

    Adding a file of the same name with other bytes would raise: a pool holds one per name.
    """
    pool = descriptor_pool.DescriptorPool()
    theirs = v1_file()
    theirs.options.java_package = "org.example.reflection.v1"
    pool.AddSerializedFile(theirs.SerializeToString())

    add_v1_file(pool)

    kept = descriptor_pb2.FileDescriptorProto()
    pool.FindFileByName("grpc/reflection/v1/reflection.proto").CopyToProto(kept)
    assert kept.options.java_package == "org.example.reflection.v1"
