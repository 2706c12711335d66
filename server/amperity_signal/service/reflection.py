"""Server reflection under both its names: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection ships only ``grpc.reflection.v1alpha.ServerReflection``; current tools
ask for ``grpc.reflection.v1.ServerReflection`` first, and some never fall back. v1 is
v1alpha under another package: every message has the same fields with the same numbers,
types and oneofs (upstream grpc/grpc src/proto/grpc/reflection/v1/reflection.proto against
grpcio-reflection's v1alpha descriptor), so the same bytes mean the same thing under either
name and one servicer answers both, with v1alpha's (de)serializers. grpc-go's
``reflection.Register`` registers both names too, and lists both, since it lists every
service the server has (grpc/grpc-go reflection/serverreflection.go).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
"""The reflection service's names, v1 first: what current clients ask for."""
V1_FILE = "grpc/reflection/v1/reflection.proto"


def add_reflection(service_names: tuple[str, ...], target: Any) -> None:
    """Register reflection under both names on ``target``, listing them beside ``service_names``.

    What ``reflection.enable_server_reflection`` does for a ``grpc.aio.Server`` (through
    ``target``, an ``ObservedRegistration``), once per name, with one servicer.
    """
    add_v1_file(descriptor_pool.Default())
    servicer = reflection.aio.ReflectionServicer((*service_names, *SERVICE_NAMES))
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    for name in SERVICE_NAMES:
        target.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        target.add_registered_method_handlers(name, handlers)


def add_v1_file(pool: descriptor_pool.DescriptorPool) -> None:
    """Add v1's reflection.proto to ``pool`` unless it has it, so v1's symbols resolve.

    A client that lists the services then describes each (``grpcurl describe``) asks for
    the file of ``grpc.reflection.v1.ServerReflection`` too. The file is v1alpha's with
    v1's package and file options, as upstream's v1 reflection.proto declares them: its
    bytes are those protoc's Python plugin writes for that file, so a module generated
    from it (a grpcio-reflection that ships v1) adds the same file and no conflict. One it
    added first, even with other bytes, is kept: a pool refuses a second, different file
    of one name.
    """
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.AddSerializedFile(v1_file().SerializeToString())


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """v1's reflection.proto, built from v1alpha's descriptor."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old, new = f".{file.package}.", ".grpc.reflection.v1."
    file.name = V1_FILE
    file.package = "grpc.reflection.v1"
    file.options.Clear()
    file.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    file.options.java_multiple_files = True
    file.options.java_package = "io.grpc.reflection.v1"
    file.options.java_outer_classname = "ServerReflectionProto"
    for message in file.message_type:
        for field in message.field:
            if field.type_name:  # set only on message fields: a scalar has none
                field.type_name = field.type_name.replace(old, new, 1)
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new, 1)
            method.output_type = method.output_type.replace(old, new, 1)
    return file
