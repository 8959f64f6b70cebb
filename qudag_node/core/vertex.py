"""Vertices: signed, content-addressed batches of transactions.

Wire layout (version 1), all integers big-endian::

    header  = version:u8  scheme:u8  network:32  author:32  round:u64  timestamp_ms:u64
              parent_count:u16  parent:32 * parent_count (strictly ascending)
              tx_count:u32  payload_bytes:u32  batch_root:32
    vertex  = header  signature:(scheme's size)  (tx_len:u32  tx:tx_len) * tx_count

The vertex id is ``H_vertex(header)``; the author signs the id. ``batch_root`` is
``H_batch(id_1 || ... || id_k)`` over the transaction ids in batch order.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from qudag_node.core import codec
from qudag_node.core.crypto import (
    SIGNATURE_SIZES,
    Purpose,
    Scheme,
    Signer,
    batch_root,
    tx_ids,
    vertex_id,
)
from qudag_node.core.errors import InputRejected, Reason
from qudag_node.core.params import Params
from qudag_node.core.types import HASH_SIZE, GenesisHash, NodeId, TxId, VertexId

VERTEX_VERSION = 1
_FIXED = struct.Struct(">BB32s32sQQH")
_TAIL = struct.Struct(">II32s")
_TX_LEN = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class VertexHeader:
    """The signed part of a vertex."""

    scheme: Scheme
    network: GenesisHash
    author: NodeId
    round: int
    timestamp_ms: int
    parents: tuple[VertexId, ...]
    tx_count: int
    payload_bytes: int
    batch_root: bytes

    def encode(self) -> bytes:
        """Canonical header bytes."""
        return b"".join(
            (
                _FIXED.pack(
                    VERTEX_VERSION,
                    self.scheme,
                    self.network,
                    self.author,
                    self.round,
                    self.timestamp_ms,
                    len(self.parents),
                ),
                *self.parents,
                _TAIL.pack(self.tx_count, self.payload_bytes, self.batch_root),
            )
        )


@dataclass(frozen=True, slots=True)
class Vertex:
    """A decoded or freshly made vertex, with its derived id and transaction ids."""

    header: VertexHeader
    header_bytes: bytes
    id: VertexId
    signature: bytes
    transactions: tuple[bytes, ...]
    tx_ids: tuple[TxId, ...]

    @property
    def round(self) -> int:
        """The vertex's round."""
        return self.header.round

    @property
    def author(self) -> NodeId:
        """The author's public key."""
        return self.header.author

    @property
    def parents(self) -> tuple[VertexId, ...]:
        """Ids of the previous round's vertices this one references."""
        return self.header.parents

    def encode(self) -> bytes:
        """Canonical vertex bytes."""
        return encode_vertex_parts(self.header_bytes, self.signature, self.transactions)


def encode_vertex_parts(header: bytes, signature: bytes, transactions: Sequence[bytes]) -> bytes:
    """Canonical vertex bytes from its stored parts."""
    return b"".join((header, signature, encode_transactions(transactions)))


def encode_transactions(transactions: Sequence[bytes]) -> bytes:
    """Transactions as ``(tx_len:u32 tx) * count`` (the count is encoded elsewhere)."""
    parts: list[bytes] = []
    for t in transactions:
        parts.append(_TX_LEN.pack(len(t)))
        parts.append(t)
    return b"".join(parts)


def read_transactions(r: codec.Reader, count: int, params: Params) -> list[bytes]:
    """Read ``count`` length-prefixed transactions, each 1 to ``max_tx_bytes`` bytes."""
    txs: list[bytes] = []
    for _ in range(count):
        size = r.u32("transaction length")
        if size == 0:
            raise InputRejected(Reason.EMPTY_TRANSACTION, "empty transaction")
        if size > params.max_tx_bytes:
            raise InputRejected(Reason.OVERSIZE_TRANSACTION, f"{size}-byte transaction")
        txs.append(r.fixed(size, "transaction"))
    return txs


def assemble_vertex(
    header_bytes: bytes, signature: bytes, transactions: Sequence[bytes], ids: Sequence[TxId]
) -> Vertex:
    """A vertex from parts that were checked when they were first received (stored)."""
    header = decode_header_bytes(header_bytes)
    return Vertex(
        header, header_bytes, vertex_id(header_bytes), signature, tuple(transactions), tuple(ids)
    )


def decode_header(r: codec.Reader) -> VertexHeader:
    """Read and structurally check a header from ``r``."""
    version, scheme, network, author, round_, ts, n_parents = _FIXED.unpack(
        r.fixed(_FIXED.size, "vertex header")
    )
    if version != VERTEX_VERSION:
        raise InputRejected(Reason.BAD_VERSION, f"vertex version {version}")
    if scheme not in SIGNATURE_SIZES:
        raise InputRejected(Reason.UNKNOWN_SCHEME, f"signature scheme {scheme}")
    parents = tuple(VertexId(r.fixed(HASH_SIZE, "parent")) for _ in range(n_parents))
    if any(a >= b for a, b in pairwise(parents)):
        raise InputRejected(Reason.NON_CANONICAL, "parents must be strictly ascending")
    tx_count, payload_bytes, root = _TAIL.unpack(r.fixed(_TAIL.size, "vertex header"))
    return VertexHeader(
        Scheme(scheme),
        GenesisHash(network),
        NodeId(author),
        round_,
        ts,
        parents,
        tx_count,
        payload_bytes,
        root,
    )


def decode_header_bytes(data: bytes) -> VertexHeader:
    """Parse exactly one canonical header (as kept in the store)."""
    r = codec.Reader(data)
    header = decode_header(r)
    r.finish("vertex header")
    return header


def decode_vertex(data: bytes, params: Params) -> Vertex:
    """Parse a whole vertex, checking structure, limits and the batch root.

    The signature is not checked here (that needs the validator set); see
    :func:`qudag_node.core.rules.check_vertex`.
    """
    r = codec.Reader(data)
    header = decode_header(r)
    header_bytes = data[: r.position]
    if header.tx_count > params.max_vertex_txs or header.payload_bytes > params.max_vertex_bytes:
        raise InputRejected(Reason.OVERSIZE_BATCH, f"{header.tx_count} transactions")
    signature = r.fixed(SIGNATURE_SIZES[header.scheme], "signature")
    txs = read_transactions(r, header.tx_count, params)
    r.finish("vertex")
    if sum(map(len, txs)) != header.payload_bytes:
        raise InputRejected(Reason.NON_CANONICAL, "payload_bytes does not match the batch")
    ids = tx_ids(txs)
    if batch_root(b"".join(ids)) != header.batch_root:
        raise InputRejected(Reason.BAD_BATCH_ROOT, "batch root does not match the transactions")
    return Vertex(header, header_bytes, vertex_id(header_bytes), signature, tuple(txs), tuple(ids))


def make_vertex(
    signer: Signer,
    network: GenesisHash,
    round_: int,
    timestamp_ms: int,
    parents: Sequence[VertexId],
    transactions: Sequence[bytes],
    ids: Sequence[TxId],
) -> Vertex:
    """Build and sign a vertex; ``ids`` are the transactions' ids, already computed."""
    header = VertexHeader(
        signer.scheme,
        network,
        signer.node_id,
        round_,
        timestamp_ms,
        tuple(sorted(parents)),
        len(transactions),
        sum(map(len, transactions)),
        batch_root(b"".join(ids)),
    )
    header_bytes = header.encode()
    vid = vertex_id(header_bytes)
    signature = signer.sign(Purpose.VERTEX, vid)
    return Vertex(header, header_bytes, vid, signature, tuple(transactions), tuple(ids))
