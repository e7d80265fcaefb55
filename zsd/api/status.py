"""ZsdError <-> gRPC status: a code, a message a person can act on, and
google.rpc details (ErrorInfo with the reason and field; BadRequest for input errors)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from zsd import errors
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
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
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


_CLASSES: dict[grpc.StatusCode, type[ZsdError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.ABORTED: errors.Conflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.CANCELLED: errors.Cancelled,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: errors.Unsupported,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
}


def from_rpc_error(code: grpc.StatusCode, details: str, trailing: Iterable[Any]) -> ZsdError:
    """The ZsdError a peer's failed call stands for (the inverse of :func:`to_rpc_status`),
    so a forwarded call fails the same way the leader failed it. ``trailing`` is the
    call's trailing metadata (where grpc carries the google.rpc.Status): (key, value)
    pairs, as both the sync and the asyncio clients yield them at run time."""
    reason: str | None = None
    field: str | None = None
    metadata: dict[str, str] = {}
    for key, value in trailing:
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        details = status.message or details
        for packed in status.details:
            info = error_details_pb2.ErrorInfo()
            if packed.Unpack(info):
                reason = info.reason
                metadata = dict(info.metadata)
                field = metadata.pop("field", None)
    cls = _CLASSES.get(code, errors.Internal)
    if field and details.startswith(f"{field}: "):
        details = details[len(field) + 2 :]  # str(ZsdError) prefixed it; don't double it
    return cls(details or code.name, reason=reason, field=field, metadata=metadata)
