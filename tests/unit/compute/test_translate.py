"""libvirt errors become zsd's error vocabulary at the boundary, with what zsd was
doing in the message."""

from __future__ import annotations

import libvirt
import pytest

from zsd.compute.hypervisor import translate
from zsd.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
    ZsdError,
)


def _error(code: int, message: str) -> libvirt.libvirtError:
    error = libvirt.libvirtError(message)
    # (code, domain, message, level, str1, str2, str3, int1, int2), as virGetLastError gives it.
    error.err = (code, libvirt.VIR_FROM_QEMU, message, 2, None, None, None, 0, 0)
    return error


@pytest.mark.parametrize(
    ("code", "message", "kind", "reason"),
    [
        (libvirt.VIR_ERR_NO_DOMAIN, "Domain not found", NotFound, "DOMAIN_NOT_FOUND"),
        (libvirt.VIR_ERR_OPERATION_INVALID, "domain is not running", FailedPrecondition, "DOMAIN_STATE"),
        (libvirt.VIR_ERR_OPERATION_TIMEOUT, "timed out", DeadlineExceeded, "HYPERVISOR_TIMEOUT"),
        (libvirt.VIR_ERR_XML_ERROR, "bad XML", InvalidArgument, "DOMAIN_CONFIG"),
        (libvirt.VIR_ERR_CONFIG_UNSUPPORTED, "no IDE on q35", InvalidArgument, "DOMAIN_CONFIG"),
        (libvirt.VIR_ERR_OPERATION_FAILED, "domain 'x' already exists", AlreadyExists, "DOMAIN_EXISTS"),
        (libvirt.VIR_ERR_RPC, "connection reset", Unavailable, "HYPERVISOR_UNAVAILABLE"),
        (libvirt.VIR_ERR_INTERNAL_ERROR, "qemu died", Internal, "HYPERVISOR_ERROR"),
    ],
)
def test_translation(code: int, message: str, kind: type[ZsdError], reason: str) -> None:
    out = translate(_error(code, message), what="starting VM web-1")
    assert type(out) is kind
    assert out.reason == reason
    assert out.message == f"starting VM web-1: {message}"
