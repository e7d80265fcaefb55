"""Checks of user input for storage requests, each naming the field and what is allowed."""

from __future__ import annotations

import re
from dataclasses import fields

from zsd.errors import InvalidArgument
from zsd.storage.model import Qos

SECTOR = 512
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


def name(value: str, *, field: str) -> str:
    """Pool, image, volume and snapshot names: 1-63 of [a-z0-9._-], starting and
    ending with a letter or digit. That rules out path separators, "." and ".."."""
    if not _NAME.fullmatch(value) or ".." in value:
        raise InvalidArgument(
            f"{value!r} is not a valid name: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit (no '/' and no '..')",
            field=field,
            reason="BAD_NAME",
        )
    return value


def size(value: int, *, field: str) -> int:
    if value <= 0:
        raise InvalidArgument(f"size must be positive, got {value}", field=field, reason="BAD_SIZE")
    if value % SECTOR:
        raise InvalidArgument(
            f"size must be a multiple of {SECTOR} bytes, got {value}", field=field, reason="BAD_SIZE"
        )
    return value


def qos(value: Qos, *, field: str) -> Qos:
    """The combinations QEMU accepts: no negative numbers, total_* excludes read_*/write_*
    of the same kind, a burst (*_max) needs its base rate and is at least it, and
    burst_seconds needs a burst."""
    for f in fields(value):
        if getattr(value, f.name) < 0:
            raise InvalidArgument(
                f"must be 0 (unlimited) or positive, got {getattr(value, f.name)}",
                field=f"{field}.{f.name}",
                reason="BAD_QOS",
            )
    for kind in ("iops", "bytes_per_sec"):
        for suffix in ("", "_max"):
            total = getattr(value, f"total_{kind}{suffix}")
            if total and (getattr(value, f"read_{kind}{suffix}") or getattr(value, f"write_{kind}{suffix}")):
                raise InvalidArgument(
                    f"total_{kind}{suffix} cannot be combined with read_{kind}{suffix} or "
                    f"write_{kind}{suffix}; set either the total or the read/write limits",
                    field=f"{field}.total_{kind}{suffix}",
                    reason="BAD_QOS",
                )
        for op in ("total", "read", "write"):
            base, burst = getattr(value, f"{op}_{kind}"), getattr(value, f"{op}_{kind}_max")
            if burst and not base:
                raise InvalidArgument(
                    f"a burst needs its base rate: set {op}_{kind} too",
                    field=f"{field}.{op}_{kind}_max",
                    reason="BAD_QOS",
                )
            if burst and burst < base:
                raise InvalidArgument(
                    f"the burst ({burst}) must be at least the base rate ({base})",
                    field=f"{field}.{op}_{kind}_max",
                    reason="BAD_QOS",
                )
    has_burst = any(getattr(value, f.name) for f in fields(value) if f.name.endswith("_max"))
    if value.burst_seconds and not has_burst:
        raise InvalidArgument(
            "burst_seconds only applies to a limit with a burst (*_max)",
            field=f"{field}.burst_seconds",
            reason="BAD_QOS",
        )
    return value
