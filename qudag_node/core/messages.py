"""Peer messages: a one-byte type followed by the type's payload.

Layouts (integers big-endian; ``vertex`` and ``certificate`` as in
:mod:`~qudag_node.core.vertex` and :mod:`~qudag_node.core.certificate`)::

    1 PROPOSAL      vertex                              a new vertex, asking for votes
    2 VOTE          vertex_id:32  voter:u16  scheme:u8  signature
    3 CERTIFICATE   vertex_id:32  certificate           the vertex is certified
    4 CERTIFIED     vertex_len:u32  vertex  certificate a certified vertex (fetch answer)
    5 FETCH         count:u16  vertex_id:32 * count     please send these certified vertices
    6 TRANSACTIONS  count:u32  (tx_len:u32  tx) * count client transactions for validators
   12 CHECKPOINT_SIGNATURE  number:u64  digest:32  voter:u16  signature
                                                    a validator's signature of the
                                                    checkpoint it computed (see
                                                    core/checkpoint.py); the signature
                                                    is the rest of the message

Types 7 to 11 and 13 to 17 are the sync messages of :mod:`~qudag_node.core.syncwire`;
:mod:`~qudag_node.core.wire` maps every type to its decoder and its owner.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from qudag_node.core import codec
from qudag_node.core.certificate import Certificate, read_certificate
from qudag_node.core.crypto import SIGNATURE_SIZES, Scheme
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.params import Params
from qudag_node.core.types import HASH_SIZE, VertexId
from qudag_node.core.vertex import (
    Vertex,
    decode_vertex,
    encode_transactions,
    read_transactions,
)


class MessageType(enum.IntEnum):
    """Type bytes of the consensus messages."""

    PROPOSAL = 1
    VOTE = 2
    CERTIFICATE = 3
    CERTIFIED = 4
    FETCH = 5
    TRANSACTIONS = 6
    CHECKPOINT_SIGNATURE = 12


@dataclass(frozen=True, slots=True)
class ProposalMessage:
    """A validator's new vertex; validators answer with a vote."""

    vertex: Vertex


@dataclass(frozen=True, slots=True)
class VoteMessage:
    """One validator's signature over a vertex id, sent to the vertex's author."""

    vertex: VertexId
    voter: int
    scheme: Scheme
    signature: bytes


@dataclass(frozen=True, slots=True)
class CertificateMessage:
    """A quorum of votes for a vertex the receiver probably holds already."""

    vertex: VertexId
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class CertifiedMessage:
    """A vertex with its certificate, complete in itself."""

    vertex: Vertex
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class FetchMessage:
    """A request for certified vertices by id."""

    ids: tuple[VertexId, ...]


@dataclass(frozen=True, slots=True)
class TransactionsMessage:
    """Client transactions an observer forwards to validators."""

    transactions: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CheckpointSignatureMessage:
    """One validator's signature over the digest of checkpoint ``number``, sent to
    every peer."""

    number: int
    digest: bytes
    voter: int
    signature: bytes


Message = (
    ProposalMessage
    | VoteMessage
    | CertificateMessage
    | CertifiedMessage
    | FetchMessage
    | TransactionsMessage
    | CheckpointSignatureMessage
)


def encode_message(message: Message) -> bytes:
    """Canonical bytes of a message."""
    match message:
        case ProposalMessage(vertex):
            return bytes((MessageType.PROPOSAL,)) + vertex.encode()
        case VoteMessage(vertex, voter, scheme, signature):
            return b"".join(
                (bytes((MessageType.VOTE,)), vertex, codec.u16(voter), codec.u8(scheme), signature)
            )
        case CertificateMessage(vertex, certificate):
            return bytes((MessageType.CERTIFICATE,)) + vertex + certificate.encode()
        case CertifiedMessage(vertex, certificate):
            return encode_certified(vertex.encode(), certificate.encode())
        case FetchMessage(ids):
            return b"".join((bytes((MessageType.FETCH,)), codec.u16(len(ids)), *ids))
        case TransactionsMessage(txs):
            header = bytes((MessageType.TRANSACTIONS,)) + codec.u32(len(txs))
            return header + encode_transactions(txs)
        case CheckpointSignatureMessage(number, digest, voter, signature):
            return b"".join(
                (
                    bytes((MessageType.CHECKPOINT_SIGNATURE,)),
                    codec.u64(number),
                    digest,
                    codec.u16(voter),
                    signature,
                )
            )


def encode_certified(vertex_bytes: bytes, certificate_bytes: bytes) -> bytes:
    """A CERTIFIED message from stored bytes, without decoding them."""
    return b"".join(
        (
            bytes((MessageType.CERTIFIED,)),
            codec.u32(len(vertex_bytes)),
            vertex_bytes,
            certificate_bytes,
        )
    )


def decode_message(data: bytes, params: Params) -> Message:
    """Parse a message; any malformed input raises :class:`InputRejected`."""
    if not data:
        raise InputRejected(Reason.TRUNCATED, "empty message")
    kind = data[0]
    if kind == MessageType.PROPOSAL:
        return ProposalMessage(decode_vertex(data[1:], params))
    r = codec.Reader(data)
    r.u8("message type")
    message: Message
    if kind == MessageType.VOTE:
        vid = VertexId(r.fixed(HASH_SIZE, "vertex id"))
        voter = r.u16("voter")
        scheme = r.u8("vote scheme")
        if scheme not in SIGNATURE_SIZES:
            raise InputRejected(Reason.UNKNOWN_SCHEME, f"signature scheme {scheme}")
        signature = r.fixed(SIGNATURE_SIZES[Scheme(scheme)], "vote signature")
        message = VoteMessage(vid, voter, Scheme(scheme), signature)
    elif kind == MessageType.CERTIFICATE:
        vid = VertexId(r.fixed(HASH_SIZE, "vertex id"))
        message = CertificateMessage(vid, read_certificate(r))
    elif kind == MessageType.CERTIFIED:
        vertex = decode_vertex(r.fixed(r.u32("vertex length"), "vertex"), params)
        message = CertifiedMessage(vertex, read_certificate(r))
    elif kind == MessageType.FETCH:
        count = r.u16("id count")
        if count > params.max_fetch_ids:
            raise InputRejected(Reason.OVERSIZE_MESSAGE, f"{count} ids in one fetch")
        message = FetchMessage(tuple(VertexId(r.fixed(HASH_SIZE, "id")) for _ in range(count)))
    elif kind == MessageType.TRANSACTIONS:
        message = TransactionsMessage(_read_transactions(r, params))
    elif kind == MessageType.CHECKPOINT_SIGNATURE:
        number = r.u64("checkpoint number")
        digest = r.fixed(HASH_SIZE, "checkpoint digest")
        voter = r.u16("voter")
        signature = r.remaining()
        if len(signature) not in SIGNATURE_SIZES.values():
            raise InputRejected(Reason.TRUNCATED, f"a signature of {len(signature)} bytes")
        message = CheckpointSignatureMessage(number, digest, voter, signature)
    else:
        raise InputRejected(Reason.UNKNOWN_MESSAGE, f"message type {kind}")
    r.finish("message")
    return message


def _read_transactions(r: codec.Reader, params: Params) -> tuple[bytes, ...]:
    count = r.u32("transaction count")
    if count > params.max_vertex_txs:
        raise InputRejected(Reason.TOO_MANY_TRANSACTIONS, f"{count} transactions in one message")
    return tuple(read_transactions(r, count, params))


def fetch_messages(ids: Sequence[VertexId], params: Params) -> list[bytes]:
    """FETCH messages asking for ``ids``, split by the per-message limit."""
    step = params.max_fetch_ids
    return [
        encode_message(FetchMessage(tuple(ids[i : i + step]))) for i in range(0, len(ids), step)
    ]
