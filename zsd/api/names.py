"""Resource names (AIP-122): parsing and validation with errors that name the field."""

from __future__ import annotations

import re
import uuid

from zsd.errors import InvalidArgument

_LABEL = r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"^hosts/({_LABEL}|-)$")
_OPERATION_RE = re.compile(r"^operations/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def host_id(name: str, *, field: str = "name") -> str:
    """The {host} of "hosts/{host}"; "-" means the host serving the call."""
    m = _HOST_RE.match(name)
    if not m:
        raise InvalidArgument(
            f"{name!r} is not a host name; expected 'hosts/{{host}}' where {{host}} is an RFC 1123 label "
            "(a-z, 0-9, '-', 1-63 chars, starting with a letter) or 'hosts/-' for the serving host",
            reason="INVALID_NAME",
            field=field,
        )
    return name.split("/", 1)[1]


def operation(name: str, *, field: str = "name") -> str:
    if not _OPERATION_RE.match(name):
        raise InvalidArgument(
            f"{name!r} is not an operation name; expected 'operations/{{uuid}}'",
            reason="INVALID_NAME",
            field=field,
        )
    return name


def cluster(name: str, *, field: str = "name") -> None:
    if name not in ("", "cluster"):
        raise InvalidArgument(
            f"{name!r} is not the cluster's name; the cluster is the singleton 'cluster'",
            reason="INVALID_NAME",
            field=field,
        )


def request_id(value: str, *, field: str = "request_id") -> str:
    """Optional idempotency key (AIP-155): a UUID is recommended; any 1-64 char token is accepted."""
    if value and not _REQUEST_ID_RE.match(value):
        raise InvalidArgument(
            f"{value!r} is not a valid request_id; use a UUID such as {uuid.uuid4()} "
            "(1-64 chars: letters, digits, '-', '_', '.')",
            reason="INVALID_REQUEST_ID",
            field=field,
        )
    return value
