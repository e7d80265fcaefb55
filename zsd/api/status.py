"""ZsdError <-> gRPC status: a code, a message a person can act on, and
google.rpc details (ErrorInfo with the reason and field; BadRequest for input errors)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from zsd.errors import ZsdError

DOMAIN = "zsd.dev"

_CODES: dict[str, grpc.StatusCode] = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "already_exists": grpc.StatusCode.ALREADY_EXISTS,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "conflict": grpc.StatusCode.ABORTED,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "cancelled": grpc.StatusCode.CANCELLED,
    "deadline_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED,
    "unimplemented": grpc.StatusCode.UNIMPLEMENTED,
    "internal": grpc.StatusCode.INTERNAL,
}


def grpc_code(error: ZsdError) -> grpc.StatusCode:
    return _CODES.get(error.category, grpc.StatusCode.INTERNAL)


def to_rpc_status(error: ZsdError) -> status_pb2.Status:
    """The google.rpc.Status for an error (used for call errors and Operation.error)."""
    code = grpc_code(error)
    metadata = dict(error.metadata)
    if error.field:
        metadata["field"] = error.field
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=metadata)
    details = [_pack(info)]
    if error.field and code is grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    return status_pb2.Status(code=code.value[0], message=str(error), details=details)


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
