"""How zsctl prints resources: JSON/YAML for scripts, tables and ``key: value`` blocks for people.

Machine formats are the proto3 JSON mapping of the resources (snake_case field names,
every scalar/enum/repeated field present even when zero or empty, message fields only
when set); ``-o yaml`` is the same data as YAML. The table renderer walks the message
descriptors, so new fields appear without changes here.

Part of the stand-alone ``zsctl`` client: imports only the standard library,
google.protobuf, google.rpc and zsd.v1 (plus yaml, lazily, for ``-o yaml``).
"""

from __future__ import annotations

import datetime
import json
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    json_format,
    message_factory,
    timestamp_pb2,
)
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

# Imported for their side effect too: Any payloads (Operation.response, Status.details)
# can only be rendered when their types are in the default descriptor pool.
from zsd.v1 import cluster_pb2, host_pb2, operation_pb2

from ._zsctl_errors import decode_status

FORMATS = ("table", "json", "yaml")
HOST_COLUMNS = (
    "NAME",
    "STATE",
    "GOSSIP",
    "LEASE",
    "HYPERVISOR",
    "CPUS",
    "MEMORY",
    "ADDRESS",
    "VERSION",
    "LABELS",
)
OPERATION_COLUMNS = ("NAME", "VERB", "TARGET", "STATE", "PROGRESS", "AGE")
EMPTY = "-"
INDENT = "  "
# Comma-joined lists (CPU flags) wrap here; tables and single values never wrap.
WRAP = 100

Clock = Callable[[], datetime.datetime]

_KEEP_REGISTERED = (cluster_pb2, host_pb2, operation_pb2, error_details_pb2)


# The descriptor API as used here; both the pure-Python and the upb descriptors match it.
class EnumValueLike(Protocol):
    @property
    def name(self) -> str: ...


class EnumLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def values_by_number(self) -> Mapping[int, EnumValueLike]: ...


class MessageTypeLike(Protocol):
    @property
    def full_name(self) -> str: ...
    @property
    def fields(self) -> Sequence[FieldLike]: ...
    @property
    def fields_by_name(self) -> Mapping[str, FieldLike]: ...
    def GetOptions(self) -> descriptor_pb2.MessageOptions: ...


class FieldLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> int: ...
    @property
    def cpp_type(self) -> int: ...
    @property
    def is_repeated(self) -> bool: ...
    @property
    def message_type(self) -> MessageTypeLike | None: ...
    @property
    def enum_type(self) -> EnumLike | None: ...


# -- machine formats -------------------------------------------------------------------------


def to_data(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping of ``message`` with proto field names and zero values included.

    Keys follow the order of the fields in the .proto (json_format puts zero values last).
    """
    data = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    descriptor: MessageTypeLike = message.DESCRIPTOR
    return _in_field_order(descriptor, data)


# Well-known types whose JSON form is a string or other non-object value.
_JSON_SPECIAL_TYPES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        *(
            f"google.protobuf.{kind}Value"
            for kind in ("Bool", "Bytes", "Double", "Float", "Int32", "Int64", "String", "UInt32", "UInt64")
        ),
    }
)


def _in_field_order(descriptor: MessageTypeLike, data: dict[str, Any]) -> dict[str, Any]:
    ordered: dict[str, Any] = {}
    if "@type" in data:
        ordered["@type"] = data["@type"]
    for field in descriptor.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        element = field.message_type
        if element is not None and not _is_map(field) and element.full_name not in _JSON_SPECIAL_TYPES:
            if field.is_repeated:
                value = [_object_in_order(element, item) for item in value]
            else:
                value = _object_in_order(element, value)
        ordered[field.name] = value
    for key, value in data.items():
        ordered.setdefault(key, value)
    return ordered


def _object_in_order(descriptor: MessageTypeLike, value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if descriptor.full_name == "google.protobuf.Any":
        type_name = str(value.get("@type", "")).rpartition("/")[2]
        try:
            inner: MessageTypeLike = descriptor_pool.Default().FindMessageTypeByName(type_name)
        except KeyError:
            return value
        if inner.full_name in _JSON_SPECIAL_TYPES:
            return value
        descriptor = inner
    return _in_field_order(descriptor, value)


def render_data(data: object, fmt: str) -> str:
    """One JSON or YAML document for ``data`` (a dict for one resource, a list for many)."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    raise ValueError(f"not a data format: {fmt}")


def render_stream_item(data: object, fmt: str) -> str:
    """One item of an endless stream: a JSON object on one line (JSON Lines), or a YAML
    document opened by ``---`` so that the output as a whole is one YAML stream."""
    if fmt == "json":
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"
    if fmt == "yaml":
        return "---\n" + render_data(data, fmt)
    raise ValueError(f"not a data format: {fmt}")


# -- tables ----------------------------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> str:
    """Left-aligned columns two spaces apart, without trailing blanks."""
    table = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = []
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines) + "\n"


def host_rows(hosts: Iterable[host_pb2.Host]) -> list[list[str]]:
    """Rows under ``HOST_COLUMNS``."""
    rows = []
    for host in hosts:
        rows.append(
            [
                host.name or EMPTY,
                enum_label(host_pb2.Host.State.DESCRIPTOR, host.state),
                enum_label(host_pb2.MemberState.DESCRIPTOR, host.gossip_state),
                enum_label(host_pb2.LeaseState.DESCRIPTOR, host.lease_state),
                enum_label(host_pb2.HypervisorKind.DESCRIPTOR, host.hypervisor.kind),
                str(host.cpu.count) if host.cpu.count else EMPTY,
                human_bytes(host.memory.total_bytes) if host.memory.total_bytes else EMPTY,
                host.address or EMPTY,
                host.zsd_version or EMPTY,
                labels_label(host.labels),
            ]
        )
    return rows


def labels_label(labels: Mapping[str, str]) -> str:
    """``k=v,k2=v2`` in key order; ``-`` for none."""
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels)) or EMPTY


def change_lines(response: cluster_pb2.WatchResponse) -> list[str]:
    """``REVISION TYPE NAME`` for each change of one watched revision: ``12 PUT hosts/h1``."""
    types: Mapping[int, EnumValueLike] = cluster_pb2.ResourceChange.Type.DESCRIPTOR.values_by_number
    lines = []
    for change in response.changes:
        kind = types[change.type].name if change.type in types else str(change.type)
        lines.append(f"{response.revision} {kind} {change.name or EMPTY}")
    return lines


def operation_rows(operations: Iterable[operation_pb2.Operation], now: datetime.datetime) -> list[list[str]]:
    """Rows under ``OPERATION_COLUMNS``."""
    rows = []
    for op in operations:
        meta = op.metadata
        age = EMPTY
        if meta.HasField("create_time"):
            age = human_age((now - meta.create_time.ToDatetime(datetime.UTC)).total_seconds())
        rows.append(
            [
                op.name or EMPTY,
                meta.verb or EMPTY,
                meta.target or EMPTY,
                operation_state(op),
                progress_label(meta.progress_percent),
                age,
            ]
        )
    return rows


def operation_state(op: operation_pb2.Operation) -> str:
    return enum_label(operation_pb2.OperationMetadata.State.DESCRIPTOR, op.metadata.state)


def progress_label(percent: int) -> str:
    return EMPTY if percent < 0 else f"{percent}%"


# -- key: value blocks -----------------------------------------------------------------------


def render_show(message: Message, now: datetime.datetime) -> str:
    """``key: value`` lines; nested messages indented, repeated messages as sub-tables.

    Empty strings, empty lists and unset messages are left out; numbers, booleans and
    enums always print, since ``0``/``no`` carry meaning.
    """
    return "".join(line + "\n" for line in _block(message, now, ""))


def _block(message: Message, now: datetime.datetime, indent: str) -> list[str]:
    lines: list[str] = []
    descriptor: MessageTypeLike = message.DESCRIPTOR
    for field in descriptor.fields:
        value = getattr(message, field.name)
        if _is_map(field):
            if value:
                pairs = ", ".join(f"{k}={value[k]}" for k in sorted(value))
                lines.append(f"{indent}{field.name}: {pairs}")
        elif field.is_repeated:
            if not value:
                continue
            if _is_table_type(field):
                lines.append(f"{indent}{field.name}:")
                lines.append(_sub_table(field, value, now, indent + INDENT).rstrip("\n"))
            elif field.type == FieldDescriptor.TYPE_STRING and any(_is_sentence(v) for v in value):
                lines.append(f"{indent}{field.name}:")
                lines.extend(f"{indent}{INDENT}- {v}" for v in value)
            else:
                joined = _join(field, value, now, ", ")
                lines.extend(
                    textwrap.wrap(
                        joined,
                        width=WRAP,
                        initial_indent=f"{indent}{field.name}: ",
                        subsequent_indent=indent + INDENT * 2,
                        break_long_words=False,
                        break_on_hyphens=False,
                    )
                )
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if not message.HasField(field.name):
                continue
            if _is_brief(field):
                lines.append(f"{indent}{field.name}: {_brief(value, now)}")
            else:
                lines.append(f"{indent}{field.name}:")
                lines.extend(_block(value, now, indent + INDENT))
        elif field.type == FieldDescriptor.TYPE_STRING and not value:
            continue
        else:
            lines.append(f"{indent}{field.name}: {_scalar(field, value)}")
    return lines


def _is_sentence(text: str) -> bool:
    """Too long or too punctuated to share a comma-joined line with others."""
    return len(text) > 40 or "," in text


def _sub_table(field: FieldLike, items: Sequence[Message], now: datetime.datetime, indent: str) -> str:
    columns = [
        f for f in _message_type(field).fields if f.type != FieldDescriptor.TYPE_MESSAGE or _is_brief(f)
    ]
    rows = []
    for item in items:
        row = []
        for column in columns:
            value = getattr(item, column.name)
            if column.is_repeated:
                row.append(_join(column, value, now, ",") or EMPTY)
            elif column.type == FieldDescriptor.TYPE_MESSAGE:
                row.append(_brief(value, now) if item.HasField(column.name) else EMPTY)
            else:
                row.append(_scalar(column, value) or EMPTY)
        rows.append(row)
    # Sizes print in human units, so their columns lose the "_bytes" of the field name.
    headers = [c.name.removesuffix("_bytes").upper() for c in columns]
    return render_table(headers, rows, indent)


def _join(field: FieldLike, values: Sequence[Any], now: datetime.datetime, sep: str) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return sep.join(_brief(v, now) for v in values)
    if field.cpp_type in _INTEGER_CPP_TYPES and field.type != FieldDescriptor.TYPE_ENUM:
        return _ranges(list(values))
    return sep.join(_scalar(field, v) for v in values)


def _scalar(field: FieldLike, value: Any) -> str:
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return enum_label(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "yes" if value else "no"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.hex() if isinstance(value, bytes) else str(value)
    if field.name.endswith("_bytes") and isinstance(value, int):
        return human_bytes(value)
    if field.name.endswith("_percent") and isinstance(value, int):
        return progress_label(value)
    return str(value)


_BRIEF_TYPES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.Any",
        "google.protobuf.FieldMask",
        "google.rpc.Status",
    }
)
_INTEGER_CPP_TYPES = frozenset(
    {
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
    }
)


def _message_type(field: FieldLike) -> MessageTypeLike:
    if field.message_type is None:
        raise TypeError(f"{field.name} is not a message field")
    return field.message_type


def _is_brief(field: FieldLike) -> bool:
    """A message field whose type reads best on one line (timestamps, durations, ...)."""
    return field.message_type is not None and field.message_type.full_name in _BRIEF_TYPES


def _is_table_type(field: FieldLike) -> bool:
    """A message field that, repeated, becomes a sub-table."""
    return field.message_type is not None and not _is_brief(field)


def _is_map(field: FieldLike) -> bool:
    return field.is_repeated and field.message_type is not None and field.message_type.GetOptions().map_entry


def _brief(value: Message, now: datetime.datetime) -> str:
    """Well-known types that read best on one line."""
    if isinstance(value, timestamp_pb2.Timestamp):
        when = value.ToDatetime(datetime.UTC)
        stamp = when.isoformat(timespec="seconds").replace("+00:00", "Z")
        delta = (now - when).total_seconds()
        relative = f"{human_age(delta)} ago" if delta >= 0 else f"in {human_age(-delta)}"
        return f"{stamp} ({relative})"
    if isinstance(value, duration_pb2.Duration):
        return human_duration(value.ToTimedelta().total_seconds())
    if isinstance(value, status_pb2.Status):
        return decode_status(value).summary()
    if isinstance(value, any_pb2.Any):
        return _brief_any(value)
    return json_format.MessageToJson(value, indent=None)


def _brief_any(value: any_pb2.Any) -> str:
    type_name = value.TypeName()
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        return type_name
    inner = message_factory.GetMessageClass(descriptor)()
    if not value.Unpack(inner):
        return type_name
    fields: Mapping[str, FieldLike] = descriptor.fields_by_name
    name = getattr(inner, "name", "") if "name" in fields else ""
    return f"{type_name} {name}" if name else type_name


# -- units -----------------------------------------------------------------------------------


def enum_label(enum: EnumLike, number: int) -> str:
    """``READY`` -> ``ready``, ``MEMBER_ALIVE`` -> ``alive``, ``HYPERVISOR_KIND_UNSPECIFIED`` -> ``-``,
    unknown numbers as digits."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    if number == 0 and value.name.endswith("UNSPECIFIED"):
        return EMPTY
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    if not value.name.startswith(prefix):
        prefix = _shared_words(enum)
    return value.name.removeprefix(prefix).lower()


def _shared_words(enum: EnumLike) -> str:
    """The leading words all values share (``MEMBER_`` of ``MEMBER_ALIVE``, ``MEMBER_DEAD``),
    which proto enums repeat because their values share one namespace per package."""
    words = [v.name.split("_") for n, v in enum.values_by_number.items() if n != 0]
    if len(words) < 2:
        return ""
    shared: list[str] = []
    # Every name keeps at least its last word.
    for column in zip(*(w[:-1] for w in words), strict=False):
        if len(set(column)) != 1:
            break
        shared.append(column[0])
    return "".join(word + "_" for word in shared)


def human_bytes(n: int) -> str:
    """Binary units with one decimal: ``16777216000`` -> ``15.6GiB``."""
    if n < 1024:
        return f"{n}B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 1024 or unit == "PiB":
            return f"{size:.1f}{unit}"
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """The two largest units: ``93784`` -> ``1d2h``; below a minute, seconds (``12.5s``)."""
    if seconds < 60:
        return f"{seconds:.3g}s" if seconds < 10 and seconds != int(seconds) else f"{int(seconds)}s"
    parts: list[str] = []
    remaining = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count or parts:
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    return "".join(part for part in parts if not part.startswith("0"))


def human_age(seconds: float) -> str:
    """How long ago, coarsely: ``5s``, ``3m``, ``2h``, ``4d``."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 3, 8]`` -> ``0-3,8``; order is kept, runs of consecutive numbers collapse."""
    out: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if j - i < 2 else f"{numbers[i]}-{numbers[j]}")
        if j - i == 1:
            out.append(str(numbers[j]))
        i = j + 1
    return ",".join(out)
