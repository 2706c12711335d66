"""``gateway.fieldnames``: the service's proto paths named back as a body spelled them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.protobuf.descriptor import Descriptor
from google.rpc import error_details_pb2, status_pb2

from amperity_signal.gateway.errors import from_rpc_error
from amperity_signal.gateway.fieldnames import (
    CONSENT_REQUEST_FIELDS,
    EVENT_FIELDS,
    JsonField,
    consent_field,
    event_field,
)
from datafly.amperity.v1 import amperity_service_pb2 as pb

# The converter never reads them from a body: ip is the connection's.
NOT_FROM_THE_BODY = {"context.ip"}


def _proto_paths(message: Descriptor, prefix: str = "") -> Iterator[str]:
    for field in message.fields:
        path = f"{prefix}{field.name}"
        yield path
        sub = field.message_type
        # Below a Struct, a Timestamp or a map there are no fields of ours.
        if (
            sub is not None
            and sub.file.package != "google.protobuf"
            and not sub.GetOptions().map_entry
        ):
            yield from _proto_paths(sub, f"{path}.")


def _table_paths(fields: Mapping[str, JsonField], prefix: str = "") -> Iterator[str]:
    for name, spec in fields.items():
        yield f"{prefix}{name}"
        yield from _table_paths(spec.fields or {}, f"{prefix}{name}.")


def test_every_field_of_an_event_is_in_the_table() -> None:
    """A proto field added without its JSON names would be named in the proto's words."""
    proto = set(_proto_paths(pb.Event.DESCRIPTOR)) - NOT_FROM_THE_BODY
    assert proto == set(_table_paths(EVENT_FIELDS))


def test_every_field_of_a_consent_request_the_body_carries_is_in_the_table() -> None:
    """All but which integration: the pipeline key is a header or parameter."""
    integration = {"pipeline_key", "integration_id"}
    proto = set(_proto_paths(pb.RecordConsentRequest.DESCRIPTOR)) - integration
    assert proto == set(_table_paths(CONSENT_REQUEST_FIELDS))


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("event", {}, "body"),
        ("event.message_id", {}, "messageId"),
        ("event.message_id", {"message_id": "m"}, "message_id"),
        ("event.context.geo.postal_code", {}, "context.geo.postalCode"),
        ("event.context.consent.google.ad_storage", {}, "context.consent.google.ad_storage"),
        (
            "event.context.consent.google.ad_storage",
            {"context": {"consent": {"google": {"adStorage": "x"}}}},
            "context.consent.google.adStorage",
        ),
        ("event.context.consent.categories.C0001", {}, "context.consent.categories.C0001"),
        ("event.traits.a.b[2].c", {}, "traits.a.b[2].c"),
        ("event.context.vendor_ids.ga_client_id", {}, "context.vendorIds.ga_client_id"),
        (
            "event.context.vendor_ids.ga_client_id",
            {"context": {"vendorIds": {"gaClientIdOld": "1", "gaClientId": "2"}}},
            "context.vendorIds.gaClientId",
        ),
        (
            # The service shows a key's first 40 characters; the body's is cut alike.
            "event.context.vendor_ids.ga_client_id_of_a_vendor_with_a_very_lon",
            {"context": {"vendorIds": {"gaClientIdOfAVendorWithAVeryLongNameIndeed": "1"}}},
            "context.vendorIds.gaClientIdOfAVendorWithAVeryLongNameInde",
        ),
    ],
)
def test_a_path_is_named_by_the_key_the_body_used(
    path: str, body: dict[str, object], named: str
) -> None:
    """The body's spelling when it sent one, else the name errors use."""
    assert event_field(path, body) == named
    assert event_field(path, body, "batch[3].") == (
        "batch[3]" if named == "body" else f"batch[3].{named}"
    )


@pytest.mark.parametrize(
    "path",
    [
        "payload",  # Amperity's body, as the blueprint mapped it
        "integration_id",
        "event.context.ip",
        "event.partner",
        "event.context.page.url.more",
        "event.context.page",
        "event.",
        "",
    ],
)
@pytest.mark.parametrize("body", [{}, None, [], {"context": "x"}])
def test_a_path_it_cannot_name_is_the_services(path: str, body: object) -> None:
    """Whole: no half translation, no prefix, no error."""
    if path == "event.context.page":  # a sub-message: named, not unknown
        assert event_field(path, body) == "context.page"
        return
    assert event_field(path, body, "batch[0].") == path


def test_consent_fields_are_named_as_the_body_sent_them() -> None:
    """consentedAt, or its alias when that was sent; the pipeline key stays as it is."""
    assert consent_field("consented_at", {}) == "consentedAt"
    assert consent_field("consented_at", {"consented_at": "x"}) == "consented_at"
    assert consent_field("anonymous_id", {}) == "anonymousId"
    assert consent_field("consent.google.ad_user_data", {}) == "consent.google.ad_user_data"
    assert consent_field("pipeline_key", {}) == "pipeline_key"


def _refused(message: str, *violations: tuple[str, str]) -> grpc.aio.AioRpcError:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )
    packed = any_pb2.Any()
    packed.Pack(bad)
    status = status_pb2.Status(code=3, message=message, details=[packed])
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(
        grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), trailing, details=message
    )


def test_a_refusal_is_renamed_in_its_field_and_message() -> None:
    """Every violation the message lists, in the body's names; ``field`` is the first."""
    error = _refused(
        "invalid event: event.user_id: too long.; event.context.ip: too long.",
        ("event.user_id", "too long."),
        ("event.context.ip", "too long."),
    )
    answer = from_rpc_error(error, lambda path: event_field(path, {}, "batch[1]."))
    assert (answer.field, answer.message) == (
        "batch[1].userId",
        "invalid event: batch[1].userId: too long.; event.context.ip: too long.",
    )


def test_a_message_of_another_shape_keeps_its_words() -> None:
    """Only a message that ends with its violations is rewritten; ``field`` is renamed still."""
    error = _refused("the event is refused", ("event.user_id", "too long."))
    answer = from_rpc_error(error, lambda path: event_field(path, {}))
    assert (answer.field, answer.message) == ("userId", "the event is refused")
