"""Wire format of the gossip protocol (stdlib ``struct`` only, network byte order).

Frame::

    "ZS" | version u8 | channel u8 | count u8 | count x message
    message = type u8 | length (u16 on packets, u32 on streams) | body

Strings are u16 length + UTF-8, addresses are string host + u16 port. The
version byte lets a future format be rejected (or accepted) explicitly; message
types this version does not know are skipped by length, so a newer peer may add
messages without breaking older ones. Anything else malformed raises
:class:`CodecError`: the network is untrusted input.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

from zsd.cluster.swim.member import Address, Capacity, HostMeta, MemberState
from zsd.cluster.swim.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberRecord,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
)
from zsd.errors import InvalidArgument

MAGIC = b"ZS"
VERSION = 1
PACKET = 0
STREAM = 1
MAX_META_SIZE = 512

_HEADER = struct.Struct("!2sBBB")
_PACKET_MSG = struct.Struct("!BH")
_STREAM_MSG = struct.Struct("!BI")
_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")

_PING, _INDIRECT_PING, _ACK, _NACK, _ALIVE, _SUSPECT, _DEAD, _PUSH_PULL = range(1, 9)
_MAX_COUNT = 255


class CodecError(InvalidArgument):
    """Bytes that are not a valid message of a version we speak."""

    default_reason = "SWIM_BAD_MESSAGE"


# -- encoding -----------------------------------------------------------------------------


def _str(value: str) -> bytes:
    raw = value.encode()
    return _U16.pack(len(raw)) + raw


def _blob(value: bytes) -> bytes:
    return _U16.pack(len(value)) + value


def _addr(value: Address) -> bytes:
    return _str(value.host) + _U16.pack(value.port)


def _body(msg: Message) -> tuple[int, bytes]:
    match msg:
        case Ping():
            return _PING, _U32.pack(msg.seq) + _str(msg.target) + _str(msg.source) + _addr(msg.source_addr)
        case IndirectPing():
            return _INDIRECT_PING, b"".join(
                (
                    _U32.pack(msg.seq),
                    _str(msg.target),
                    _addr(msg.target_addr),
                    _str(msg.source),
                    _addr(msg.source_addr),
                    _U8.pack(1 if msg.nack else 0),
                )
            )
        case Ack():
            return _ACK, _U32.pack(msg.seq)
        case Nack():
            return _NACK, _U32.pack(msg.seq)
        case Alive():
            return _ALIVE, _U32.pack(msg.incarnation) + _str(msg.name) + _addr(msg.address) + _blob(msg.meta)
        case Suspect():
            return _SUSPECT, _U32.pack(msg.incarnation) + _str(msg.name) + _str(msg.source)
        case Dead():
            return _DEAD, _U32.pack(msg.incarnation) + _str(msg.name) + _str(msg.source)
        case PushPull():
            parts = [
                _U8.pack((1 if msg.join else 0) | (2 if msg.reply else 0)),
                _str(msg.source),
                _addr(msg.source_addr),
                _U32.pack(len(msg.members)),
            ]
            for r in msg.members:
                parts += (_str(r.name), _addr(r.address), _U32.pack(r.incarnation), _U8.pack(r.state))
                parts.append(_blob(r.meta))
            return _PUSH_PULL, b"".join(parts)


def encode_message(msg: Message) -> bytes:
    """One framed packet message; join several with :func:`encode_packet`."""
    kind, body = _body(msg)
    if len(body) > 0xFFFF:
        raise CodecError(f"{type(msg).__name__} of {len(body)} bytes does not fit a packet")
    return _PACKET_MSG.pack(kind, len(body)) + body


def encode_packet(messages: Sequence[bytes]) -> bytes:
    """A packet from messages already framed by :func:`encode_message`."""
    if not 1 <= len(messages) <= _MAX_COUNT:
        raise CodecError(f"a packet holds 1..{_MAX_COUNT} messages, not {len(messages)}")
    return _HEADER.pack(MAGIC, VERSION, PACKET, len(messages)) + b"".join(messages)


def encode_stream(msg: Message) -> bytes:
    """A stream frame holding one message (no size limit short of 4 GiB)."""
    kind, body = _body(msg)
    return _HEADER.pack(MAGIC, VERSION, STREAM, 1) + _STREAM_MSG.pack(kind, len(body)) + body


@functools.lru_cache(maxsize=4096)
def encode_meta(meta: HostMeta) -> bytes:
    """Encoded metadata; cached because every member table holds every member's."""
    try:
        parts = [
            _U32.pack(meta.host_id),
            _U8.pack(len(meta.addresses)),
            *(_str(a) for a in meta.addresses),
            _U8.pack(len(meta.ports)),
            *(_str(name) + _U16.pack(port) for name, port in meta.ports),
            _U32.pack(meta.capacity.cpus),
            _U64.pack(meta.capacity.memory_bytes),
            _U8.pack(len(meta.labels)),
            *(_str(k) + _str(v) for k, v in meta.labels),
            _str(meta.version),
            _str(meta.leader),
            _U64.pack(meta.leader_epoch),
        ]
    except struct.error as e:
        raise InvalidArgument(f"metadata out of range: {e}", field="meta") from e
    raw = b"".join(parts)
    if len(raw) > MAX_META_SIZE:
        raise InvalidArgument(f"metadata encodes to {len(raw)} bytes, limit {MAX_META_SIZE}", field="meta")
    return raw


# -- decoding -----------------------------------------------------------------------------


class _Reader:
    __slots__ = ("_data", "_end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self._data = data
        self.pos = pos
        self._end = end

    def _take(self, n: int) -> int:
        start = self.pos
        if start + n > self._end:
            raise CodecError("message truncated")
        self.pos = start + n
        return start

    def u8(self) -> int:
        value: int = self._data[self._take(1)]
        return value

    def u16(self) -> int:
        value: int = _U16.unpack_from(self._data, self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack_from(self._data, self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack_from(self._data, self._take(8))[0]
        return value

    def blob(self) -> bytes:
        # Inlined rather than built on u16/_take: this runs for every string of every packet.
        start = self.pos + 2
        if start > self._end:
            raise CodecError("message truncated")
        n = (self._data[start - 2] << 8) | self._data[start - 1]
        end = start + n
        if end > self._end:
            raise CodecError("message truncated")
        self.pos = end
        return self._data[start:end]

    def str(self) -> str:
        try:
            return self.blob().decode()
        except UnicodeDecodeError as e:
            raise CodecError("string is not UTF-8") from e

    def addr(self) -> Address:
        host = self.str()
        return Address(host, self.u16())

    def done(self) -> None:
        if self.pos != self._end:
            raise CodecError(f"{self._end - self.pos} unexpected trailing bytes")


def _state(value: int) -> MemberState:
    try:
        return MemberState(value)
    except ValueError:
        raise CodecError(f"unknown member state {value}") from None


def _decode_body(kind: int, r: _Reader) -> Message | None:
    msg: Message
    if kind == _PING:
        msg = Ping(seq=r.u32(), target=r.str(), source=r.str(), source_addr=r.addr())
    elif kind == _ALIVE:
        msg = Alive(incarnation=r.u32(), name=r.str(), address=r.addr(), meta=r.blob())
    elif kind == _ACK:
        msg = Ack(seq=r.u32())
    elif kind == _SUSPECT:
        msg = Suspect(incarnation=r.u32(), name=r.str(), source=r.str())
    elif kind == _DEAD:
        msg = Dead(incarnation=r.u32(), name=r.str(), source=r.str())
    elif kind == _INDIRECT_PING:
        msg = IndirectPing(
            seq=r.u32(),
            target=r.str(),
            target_addr=r.addr(),
            source=r.str(),
            source_addr=r.addr(),
            nack=r.u8() != 0,
        )
    elif kind == _NACK:
        msg = Nack(seq=r.u32())
    elif kind == _PUSH_PULL:
        flags = r.u8()
        source, source_addr, count = r.str(), r.addr(), r.u32()
        records = []
        for _ in range(count):
            name, address, incarnation = r.str(), r.addr(), r.u32()
            state = _state(r.u8())
            records.append(
                MemberRecord(name=name, address=address, incarnation=incarnation, state=state, meta=r.blob())
            )
        msg = PushPull(
            join=bool(flags & 1),
            reply=bool(flags & 2),
            source=source,
            source_addr=source_addr,
            members=tuple(records),
        )
    else:
        return None  # a newer peer's message type: skipped by length
    r.done()
    return msg


def _decode(data: bytes, channel: int) -> list[Message]:
    if len(data) < _HEADER.size:
        raise CodecError(f"{len(data)} bytes is shorter than a header")
    magic, version, got_channel, count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CodecError("not a zsd gossip message (bad magic)")
    if version != VERSION:
        raise CodecError(f"unsupported gossip version {version} (this node speaks {VERSION})")
    if got_channel != channel:
        raise CodecError(f"{'stream' if got_channel else 'packet'} frame on the wrong channel")
    if count == 0:
        raise CodecError("empty frame")
    framing = _STREAM_MSG if channel == STREAM else _PACKET_MSG
    pos, end = _HEADER.size, len(data)
    out: list[Message] = []
    for _ in range(count):
        if pos + framing.size > end:
            raise CodecError("message header truncated")
        kind, length = framing.unpack_from(data, pos)
        pos += framing.size
        if pos + length > end:
            raise CodecError("message truncated")
        msg = _decode_body(kind, _Reader(data, pos, pos + length))
        if msg is not None:
            out.append(msg)
        pos += length
    if pos != end:
        raise CodecError(f"{end - pos} unexpected trailing bytes")
    return out


def decode_packet(data: bytes) -> list[Message]:
    """All messages of one UDP packet, in order (unknown types dropped)."""
    return _decode(data, PACKET)


def decode_stream(data: bytes) -> Message:
    """The message of one stream frame."""
    messages = _decode(data, STREAM)
    if len(messages) != 1:
        raise CodecError("a stream frame carries exactly one known message")
    return messages[0]


def decode_meta(raw: bytes) -> HostMeta:
    r = _Reader(raw, 0, len(raw))
    host_id = r.u32()
    addresses = tuple(r.str() for _ in range(r.u8()))
    ports = tuple((r.str(), r.u16()) for _ in range(r.u8()))
    capacity = Capacity(cpus=r.u32(), memory_bytes=r.u64())
    labels = tuple((r.str(), r.str()) for _ in range(r.u8()))
    meta = HostMeta(
        host_id=host_id,
        addresses=addresses,
        ports=ports,
        capacity=capacity,
        labels=labels,
        version=r.str(),
        leader=r.str(),
        leader_epoch=r.u64(),
    )
    r.done()
    return meta
