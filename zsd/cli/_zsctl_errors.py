"""Turning failed calls and failed operations into one line a person can act on.

zsd puts a ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer of every
error, carrying a ``google.rpc.ErrorInfo`` (``reason``, and the offending input in
``metadata["field"]``) and, for bad input, a ``google.rpc.BadRequest``. Operations
that fail carry the same ``Status`` in ``Operation.error``.

Part of the stand-alone ``zsctl`` client: imports only the standard library, grpc and
google.rpc.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApiError:
    """What went wrong, decoded from a ``google.rpc.Status``."""

    code: str
    message: str
    reason: str | None = None
    field: str | None = None

    def summary(self) -> str:
        """``<message> (reason: X, field: Y)``; without a reason the status code stands in."""
        extras = [f"reason: {self.reason}"] if self.reason else [f"code: {self.code}"]
        if self.field:
            extras.append(f"field: {self.field}")
        return f"{self.message or self.code.lower()} ({', '.join(extras)})"

    def line(self) -> str:
        """The line zsctl prints on stderr: ``error: <message> (reason: X, field: Y)``."""
        return f"error: {self.summary()}"


def decode_status(status: status_pb2.Status) -> ApiError:
    """Decode a ``google.rpc.Status`` (from a trailer or from ``Operation.error``)."""
    reason: str | None = None
    field: str | None = None
    violation_field: str | None = None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = reason or info.reason or None
            field = field or info.metadata.get("field") or None
        elif detail.Unpack(bad) and bad.field_violations and violation_field is None:
            violation_field = bad.field_violations[0].field or None
    return ApiError(
        code=_code_name(status.code),
        message=status.message,
        reason=reason,
        field=field or violation_field,
    )


def decode_rpc_error(error: grpc.RpcError) -> tuple[ApiError, bool]:
    """Decode a failed call; the flag says whether the server sent a rich ``Status``.

    A failure without one was (almost always) produced by the client library itself:
    the endpoint could not be reached or did not answer in time.
    """
    code = error.code()
    details = error.details() or ""
    # The stubs model trailers as objects; at run time they are (key, value) pairs.
    trailers: Any = error.trailing_metadata() or ()
    for key, value in trailers:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except DecodeError:
                break
            decoded = decode_status(status)
            if not decoded.message:
                decoded = dataclasses.replace(decoded, message=details)
            return decoded, True
    name = code.name if code is not None else "UNKNOWN"
    return ApiError(code=name, message=details), False


def _code_name(code: int) -> str:
    try:
        return code_pb2.Code.Name(code)
    except ValueError:
        return str(code)
