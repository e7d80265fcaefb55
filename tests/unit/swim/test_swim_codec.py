from __future__ import annotations

import contextlib
import random
import struct

import pytest

from zsd.cluster.swim import codec
from zsd.cluster.swim.codec import (
    CodecError,
    decode_meta,
    decode_packet,
    decode_stream,
    encode_message,
    encode_meta,
    encode_packet,
    encode_stream,
)
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

A = Address("192.0.2.1", 7946)
B = Address("2001:db8::2", 7946)

META = HostMeta(
    host_id=17,
    addresses=("192.0.2.1", "2001:db8::1"),
    ports=(("api", 7443), ("peer", 7444)),
    capacity=Capacity(cpus=64, memory_bytes=512 * 2**30),
    labels=(("rack", "r12"), ("zone", "ü-north")),
    version="0.1.0",
    leader="host-a",
    leader_epoch=2**40 + 3,
)

MESSAGES: list[Message] = [
    Ping(seq=0xFFFFFFFF, target="host-b", source="host-a", source_addr=A),
    IndirectPing(seq=7, target="host-c", target_addr=B, source="host-a", source_addr=A, nack=True),
    IndirectPing(seq=8, target="c", target_addr=B, source="a", source_addr=A, nack=False),
    Ack(seq=1),
    Nack(seq=2),
    Alive(incarnation=3, name="host-a", address=A, meta=encode_meta(META)),
    Suspect(incarnation=4, name="host-b", source="host-a"),
    Dead(incarnation=5, name="host-b", source="host-b"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_alone(msg: Message) -> None:
    assert decode_packet(encode_packet([encode_message(msg)])) == [msg]
    assert decode_stream(encode_stream(msg)) == msg


def test_a_packet_keeps_messages_in_order() -> None:
    assert decode_packet(encode_packet([encode_message(m) for m in MESSAGES])) == MESSAGES


def test_push_pull_round_trips_on_a_stream_even_when_large() -> None:
    records = tuple(
        MemberRecord(
            name=f"host{i}",
            address=Address(f"10.0.{i // 256}.{i % 256}", 7946),
            incarnation=i,
            state=MemberState(i % 4),
            meta=encode_meta(META),
        )
        for i in range(1000)
    )
    msg = PushPull(join=True, reply=False, source="host0", source_addr=A, members=records)
    frame = encode_stream(msg)
    assert len(frame) > 0xFFFF  # would not fit a packet
    assert decode_stream(frame) == msg
    with pytest.raises(CodecError, match="does not fit a packet"):
        encode_message(msg)


def test_metadata_round_trips_and_is_bounded() -> None:
    assert decode_meta(encode_meta(META)) == META
    assert decode_meta(encode_meta(HostMeta())) == HostMeta()
    with pytest.raises(InvalidArgument, match="limit 512"):
        encode_meta(HostMeta(labels=tuple((f"k{i}", "v" * 20) for i in range(30))))
    with pytest.raises(InvalidArgument, match="out of range"):
        encode_meta(HostMeta(host_id=-1))


def _packet() -> bytes:
    return encode_packet(
        [encode_message(Ack(seq=1)), encode_message(Suspect(incarnation=1, name="x", source="y"))]
    )


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "shorter than a header"),
        (b"GET / HTTP/1.1\r\n", "bad magic"),
        (b"ZS\x02\x00\x01" + _packet()[5:], "unsupported gossip version 2"),
        (b"ZS\x01\x00\x00", "empty frame"),
        (_packet()[:-1], "truncated"),
        (_packet() + b"\x00", "trailing bytes"),
        (b"ZS\x01\x00\x01\x03\x00\x05\x00\x00\x00\x01\x00", "trailing bytes"),  # Ack body too long
        (b"ZS\x01\x00\x01\x06\x00\x07\x00\x00\x00\x01\x00\x01x", "truncated"),  # Suspect, no source
        (b"ZS\x01\x00\x01\x06\x00\x0b\x00\x00\x00\x01\x00\x02\xff\xfe\x00\x01y", "not UTF-8"),
        (encode_stream(Ack(seq=1)), "wrong channel"),
    ],
)
def test_garbage_is_rejected_with_a_clear_error(data: bytes, error: str) -> None:
    with pytest.raises(CodecError, match=error) as info:
        decode_packet(data)
    assert info.value.reason == "SWIM_BAD_MESSAGE"


def test_a_stream_frame_must_hold_one_known_message() -> None:
    with pytest.raises(CodecError, match="wrong channel"):
        decode_stream(_packet())
    unknown = b"ZS\x01\x01\x01" + struct.pack("!BI", 200, 0)
    with pytest.raises(CodecError, match="exactly one"):
        decode_stream(unknown)


def test_unknown_member_state_is_rejected() -> None:
    record = MemberRecord(name="a", address=A, incarnation=0, state=MemberState.ALIVE, meta=b"")
    frame = bytearray(
        encode_stream(PushPull(join=False, reply=False, source="a", source_addr=A, members=(record,)))
    )
    frame[-3] = 9  # the record's state byte, before its (empty) meta length
    with pytest.raises(CodecError, match="unknown member state 9"):
        decode_stream(bytes(frame))


def test_unknown_message_types_from_newer_peers_are_skipped() -> None:
    future = struct.pack("!BH", 99, 3) + b"new"
    packet = codec.MAGIC + bytes([codec.VERSION, codec.PACKET, 2]) + future + encode_message(Ack(seq=9))
    assert decode_packet(packet) == [Ack(seq=9)]


def test_random_bytes_never_escape_as_anything_but_codec_error() -> None:
    rng = random.Random(7)
    valid = encode_packet([encode_message(m) for m in MESSAGES])
    for _ in range(2000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randint(0, len(data))]
        with contextlib.suppress(CodecError):
            decode_packet(bytes(data))
