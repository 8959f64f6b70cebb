"""The canonical encoding: Reader primitives and every way a vertex or message is refused."""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Callable, Sequence

import pytest

from qudag_node.core import codec
from qudag_node.core.crypto import SIGNATURE_SIZES, Scheme, Signer, batch_root, tx_ids
from qudag_node.core.errors import Fault, InputRejected, Reason, UsageError
from qudag_node.core.messages import (
    MessageType,
    ProposalMessage,
    decode_message,
    encode_message,
)
from qudag_node.core.params import Params
from qudag_node.core.types import GenesisHash, VertexId
from qudag_node.core.vertex import (
    VertexHeader,
    decode_header_bytes,
    decode_vertex,
    make_vertex,
)

SIGNER = Signer(b"\x03" * 32)
NETWORK = GenesisHash(b"\x42" * 32)
PARAMS = Params(max_tx_bytes=100, max_vertex_txs=4, max_vertex_bytes=250)
PARENTS = [VertexId(bytes([b]) * 32) for b in (0x30, 0x10, 0x20)]
TXS = [b"alpha", b"beta", b"gamma"]
VERTEX = make_vertex(SIGNER, NETWORK, 7, 1_234_567, PARENTS, TXS, tx_ids(TXS))
DATA = VERTEX.encode()
SIG_AT = len(VERTEX.header_bytes)
SIG_END = SIG_AT + 64


def rejected(decode: Callable[[], object]) -> Reason:
    """The reason ``decode`` refuses its input with."""
    with pytest.raises(InputRejected) as info:
        decode()
    assert info.value.fault is Fault.PEER
    assert str(info.value).startswith(info.value.reason.value + ": ")
    return info.value.reason


def assemble(header: VertexHeader, txs: Sequence[bytes], signature: bytes = b"\x00" * 64) -> bytes:
    """Raw vertex bytes for an arbitrary (possibly invalid) header and batch."""
    body = b"".join(struct.pack(">I", len(t)) + t for t in txs)
    return header.encode() + signature + body


def header_for(txs: Sequence[bytes], **changes: object) -> VertexHeader:
    """VERTEX's header, describing ``txs``, with fields replaced."""
    honest = dataclasses.replace(
        VERTEX.header,
        tx_count=len(txs),
        payload_bytes=sum(map(len, txs)),
        batch_root=batch_root(b"".join(tx_ids(txs))),
    )
    return dataclasses.replace(honest, **changes)  # type: ignore[arg-type]


# -------------------------------------------------------------------- Reader


@pytest.mark.parametrize(
    ("write", "read", "fmt", "value"),
    [
        (codec.u8, codec.Reader.u8, ">B", 0xAB),
        (codec.u16, codec.Reader.u16, ">H", 0xABCD),
        (codec.u32, codec.Reader.u32, ">I", 0xDEADBEEF),
        (codec.u64, codec.Reader.u64, ">Q", 0x0102030405060708),
    ],
)
def test_integers_are_fixed_width_big_endian(
    write: Callable[[int], bytes],
    read: Callable[[codec.Reader, str], int],
    fmt: str,
    value: int,
) -> None:
    encoded = write(value)
    assert encoded == struct.pack(fmt, value)
    assert encoded[-1] == value & 0xFF  # big-endian: the low byte is last
    r = codec.Reader(encoded + b"\xff")
    assert read(r, "field") == value
    assert r.position == len(encoded)
    short = codec.Reader(encoded[:-1])
    assert rejected(lambda: read(short, "field")) is Reason.TRUNCATED
    assert short.position == 0  # a failed read consumes nothing


def test_reader_fixed_remaining_and_finish() -> None:
    r = codec.Reader(b"abcdef")
    assert r.fixed(2, "a") == b"ab"
    assert rejected(lambda: r.finish("x")) is Reason.TRAILING_BYTES
    assert rejected(lambda: r.fixed(5, "b")) is Reason.TRUNCATED
    assert r.fixed(0, "nothing") == b""
    assert r.remaining() == b"cdef"
    assert r.position == 6
    r.finish("x")
    assert r.remaining() == b""


def test_reader_errors_name_the_field() -> None:
    with pytest.raises(InputRejected, match="name length: needs 2 bytes at 0"):
        codec.Reader(b"\x01").u16("name length")


# ------------------------------------------------------------ vertex decoding


def test_a_vertex_round_trips_and_keeps_its_bytes() -> None:
    decoded = decode_vertex(DATA, PARAMS)
    assert decoded == VERTEX
    assert decoded.encode() == DATA
    assert decoded.parents == tuple(sorted(PARENTS))
    assert decode_header_bytes(VERTEX.header_bytes) == VERTEX.header


def test_an_empty_batch_round_trips() -> None:
    empty = make_vertex(SIGNER, NETWORK, 1, 0, [], [], [])
    assert decode_vertex(empty.encode(), PARAMS) == empty
    assert empty.header.payload_bytes == 0


@pytest.mark.parametrize("cut", [0, 1, 50, SIG_AT - 1, SIG_AT, SIG_END - 1, len(DATA) - 1])
def test_truncated_vertices_are_rejected(cut: int) -> None:
    assert rejected(lambda: decode_vertex(DATA[:cut], PARAMS)) is Reason.TRUNCATED


def test_trailing_bytes_are_rejected() -> None:
    assert rejected(lambda: decode_vertex(DATA + b"\x00", PARAMS)) is Reason.TRAILING_BYTES
    header = VERTEX.header_bytes + b"\x00"
    assert rejected(lambda: decode_header_bytes(header)) is Reason.TRAILING_BYTES


@pytest.mark.parametrize(("offset", "value", "reason"), [
    (0, 0, Reason.BAD_VERSION),
    (0, 2, Reason.BAD_VERSION),
    (1, 0, Reason.UNKNOWN_SCHEME),
    (1, 3, Reason.UNKNOWN_SCHEME),
    # the composite's scheme byte: its signature is 3,373 bytes, not 64
    (1, Scheme.MLDSA65_ED25519, Reason.TRUNCATED),
])  # fmt: skip
def test_unknown_version_or_scheme_is_rejected(offset: int, value: int, reason: Reason) -> None:
    data = bytearray(DATA)
    data[offset] = value
    assert rejected(lambda: decode_vertex(bytes(data), PARAMS)) is reason


def test_a_composite_vertex_round_trips_with_its_signature_size() -> None:
    signer = Signer(b"\x03" * 64)
    vertex = make_vertex(signer, NETWORK, 7, 1_234_567, PARENTS, TXS, tx_ids(TXS))
    data = vertex.encode()
    assert vertex.header.scheme is Scheme.MLDSA65_ED25519
    assert vertex.author == signer.node_id
    assert len(vertex.signature) == SIGNATURE_SIZES[Scheme.MLDSA65_ED25519] == 3373
    assert len(data) == len(DATA) - 64 + 3373  # the header is as small as an Ed25519 one
    assert decode_vertex(data, PARAMS) == vertex
    for cut in (len(vertex.header_bytes), len(vertex.header_bytes) + 3372, len(data) - 1):
        assert rejected(functools.partial(decode_vertex, data[:cut], PARAMS)) is Reason.TRUNCATED


@pytest.mark.parametrize(
    "parents",
    [
        (PARENTS[0], PARENTS[1]),  # descending
        (PARENTS[1], PARENTS[1]),  # duplicate
        (PARENTS[1], PARENTS[2], PARENTS[2]),
    ],
)
def test_parents_must_be_strictly_ascending(parents: tuple[VertexId, ...]) -> None:
    data = assemble(header_for(TXS, parents=parents), TXS)
    assert rejected(lambda: decode_vertex(data, PARAMS)) is Reason.NON_CANONICAL


def test_an_empty_transaction_in_a_vertex_is_rejected() -> None:
    txs = [b"ok", b""]
    data = assemble(header_for(txs), txs)
    assert rejected(lambda: decode_vertex(data, PARAMS)) is Reason.EMPTY_TRANSACTION


def test_an_oversize_transaction_in_a_vertex_is_rejected() -> None:
    txs = [b"x" * (PARAMS.max_tx_bytes + 1)]
    data = assemble(header_for(txs), txs)
    assert rejected(lambda: decode_vertex(data, PARAMS)) is Reason.OVERSIZE_TRANSACTION
    at_limit = [b"x" * PARAMS.max_tx_bytes]
    assert decode_vertex(assemble(header_for(at_limit), at_limit), PARAMS).transactions == (
        at_limit[0],
    )


def test_an_oversize_batch_is_rejected() -> None:
    too_many = [bytes([i + 1]) for i in range(PARAMS.max_vertex_txs + 1)]
    data = assemble(header_for(too_many), too_many)
    assert rejected(lambda: decode_vertex(data, PARAMS)) is Reason.OVERSIZE_BATCH
    too_big = [b"y" * 90, b"z" * 90, b"w" * 90]  # 270 > max_vertex_bytes
    data = assemble(header_for(too_big), too_big)
    assert rejected(lambda: decode_vertex(data, PARAMS)) is Reason.OVERSIZE_BATCH


@pytest.mark.parametrize("delta", [-1, 1])
def test_payload_bytes_must_match_the_batch(delta: int) -> None:
    header = header_for(TXS, payload_bytes=sum(map(len, TXS)) + delta)
    data = assemble(header, TXS)
    assert rejected(lambda: decode_vertex(data, PARAMS)) is Reason.NON_CANONICAL


def test_the_batch_root_must_match_the_transactions() -> None:
    swapped = [TXS[1], TXS[0], TXS[2]]  # same set, other order
    data = assemble(header_for(TXS), swapped)
    assert rejected(lambda: decode_vertex(data, PARAMS)) is Reason.BAD_BATCH_ROOT
    tampered = DATA[:-1] + bytes([DATA[-1] ^ 1])
    assert rejected(lambda: decode_vertex(tampered, PARAMS)) is Reason.BAD_BATCH_ROOT


# ------------------------------------------------------------------- messages


def test_a_proposal_message_round_trips() -> None:
    data = encode_message(ProposalMessage(VERTEX))
    assert data == bytes([MessageType.PROPOSAL]) + DATA
    assert decode_message(data, PARAMS) == ProposalMessage(VERTEX)


def test_bad_messages_are_rejected() -> None:
    assert rejected(lambda: decode_message(b"", PARAMS)) is Reason.TRUNCATED
    assert rejected(lambda: decode_message(b"\x07" + DATA, PARAMS)) is Reason.UNKNOWN_MESSAGE
    assert rejected(lambda: decode_message(b"\x01", PARAMS)) is Reason.TRUNCATED


# --------------------------------------------------------------------- params


def test_params_refuse_inconsistent_limits() -> None:
    with pytest.raises(UsageError, match="max_vertex_bytes, gc_depth") as info:
        Params(max_tx_bytes=10, max_vertex_bytes=9, gc_depth=1)
    assert info.value.fault is Fault.LOCAL
