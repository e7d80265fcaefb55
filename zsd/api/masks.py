"""Field masks: validated against the message type, then applied (AIP-157 read masks,
and later AIP-134 update masks)."""

from __future__ import annotations

from typing import TypeVar, cast

from google.protobuf import descriptor, field_mask_pb2
from google.protobuf.message import Message

from zsd.errors import InvalidArgument

M = TypeVar("M", bound=Message)


def validate(mask: field_mask_pb2.FieldMask, message_type: type[Message], *, field: str) -> None:
    desc = cast(descriptor.Descriptor, message_type.DESCRIPTOR)
    for path in mask.paths:
        single = field_mask_pb2.FieldMask(paths=[path])
        if not single.IsValidForDescriptor(desc):
            known = ", ".join(f.name for f in desc.fields)
            raise InvalidArgument(
                f"unknown field {path!r} in {field}; fields of {desc.name} are: {known} "
                "(nested fields with '.', e.g. 'hypervisor.kind')",
                reason="INVALID_FIELD_MASK",
                field=f"{field}.paths",
            )


def apply(mask: field_mask_pb2.FieldMask, message: M) -> M:
    """A copy of ``message`` with only the masked fields set; an empty mask keeps everything."""
    if not mask.paths:
        return message
    out = type(message)()
    mask.MergeMessage(message, out)
    return out
