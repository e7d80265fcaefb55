"""The one error vocabulary of zsd.

Every failure that crosses a module boundary is a ``ZsdError`` subclass: a
category (which maps to one gRPC status code), a machine-readable ``reason``
(UPPER_SNAKE, stable; goes into google.rpc.ErrorInfo) and, when one input is to
blame, the offending ``field`` (a dotted path such as ``read_mask.paths``).
Third-party exceptions (libvirtError, NetlinkError, SanlockException, nft
output) are translated into these where they are caught, never passed through.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class ZsdError(Exception):
    """Base of all zsd errors. Subclasses pick the category; never raise this directly."""

    category = "internal"
    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.field = field
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(ZsdError):
    """The request itself is wrong, whatever the state of the system."""

    category = "invalid_argument"
    default_reason = "INVALID_ARGUMENT"


class NotFound(ZsdError):
    category = "not_found"
    default_reason = "NOT_FOUND"


class AlreadyExists(ZsdError):
    category = "already_exists"
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ZsdError):
    """The request is valid but the system is not in a state that allows it."""

    category = "failed_precondition"
    default_reason = "FAILED_PRECONDITION"


class Conflict(ZsdError):
    """A concurrent change won (etag mismatch, request_id reused with other content)."""

    category = "conflict"
    default_reason = "CONFLICT"


class ResourceExhausted(ZsdError):
    """Capacity or quota would be exceeded."""

    category = "resource_exhausted"
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(ZsdError):
    """A dependency (libvirtd, sanlock, the leader) cannot be reached now; retrying may help."""

    category = "unavailable"
    default_reason = "UNAVAILABLE"


class Cancelled(ZsdError):
    category = "cancelled"
    default_reason = "CANCELLED"


class DeadlineExceeded(ZsdError):
    category = "deadline_exceeded"
    default_reason = "DEADLINE_EXCEEDED"


class Unsupported(ZsdError):
    """This host or driver lacks a capability the request needs."""

    category = "unimplemented"
    default_reason = "UNSUPPORTED"


class PermissionDenied(ZsdError):
    """The caller is known but not allowed to make this call (e.g. a peer-only call
    with a client certificate)."""

    category = "permission_denied"
    default_reason = "PERMISSION_DENIED"


class Internal(ZsdError):
    """A bug or an unexpected failure; the message is safe to show, details are logged."""


class ConfigError(ZsdError):
    """The configuration is invalid; raised once at start (or on reload)."""

    category = "invalid_argument"
    default_reason = "INVALID_CONFIG"
